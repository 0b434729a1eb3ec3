"""The curation-SSL experiment: Fashion-MNIST splits as image folders, and the tables / figure that
scripts/reproduce_curation_ssl.py writes from pipeline runs."""

import json

import numpy as np
import pytest
from test_pipeline import pipeline_cfg

from curate.data.datasets.fashion_mnist import load_fashion_mnist
from curate.data.datasets.fmnist_folders import balanced_subset, curation_splits
from curate.pipeline import run_pipeline


def test_balanced_subset():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    rows = balanced_subset(labels, np.arange(20), 4, np.random.default_rng(0))
    assert np.bincount(labels[rows]).tolist() == [4, 3, 4]
    assert np.all(np.diff(rows) > 0)


def test_splits_on_fashion_mnist():
    _, train_labels = load_fashion_mnist("train")
    _, test_labels = load_fashion_mnist("test")
    sp = curation_splits(train_labels, test_labels)
    assert np.bincount(train_labels[sp["seed"]]).tolist() == [200] * 10
    assert np.intersect1d(sp["seed"], sp["pool"]).size == 0
    assert np.intersect1d(sp["seed"], sp["train"]).size == 0
    counts = np.sort(np.bincount(train_labels[sp["pool"]], minlength=10))[::-1]
    assert counts[0] == 5800 and counts[-1] == 60  # 6000 -> 60 geometric, head capped by the seed set
    assert np.all(np.diff(counts) < 0) and counts.sum() == 14691
    assert np.bincount(train_labels[sp["train"]]).tolist() == [500] * 10
    assert len(sp["test"]) == 10000


def test_folders_hold_the_splits(fmnist_folders):
    info = json.loads((fmnist_folders / "splits.json").read_text())
    for name, entry in info["folders"].items():
        files = sorted((fmnist_folders / name).rglob("*.png"))
        assert len(files) == entry["count"]
        per_class = [len(list((fmnist_folders / name / c).glob("*.png"))) for c in info["classes"]
                     if (fmnist_folders / name / c).exists()]  # fmt: skip
        assert per_class == [c for c in entry["class_counts"] if c]
    pool = {p.name for p in (fmnist_folders / "pool").rglob("*.png")}
    assert not pool & {p.name for p in (fmnist_folders / "seed").rglob("*.png")}  # disjoint


@pytest.mark.slow
def test_script_tables_match_the_runs(tmp_path, fmnist_folders, load_script):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        stages = "stages=[embed,cluster,sample,train,eval]"
        cfg = pipeline_cfg(fmnist_folders, f"seed={seed}", "baselines=[balanced,no_tail,random,full]", stages)
        run_pipeline(cfg, runs / f"seed={seed}")
    results = load_script("reproduce_curation_ssl").main(["--runs", str(runs)])
    assert (runs / "results.png").stat().st_size > 0
    table = (runs / "results.md").read_text()
    rows = [line.split(" | ")[0][2:] for line in table.splitlines() if line.startswith("| ") and " | 40 | " in line]
    assert rows == ["balanced", "no_tail", "curated", "random"]  # the control first
    assert "| full | 150 |" in table
    # the control's gap: balanced minus no_tail, paired per seed, from the evaluations themselves
    for metric, probe in (("knn_tail", "knn"), ("linear_tail", "linear")):
        tails = {name: [json.loads((runs / f"seed={s}" / f"eval_{name}" / "eval.json").read_text())[probe]["tail_mean"]
                        for s in (0, 1)] for name in ("balanced", "no_tail")}  # fmt: skip
        gap = np.subtract(tails["balanced"], tails["no_tail"])
        assert results["control_gap"][metric]["values"] == pytest.approx(gap.tolist())
        shown = f"{100 * gap.mean():+.1f} ± {100 * gap.std(ddof=1):.1f}"
        assert f"tail {'k-NN' if probe == 'knn' else 'linear'} {shown}" in table

    def tail_knn(folder: str) -> list[float]:
        return [json.loads((runs / f"seed={s}" / folder / "eval.json").read_text())["knn"]["tail_mean"] for s in (0, 1)]

    knn_tail = {"curated": tail_knn("eval"), "random": tail_knn("eval_random")}
    paired = np.subtract(knn_tail["curated"], knn_tail["random"]).tolist()
    assert results["curated_gap"]["knn_tail"]["values"] == pytest.approx(paired)
    assert "Curated minus random, paired per seed: tail k-NN" in table
    verdict = "separates on every seed" if min(results["control_gap"]["knn_tail"]["values"]) >= 0.03 else "does not"
    assert f"The control {verdict}" in table
    assert results["summary"]["no_tail"]["rarest_share"]["values"] == [0.0, 0.0]  # no tail image trained on
    labels = np.load(runs / "seed=0" / "embed" / "labels.npy")
    ids = (runs / "seed=0" / "embed" / "ids-00000.txt").read_text().splitlines()
    row = {i: r for r, i in enumerate(ids)}
    for name, (train_dir, eval_dir) in {"curated": ("train", "eval"), "full": ("train_full", "eval_full")}.items():
        knn = [json.loads((runs / f"seed={s}" / eval_dir / "eval.json").read_text())["knn"]["top1"] for s in (0, 1)]
        assert results["summary"][name]["knn_top1"]["values"] == pytest.approx(knn)
        # the balance reported is the balance of the ids actually trained on
        trained = [row[i] for i in (runs / "seed=0" / train_dir / "train_ids.txt").read_text().splitlines()]
        counts = np.bincount(labels[trained], minlength=int(labels.max()) + 1).tolist()
        assert results["runs"][0]["sets"][name]["balance"]["label_counts"] == counts
    assert results["summary"]["full"]["n_train"] == 150 and results["summary"]["curated"]["n_train"] == 40


def test_gap_line_shows_a_seed_without_a_tail_score(load_script):
    script = load_script("reproduce_curation_ssl")
    no_tail = {"knn_tail": 0.75, "linear_tail": 0.8}
    sets = [{"balanced": {"knn_tail": 0.80, "linear_tail": 0.9}, "no_tail": no_tail},
            {"balanced": {"knn_tail": None, "linear_tail": 0.9}, "no_tail": no_tail}]  # fmt: skip
    gap = script.control_gap([{"sets": s} for s in sets])
    assert gap["knn_tail"]["values"] == pytest.approx([0.05, None])
    assert "tail k-NN +5.0 ± 0.0 (+5.0, -)" in script._gap_line("Positive control", gap)  # no crash on None
