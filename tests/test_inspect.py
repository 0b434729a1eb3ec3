"""``python -m curate.inspect``: per-level cluster sizes, sample and label shares, the PNG."""

from __future__ import annotations

import re

import numpy as np
import pytest

from curate.hierarchy import HierarchicalKMeans
from curate.inspect import InspectConfig, inspect, log2_histogram


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small 2-level hierarchy of 4 unequal blobs, a balanced sample of it and the blob labels."""
    rng = np.random.default_rng(0)
    sizes = [600, 200, 60, 20]
    centers = np.array([[0, 0], [20, 0], [0, 20], [20, 20]])
    x = np.concatenate([c + rng.normal(scale=0.5, size=(s, 2)) for c, s in zip(centers, sizes)]).astype(np.float32)
    labels = np.repeat(np.arange(4), sizes)
    folder = tmp_path_factory.mktemp("inspect")
    hkm = HierarchicalKMeans([{"k": 40}, {"k": 4}], n_iter=20, seed=0).fit(x)
    hkm.save(folder / "cluster")
    (folder / "sample").mkdir()
    indices = hkm.sample(80, seed=0)
    np.save(folder / "sample" / "indices.npy", indices)
    np.save(folder / "labels.npy", labels)
    return folder, hkm, indices, labels


def test_log2_histogram():
    assert log2_histogram(np.array([0, 1, 1, 2, 3, 4, 9])) == {"bin_edges": [1, 2, 4, 8, 16], "counts": [2, 2, 1, 1]}
    assert log2_histogram(np.array([0])) == {"bin_edges": [], "counts": []}


def test_inspect_prints_levels_shares_and_labels(saved, capsys):
    folder, hkm, indices, labels = saved
    report = inspect(
        InspectConfig(
            cluster=str(folder / "cluster"),
            sample=str(folder / "sample"),
            labels=str(folder / "labels.npy"),
            out=str(folder / "inspect.png"),
        )
    )
    out = capsys.readouterr().out
    sizes1 = hkm.levels_[0].sizes
    assert f"level 1: 40 clusters of 880 inputs; empty 0, singletons {int((sizes1 == 1).sum())}" in out
    assert "level 2: 4 clusters of 40 inputs" in out
    assert report["levels"][0]["hist_inputs"]["counts"] == log2_histogram(sizes1)["counts"]
    assert sum(report["levels"][1]["hist_items"]["counts"]) == 4
    # 4 well separated blobs -> the 4 top-level clusters are the blobs; 80 = 4 x 20 balanced
    shares = report["shares"]
    np.testing.assert_allclose(np.sort(shares["pool_share"]), np.sort(np.array([600, 200, 60, 20]) / 880))
    np.testing.assert_allclose(shares["sample_share"], 0.25)
    assert shares["sample_balance"]["normalized_entropy"] == pytest.approx(1.0)
    np.testing.assert_allclose(report["labels"]["sample_share"], 0.25)
    assert report["labels"]["gain"][3] == pytest.approx(0.25 / (20 / 880))
    assert "0.6818" in out and "0.2500" in out and "11.00" in out
    assert (folder / "inspect.png").read_bytes()[:4] == b"\x89PNG"


def test_inspect_without_sample_and_errors(saved, capsys, tmp_path, cli):
    folder, *_ = saved
    report = inspect(InspectConfig(cluster=str(folder / "cluster"), labels=str(folder / "labels.npy")))
    assert report["shares"] is None and "sample_share" not in report["labels"]
    assert "level 2: 4 clusters" in capsys.readouterr().out
    # the earlier form (a bare folder, --flags) still works, and says once that it is deprecated
    captured = cli("-m", "curate.inspect", str(folder / "cluster"), "--labels", str(folder / "labels.npy"))
    assert "level 2: 4 clusters" in captured.stdout and "label" in captured.stdout
    assert captured.stderr.count("deprecated") == 1 and f"cluster={folder / 'cluster'} labels=" in captured.stderr
    np.save(tmp_path / "short.npy", np.zeros(5, dtype=np.int64))
    cases = [
        ([f"cluster={folder / 'cluster'}", f"sample={tmp_path}"], "indices.npy"),
        ([f"cluster={folder / 'cluster'}", f"labels={tmp_path / 'short.npy'}"], r"expected shape \(880,\)"),
        ([f"cluster={tmp_path}"], "manifest.json"),
        ([f"cluster={folder / 'cluster'}", "sampel=x"], "sampel"),  # a typo is refused, naming the key
        ([f"sample={folder / 'sample'}"], "cluster= is required"),
    ]
    for argv, message in cases:
        proc = cli("-m", "curate.inspect", *argv, check=False)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert re.search(message, lines[0]), lines[0]


@pytest.mark.slow
def test_inspect_runs_as_a_module(saved, cli, tmp_path):
    folder, *_ = saved
    proc = cli("-m", "curate.inspect", f"cluster={folder / 'cluster'}")
    assert "level 1: 40 clusters" in proc.stdout
    assert "key=value" in cli("-m", "curate.inspect", "--help").stdout
    # a Hydra app like every stage: --cfg job, -m (one run per value; no .hydra/ written anywhere)
    job = cli("-m", "curate.inspect", f"cluster={folder / 'cluster'}", "labels=x.npy", "--cfg", "job").stdout
    assert f"cluster: {folder / 'cluster'}" in job and "labels: x.npy" in job
    values = [f"cluster={folder / 'cluster'}", f"labels=null,{folder / 'labels.npy'}"]
    sweep = cli("-m", "curate.inspect", "-m", *values, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert sweep.stdout.count("level 1: 40 clusters") == 2
    assert [p.name for p in (tmp_path / "sweep").rglob("*") if p.is_file()] == ["multirun.yaml"]
