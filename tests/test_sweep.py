"""Hydra sweeps: override-named run folders, launcher configs, re-launch skips, ablation configs, plots."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config

import curate.cluster  # noqa: F401  (registers the schemas)
import curate.sample  # noqa: F401
from curate.conf import validate_cluster, validate_sample
from curate.submit import StageJob

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}


compose_cfg = functools.partial(compose_config, hydra=True)


@pytest.mark.parametrize("launcher", ["local", "submitit_local", "submitit_slurm"])
def test_launchers_set_hydra_launcher(launcher):
    cfg = compose_cfg("cluster", [f"launcher={launcher}"])
    target = cfg.hydra.launcher._target_
    expected = {"local": "BasicLauncher", "submitit_local": "LocalLauncher", "submitit_slurm": "SlurmLauncher"}
    assert target.endswith(expected[launcher])
    if launcher == "submitit_slurm":
        assert cfg.hydra.launcher.partition is None and cfg.hydra.launcher.account is None  # nothing site-specific
        assert cfg.hydra.launcher.max_num_timeout > 0 and cfg.hydra.launcher.additional_parameters.requeue
    assert compose_cfg("sample", [f"launcher={launcher}"]).hydra.launcher._target_ == target


def test_experiment_configs_compose():
    cfg = compose_cfg("cluster", ["+experiment=ablation_toy"])
    validate_cluster(cfg)
    params = cfg.hydra.sweeper.params
    assert params.cluster.split(",") == [f"toy_levels{t}" for t in (1, 2, 3, 4)]
    assert params["cluster.resample_steps_override"] == "0,10,100"
    for preset in params.cluster.split(","):
        for steps in (0, 10, 100):
            sub = compose_cfg("cluster", [f"cluster={preset}", f"cluster.resample_steps_override={steps}"])
            validate_cluster(sub)
            assert sub.cluster.levels[-1].k == 300
    cfg = compose_cfg("sample", ["+experiment=ablation_toy_sample"])
    validate_sample(cfg)
    assert set(cfg.hydra.sweeper.params.method.split(",")) == {"flat", "hierarchical"}
    cfg = compose_cfg("cluster", ["+experiment=web_4level", "input.path=/data/emb"])
    validate_cluster(cfg)
    assert len(cfg.submit.resources) == len(cfg.cluster.levels) == 4
    gpus = [r.nodes * r.gpus_per_node for r in cfg.submit.resources]
    assert gpus == [128, 16, 8, 8]


def test_resample_steps_override_applies_to_every_level():
    from curate.conf import level_specs

    cfg = compose_cfg("cluster", ["cluster=toy_levels2", "cluster.resample_steps_override=0"])
    assert [spec.resample_steps for spec in level_specs(cfg)] == [0, 0]
    cfg = compose_cfg("cluster", ["stop_after_level=5"])
    with pytest.raises(ValueError, match="stop_after_level"):
        validate_cluster(cfg)


@pytest.mark.slow
def test_submitit_local_sweep_names_runs_by_overrides_and_relaunch_skips(tmp_path, load_script):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(500, 2)).astype(np.float32))
    np.save(tmp_path / "labels.npy", (rng.random(500) < 0.1).astype(np.int64))
    args = [
        "seed=0,1",
        "input.toy=null",
        f"input.path={tmp_path}/x.npy",
        "cluster=kmeans_flat",
        "cluster.levels=[{k:20}]",
        "cluster.n_iter=3",
        f"out_dir={tmp_path}/out",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "curate.cluster", "-m", "launcher=submitit_local", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "out" / "multirun" / "cluster" / "kmeans_flat"
    runs = sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".") and p.is_dir())
    prefix = "cluster.levels=[{k:20}],cluster.n_iter=3,cluster=kmeans_flat"
    assert runs == [f"{prefix},seed=0", f"{prefix},seed=1"]  # no timestamp, no out_dir / launcher / input.path
    assert len(list((sweep / ".submitit").iterdir())) >= 2
    stamps = {}
    for run in runs:
        manifest = json.loads((sweep / run / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["config"]["seed"] == int(run[-1])
        metrics = json.loads((sweep / run / "metrics.json").read_text())
        assert metrics["k"] == [20] and 0 < metrics["kl_top"] < 3
        stamps[run] = (sweep / run / "manifest.json").stat().st_mtime_ns
    # re-launching (here with the basic launcher: the launcher is not part of the folder name) skips both
    StageJob("curate.cluster", ["-m", *args], sweep)()
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".") and p.is_dir()) == runs
    assert {run: (sweep / run / "manifest.json").stat().st_mtime_ns for run in runs} == stamps

    # a sampling sweep over one of these hierarchies (quoted: the folder name holds "=" and "[{"), then the table
    cluster_dir = sweep / runs[0]
    StageJob(
        "curate.sample",
        ["-m", "method=flat,hierarchical", f"cluster_dir='{cluster_dir}'", "targets=[100]", f"out_dir={tmp_path}/out"],
        tmp_path,
    )()
    sample_sweep = tmp_path / "out" / "multirun" / "sample" / "toy_2d"
    sample_runs = ["method=flat,targets=[100]", "method=hierarchical,targets=[100]"]
    assert sorted(p.name for p in sample_sweep.iterdir() if p.is_dir() and p.name.startswith("m")) == sample_runs
    metrics = json.loads((sample_sweep / sample_runs[1] / "metrics.json").read_text())
    assert metrics["returned"] == 100 and 0 < metrics["normalized_entropy_finest"] <= 1
    assert {"normalized_entropy_top", "kl_sample", "rarest_share", "rarest_pool_share"} <= set(metrics)
    assert len((sample_sweep / sample_runs[0] / "metrics.jsonl").read_text().splitlines()) == 1

    plot_sweep = load_script("plot_sweep")
    table = plot_sweep.main([str(sweep), "--out", str(tmp_path / "fig" / "sweep.png")])
    lines = table.splitlines()
    assert lines[0].startswith("| seed |") and "kl_top" in lines[0] and len(lines) == 4
    assert (tmp_path / "fig" / "sweep.png").stat().st_size > 5_000
    assert (tmp_path / "fig" / "sweep.md").read_text() == table
    table = plot_sweep.main([str(sample_sweep), "--out", str(tmp_path / "fig" / "sample.png")])
    assert table.splitlines()[0].startswith("| method |") and "normalized_entropy_top" in table


def test_plot_sweep_reports_an_empty_folder(tmp_path, load_script):
    plot_sweep = load_script("plot_sweep")
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        plot_sweep.main([str(tmp_path)])


def test_plot_sweep_mean_over_seeds(tmp_path, load_script):
    plot_sweep = load_script("plot_sweep")
    for levels, seed, kl in [(1, 0, 0.30), (1, 1, 0.40), (2, 0, 0.10), (2, 1, 0.12), (2, 2, 0.14)]:
        run = tmp_path / f"cluster=l{levels},seed={seed}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- cluster=l{levels}\n- seed={seed}\n")
        (run / "metrics.json").write_text(json.dumps({"kl_top": kl, "k": [300]}))
    table = plot_sweep.main([str(tmp_path), "--mean-over", "seed", "--out", str(tmp_path / "m.png")])
    lines = table.splitlines()
    assert lines[0] == "| cluster | kl_top | k | runs |"
    assert lines[2] == "| l1 | 0.35 ± 0.05 | 300 | 2 |"
    assert lines[3].startswith("| l2 | 0.12 ± 0.016 | 300 | 3 |")
    assert (tmp_path / "m.png").stat().st_size > 5_000
    with pytest.raises(SystemExit, match="not a swept key"):
        plot_sweep.main([str(tmp_path), "--mean-over", "init"])


def test_plot_sweep_figure_reads_by_factor_with_direction_and_reference(tmp_path, load_script, monkeypatch):
    from curate.analysis.metrics import kl_to_uniform
    from curate.data.datasets.toy import write_toy
    from research import sweep

    plot_sweep = load_script("plot_sweep")
    write_toy("toy_2d", tmp_path / "o" / "data" / "toy_2d")
    for levels, init, kl in [(1, "random", 0.7), (3, "random", 0.3), (3, "k-means++", 0.25)]:
        run = tmp_path / "sweep" / f"cluster=toy_levels{levels},cluster.init={init}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- cluster=toy_levels{levels}\n- cluster.init={init}\n")
        (run / ".hydra" / "config.yaml").write_text(f"out_dir: {tmp_path / 'o'}\ninput:\n  toy: toy_2d\n  path: null\n")
        (run / "metrics.json").write_text(json.dumps({"kl_top": kl}))
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read it
    plot_sweep.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "sweep.png")])
    ax = figures[0].axes[0]
    assert ax.get_title() == "kl_top (lower is better)"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["levels 1 · init random", "levels 3 · init k-means++", "levels 3 · init random"]
    raw = kl_to_uniform(np.load(tmp_path / "o" / "data" / "toy_2d" / "x.npy").astype(np.float64))
    assert 0.8 < raw < 1.1  # the toy's data row (~0.95)
    lines = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert lines == [pytest.approx(raw)]
    assert sweep.reference("rarest_share", [{"rarest_pool_share": 0.02}], None) == (
        0.02,
        "pool share (random sample)",
    )
    assert sweep.factor_label("cluster.resample_steps_override", "10") == "steps 10"
