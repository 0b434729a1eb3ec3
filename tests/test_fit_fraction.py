"""Fit on a subset, assign everything (issue 21, item 9): ``fit_fraction`` / ``fit_max_points`` per
level fit Lloyd on a seeded subset of the level input and assign every row once at the end; the
same for one process and two gloo ranks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from test_errors import _one_error_line

from curate.core import dist
from curate.hierarchy import HierarchicalKMeans
from curate.hierarchy.model import FIT_SUBSET_STREAM
from curate.io.shards import open_npy_shard
from curate.kmeans import KMeans


def brute_force(x: np.ndarray, centroids: np.ndarray, cosine: bool) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row by a float64 loop over the centroids (the reference)."""
    x = x.astype(np.float64)
    if cosine:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d2 = np.stack([np.square(x - c).sum(axis=1) for c in centroids.astype(np.float64)], axis=1)
    return d2.argmin(axis=1), d2.min(axis=1)


def assert_same(a: HierarchicalKMeans, b: HierarchicalKMeans, exact: bool = True) -> None:
    for la, lb in zip(a.levels_, b.levels_, strict=True):
        if exact:
            np.testing.assert_array_equal(la.centroids, lb.centroids)
        else:
            np.testing.assert_allclose(la.centroids, lb.centroids, rtol=1e-5, atol=1e-5)
        for name in ("assign", "members", "offsets"):
            np.testing.assert_array_equal(getattr(la, name), getattr(lb, name))


LEVELS = [dict(k=40, resample_steps=2, sample_size=3), dict(k=6)]


def test_fit_fraction_one_is_the_full_fit_exactly(blobs):
    full = HierarchicalKMeans(LEVELS, n_iter=6, seed=1).fit(blobs)
    for extra in ({"fit_fraction": 1.0}, {"fit_max_points": len(blobs)}, {"fit_fraction": 1, "fit_max_points": 10**9}):
        same = HierarchicalKMeans([{**level, **extra} for level in LEVELS], n_iter=6, seed=1).fit(blobs)
        assert_same(full, same)
        assert [lv.stats["inertia"] for lv in full.levels_] == [lv.stats["inertia"] for lv in same.levels_]
        assert "fit_rows" not in same.levels_[0].stats
    # the level's first k-means is the engine's own fit on every row (the reference)
    ref = KMeans(k=40, n_iter=6, seed=full._seed(1, 0)).fit(blobs)
    plain = HierarchicalKMeans([dict(k=40)], n_iter=6, seed=1).fit(blobs)
    np.testing.assert_array_equal(plain.levels_[0].centroids, ref.centroids.numpy())
    np.testing.assert_array_equal(plain.levels_[0].assign, ref.labels_.numpy())


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize(
    "limit", [{"fit_fraction": 0.2}, {"fit_max_points": 450}, {"fit_fraction": 0.5, "fit_max_points": 450}]
)
def test_subset_fit_assigns_every_row_to_its_nearest_centroid(blobs, distance, limit):
    n, k = len(blobs), 24
    hkm = HierarchicalKMeans([dict(k=k, **limit)], n_iter=6, seed=3, distance=distance).fit(blobs)
    level = hkm.levels_[0]
    m = min(round(limit.get("fit_fraction", 1.0) * n), limit.get("fit_max_points", n))
    assert level.stats["fit_rows"] == m and len(level.assign) == n
    # the centroids are those of Lloyd on the seeded subset (the reference: the engine on those rows)
    rows = np.sort(np.random.default_rng(hkm._seed(1, FIT_SUBSET_STREAM)).choice(n, size=m, replace=False))
    ref = KMeans(k=k, n_iter=6, seed=hkm._seed(1, 0), distance=distance).fit(blobs[rows])
    np.testing.assert_array_equal(level.centroids, ref.centroids.numpy())
    # every row, fitted or not, sits with its nearest centroid (brute force over all rows)
    labels, d2 = brute_force(blobs, level.centroids, distance == "cosine")
    np.testing.assert_array_equal(level.assign, labels)
    np.testing.assert_allclose(level.dist, d2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(level.stats["inertia"][0], d2.sum(), rtol=1e-5)  # the objective of all rows
    assert level.stats["fit_inertia"] < level.stats["inertia"][0]  # the subset's share only


def test_subset_fit_then_split_starts_from_the_assignment_of_all_rows(blobs):
    hkm = HierarchicalKMeans([dict(k=6, n_splits=3, fit_fraction=0.25)], n_iter=5, seed=0).fit(blobs)
    level = hkm.levels_[0]
    assert level.stats["fit_rows"] == 750 and len(level.assign) == len(blobs) and level.k > 6
    assert level.sizes.sum() == len(blobs)


def _worker(rank: int, world: int, port: int, data_path: str, out_dir: str, runs: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_distributed(backend="gloo")
    try:
        shard = open_npy_shard(data_path, rank, world)
        for name, (levels, options) in runs.items():
            HierarchicalKMeans(levels, n_iter=5, seed=2, **options).fit(shard).save(f"{out_dir}/{name}")
    finally:
        torch_dist.destroy_process_group()


RUNS = {
    # level 2 sharded too (shard_min_rows=1): its subset is drawn from row blocks of the centroids
    "resample": ([dict(k=50, fit_fraction=0.3, resample_steps=1, sample_size=3), dict(k=8, fit_max_points=30)],
                 {"shard_min_rows": 1}),
    "split": ([dict(k=6, n_splits=3, fit_max_points=700), dict(k=0.5, fit_fraction=0.6)], {}),
}  # fmt: skip


def test_subset_fit_world_size_two_equals_one(tmp_path, blobs, free_port):
    data = tmp_path / "x.npy"
    np.save(data, blobs)
    mp.spawn(_worker, args=(2, free_port, str(data), str(tmp_path), RUNS), nprocs=2)
    for name, (levels, options) in RUNS.items():
        single = HierarchicalKMeans(levels, n_iter=5, seed=2, **options).fit(blobs)
        double = HierarchicalKMeans.load(tmp_path / name)
        assert_same(single, double, exact=False)
        assert [lv.stats.get("fit_rows") for lv in single.levels_] == [
            lv.stats.get("fit_rows") for lv in double.levels_
        ]


def test_manifest_records_the_fit_settings_and_the_resolved_levels(tmp_path, blobs):
    levels = [dict(k=0.01, fit_fraction=0.25), dict(k="auto", sample_size=2, fit_max_points=20)]
    HierarchicalKMeans(levels, n_iter=3).fit(blobs).save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [lv["spec"]["k"] for lv in manifest["levels"]] == [30, 8]  # 0.01 * 3000; 30 / (2 * 2) = 7.5 -> 8
    assert manifest["config"]["levels"][0] == {"k": 0.01, "resample_steps": 0, "sample_size": 1, "n_splits": 1,
                                               "fit_fraction": 0.25}  # fmt: skip
    assert [lv["stats"].get("fit_rows") for lv in manifest["levels"]] == [750, 20]
    loaded = HierarchicalKMeans.load(tmp_path)
    assert [s.k for s in loaded.resolved_] == [30, 8] and loaded.specs[1].k == "auto"


@pytest.mark.slow
def test_cluster_cli_refuses_a_bad_fit_fraction_in_one_line(tmp_path, blobs, cli):
    np.save(tmp_path / "x.npy", blobs)
    args = ["-m", "curate.cluster", "cluster=kmeans_flat", f"input.path={tmp_path / 'x.npy'}", f"out_dir={tmp_path}"]
    proc = cli(*args, "cluster.levels=[{k: 20, fit_fraction: 1.5}]", check=False)
    _one_error_line(proc, "cluster.levels[0] (level 1): fit_fraction must be in (0, 1]")


@pytest.mark.parametrize(
    "level, expected",
    [
        ({"k": 20, "fit_fraction": 1.5}, r"fit_fraction must be in \(0, 1\]"),
        ({"k": 20, "fit_fraction": 0}, r"fit_fraction must be in \(0, 1\]"),
        ({"k": 20, "fit_max_points": 10}, "fit_max_points=10 leaves fewer rows to fit than k=20"),
        ({"k": 20, "fit_fraction": 0.005}, "leave 15 of 3000 rows to fit, fewer than k=20"),
        ({"k": 0.1, "fit_max_points": 100}, r"leave 100 of 3000 rows to fit, fewer than k=0.1 \(= 300\)"),
    ],
)
def test_fit_settings_that_cannot_fit_are_refused_naming_the_level(blobs, level, expected):
    with pytest.raises(ValueError, match=r"levels\[0\] \(level 1\): .*" + expected):
        HierarchicalKMeans([level], n_iter=1).fit(blobs)


def test_bench_fit_fraction_compares_with_the_full_fit_of_the_same_run(load_script, capsys):
    bench = load_script("bench_fit_fraction")
    argv = ["--n", "3000", "--d", "8", "--clusters", "40", "--k", "20", "--iters", "5"]
    rows = bench.main([*argv, "--fractions", "0.2", "1"])
    assert [r["fraction"] for r in rows] == [1.0, 0.2]  # the full fit first, whatever the order given
    assert [r["fit_rows"] for r in rows] == [3000, 600]
    assert rows[0]["inertia_vs_full"] == 1.0 and rows[0]["time_vs_full"] == 1.0
    # the subset fit's centroids are a worse fit of all rows, but not far off on 40 components
    assert 0.99 < rows[1]["inertia_vs_full"] < 1.3
    assert "inertia/full" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="must include 1"):
        bench.main([*argv, "--fractions", "0.5"])
