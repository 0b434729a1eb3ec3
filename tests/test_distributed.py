"""World size 2 (gloo, torch.multiprocessing.spawn) gives the same k-means as one process."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from curate.core import dist
from curate.io.shards import open_npy_shard, shard_range
from curate.kmeans import KMeans


def _worker(rank: int, world: int, port: int, data_path: str, out_dir: str, kwargs: dict, splits: list) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_distributed(backend="gloo")
    try:
        x = np.load(data_path)
        lo, hi = splits[rank], splits[rank + 1]  # unequal shards on purpose
        km = KMeans(**kwargs).fit(x[lo:hi])
        labels, sq = km.assign(x[lo:hi])
        np.save(f"{out_dir}/centroids_{rank}.npy", km.centroids.numpy())
        np.save(f"{out_dir}/labels_{rank}.npy", km.labels_.numpy())
        np.save(f"{out_dir}/assign_{rank}.npy", labels.numpy())
        np.save(f"{out_dir}/inertia_{rank}.npy", np.array([km.inertia]))
    finally:
        torch_dist.destroy_process_group()


def run_two_ranks(tmp_path, x: np.ndarray, kwargs: dict, split: int, port: int):
    data = tmp_path / "x.npy"
    np.save(data, x)
    mp.spawn(_worker, args=(2, port, str(data), str(tmp_path), kwargs, [0, split, len(x)]), nprocs=2)
    load = lambda name, r: np.load(tmp_path / f"{name}_{r}.npy")  # noqa: E731
    return (
        [load("centroids", r) for r in range(2)],
        np.concatenate([load("labels", r) for r in range(2)]),
        np.concatenate([load("assign", r) for r in range(2)]),
        [float(load("inertia", r)[0]) for r in range(2)],
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=24, n_iter=8, seed=3),
        dict(k=24, n_iter=8, seed=3, init="random", distance="cosine"),
        dict(k=24, n_iter=4, seed=1, init_max_points=900),
        dict(k=24, n_iter=4, seed=2, init="k-means||"),
    ],
    ids=["kmeans++-l2", "random-cosine", "init-subset", "kmeans||"],
)
def test_world_size_two_equals_one(tmp_path, blobs, kwargs, free_port):
    single = KMeans(**kwargs).fit(blobs)
    centroids, labels, assigned, inertia = run_two_ranks(tmp_path, blobs, kwargs, split=1100, port=free_port)
    np.testing.assert_array_equal(centroids[0], centroids[1])  # ranks agree exactly
    np.testing.assert_allclose(centroids[0], single.centroids.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, single.labels_.numpy())
    np.testing.assert_array_equal(assigned, single.labels_.numpy())
    assert inertia[0] == inertia[1] and abs(inertia[0] - single.inertia) <= 1e-5 * single.inertia


def test_empty_cluster_reseed_matches_across_world_sizes(tmp_path, free_port):
    rng = np.random.default_rng(0)
    dup = np.repeat(rng.normal(size=(4, 3)), 200, axis=0)
    x = np.concatenate([dup, rng.normal(size=(50, 3)) * 5]).astype(np.float32)
    x = x[rng.permutation(len(x))]
    kwargs = dict(k=20, n_iter=10, seed=0, init="random")
    single = KMeans(**kwargs).fit(x)
    assert sum(s["empty_reseeded"] for s in single.stats) > 0
    centroids, labels, _, _ = run_two_ranks(tmp_path, x, kwargs, split=333, port=free_port)
    np.testing.assert_allclose(centroids[0], single.centroids.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, single.labels_.numpy())


def test_shard_range_covers_rows_once():
    for n in (0, 1, 7, 100):
        for world in (1, 2, 3, 8):
            ranges = [shard_range(n, r, world) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="rank 2 is not in a world of size 2"):
        shard_range(10, 2, 2)


def test_open_npy_shard_reads_only_its_rows(tmp_path):
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    np.save(tmp_path / "x.npy", x)
    parts = [open_npy_shard(tmp_path / "x.npy", r, 3) for r in range(3)]
    assert all(isinstance(p, np.memmap) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), x)


def test_single_process_collectives_are_noops(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert dist.init_distributed() == (0, 1)
    t = torch.ones(3)
    assert dist.all_reduce_sum_(t) is t and torch.equal(t, torch.ones(3))
    assert dist.all_gather_stack(t).shape == (1, 3)


def test_slurm_environment_is_translated(monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    monkeypatch.setenv("MASTER_ADDR", "node17")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    env = dist._slurm_env()
    assert env == {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "node17",
        "MASTER_PORT": "32345",
    }


def _hierarchy_worker(
    rank: int, world: int, port: int, data_path: str, out_dir: str, levels: list, options: dict
) -> None:
    from curate.hierarchy import HierarchicalKMeans

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_distributed(backend="gloo")
    try:
        shard = open_npy_shard(data_path, rank, world)
        ckpt = f"{out_dir}_ckpt"
        hkm = HierarchicalKMeans(levels, n_iter=5, seed=2, checkpoint_dir=ckpt, checkpoint_every=2, **options)
        hkm.fit(shard)
        hkm.save(out_dir)
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.parametrize(
    "levels",
    [
        [dict(k=60, resample_steps=2, sample_size=3), dict(k=10, resample_steps=1, sample_size=2)],
        [dict(k=6, n_splits=4), dict(k=5)],
    ],
    ids=["resampling", "split"],
)
@pytest.mark.parametrize(
    "options",
    # 1e-3 MB: the split runs in cluster batches; split_regroup=False: slot sums all-reduced instead
    [{}, {"shard_min_rows": 1, "split_memory_mb": 1e-3}, {"split_regroup": False, "split_memory_mb": 1e-3}],
    ids=["upper-replicated", "upper-sharded-split-batched", "split-allreduce"],
)
def test_hierarchy_world_size_two_equals_one(tmp_path, blobs, levels, options, free_port):
    from curate.hierarchy import HierarchicalKMeans

    if "split_regroup" in options and all(level.get("n_splits", 1) == 1 for level in levels):
        pytest.skip("no split level")
    data = tmp_path / "x.npy"
    np.save(data, blobs)
    single = HierarchicalKMeans(levels, n_iter=5, seed=2).fit(blobs)
    mp.spawn(_hierarchy_worker, args=(2, free_port, str(data), str(tmp_path / "h"), levels, options), nprocs=2)
    double = HierarchicalKMeans.load(tmp_path / "h")
    if "split" in double.levels_[0].stats:  # regrouped by cluster (all-to-all) unless told otherwise
        assert double.levels_[0].stats["split"].get("regrouped", False) == options.get("split_regroup", True)
    # the checkpoints' data digest (run identity) does not depend on the number of ranks
    from curate.io.identity import rows_digest

    assert json.loads((tmp_path / "h_ckpt" / "config.json").read_text())["data"] == rows_digest(blobs)
    for a, b in zip(single.levels_, double.levels_):
        np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(a.assign, b.assign)
        np.testing.assert_array_equal(a.members, b.members)


# ---- backend and GPU binding (what a first multi-GPU run needs) ------------------------------
@pytest.mark.parametrize(
    "device, cuda, expected",
    [
        ("cpu", True, "gloo"),  # a CPU stage on a GPU machine: collectives stay off the GPU
        ("cuda", True, "nccl"),
        ("cuda:1", True, "nccl"),
        ("auto", True, "nccl"),
        ("auto", False, "gloo"),
        (None, True, "nccl"),
        (None, False, "gloo"),
        (torch.device("cpu"), True, "gloo"),
    ],
)
def test_backend_follows_the_stage_device(device, cuda, expected):
    assert dist.backend_for(device, cuda_available=cuda) == expected


def test_local_rank_from_env_else_rank_modulo_gpus():
    assert dist.local_rank({"LOCAL_RANK": "3", "RANK": "11"}, device_count=8) == 3
    assert dist.local_rank({"RANK": "11", "WORLD_SIZE": "16"}, device_count=8) == 3  # plain RANK launch
    assert dist.local_rank({"RANK": "5"}, device_count=1) == 0
    assert dist.local_rank({"RANK": "5"}, device_count=0) == 0
    assert dist.local_rank({}, device_count=4) == 0


@pytest.fixture
def fake_init(monkeypatch):
    """Record what ``init_distributed`` would hand torch.distributed, on a pretend 2-GPU node."""
    calls: dict = {}
    for var in ("LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.setdefault("set_device", device))
    monkeypatch.setattr(torch_dist, "init_process_group", lambda **kw: calls.setdefault("init", kw))
    monkeypatch.setattr(torch_dist, "is_initialized", lambda: False)
    return calls


def test_cuda_stage_binds_its_gpu_and_passes_device_id(fake_init):
    dist.init_distributed(device="cuda")
    assert fake_init["init"]["backend"] == "nccl"
    assert fake_init["set_device"] == torch.device("cuda", 1)  # rank 3 % 2 GPUs, no LOCAL_RANK
    assert fake_init["init"]["device_id"] == torch.device("cuda", 1)


def test_cpu_stage_on_a_gpu_machine_uses_gloo(fake_init):
    dist.init_distributed(device="cpu")
    assert fake_init["init"]["backend"] == "gloo"
    assert "set_device" not in fake_init and "device_id" not in fake_init["init"]


def _backend_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.pop("LOCAL_RANK", None)
    torch.set_num_threads(1)
    dist.init_distributed(device="cpu")
    try:
        t = dist.all_reduce_sum_(torch.tensor([rank + 1.0]))
        with open(f"{out_dir}/r{rank}.txt", "w") as f:
            f.write(f"{torch_dist.get_backend()} {t.item()}")
    finally:
        torch_dist.destroy_process_group()


def test_cpu_stage_collectives_run_on_gloo(tmp_path, free_port):
    mp.spawn(_backend_worker, args=(2, free_port, str(tmp_path)), nprocs=2)
    assert [(tmp_path / f"r{r}.txt").read_text() for r in range(2)] == ["gloo 3.0"] * 2
