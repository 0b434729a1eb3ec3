"""scripts/reproduce_curation_ssl.py: splits, balance numbers, and the whole pipeline on a tiny configuration."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from curate.datasets.fashion_mnist import load_fashion_mnist

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_curation_ssl.py"

TINY = {
    "pool_size": 300,
    "seed_per_class": 5,
    "eval_train_per_class": 10,
    "eval_test_per_class": 10,
    "budget": 100,
    "levels": [[30, 2, 3], [6, 2, 2]],
    "kmeans_iter": 10,
    "ref_clusters": 10,
    "depth": 1,
    "embed_dim": 32,
    "num_heads": 2,
    "n_prototypes": 64,
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "batch_size": 16,
    "iterations": 5,
    "base_iterations": 5,
    "seeds": [0],
    "linear_epochs": 3,
    "linear_lrs": [1e-2],
}


@pytest.fixture(scope="module")
def mod():
    spec = importlib.util.spec_from_file_location("reproduce_curation_ssl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce_curation_ssl"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(mod, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("curation_ssl")
    results = mod.run_experiment(mod.make_settings("full", TINY), out)
    return out, results


def test_balance_stats_on_a_hand_made_example(mod):
    pool = np.array([0] * 6 + [1] * 3 + [2] * 1)  # tail = the rarest class, 2 (10% of the pool)
    sample = np.array([0, 0, 1, 2])
    b = mod.balance_stats(sample, pool, tail_classes=[2], num_classes=3, ref_assign=np.array([0, 0, 1, 1]), ref_k=4)
    assert b["n"] == 4
    assert b["class_counts"] == [2, 1, 1]
    np.testing.assert_allclose(b["class_shares"], [0.5, 0.25, 0.25])
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert b["entropy"] == pytest.approx(h)
    assert b["normalized_entropy"] == pytest.approx(h / math.log(3))
    assert b["tail_share"] == pytest.approx(0.25)
    assert b["tail_gain"] == pytest.approx(2.5)
    assert b["tail_counts"] == [1]
    assert b["ref_touched"] == 2 and b["ref_normalized_entropy"] == pytest.approx(math.log(2) / math.log(4))
    # a perfectly balanced set
    assert mod.balance_stats(np.array([0, 1, 2]), pool, [2], 3)["normalized_entropy"] == pytest.approx(1.0)


def test_cluster_purity_and_balanced_subset(mod):
    assert mod.cluster_purity(np.array([0, 0, 1, 1]), np.array([3, 3, 1, 2]), k=2, num_classes=4) == 0.75
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    rows = mod.balanced_subset(labels, np.arange(20), 4, np.random.default_rng(0))
    assert np.bincount(labels[rows]).tolist() == [4, 3, 4]
    assert np.all(np.diff(rows) > 0)


def test_splits_on_fashion_mnist(mod):
    s = mod.make_settings("full")
    _, train_labels = load_fashion_mnist("train")
    _, test_labels = load_fashion_mnist("test")
    sp = mod.make_splits(s, train_labels, test_labels)
    assert np.bincount(train_labels[sp["seed_set"]]).tolist() == [200] * 10
    assert np.intersect1d(sp["seed_set"], sp["pool"]).size == 0
    assert np.intersect1d(sp["seed_set"], sp["eval_train"]).size == 0
    counts = np.sort(np.bincount(train_labels[sp["pool"]], minlength=10))[::-1]
    assert counts[0] == 5800 and counts[-1] == 60  # 6000 -> 60 geometric, head capped by the seed set
    assert np.all(np.diff(counts) < 0)
    assert np.bincount(train_labels[sp["eval_train"]]).tolist() == [500] * 10
    assert len(sp["test"]) == 10000


def test_settings_validation(mod):
    with pytest.raises(ValueError, match="unknown setting"):
        mod.make_settings("full", {"budjet": 10})
    with pytest.raises(ValueError, match="distance"):
        mod.make_settings("full", {"distance": "manhattan"})
    for preset in ("full", "quick", "gpu"):
        mod.validate_settings(mod.make_settings(preset))
    assert mod._parse_overrides(["budget=10", "levels=[[3,0,1]]", "distance=l2"]) == {
        "budget": 10,
        "levels": [[3, 0, 1]],
        "distance": "l2",
    }


def test_tiny_pipeline_results_and_training_sets(mod, tiny_run):
    out, results = tiny_run
    on_disk = json.loads((out / "results.json").read_text())
    assert (out / "results.png").stat().st_size > 0
    assert "| curated |" in (out / "results.md").read_text()
    for key in ("settings", "hardware", "splits", "base", "curation", "balance", "runs", "summary", "wall_seconds"):
        assert key in on_disk
    assert len(on_disk["tail_classes"]) == 3
    assert {(r["set"], r["seed"]) for r in on_disk["runs"]} == {("curated", 0), ("random", 0), ("full", 0)}
    for name in ("curated", "random", "full"):
        entry = on_disk["summary"][name]
        for metric in ("knn_top1", "knn_tail", "linear_top1", "linear_tail"):
            assert 0.0 <= entry[metric]["mean"] <= 1.0 and entry[metric]["std"] == 0.0
        assert len(entry["knn_per_class"]) == 10
        assert set(on_disk["balance"][name]["mean"]) >= {"normalized_entropy", "tail_share", "class_counts_mean"}

    seed_set = np.load(out / "splits" / "seed_set.npy")
    pool = np.load(out / "splits" / "pool.npy")
    assert len(pool) == 300 and on_disk["splits"]["seed_pool_disjoint"]
    sizes = {"curated": 100, "random": 100, "full": 300}
    _, train_labels = load_fashion_mnist("train")
    for name, size in sizes.items():
        rows = np.load(out / "runs" / f"{name}_seed0" / "train_rows.npy")
        assert len(rows) == size and len(np.unique(rows)) == size
        assert np.isin(rows, pool).all()
        assert np.intersect1d(rows, seed_set).size == 0
        manifest = json.loads((out / "runs" / f"{name}_seed0" / "manifest.json").read_text())
        assert manifest["n_train"] == size and manifest["iterations"] == 5
        # the reported balance is the balance of the rows actually trained on
        assert (
            on_disk["balance"][name]["per_seed"][0]["class_counts"]
            == np.bincount(train_labels[rows], minlength=10).tolist()
        )


def test_rerun_reuses_finished_runs_and_refuses_other_settings(mod, tiny_run):
    out, results = tiny_run
    again = mod.run_experiment(mod.make_settings("full", TINY), out)
    assert all(r["train"]["reused"] for r in again["runs"])
    assert again["summary"]["curated"]["knn_top1"] == results["summary"]["curated"]["knn_top1"]
    with pytest.raises(ValueError, match="budget"):
        mod.run_experiment(mod.make_settings("full", {**TINY, "budget": 50}), out)


def test_label_balanced_subset_is_the_label_water_fill(mod):
    labels = np.array([0] * 50 + [1] * 5 + [2] * 20)
    idx = mod.label_balanced_subset(labels, 30, seed=0)
    assert np.bincount(labels[idx]).tolist() == [12, 5, 13] or np.bincount(labels[idx]).tolist() == [13, 5, 12]
    assert len(np.unique(idx)) == 30


def test_investigate_on_the_tiny_run(mod, tiny_run):
    out, _ = tiny_run
    inv = mod.investigate(out)
    assert {c["set"] for c in inv["controls"]} == {"oracle_balanced", "no_tail"}
    no_tail = next(c for c in inv["controls"] if c["set"] == "no_tail")
    assert no_tail["balance"]["tail_share"] == 0.0 and no_tail["n_train"] == 100
    rows = inv["balance_study"]["rows"]
    assert {r["embedding"] for r in rows} >= {"random", "PCA-128 of pixels"}
    assert {r["n_levels"] for r in rows if r["embedding"] != "random"} == {1, 2}
    assert "| random |" in (out / "investigation.md").read_text()
