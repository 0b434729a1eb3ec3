"""The row-block parallel Lloyd pass on a CPU (curate.kmeans.blocks): the same bits for any
thread count, the same result as a brute-force Lloyd, and as one process on 2 gloo ranks."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from curate.core import dist
from curate.kmeans import KMeans
from curate.kmeans.blocks import BLOCK_ROWS, BlockLloyd, block_rows_for, block_workers, n_groups
from curate.kmeans.kernels import accumulate_, assign_chunk


def blobs(n: int = 6000, d: int = 32, centres: int = 40, seed: int = 0) -> np.ndarray:
    """(n, d) float32 around ``centres`` well separated means (large enough to run threaded)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=6.0, size=(centres, d))
    return (means[rng.integers(centres, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def fit(x, threads: int, **kwargs) -> KMeans:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return KMeans(**{"k": 100, "n_iter": 6, "init": "random", "seed": 1, **kwargs}).fit(x)
    finally:
        torch.set_num_threads(before)


def numpy_lloyd(x: np.ndarray, c: np.ndarray, n_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain float64 Lloyd from ``c``: ``(centroids, labels)`` (no empty clusters expected)."""
    x64, c = x.astype(np.float64), c.astype(np.float64)
    for _ in range(n_iter):
        labels = ((x64[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        counts = np.bincount(labels, minlength=len(c))
        assert counts.min() > 0
        c = np.stack([x64[labels == j].mean(0) for j in range(len(c))])
    labels = ((x64[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    return c, labels


@pytest.mark.parametrize("chunks", [[6000], [1000, 2500, 2500], [511, 1, 5488]])
def test_block_pass_sums_are_bit_identical_for_any_thread_count(chunks):
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(6000, 24, generator=g), torch.randn(50, 24, generator=g)
    ref_labels = torch.cdist(x.double(), c.double()).argmin(1)
    out, before = [], torch.get_num_threads()
    for threads in (1, 2, 3):
        blocks = BlockLloyd(c, threads)
        labels, sq = torch.empty(len(x), dtype=torch.int64), torch.empty(len(x))
        with block_workers(blocks.threads) as pool:
            start = 0
            for m in chunks:
                blocks.feed(x[start : start + m], labels[start : start + m], sq[start : start + m], pool)
                start += m
        sums, counts = blocks.sums()
        out.append((labels, sq, sums, counts))
        assert torch.get_num_threads() == before  # restored by block_workers
    assert torch.equal(out[0][0], ref_labels)
    ref_sums = torch.zeros(50, 24, dtype=torch.float64).index_add_(0, ref_labels, x.double())
    torch.testing.assert_close(out[0][2], ref_sums, rtol=1e-12, atol=1e-9)
    assert torch.equal(out[0][3], torch.bincount(ref_labels, minlength=50))
    for labels, sq, sums, counts in out[1:]:  # bit for bit
        assert torch.equal(labels, out[0][0]) and torch.equal(sq, out[0][1])
        assert torch.equal(sums, out[0][2]) and torch.equal(counts, out[0][3])


@pytest.mark.parametrize("d", [3, 40])
def test_block_pass_matches_the_chunk_kernels(d):
    """The same labels, distances and sums as the whole-chunk path (assign_chunk + accumulate_,
    still the GPU path), with k large enough for the blocked argmin."""
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(2500, d, generator=g), torch.randn(300, d, generator=g)
    ref_labels, ref_sq = assign_chunk(x, c, c.square().sum(dim=1))
    ref_sums, ref_counts = torch.zeros(300, d, dtype=torch.float64), torch.zeros(300, dtype=torch.int64)
    accumulate_(x, ref_labels, ref_sums, ref_counts)
    blocks = BlockLloyd(c, 2)
    labels, sq = torch.empty(len(x), dtype=torch.int64), torch.empty(len(x))
    with block_workers(blocks.threads) as pool:
        blocks.feed(x, labels, sq, pool)
    sums, counts = blocks.sums()
    assert torch.equal(labels, ref_labels) and torch.equal(counts, ref_counts)
    torch.testing.assert_close(sq, ref_sq, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sums, ref_sums, rtol=1e-12, atol=1e-9)


def test_block_rows_depend_on_k_only():
    assert block_rows_for(10) == BLOCK_ROWS == 1024 and block_rows_for(1024) == 1024
    assert block_rows_for(4096) == 256 and block_rows_for(10**6) == 256
    assert BlockLloyd(torch.zeros(2048, 4), threads=1).block_rows == BlockLloyd(torch.zeros(2048, 4), 7).block_rows


def test_groups_do_not_depend_on_threads_and_bound_memory():
    assert n_groups(1024, 128) == 16 and n_groups(10_000, 384) == 8 and n_groups(10**6, 1024) == 1
    assert BlockLloyd(torch.zeros(4, 3), threads=64).threads == 16


@pytest.mark.parametrize("source", ["memory", "mmap"])
def test_fit_is_bit_identical_for_one_and_two_threads(tmp_path, source, monkeypatch):
    x = blobs()
    if source == "mmap":
        np.save(tmp_path / "x.npy", x)
        x = np.load(tmp_path / "x.npy", mmap_mode="r")
    used = []
    real_init = BlockLloyd.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        used.append(self.threads)

    monkeypatch.setattr(BlockLloyd, "__init__", spy)
    one = fit(x, 1, memory_budget_mb=1.0)  # small chunks: several per pass when streamed
    two = fit(x, 2, memory_budget_mb=1.0)
    assert 2 in used and 1 in used  # the threaded path really ran
    assert torch.equal(one.centroids, two.centroids)
    assert torch.equal(one.labels_, two.labels_) and torch.equal(one.sq_dist_, two.sq_dist_)
    assert one.inertia == two.inertia and [s["objective"] for s in one.stats] == [s["objective"] for s in two.stats]
    assert torch.equal(one.assign(x)[0], two.assign(x)[0])


def test_fit_matches_brute_force_numpy_lloyd():
    x = blobs(n=3 * BLOCK_ROWS + 77, centres=12, seed=2)
    start = fit(x, 2, k=12, n_iter=0).centroids.numpy()
    km = fit(x, 2, k=12, n_iter=5)
    ref_c, ref_labels = numpy_lloyd(x, start, 5)
    np.testing.assert_allclose(km.centroids.numpy(), ref_c, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(km.labels_.numpy(), ref_labels)


def _rank_worker(rank: int, world: int, port: int, data: str, out_dir: str, split: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(2 - rank)  # the ranks differ in threads too
    dist.init_distributed(backend="gloo")
    try:
        x = np.load(data)
        lo, hi = (0, split) if rank == 0 else (split, len(x))
        km = KMeans(k=100, n_iter=6, init="random", seed=1).fit(x[lo:hi])
        np.save(f"{out_dir}/c_{rank}.npy", km.centroids.numpy())
        np.save(f"{out_dir}/labels_{rank}.npy", km.labels_.numpy())
    finally:
        torch_dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path, free_port):
    x = blobs(n=8000)
    np.save(tmp_path / "x.npy", x)
    mp.spawn(_rank_worker, args=(2, free_port, str(tmp_path / "x.npy"), str(tmp_path), 3001), nprocs=2)
    single = fit(x, 2)
    c = [np.load(tmp_path / f"c_{r}.npy") for r in range(2)]
    labels = np.concatenate([np.load(tmp_path / f"labels_{r}.npy") for r in range(2)])
    np.testing.assert_array_equal(c[0], c[1])
    np.testing.assert_allclose(c[0], single.centroids.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, single.labels_.numpy())
