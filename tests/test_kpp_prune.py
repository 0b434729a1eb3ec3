"""Exact pruned k-means++ (issue 22 item 2): the same picks as the unpruned greedy variant, on
several seeds and shapes, memory-mapped input and 2 gloo ranks; and it does skip rows."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from curate.core import dist
from curate.kmeans import KMeans
from curate.kmeans import init as kinit
from curate.kmeans.init import kmeans_plusplus
from curate.kmeans.shard import LocalRows
from curate.kmeans.source import RowSource


def _rows(x, cached: bool = True, chunk: int = 700) -> LocalRows:
    src = RowSource(x if isinstance(x, np.memmap) else torch.from_numpy(x))
    rows = LocalRows(src, torch.device("cpu"), chunk, cosine=False, cache_bytes=1 << 40)
    rows._cache_allowed = cached
    rows.scan()
    return rows


def _clustered(n: int, d: int, centres: int, seed: int, scale: float = 8.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=scale, size=(centres, d))
    return (c[rng.integers(0, centres, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _with_duplicates(n: int, d: int, seed: int) -> np.ndarray:
    x = _clustered(n // 4, d, 6, seed)
    return np.concatenate([x, x, x[: n // 8], x + 1e-3]).astype(np.float32)


DATA = {
    "clustered": lambda s: _clustered(3000, 24, 20, s),
    "wide-gaussian": lambda s: np.random.default_rng(s).normal(size=(2000, 64)).astype(np.float32),
    "duplicates": lambda s: _with_duplicates(2400, 16, s),
    "offset-far": lambda s: _clustered(2000, 12, 30, s, scale=3.0) + np.float32(50.0),
}


class _Recording(kinit._TrialStep):
    instances: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _Recording.instances.append(self)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(DATA))
def test_pruned_picks_equal_unpruned(name, threads, monkeypatch):
    monkeypatch.setattr(kinit, "_TrialStep", _Recording)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for seed in range(3):
            x = DATA[name](seed)
            k = 40
            plain = kmeans_plusplus(_rows(x), k, torch.Generator().manual_seed(seed), prune=False)
            _Recording.instances.clear()
            pruned = kmeans_plusplus(_rows(x), k, torch.Generator().manual_seed(seed), prune=True)
            assert torch.equal(plain, pruned), (name, seed)
            step = _Recording.instances[0]
            assert step.centres is not None
            assert 0 < step.kept_rows < (k - 1) * len(x)  # it skipped rows
    finally:
        torch.set_num_threads(before)


def test_pruned_weighted_equals_unpruned():
    x = _clustered(1500, 20, 10, 4)
    w = torch.from_numpy(np.random.default_rng(4).random(len(x)).astype(np.float32))
    w[::7] = 0.0
    a = kmeans_plusplus(_rows(x), 30, torch.Generator().manual_seed(5), weights=w, prune=False)
    b = kmeans_plusplus(_rows(x), 30, torch.Generator().manual_seed(5), weights=w, prune=True)
    assert torch.equal(a, b)


def test_pruned_memmap_cached_and_streamed(tmp_path):
    x = _clustered(2500, 32, 15, 6)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ref = kmeans_plusplus(_rows(x), 35, torch.Generator().manual_seed(7), prune=False)
    for cached in (True, False):  # a streamed shard runs unpruned: the same picks either way
        got = kmeans_plusplus(_rows(mm, cached=cached), 35, torch.Generator().manual_seed(7), prune=True)
        assert torch.equal(ref, got), cached


def test_pruned_too_few_distinct_points_still_raises():
    x = np.repeat(np.eye(6, 16, dtype=np.float32) * 5, 50, axis=0)
    with pytest.raises(kinit.TooFewDistinctPoints):
        kmeans_plusplus(_rows(x), 8, torch.Generator().manual_seed(0), prune=True)


def _worker(rank: int, port: int, data_path: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    kinit.PRUNE_DEFAULT = True
    dist.init_distributed(backend="gloo")
    try:
        x = np.load(data_path)
        lo, hi = [(0, 1100), (1100, len(x))][rank]  # unequal shards on purpose
        km = KMeans(k=24, n_iter=0, seed=3).fit(x[lo:hi])
        np.save(f"{out_dir}/centroids_{rank}.npy", km.centroids.numpy())
    finally:
        torch_dist.destroy_process_group()


def test_pruned_two_ranks_equal_one_unpruned(tmp_path, free_port, monkeypatch):
    x = _clustered(2600, 20, 12, 8)
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(kinit, "PRUNE_DEFAULT", False)
    single = KMeans(k=24, n_iter=0, seed=3).fit(x).centroids.numpy()
    mp.spawn(_worker, args=(free_port, str(tmp_path / "x.npy"), str(tmp_path)), nprocs=2)
    for r in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"centroids_{r}.npy"), single)
