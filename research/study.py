"""One labelled embedding studied: curated vs random samples over clustering seeds, how the
embedding relates to its labels, a three-panel figure and notes on which labels gain.

The real-data demos (``scripts/demo_text_wordnet.py``, ``scripts/demo_images_fmnist.py``) run
this on WordNet glosses and Fashion-MNIST images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curate.analysis.balance import label_gains
from curate.analysis.plots import plot_density_shares, plot_label_shares, plot_ref_shares, pyplot, save_figure
from research.compare import CurationSettings, compare_over_seeds, summary_table
from research.neighbours import cached_knn_radius, embedding_diagnostics

__all__ = ["label_count_table", "label_notes", "label_study", "parse_levels", "plot_studies", "plot_study"]


def parse_levels(text: str) -> list[dict[str, int]]:
    """``"k:steps:r,k:steps:r,..."`` (finest first) -> the ``levels`` of :class:`CurationSettings`.

    Raises:
        ValueError: a level that is not three integers (the message names it).
    """
    levels = []
    for part in text.split(","):
        fields = part.strip().split(":")
        if len(fields) != 3 or not all(f.strip().isdigit() for f in fields):
            raise ValueError(f"--levels: {part!r} is not k:resample_steps:sample_size")
        k, steps, r = (int(f) for f in fields)
        levels.append({"k": k, "resample_steps": steps, "sample_size": r})
    return levels


def label_study(
    x: Any,
    labels: np.ndarray,
    names: list[str] | None,
    settings: CurationSettings,
    budget: int,
    seeds: list[int],
    n_rarest: int,
    out: Path,
    input_desc: dict[str, Any] | None = None,
    rare_label: str = "labels",
    n_queries: int | None = 5000,
) -> dict[str, Any]:
    """Curate ``budget`` items per seed, compare with random samples, and diagnose the embedding.

    Args:
        x: ``(N, d)`` embeddings.
        labels: ``(N,)`` int labels (only measured, never clustered on).
        names: label names (or None).
        settings: hierarchy and reference clustering settings.
        budget: sample size.
        seeds: clustering / sampling seeds.
        n_rarest: rare labels pooled by ``rarest_share``.
        out: folder of the saved hierarchies, samples and k-NN radius (reused by a re-run).
        input_desc: where ``x`` lies on disk (see :func:`~research.compare.compare_over_seeds`).
        rare_label: what the table calls the labels (``topics``, ``classes``).
        n_queries: leave-one-out k-NN queries of the diagnostics (None: every item).

    Returns:
        :func:`~research.compare.compare_over_seeds`'s result plus ``label_names``, ``table``
        (markdown), ``label_gains`` and ``diagnostics``
        (:func:`~research.neighbours.embedding_diagnostics`).
    """
    result = compare_over_seeds(x, labels, settings, budget, seeds, n_rarest, out, input_desc)
    result["label_names"] = names
    result["table"] = summary_table(result, rare_label=rare_label)
    result["label_gains"] = label_gains(result)
    radius, _ = cached_knn_radius(x, settings.distance, out)
    result["diagnostics"] = embedding_diagnostics(
        x, labels, radius, result["pool"]["rarest_labels"], settings.distance, n_queries=n_queries
    )
    return result


def plot_study(result: dict[str, Any], names: list[str] | None, path: Path, what: str, items: str) -> Path:
    """Label shares (pool / random / curated, log scale) across the top; reference-cluster and
    density-decile shares below.

    Args:
        result: :func:`label_study`'s result.
        names: label names.
        path: the PNG to write.
        what: the dataset and its labels, e.g. ``WordNet topics``.
        items: what the pool's items are, e.g. ``glosses``.
    """
    plt = pyplot()
    s = result["summary"]
    seeds = ",".join(str(v) for v in result["seeds"])
    fig = plt.figure(figsize=(13, 9.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.35, 1])
    plot_label_shares(
        fig.add_subplot(grid[0, :]),
        result,
        names,
        title=(
            f"{what}: pool ({result['pool']['n']} {items}) vs {result['budget']}-item samples, mean over "
            f"seeds {seeds} (shaded: the {result['n_rarest']} rarest)\nshare of the rarest: pool "
            f"{s['pool']['rarest_share']:.4f}, random {s['random']['rarest_share']['mean']:.4f}, curated "
            f"{s['curated']['rarest_share']['mean']:.4f}"
        ),
    )
    plot_ref_shares(
        fig.add_subplot(grid[1, 0]),
        result,
        title=(
            f"Independent reference k-means (k={result['pool']['ref_k']}): smallest tenth holds\n"
            f"pool {s['pool']['ref_smallest_share']:.3f}, random {s['random']['ref_smallest_share']['mean']:.3f}, "
            f"curated {s['curated']['ref_smallest_share']['mean']:.3f}"
        ),
    )
    plot_density_shares(
        fig.add_subplot(grid[1, 1]),
        result,
        title=(
            f"Local density (10-NN radius): sparsest tenth of the pool holds\nrandom "
            f"{s['random']['sparsest_share']['mean']:.3f}, curated {s['curated']['sparsest_share']['mean']:.3f} "
            "of the sample"
        ),
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path


def plot_studies(
    results: dict[str, dict[str, Any]], names: list[str] | None, path: Path, items: str, labels: str = "labels"
) -> Path:
    """One row per embedding (``{name: label_study result}``): label shares (pool / random /
    curated), reference-cluster shares and density-decile shares, side by side.

    Args:
        results: :func:`label_study`'s results by embedding name.
        names: label names.
        path: the PNG to write.
        items: what the pool's items are, e.g. ``images``.
        labels: what the labels are, e.g. ``classes``.
    """
    plt = pyplot()
    fig, axes = plt.subplots(len(results), 3, figsize=(17, 4.8 * len(results)), squeeze=False)
    for row, (name, res) in enumerate(results.items()):
        s = res["summary"]
        seeds = ",".join(str(v) for v in res["seeds"])
        plot_label_shares(
            axes[row, 0],
            res,
            names,
            title=(
                f"{name} embedding: {res['budget']} of {res['pool']['n']} {items}, mean over seeds {seeds}\n"
                f"{res['n_rarest']} rarest {labels} (shaded): pool {s['pool']['rarest_share']:.3f}, random "
                f"{s['random']['rarest_share']['mean']:.3f}, curated {s['curated']['rarest_share']['mean']:.3f}"
            ),
        )
        plot_ref_shares(
            axes[row, 1],
            res,
            title=(
                f"{name}: reference k-means (k={res['pool']['ref_k']}) of the same embedding\nsmallest tenth: "
                f"random {s['random']['ref_smallest_share']['mean']:.3f}, curated "
                f"{s['curated']['ref_smallest_share']['mean']:.3f}"
            ),
        )
        plot_density_shares(
            axes[row, 2],
            res,
            title=(
                f"{name}: density deciles (10-NN radius)\nsparsest tenth: random "
                f"{s['random']['sparsest_share']['mean']:.3f}, curated {s['curated']['sparsest_share']['mean']:.3f}"
            ),
        )
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path


def label_count_table(results: dict[str, dict[str, Any]], names: list[str]) -> str:
    """Markdown: mean label counts over seeds of the pool and of each embedding's random / curated
    samples, labels in decreasing pool count."""
    first = next(iter(results.values()))
    pool = np.asarray(first["pool"]["label_counts"])
    order = np.argsort(-pool, kind="stable")
    head = "| set | " + " | ".join(names[i] for i in order) + " |"
    lines = [head, "|---" * (len(order) + 1) + "|", "| pool | " + " | ".join(str(pool[i]) for i in order) + " |"]
    for name, res in results.items():
        for which in ("random", "curated"):
            counts = np.mean([r[which]["label_counts"] for r in res["runs"]], axis=0)
            lines.append(f"| {which} ({name}) | " + " | ".join(f"{counts[i]:.0f}" for i in order) + " |")
    return "\n".join(lines)


def label_notes(result: dict[str, Any], label: str = "label", n_extreme: int = 5) -> str:
    """Markdown: the embedding's k-NN label agreement, then share tables of the rarest labels and of
    the ``n_extreme`` largest and smallest curated / random ratios (with each label's density
    percentile: high = sparse region, which curation favours)."""
    names = result.get("label_names") or []
    gains = {g["label"]: g for g in result["label_gains"]}
    d = result["diagnostics"]

    def row(c: int) -> str:
        g = gains[c]
        return (
            f"| {names[c] if c < len(names) else c} | {g['pool_share']:.4f} | {g['random_share']:.4f} | "
            f"{g['curated_share']:.4f} | {g['gain']:.2f} | {d['radius_percentile'][c]:.2f} |"
        )

    ranked = sorted((g for g in gains.values() if g["gain"] is not None), key=lambda g: -g["gain"])
    rare = result["pool"]["rarest_labels"]
    head = f"| {label} | pool share | random | curated | curated / random | radius percentile |\n" + "|---" * 6 + "|"
    return "\n".join(
        [
            f"Embedding vs {label}s: leave-one-out 20-NN {label} agreement {d['knn20_agreement']:.3f} "
            f"({d['knn_queries']} queries; rare {label}s {d['knn20_agreement_rare']:.3f}); median percentile of the "
            f"rare {label}s' 10-NN radius among all items {d['rare_radius_percentile']:.2f} (0.5 = typical "
            "density; curation favours sparse regions, high percentiles).",
            "",
            f"The {len(rare)} rarest {label}s:",
            "",
            head,
            *[row(c) for c in rare],
            "",
            "Largest and smallest curated / random ratios:",
            "",
            head,
            *[row(g["label"]) for g in ranked[:n_extreme]],
            *[row(g["label"]) for g in ranked[-n_extreme:]],
        ]
    )
