"""The report's and ``curate.inspect``'s figures of a loaded curation (:class:`~curate.analysis.data.ReportData`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from curate.analysis.clusters import top_counts
from curate.analysis.data import ReportData
from curate.analysis.plots import COLORS, log_axis, plot_label_shares, plot_pool_vs_samples, pyplot, save_figure
from curate.sampling import cluster_item_counts

__all__ = ["figure_cluster_sizes", "figure_inspect", "figure_labels", "figure_scatter", "figure_top_shares"]


def figure_cluster_sizes(data: ReportData, path: Path) -> Path:
    """Per level, the histogram of cluster sizes in items (log-spaced bins, log counts)."""
    plt = pyplot()
    counts = cluster_item_counts(data.levels)
    n = len(counts)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for t, sizes in enumerate(counts):
        ax = axes[t // cols, t % cols]
        sizes = sizes[sizes > 0]
        top = max(int(sizes.max()), 2)
        bins = np.unique(np.round(np.logspace(0, math.log10(top + 1), 30)).astype(np.int64))
        ax.hist(sizes, bins=bins, color="tab:blue", edgecolor="white", lw=0.4)
        log_axis(ax, "x")
        log_axis(ax, "y")
        ax.set_title(
            f"level {t + 1}: {len(sizes)} clusters\nitems per cluster min {sizes.min()}, median "
            f"{int(np.median(sizes))}, max {sizes.max()}",
            fontsize=9,
        )
        ax.set_xlabel("items per cluster")
        ax.set_ylabel("clusters")
    for t in range(n, rows * cols):
        axes[t // cols, t % cols].axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path


def figure_top_shares(data: ReportData, path: Path) -> Path:
    """Share of every top-level cluster in the pool, the curated and the random sample."""
    plt = pyplot()
    counts = top_counts(data)
    pool = counts["pool"] / counts["pool"].sum()
    order = np.argsort(-pool, kind="stable")
    xs = np.arange(1, len(order) + 1)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    if len(order) <= 60:
        w = 0.28
        ax.bar(xs - w, pool[order], w, color=COLORS["pool"], label="pool")
        for shift, name in ((0.0, "random"), (w, "curated")):
            share = counts[name] / max(counts[name].sum(), 1)
            ax.bar(xs + shift, share[order], w, color=COLORS[name], label=f"{name} sample")
    else:
        ax.plot(xs, pool[order], color=COLORS["pool"], lw=2, label="pool")
        for name in ("random", "curated"):
            share = counts[name] / max(counts[name].sum(), 1)
            ax.plot(xs, share[order], color=COLORS[name], lw=1, label=f"{name} sample")
    ax.axhline(1.0 / len(order), color="k", ls=":", lw=0.8, label="uniform")
    log_axis(ax)
    ax.set_xlabel(f"top-level cluster (level {len(data.levels)}, k = {len(order)}), sorted by pool share")
    ax.set_ylabel("share of the set")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path


def figure_labels(data: ReportData, path: Path) -> Path:
    """Pool / random / curated label shares (sorted by pool share, log scale)."""
    plt = pyplot()
    labels = data.labels
    if labels is None:
        raise ValueError(f"{data.input_path}: no labels to plot")
    n_labels = int(labels.max()) + 1
    result = {
        "pool": {"label_counts": np.bincount(labels, minlength=n_labels).tolist(), "rarest_labels": []},
        "runs": [
            {
                name: {"label_counts": np.bincount(labels[idx], minlength=n_labels).tolist(), "n": len(idx)}
                for name, idx in (("random", data.random), ("curated", data.sample))
            }
        ],
    }
    fig, ax = plt.subplots(figsize=(min(3 + 0.3 * n_labels, 14), 4.2))
    plot_label_shares(ax, result, data.label_names, title="label shares: pool / random / curated")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path


def figure_scatter(data: ReportData, path: Path) -> Path:
    """2-D inputs: the pool (grey) with the random and the curated sample."""
    return plot_pool_vs_samples(np.asarray(data.array[:], dtype=np.float32), data.sample, data.random, path, dpi=80)


def figure_inspect(
    report: list[dict[str, Any]],
    shares: dict[str, Any] | None,
    labels: dict[str, Any] | None,
    path: str | Path,
) -> None:
    """PNG: the size histograms (items per cluster, log-2 bins, log counts) per level, then share bars."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    n_panels = len(report) + (shares is not None) + (labels is not None)
    fig, axes = plt.subplots(1, n_panels, figsize=(4 * n_panels, 3.4), squeeze=False)
    axes = list(axes.flat)
    for ax, r in zip(axes, report):
        hist = r["hist_items"]
        if hist["counts"]:
            edges = np.array(hist["bin_edges"])
            ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="tab:blue", edgecolor="k")
            log_axis(ax, "x", base=2)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of clusters
        ax.set_xlabel("cluster size (items)")
        ax.set_ylabel("clusters")
        ax.set_title(f"level {r['level']}: {r['n_clusters']} clusters", fontsize=9)
    rest = axes[len(report) :]
    if shares is not None:
        ax = rest.pop(0)
        order = shares["order"]
        pos = np.arange(len(order))
        ax.plot(pos, shares["pool_share"][order], c="k", lw=1, label="pool")
        ax.bar(pos, shares["sample_share"][order], width=1.0, color="tab:orange", alpha=0.7, label="sample")
        log_axis(ax)
        ax.set_xlabel("top-level clusters, by pool share")
        ax.set_ylabel("share")
        ax.legend(fontsize=8)
        ax.set_title("share per top-level cluster", fontsize=9)
    if labels is not None:
        ax = rest.pop(0)
        pos = np.arange(len(labels["pool_share"]))
        has_sample = "sample_share" in labels
        width = 0.4 if has_sample else 0.8
        ax.bar(pos - (width / 2 if has_sample else 0), labels["pool_share"], width=width, color="k", label="pool")
        if has_sample:
            ax.bar(pos + width / 2, labels["sample_share"], width=width, color="tab:orange", label="sample")
        ax.set_xticks(pos)
        ax.set_xlabel("label")
        ax.set_ylabel("share")
        ax.legend(fontsize=8)
        ax.set_title("share per label", fontsize=9)
    fig.tight_layout()
    save_figure(fig, Path(path), dpi=100)
