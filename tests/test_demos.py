"""The real-data demo scripts' core functions on tiny synthetic data with a planted long tail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curate.io.store import write_store
from research.compare import CurationSettings

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def wordnet_demo(load_script):
    return load_script("demo_text_wordnet")


@pytest.fixture(scope="module")
def fmnist_demo(load_script):
    return load_script("demo_images_fmnist")


def long_tail(n_labels: int = 8, head: int = 800, tail: int = 20, dim: int = 16, seed: int = 0):
    """~2000 items: well separated Gaussian blobs whose sizes decay geometrically from ``head`` to ``tail``."""
    rng = np.random.default_rng(seed)
    sizes = np.round(head * (tail / head) ** (np.arange(n_labels) / (n_labels - 1))).astype(int)
    labels = np.repeat(np.arange(n_labels), sizes)
    centers = rng.normal(scale=6.0, size=(n_labels, dim))
    x = (centers[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32)
    perm = rng.permutation(len(labels))
    return x[perm], labels[perm].astype(np.int64)


SMALL = CurationSettings(
    levels=[
        {"k": 100, "resample_steps": 0, "sample_size": 1},
        {"k": 20, "resample_steps": 2, "sample_size": 3},
        {"k": 8, "resample_steps": 2, "sample_size": 2},
    ],
    n_iter=10,
    ref_k=40,
    ref_n_iter=10,
)


def test_parse_levels() -> None:
    from research.study import parse_levels

    assert parse_levels("100:0:1, 10:10:5") == [
        {"k": 100, "resample_steps": 0, "sample_size": 1},
        {"k": 10, "resample_steps": 10, "sample_size": 5},
    ]
    with pytest.raises(ValueError, match="--levels"):
        parse_levels("100:0")


@pytest.mark.slow
def test_wordnet_demo_bad_levels_is_a_usage_error(cli, tmp_path: Path) -> None:
    proc = cli(SCRIPTS / "demo_text_wordnet.py", "--out", tmp_path / "o", "--levels", "100:0", check=False)
    assert proc.returncode == 2 and "error: --levels: '100:0' is not k:resample_steps:sample_size" in proc.stderr


def test_wordnet_demo_core_rare_labels_gain(wordnet_demo, tmp_path: Path) -> None:
    x, labels = long_tail()
    names = [f"topic{i}" for i in range(labels.max() + 1)]
    res = wordnet_demo.run_demo(x, labels, names, SMALL, 0.2, [0, 1], 3, tmp_path)
    s = res["summary"]
    assert res["budget"] == round(0.2 * len(x))
    # planted tail of well separated modes: the curated sample holds the rare labels far above their pool share
    assert s["curated"]["rarest_share"]["mean"] > 2 * s["random"]["rarest_share"]["mean"]
    assert s["curated"]["label_entropy"]["mean"] > s["random"]["label_entropy"]["mean"]
    assert s["curated"]["sparsest_share"]["mean"] > s["random"]["sparsest_share"]["mean"]
    assert s["curated"]["ref_smallest_share"]["mean"] > s["random"]["ref_smallest_share"]["mean"]
    assert len(s["curated"]["rarest_share"]["values"]) == 2
    assert Path(res["figure"]).is_file() and "| share of the 3 rarest topics |" in res["table"]
    from research.study import label_notes

    notes = label_notes(res, "topic")
    assert "The 3 rarest topics" in notes
    rarest = [line for line in notes.split("The 3 rarest topics:")[1].split("Largest")[0].splitlines() if "|" in line]
    assert [line.split(" | ")[0] for line in rarest[2:]] == [f"| {names[c]}" for c in res["pool"]["rarest_labels"]]
    for seed in (0, 1):
        assert (tmp_path / f"cluster_seed{seed}" / "manifest.json").is_file()
        assert len(np.load(tmp_path / f"sample_seed{seed}" / "indices.npy")) == res["budget"]
    # a second run reuses the saved hierarchies and the reference clustering and gives the same numbers
    again = wordnet_demo.run_demo(x, labels, names, SMALL, 0.2, [0, 1], 3, tmp_path)
    assert all(r["reused"] for r in again["runs"])
    assert again["summary"]["curated"]["rarest_share"] == s["curated"]["rarest_share"]


@pytest.mark.slow
def test_wordnet_demo_main_on_a_tiny_store(wordnet_demo, tmp_path: Path) -> None:
    x, labels = long_tail(n_labels=6, head=300, tail=15, seed=1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"n{i:08d}" for i in range(len(x))]
    write_store(tmp_path / "store", x, ids=ids, labels=labels, label_names=list("abcdef"), normalised=True)
    argv = ["--store", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--seeds", "0"]
    argv += ["--levels", "60:0:1,12:2:2,5:2:2", "--n-iter", "5", "--ref-k", "20", "--n-rarest", "2"]
    res = wordnet_demo.main(argv)
    assert res["embed_seconds"] == 0.0  # the store existed: no embedding run
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["summary"]["curated"]["rarest_share"]["values"] == res["summary"]["curated"]["rarest_share"]["values"]
    assert "| metric | pool |" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "wordnet_topics.png").stat().st_size < 300_000
    cluster_manifest = json.loads((tmp_path / "out" / "cluster_seed0" / "manifest.json").read_text())
    # fitted by the cluster stage: the store and its identity recorded as the stage records them
    assert cluster_manifest["input"]["kind"] == "store"
    assert cluster_manifest["input"]["path"] == str((tmp_path / "store").resolve())
    assert cluster_manifest["input"]["identity"]["path"] == str((tmp_path / "store").resolve())


def test_fmnist_demo_core(fmnist_demo, tmp_path: Path) -> None:
    x, labels = long_tail(n_labels=10, head=600, tail=12, seed=2)
    rows = np.arange(len(x), dtype=np.int64) * 3  # stand-in Fashion-MNIST train indices
    store = fmnist_demo.write_pool_store(tmp_path / "ssl" / "store", x, rows, labels, "synthetic")
    assert fmnist_demo.write_pool_store(store, x, rows, labels, "synthetic") == store  # identical: reused
    res = fmnist_demo.run_encoder("ssl", x, labels, SMALL, 300, [0], tmp_path / "ssl", store)
    s = res["summary"]
    assert s["curated"]["rarest_share"]["mean"] > 2 * s["random"]["rarest_share"]["mean"]
    assert res["diagnostics"]["knn20_agreement"] > 0.9  # separated blobs: neighbours share the label
    assert res["diagnostics"]["rare_radius_percentile"] is not None
    assert {g["label"] for g in res["label_gains"]} == set(range(10))
    assert 0.0 < res["diagnostics"]["top_level_purity"] <= 1.0
    res["model"] = "synthetic"
    from research.study import label_count_table, plot_studies

    assert res["label_names"] == list(fmnist_demo.CLASSES)
    png = plot_studies({"ssl": res, "pixels": res}, res["label_names"], tmp_path / "fig.png", "images", "classes")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = label_count_table({"ssl": res}, res["label_names"]).splitlines()
    assert len(table) == 5  # header, rule, pool, one random and one curated row
    pool = res["pool"]["label_counts"]
    assert table[2] == "| pool | " + " | ".join(str(c) for c in sorted(pool, reverse=True)) + " |"
    curated = np.mean([r["curated"]["label_counts"] for r in res["runs"]], axis=0)
    order = np.argsort(-np.asarray(pool), kind="stable")
    assert table[4] == "| curated (ssl) | " + " | ".join(f"{curated[i]:.0f}" for i in order) + " |"


def test_compare_fits_through_the_cluster_stage(tmp_path: Path) -> None:
    """research.compare has no fitting of its own: its hierarchy is the cluster stage's (the same
    assignments as the engine fitted directly), reused when asked again, refused for other settings."""
    from curate.core.errors import IdentityError
    from curate.hierarchy import HierarchicalKMeans
    from research.compare import embeddings_file, fit_hierarchy

    x, _ = long_tail(n_labels=4, head=200, tail=20, dim=8, seed=3)
    settings = CurationSettings(levels=[{"k": 30, "resample_steps": 0, "sample_size": 1}, {"k": 5}], n_iter=5)
    path = embeddings_file(x, tmp_path)
    assert embeddings_file(x, tmp_path) == path  # the same rows: kept
    model, _, reused = fit_hierarchy(path, settings, 3, tmp_path / "c")
    direct = HierarchicalKMeans(settings.levels, n_iter=5, seed=3, distance="cosine").fit(x)
    assert not reused and json.loads((tmp_path / "c" / "manifest.json").read_text())["stage_config"]["seed"] == 3
    for ours, engine in zip(model.levels_, direct.levels_, strict=True):
        np.testing.assert_array_equal(ours.assign, engine.assign)
    assert fit_hierarchy(path, settings, 3, tmp_path / "c")[2]  # finished, same settings and input: reused
    with pytest.raises(IdentityError, match="other settings"):
        fit_hierarchy(path, CurationSettings(levels=settings.levels, n_iter=6), 3, tmp_path / "c")
    with pytest.raises(ValueError, match="holds other embeddings"):
        embeddings_file(x[:-1], tmp_path)
