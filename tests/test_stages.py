"""The cluster and sample stages as a user runs them: configs, errors, outputs, kill + resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import compose_config
from hydra.errors import ConfigCompositionException

import curate.cluster  # noqa: F401  (registers the schemas)
from curate.conf import validate_cluster, validate_sample


def test_sample_config_composes():
    cfg = compose_config("sample", ["targets=[10,0.5]", "strategy=closest"])
    validate_sample(cfg)
    assert cfg.cluster_dir == "outputs/cluster/toy_2d"


@pytest.mark.parametrize(
    "config, override",
    [
        ("cluster", "cluster.n_iterr=5"),
        ("cluster", "seeed=1"),
        ("sample", "strategie=random"),
        ("cluster", "cluster.distance=manhattan"),  # choices are Enums: refused when composing
        ("cluster", "input.toy=moons"),
        ("sample", "strategy=closer"),
    ],
)
def test_misspelled_key_is_an_error(config, override):
    with pytest.raises(ConfigCompositionException, match=override.split("=")[0].split(".")[-1]):
        compose_config(config, [override])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["cluster.levels=[{k:10},{k:20}]"], r"cluster.levels\[1\] \(level 2\): k=20 must be smaller"),
        (["input.path=/x.npy", "input.toy=toy_2d"], "input.path .* or input.toy, not both"),
    ],
)
def test_cluster_validation_names_the_field(overrides, match):
    cfg = compose_config("cluster", overrides)
    with pytest.raises(ValueError, match=match):
        validate_cluster(cfg)


def test_stage_errors_are_one_line_not_tracebacks(tmp_path, cli):
    proc = cli(
        "-m", "curate.cluster", "input.toy=null", f"input.path={tmp_path}/nope.npy", f"out_dir={tmp_path}", check=False
    )
    assert proc.returncode == 2
    assert "error: input not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("-m", "curate.sample", "name=missing", f"out_dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "manifest.json not found" in proc.stderr


def test_cluster_then_sample_end_to_end(tmp_path, toy, cli):
    out = tmp_path / "out"
    common = [f"out_dir={out}", "name=e2e"]
    cli(
        "-m",
        "curate.cluster",
        "input.toy=null",
        f"input.path={toy}",
        "cluster=kmeans_flat",
        "cluster.levels=[{k:200},{k:40,resample_steps:2,sample_size:2}]",
        "cluster.n_iter=10",
        *common,
    )
    cdir = out / "cluster" / "e2e"
    manifest = json.loads((cdir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and [lv["k"] for lv in manifest["levels"]] == [200, 40]
    assert not (cdir / "checkpoints").exists()
    assert len((cdir / "metrics.jsonl").read_text().splitlines()) == 2
    iterations = [json.loads(line) for line in (cdir / "kmeans.jsonl").read_text().splitlines()]
    assert {(r["level"], r["run"]) for r in iterations} == {(1, 0), (2, 0), (2, 1), (2, 2)}
    assert [r["index"] for r in iterations] == list(range(len(iterations)))
    cli("-m", "curate.sample", "targets=[300,0.5]", "strategy=closest", *common)
    sdir = out / "sample" / "e2e"
    for target, size in ((300, 300), (0.5, 1000)):  # budget folders are named after what was asked
        idx = np.load(sdir / f"target_{target}" / "indices.npy")
        assert len(idx) == size and len(np.unique(idx)) == size
        stats = json.loads((sdir / f"target_{target}" / "stats.json").read_text())
        assert stats["returned"] == size and stats["shortfall"] == 0
        assert (sdir / f"target_{target}" / "sample.png").stat().st_size > 10_000
    small = json.loads((sdir / "target_300" / "stats.json").read_text())["labels"]
    # the rare uniform background gains share in the curated sample, not in the random one
    assert small["curated"]["share"][2] > 2 * small["random"]["share"][2]
    # re-running a finished clustering is a no-op; other settings into the same folder are refused
    assert (
        "nothing to do"
        in cli(
            "-m",
            "curate.cluster",
            "input.toy=null",
            f"input.path={toy}",
            "cluster=kmeans_flat",
            "cluster.levels=[{k:200},{k:40,resample_steps:2,sample_size:2}]",
            "cluster.n_iter=10",
            *common,
        ).stderr
    )
    proc = cli(
        "-m", "curate.cluster", "input.toy=null", f"input.path={toy}", "cluster=kmeans_flat", *common, check=False
    )
    assert proc.returncode == 2 and "other settings" in proc.stderr


def test_budget_larger_than_pool_is_reported(tmp_path, toy, cli):
    common = [f"out_dir={tmp_path}", "name=big"]
    cli(
        "-m",
        "curate.cluster",
        "input.toy=null",
        f"input.path={toy}",
        "cluster=kmeans_flat",
        "cluster.levels=[{k:20}]",
        "cluster.n_iter=3",
        *common,
    )
    proc = cli("-m", "curate.sample", "targets=[5000]", "plot=false", *common)
    stats = json.loads((tmp_path / "sample" / "big" / "stats.json").read_text())
    assert stats["returned"] == 2000 and stats["shortfall"] == 3000
    assert "smaller than" in proc.stderr


def test_killed_cluster_run_resumes_to_identical_files(tmp_path, toy, cli):
    args = [
        "-m",
        "curate.cluster",
        "input.toy=null",
        f"input.path={toy}",
        "cluster=kmeans_flat",
        "cluster.levels=[{k:400,resample_steps:2,sample_size:2},{k:100,resample_steps:6,sample_size:2}]",
        "cluster.n_iter=30",
        "checkpoint_every=2",
    ]
    cli(*args, f"out_dir={tmp_path}/ref", "name=r")
    ckpt = tmp_path / "killed" / "cluster" / "r" / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, *args, f"out_dir={tmp_path}/killed", "name=r"],
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (ckpt / "level1" / "done.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_early = not (tmp_path / "killed" / "cluster" / "r" / "manifest.json").exists()
    cli(*args, f"out_dir={tmp_path}/killed", "name=r")
    for name in ("centroids", "assign", "dist", "offsets", "members"):
        for level in ("level1", "level2"):
            a = (tmp_path / "ref" / "cluster" / "r" / level / f"{name}.npy").read_bytes()
            b = (tmp_path / "killed" / "cluster" / "r" / level / f"{name}.npy").read_bytes()
            assert a == b, f"{level}/{name}.npy differs after resume"
    assert killed_early, "the run finished before it could be killed; the test did not exercise resume"
