"""Does curating a long-tailed pool help SSL? Tables and figure from pipeline runs (docs/curation_ssl.md).

    python scripts/make_fmnist_folders.py --out data/fmnist
    python -m curate.pipeline -m +experiment=curation_ssl data=image_folder data.root=data/fmnist/pool \\
        base.root=data/fmnist/seed eval.train_root=data/fmnist/train eval.test_root=data/fmnist/test seed=0,1,2
    python scripts/reproduce_curation_ssl.py --runs outputs/curation_ssl        # -> results.{json,md,png}

The experiment itself is ``curate.pipeline`` (configs/experiment/curation_ssl*.yaml: settings, seeds
as a Hydra multirun); this script only reads the runs: every ``summary.json`` under ``--runs`` (one per
seed), and per run the trainings (``train*/manifest.json``, ``train*/train_ids.txt``) and evaluations
(``eval*/eval.json``) of the positive control first (``balanced``: a label-balanced set; ``no_tail``: no
image of the tail classes), then the curated, random and full sets. The control's gap (balanced minus
no_tail on the tail classes, paired per seed) says whether the regime can show a training set's
composition at all; results.md states it above the table. The class balance of each training set
comes from the ids it was trained on and the pool's labels (the embed store's ``labels.npy``: run
the pipeline with ``data.labels_from_dirs=true``, as the curation_ssl experiment does).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from curate.analysis.balance import mean_std, sample_balance
from curate.core.atomic import atomic_path, atomic_write_json, atomic_write_text
from curate.io.idlist import read_ids

# table order: the positive control (label oracles) first, then the comparison it licenses
SETS = {
    "balanced": ("train_balanced", "eval_balanced"),
    "no_tail": ("train_no_tail", "eval_no_tail"),
    "curated": ("train", "eval"),
    "random": ("train_random", "eval_random"),
    "full": ("train_full", "eval_full"),
}
CONTROL_MARGIN = 0.03  # the positive control must separate the tail k-NN by this much on every seed
CONTROL = ("balanced", "no_tail")
METRICS = {
    "knn_top1": "k-NN top-1",
    "knn_tail": "k-NN tail",
    "linear_top1": "linear top-1",
    "linear_tail": "linear tail",
}


def pool_labels(root: Path) -> tuple[dict[str, int], np.ndarray, list[str]] | None:
    """``(id -> store row, (N,) labels, label names)`` of a run's pool, or None without labels."""
    from curate.io.store import load_embeddings, load_labels, read_manifest

    store = root / "embed"
    if not read_manifest(store).get("labels"):
        return None
    _, ids = load_embeddings(store)
    labels, names = load_labels(store)
    return {str(i): row for row, i in enumerate(ids)}, np.asarray(labels, dtype=np.int64), list(names or [])


def read_run(root: Path) -> dict[str, Any]:
    """One pipeline run: per training set its size, distinct items drawn, scores and balance."""
    summary = json.loads((root / "summary.json").read_text())
    pool = pool_labels(root)
    run: dict[str, Any] = {"root": str(root), "seed": summary["seed"], "pool_size": summary["pool_size"], "sets": {}}
    if pool is not None:
        lookup, labels, names = pool
        run["pool_counts"] = np.bincount(labels, minlength=len(names) or None).tolist()
        run["label_names"] = names
    for name, (train_dir, eval_dir) in SETS.items():
        if not (root / eval_dir / "eval.json").exists():
            continue
        report = json.loads((root / eval_dir / "eval.json").read_text())
        manifest = json.loads((root / train_dir / "manifest.json").read_text())
        entry: dict[str, Any] = {
            "n_train": manifest["n_train"],
            "train_images": manifest.get("distinct_items_seen"),
            "tail_classes": report["tail_classes"],
            **{f"{p}_top1": report[p]["top1"] for p in ("knn", "linear")},
            **{f"{p}_tail": report[p]["tail_mean"] for p in ("knn", "linear")},
            **{f"{p}_per_class": report[p]["per_class"] for p in ("knn", "linear")},
        }
        if pool is not None:
            rows = np.asarray([lookup[i] for i in read_ids(root / train_dir / "train_ids.txt")])
            balance = sample_balance(rows, labels, n_rarest=len(report["tail_classes"] or [1]))
            pool_share = np.isin(labels, balance["rarest_labels"]).mean()  # the same classes in the pool
            entry["balance"] = {**balance, "tail_gain": balance["rarest_share"] / pool_share if pool_share else None}
        run["sets"][name] = entry
    return run


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per training set: mean / std over the runs (seeds) of every metric and balance number."""
    out: dict[str, Any] = {}
    for name in SETS:
        entries = [r["sets"][name] for r in runs if name in r["sets"]]
        if not entries:
            continue
        row = {m: mean_std([e[m] for e in entries if e[m] is not None]) for m in METRICS}
        row.update(n_train=entries[0]["n_train"], train_images=[e["train_images"] for e in entries])
        for probe in ("knn", "linear"):
            per_class = np.array([[np.nan if a is None else a for a in e[f"{probe}_per_class"]] for e in entries])
            row[f"{probe}_per_class"] = np.nanmean(per_class, axis=0).tolist()
        if "balance" in entries[0]:
            for key in ("rarest_share", "label_normalized_entropy", "tail_gain"):
                row[key] = mean_std([e["balance"][key] for e in entries if e["balance"][key] is not None])
            row["class_counts"] = np.mean([e["balance"]["label_counts"] for e in entries], axis=0).tolist()
        out[name] = row
    return out


def paired_gap(runs: list[dict[str, Any]], first: str, second: str) -> dict[str, Any]:
    """Per tail metric, ``first`` minus ``second`` paired per run (seed): mean / std / per-run values
    over the runs that have both (empty when none has)."""
    pairs = [r["sets"] for r in runs if first in r["sets"] and second in r["sets"]]
    gap = {}
    for metric in ("knn_tail", "linear_tail"):
        values = [a[metric] - b[metric] if None not in (a[metric], b[metric]) else None
                  for a, b in ((sets[first], sets[second]) for sets in pairs)]  # fmt: skip
        gap[metric] = mean_std(values)
    return gap if pairs else {}


def control_gap(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The positive control: balanced minus no_tail (:func:`paired_gap`)."""
    return paired_gap(runs, *CONTROL)


def _gap_line(label: str, gap: dict[str, Any]) -> str:
    per_seed = ", ".join("-" if v is None else f"{100 * v:+.1f}" for v in gap["knn_tail"]["values"])
    return (
        f"{label}, paired per seed: tail k-NN {_pm(gap['knn_tail'], signed=True)} ({per_seed}), "
        f"tail linear {_pm(gap['linear_tail'], signed=True)} points."
    )


def _pm(entry: dict[str, Any], scale: float = 100.0, signed: bool = False) -> str:
    if not entry["values"] or math.isnan(entry["mean"]):
        return "-"
    mean, std = scale * entry["mean"], scale * entry["std"]
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return f"{text} ± {std:.1f}" if len(entry["values"]) > 1 else text


def markdown(results: dict[str, Any]) -> str:
    """The accuracy / balance table and the per-class table (docs/curation_ssl.md's layout)."""
    summary, runs = results["summary"], results["runs"]
    names = runs[0].get("label_names") or []
    tail = next(iter(runs[0]["sets"].values()))["tail_classes"] or []
    lines = [
        f"Top-1 (%) on the test folder, mean ± std over {len(runs)} run(s) (seeds {[r['seed'] for r in runs]}); "
        f"tail = mean per-class top-1 over the {len(tail)} rarest pool classes "
        f"({', '.join(names[c] if c < len(names) else str(c) for c in tail)}).",
        "",
    ]
    gap = results.get("control_gap")
    if gap:
        values = gap["knn_tail"]["values"]  # a seed without a tail score counts as not separated
        separated = bool(values) and all(v is not None and v >= CONTROL_MARGIN for v in values)
        verdict = (
            "The control separates on every seed: the regime shows its training set's composition."
            if separated
            else f"The control does not separate by {100 * CONTROL_MARGIN:.0f} points on every seed: read curated vs "
            "random as no stronger than this."
        )
        lines += [_gap_line("Positive control: balanced minus no_tail", gap) + " " + verdict, ""]
    if results.get("curated_gap"):
        lines += [_gap_line("Curated minus random", results["curated_gap"]), ""]
    lines += [
        "| training set | images | tail share (gain) | label entropy | " + " | ".join(METRICS.values()) + " |",
        "|---|---|---|---|" + "---|" * len(METRICS),
    ]
    for name, row in summary.items():
        balance = "- | -"
        if "rarest_share" in row:
            gain = row["tail_gain"]["mean"] if row["tail_gain"]["values"] else float("nan")
            balance = f"{_pm(row['rarest_share'])}% ({gain:.2f}x) | {row['label_normalized_entropy']['mean']:.3f}"
        cells = [name, str(row["n_train"]), balance, *[_pm(row[m]) for m in METRICS]]
        lines.append("| " + " | ".join(cells) + " |")
    if "pool_counts" in runs[0]:
        pool = np.asarray(runs[0]["pool_counts"])
        lines += ["", "| class | pool | " + " | ".join(f"{n} (images)" for n in summary) + " | "
                  + " | ".join(f"k-NN {n}" for n in summary) + " |",
                  "|---|---|" + "---|" * (2 * len(summary))]  # fmt: skip
        for c in np.argsort(-pool, kind="stable"):
            counts = [f"{summary[n]['class_counts'][c]:.0f}" for n in summary]
            acc = [f"{100 * summary[n]['knn_per_class'][c]:.1f}" for n in summary]
            label = (names[c] if c < len(names) else str(c)) + (" (tail)" if c in tail else "")
            lines.append(f"| {label} | {pool[c]} | " + " | ".join(counts + acc) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Accuracy bars (std error bars) per training set, and the class shares of each set (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, runs = results["summary"], results["runs"]
    colors = {"balanced": "#66a61e", "no_tail": "#e7298a", "curated": "#1b9e77", "random": "#d95f02", "full": "#7570b3",
              "pool": "#999999"}  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width, x = 0.8 / len(summary), np.arange(len(METRICS))
    for i, (name, row) in enumerate(summary.items()):
        means = [100 * row[m]["mean"] if row[m]["values"] else 0.0 for m in METRICS]
        stds = [100 * row[m]["std"] for m in METRICS]
        offset = (i - (len(summary) - 1) / 2) * width
        axes[0].bar(x + offset, means, width, yerr=stds, capsize=3, label=name, color=colors[name])
    axes[0].set_xticks(x, list(METRICS.values()))
    axes[0].set_ylabel("top-1 (%)")
    axes[0].set_title(f"frozen features, {len(runs)} run(s)")
    axes[0].legend()
    if "pool_counts" in runs[0]:
        pool = np.asarray(runs[0]["pool_counts"], dtype=np.float64)
        order = np.argsort(-pool, kind="stable")
        shares = {"pool": pool / pool.sum()}
        shares.update({n: np.asarray(r["class_counts"]) / np.sum(r["class_counts"]) for n, r in summary.items()})
        w = 0.8 / len(shares)
        for i, (name, share) in enumerate(shares.items()):
            axes[1].bar(np.arange(len(pool)) + (i - (len(shares) - 1) / 2) * w, share[order], w, label=name,
                        color=colors[name])  # fmt: skip
        names = runs[0].get("label_names") or [str(c) for c in range(len(pool))]
        axes[1].set_xticks(np.arange(len(pool)), [names[c] for c in order], rotation=45, ha="right")
        axes[1].set_yscale("log")
        axes[1].set_ylabel("share of the training set")
        axes[1].legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="a pipeline output folder (or a multirun of them)")
    parser.add_argument("--out", default=None, help="where results.{json,md,png} go (default: --runs)")
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs)
    roots = sorted(p.parent for p in runs_dir.rglob("summary.json"))
    if not roots:
        print(f"error: no pipeline run (summary.json) under {runs_dir}", file=sys.stderr)
        raise SystemExit(2)
    runs = [read_run(root) for root in roots]
    results = {"runs": runs, "summary": summarise(runs), "control_gap": control_gap(runs)}
    results["curated_gap"] = paired_gap(runs, "curated", "random")
    out = Path(args.out) if args.out else runs_dir
    atomic_write_json(out / "results.json", results)
    table = markdown(results)
    atomic_write_text(out / "results.md", table)
    plot(results, out / "results.png")
    print(table)
    return results


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
