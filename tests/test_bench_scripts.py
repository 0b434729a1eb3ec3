"""The benchmark and scaling scripts: a tiny end-to-end benchmark run and the cost-model formulas."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from research.bench import costmodel as cm
from research.bench.scaling_report import HAND_WRITTEN

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("bench_kmeans")


@pytest.fixture(scope="module")
def scaling(load_script):
    return load_script("scaling")


def test_bench_tiny_rows(bench, tmp_path):
    from research.bench.kmeans import ROW_KEYS

    out = tmp_path / "rows.json"
    argv = ["--size", "tiny", "--iters", "3", "--init", "same", "--threads", "1", "--in-process"]
    lines = tmp_path / "runs.jsonl"
    bench.main(argv + ["--json", str(out), "--tmp", str(tmp_path / "data"), "--jsonl", str(lines)])
    rows = json.loads(out.read_text())
    assert [r["impl"] for r in rows] == ["ours", "faiss", "sklearn"]
    runs = [json.loads(line) for line in lines.read_text().splitlines()]  # a line per run, as it ended
    assert [r["impl"] for r in runs] == ["ours", "faiss", "sklearn"]
    assert [r["sec_per_iter"] for r in runs] == [r["sec_per_iter"] for r in rows]
    for r in rows:
        assert set(ROW_KEYS) <= set(r)
        assert (r["n"], r["d"], r["k"]) == (5000, 16, 32)
        assert r["iters"] == 3 and r["sec_per_iter"] > 0 and r["gflops"] > 0
        assert math.isclose(r["gflops"], 2 * 5000 * 16 * 32 / r["sec_per_iter"] / 1e9, rel_tol=1e-9)
        assert 10 < r["peak_rss_mb"] < 4096
        assert r["inertia"] > 0
    # same initial centroids and iteration count: the three Lloyd runs agree
    ours = rows[0]
    assert abs(ours["inertia_ratio_to_faiss"] - 1) < 0.03
    assert abs(ours["inertia_ratio_to_sklearn"] - 1) < 0.03


@pytest.mark.slow
def test_bench_worker_runs_in_a_subprocess(tmp_path):
    from research.bench import write_clustered_npy
    from research.bench.kmeans import spawn_worker

    data = write_clustered_npy(tmp_path / "x.npy", n=2000, d=8, k=16)
    spec = {"impl": "faiss", "data": str(data), "n": 2000, "d": 8, "k": 16, "iters": 3, "seed": 0}
    res = spawn_worker(dict(spec, threads=1, device="cpu", mmap=False), threads=1)
    assert len(res["iter_seconds"]) == 3 and res["inertia"] > 0
    assert 0 < res["peak_rss_mb"] < 2048  # this process image's own peak (VmHWM), not the parent's


def test_bench_dataset_and_pread_reader(tmp_path):
    from curate.io.shards import NpyRows
    from research.bench import write_clustered_npy

    path = write_clustered_npy(tmp_path / "x.npy", n=1000, d=8, k=5, seed=1, chunk_rows=300)
    x = np.load(path)
    assert x.shape == (1000, 8) and x.dtype == np.float32
    # deterministic in the seed, and another seed gives other rows
    whole = np.load(write_clustered_npy(tmp_path / "y.npy", n=1000, d=8, k=5, seed=1, chunk_rows=300))
    np.testing.assert_array_equal(whole, x)
    assert not np.array_equal(np.load(write_clustered_npy(tmp_path / "z.npy", n=1000, d=8, k=5, seed=2)), x)
    reader = NpyRows(path)  # what the engine reads a path with (the "ours" row of an on-disk size)
    assert reader.shape == (1000, 8)
    np.testing.assert_array_equal(reader[250:700], x[250:700])
    np.testing.assert_array_equal(reader[np.array([3, 999, 0])], x[[3, 999, 0]])


def test_bench_plan_jobs_covers_the_blocks(tmp_path):
    from research.bench.kmeans import plan_jobs

    base = dict(data="x.npy", n=2_000_000, d=8, k=16, iters=3, seed=0, threads=1, device="cpu")
    same = plan_jobs(dict(base, mmap=False), ["same"], ["ours", "faiss", "sklearn"], tmp_path / "c.npy")
    assert [label for _, label, _ in same] == ["ours", "faiss", "sklearn"]
    assert same[0][2]["init_path"] is None and same[1][2]["init_path"] == str(tmp_path / "c.npy")
    # on disk: no sklearn, a memory-map row, and no default block without a k-means++ subset
    disk = plan_jobs(dict(base, mmap=True), ["same", "default"], ["ours", "faiss", "sklearn"], tmp_path / "c.npy")
    assert [(b, label) for b, label, _ in disk] == [("same", "ours"), ("same", "faiss"), ("same", "ours[mmap]")]
    sub = plan_jobs(dict(base, mmap=True), ["default"], ["ours", "faiss"], tmp_path / "c.npy", init_max_points=50_000)
    assert [label for _, label, _ in sub] == ["ours[++ on 50k]", "faiss"]
    assert sub[0][2]["init_max_points"] == 50_000 and sub[1][2]["init_max_points"] is None


def test_bench_rejects_bad_arguments(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--size", "huge"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--iters", "2"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--busy", "-1"])


def test_bench_busy_processes_run_for_the_block_only(bench):
    with bench.busy_processes(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)  # spinning
    assert all(p.poll() is not None for p in procs)  # stopped after the block
    with bench.busy_processes(0) as procs:
        assert procs == []


def test_scaling_formulas():
    cfg = cm.ScalingConfig()
    res = cm.compute(cfg)
    lv1, lv2 = res["levels"][0], res["levels"][1]
    n, k, d = cfg.n, cfg.level1_k, cfg.d
    assert lv1["lloyd"]["flops"] == 2 * n * k * d
    assert lv1["lloyd"]["allreduce_bytes"] == k * d * 8 + k * 8
    trials = 2 + int(math.log(k))
    assert lv1["kpp"]["trials"] == trials
    assert lv1["kpp"]["flops"] == 2 * k * trials * n * d
    assert lv1["split"]["leaves"] == cfg.level1_k * cfg.n_splits
    # level 2 clusters the leaf centroids; resampling samples at most r members per cluster
    assert lv2["n_in"] == cfg.level1_k * cfg.n_splits
    assert lv2["sample"] == min(lv2["n_in"], cfg.sample_r[0] * cfg.levels[0])
    assert lv2["runs"] == 1 + cfg.resample_steps
    assert lv2["lloyd"]["memory_resident"]["centroids"] == cfg.levels[0] * d * 4 + cfg.levels[0] * 4
    # ring all-reduce: 2 (W-1)/W x bytes / bandwidth (+ latency)
    hw = cfg.hw
    expected = 2 * 127 / 128 * (k * d * 8 + k * 8) / (hw.net_gbps * 1e9)
    assert lv1["lloyd"]["t_allreduce"] == pytest.approx(expected, rel=0.01)
    # the batched level-1 split keeps k1 * n_splits float64 slot sums on every rank (when its rows
    # are not regrouped by cluster: then there is no all-reduce, tests/test_init.py)
    lv1 = cm.compute(cm.ScalingConfig(split_regroup=False))["levels"][0]
    leaves = cfg.level1_k * cfg.n_splits
    assert lv1["split"]["allreduce_bytes"] == leaves * d * 8 + leaves * 8
    batches = lv1["split"]["batches"]  # of clusters, each holding at most split_memory_mb
    assert batches == math.ceil(leaves * (12 * d + 21) / (cfg.split_memory_mb * 2**20)) > 1
    assert lv1["split"]["memory"]["sums_f64"] * batches == pytest.approx(8 * leaves * d + 8 * leaves)
    assert lv1["split"]["fits"]
    one = cm.compute(cm.ScalingConfig(split_memory_mb=1e9, split_regroup=False))["levels"][0]["split"]
    assert one["batches"] == 1 and not one["fits"] and one["t_iter"] < lv1["split"]["t_iter"]
    # an upper level runs sharded when it has >= shard_min_rows rows per GPU (level 2: 10M / 16),
    # replicated otherwise (level 3: 500k / 8 < 65,536) or on request
    levels = cm.compute(cfg)["levels"]
    assert lv2["world"] == cfg.gpus[1] and lv2["lloyd"]["t_allreduce"] > 0 and levels[2]["world"] == 1
    replicated = cm.compute(cm.ScalingConfig(upper_replicated=True))["levels"][1]
    assert replicated["world"] == 1 and replicated["lloyd"]["t_allreduce"] == 0
    assert replicated["t_total"] > lv2["t_total"]
    # a subset for k-means++ shrinks its pass but not its number of steps
    sub = cm.compute(cm.ScalingConfig(init_max_points=1_000_000))
    assert sub["levels"][0]["kpp"]["n_init"] == 1_000_000
    assert sub["levels"][0]["t_kpp"] < lv1["t_kpp"]


def test_scaling_writes_markdown(scaling, tmp_path, capsys):
    out = tmp_path / "scaling.md"
    text = scaling.main(["--n", "1e8", "--gpus", "32,8,4,4", "--out", str(out)])
    assert out.read_text() == text
    assert "python scripts/scaling.py --n 1e8 --gpus 32,8,4,4" in text
    assert "## What would break first" in text and "| level |" in text
    assert "2 n k d" in text
    # a hand-written section below the marker survives a regeneration
    out.write_text(text + "\n" + HAND_WRITTEN + "\n## By hand\n\nkept\n")
    again = scaling.main(["--n", "1e8", "--gpus", "32,8,4,4", "--out", str(out)])
    assert out.read_text().startswith(again.rstrip("\n")) and out.read_text().endswith("## By hand\n\nkept\n")


def test_scaling_reads_its_hierarchy_from_the_cluster_config(tmp_path):
    """The script's hierarchy is configs/cluster/web_4level.yaml (with HierarchyConfig's defaults)."""
    from omegaconf import OmegaConf

    from curate.conf import HierarchyConfig

    yaml = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "cluster" / "web_4level.yaml")
    got = cm.hierarchy_settings()
    first, upper = yaml.levels[0], yaml.levels[1:]
    assert (got["level1_k"], got["n_splits"]) == (first.k, first.n_splits)
    assert got["levels"] == tuple(lv.k for lv in upper) and got["sample_r"] == tuple(lv.sample_size for lv in upper)
    assert {lv.resample_steps for lv in upper} == {got["resample_steps"]}
    assert got["n_iter"] == yaml.get("n_iter", HierarchyConfig.n_iter)
    assert got["init_max_points"] == yaml.init_max_points
    other = tmp_path / "other.yaml"  # another hierarchy: the settings follow the file
    upper = "  - {k: 50, resample_steps: 3, sample_size: 2}\n"
    other.write_text("levels:\n  - {k: 1000, n_splits: 10}\n" + upper + "n_iter: 7\n")
    assert cm.hierarchy_settings(other) == {"level1_k": 1000, "n_splits": 10, "levels": (50,), "sample_r": (2,),
                                            "resample_steps": 3, "n_iter": 7, "init_max_points": None}  # fmt: skip
    other.write_text("levels:\n  - {k: 1000}\n  - {k: 50, resample_steps: 3}\n  - {k: 5, resample_steps: 1}\n")
    with pytest.raises(ValueError, match="one resample_steps"):
        cm.hierarchy_settings(other)
    # the chunk and trial rules are the engine's own
    assert cm.chunk_rows(2**30, 500_000, 1024) == (2**30) // (4 * 500_000 + 12 * 1024 + 32)
    assert cm.kpp_trials(100_000) == 2 + int(math.log(100_000))


def test_scaling_validates():
    with pytest.raises(ValueError, match="gpus"):
        cm.compute(cm.ScalingConfig(gpus=(8, 8)))
    with pytest.raises(ValueError, match="decrease"):
        cm.compute(cm.ScalingConfig(levels=(500_000, 600_000, 10_000)))


@pytest.mark.slow
def test_bench_dedup_rows_agree_and_compare_with_the_peer(tmp_path):
    import subprocess

    out = tmp_path / "dedup.json"
    cmd = [sys.executable, str(SCRIPTS / "bench_dedup.py"), "--n", "3000", "--d", "16", "--chunk-size", "256"]
    proc = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["impl"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"ours-torch", "ours-faiss", "faiss-allpairs", "ours-torch-2ranks"}
    assert len({r["kept"] for r in rows.values()}) == 1 and rows["ours-torch"]["kept"] == 2400
    assert rows["faiss-allpairs"]["cpu_vs_peer"] == 1.0 and all(r["cpu_s"] > 0 for r in rows.values())
    assert "machine:" in proc.stdout and "2 ranks vs 1" in proc.stdout


def test_bench_dedup_peer_is_the_greedy_rule():
    from curate.dedup import deduplicate
    from research.bench import near_duplicate_pool
    from research.bench.dedup import faiss_allpairs

    x = near_duplicate_pool(400, 8, 0.3, seed=2)
    np.testing.assert_array_equal(faiss_allpairs(x, 0.95), deduplicate(x, 0.95).kept_indices)


def test_bench_peak_memory_sees_an_allocation_and_ratios_need_both_sides():
    from research.bench import PeakMemory, add_ratios

    with PeakMemory(every_s=0.01) as idle:
        pass
    with PeakMemory(every_s=0.01) as busy:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB of private pages, touched, alive at the exit
    del block
    assert busy.anon_mb - idle.anon_mb > 48 and busy.rss_mb >= busy.anon_mb
    rows = [{"impl": "ours", "t": 2.0, "c": 1.0}, {"impl": "peer", "t": 4.0}]
    add_ratios(rows, ("peer", "absent"), {"time": "t", "cpu": "c"})
    assert rows[0]["time_ratio_to_peer"] == 0.5 and rows[1]["time_ratio_to_peer"] == 1.0
    assert "cpu_ratio_to_peer" not in rows[0] and not any("absent" in key for key in rows[0])
