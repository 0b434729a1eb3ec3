"""Cluster-level views of a curation: sizes per level, top-level shares, label shares, example clusters.

The numbers ``curate.inspect`` prints and the report tabulates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.analysis.metrics import cluster_balance, label_shares
from curate.hierarchy import Level, item_clusters
from curate.sampling import cluster_item_counts, log2_histogram

__all__ = [
    "cluster_members",
    "example_clusters",
    "format_labels",
    "format_levels",
    "format_shares",
    "label_report",
    "level_report",
    "log2_histogram",
    "top_cluster_shares",
    "top_counts",
]

N_SHOWN = 10


def level_report(levels: Sequence[Level]) -> list[dict[str, Any]]:
    """Cluster-size statistics of every level, finest first.

    Returns:
        One dict per level: ``level`` (1-based), ``n_clusters``, ``n_inputs``, ``empty``, ``singletons``
        (clusters with one input), ``size_min`` / ``size_median`` / ``size_max`` (in inputs),
        ``hist_inputs`` and ``hist_items`` (:func:`log2_histogram` of the sizes in inputs and in items)
        and ``items_min`` / ``items_max``.
    """
    item_counts = cluster_item_counts(levels)
    report = []
    for t, (level, items) in enumerate(zip(levels, item_counts), start=1):
        sizes = np.diff(np.asarray(level.offsets, dtype=np.int64))
        report.append(
            {
                "level": t,
                "n_clusters": int(len(sizes)),
                "n_inputs": int(sizes.sum()),
                "empty": int((sizes == 0).sum()),
                "singletons": int((sizes == 1).sum()),
                "size_min": int(sizes.min()),
                "size_median": float(np.median(sizes)),
                "size_max": int(sizes.max()),
                "items_min": int(items.min()),
                "items_max": int(items.max()),
                "hist_inputs": log2_histogram(sizes),
                "hist_items": log2_histogram(items),
            }
        )
    return report


def top_cluster_shares(levels: Sequence[Level], indices: np.ndarray) -> dict[str, Any]:
    """Share of every top-level cluster in the pool and in the sample.

    Args:
        levels: the hierarchy, finest first.
        indices: ``(n,)`` sampled item ids.

    Returns:
        ``pool_count`` / ``sample_count (k,)`` items, ``pool_share (k,)``, ``sample_share (k,)``, ``order``
        (cluster ids by decreasing pool share, ties by id) and ``pool_balance`` / ``sample_balance``
        (:func:`curate.analysis.metrics.cluster_balance` of the pool items and of the sample over the ``k`` top-level
        clusters).
    """
    top = item_clusters(levels)[-1]
    k = levels[-1].k
    pool = np.bincount(top, minlength=k).astype(np.float64)
    sample = np.bincount(top[indices], minlength=k).astype(np.float64)
    return {
        "pool_count": pool.astype(np.int64),
        "sample_count": sample.astype(np.int64),
        "pool_share": pool / pool.sum(),
        "sample_share": sample / max(sample.sum(), 1.0),
        "order": np.lexsort((np.arange(k), -pool)),
        "pool_balance": cluster_balance(top, k),
        "sample_balance": cluster_balance(top[indices], k),
    }


def label_report(labels: np.ndarray, indices: np.ndarray | None) -> dict[str, Any]:
    """Share of every label in the pool (and in the sample) with the sample/pool gain."""
    n_classes = int(labels.max()) + 1 if labels.size else 0
    out: dict[str, Any] = {"pool_share": label_shares(labels, n_classes)}
    if indices is not None:
        out["sample_share"] = label_shares(labels[indices], n_classes)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["gain"] = out["sample_share"] / out["pool_share"]
    return out


def top_counts(data: Any) -> dict[str, np.ndarray]:
    top = data.item_clusters[-1]
    k = data.levels[-1].k
    return {
        "pool": np.bincount(top, minlength=k),
        "curated": np.bincount(top[data.sample], minlength=k),
        "random": np.bincount(top[data.random], minlength=k),
    }


def example_clusters(data: Any) -> list[tuple[str, int]]:
    """The largest, median and smallest top-level clusters (by item count): ``[(role, cluster id)]``."""
    pool = top_counts(data)["pool"]
    nonempty = np.flatnonzero(pool)
    order = nonempty[np.argsort(-pool[nonempty], kind="stable")]
    picks = [("largest", int(order[0])), ("median", int(order[len(order) // 2])), ("smallest", int(order[-1]))]
    seen: set[int] = set()
    return [(role, c) for role, c in picks if not (c in seen or seen.add(c))]


def cluster_members(data: Any, cluster: int, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` random items of a top-level cluster (seeded), sorted."""
    items = np.flatnonzero(data.item_clusters[-1] == cluster)
    rng = np.random.default_rng([seed, cluster])
    return np.sort(rng.choice(items, size=min(n, len(items)), replace=False))


def _hist_line(hist: dict[str, list[int]]) -> str:
    edges, counts = hist["bin_edges"], hist["counts"]
    return "  ".join(f"[{lo},{hi}):{c}" for lo, hi, c in zip(edges[:-1], edges[1:], counts))


def format_levels(report: list[dict[str, Any]]) -> str:
    lines = []
    for r in report:
        lines.append(
            f"level {r['level']}: {r['n_clusters']} clusters of {r['n_inputs']} inputs; "
            f"empty {r['empty']}, singletons {r['singletons']}; size min/median/max "
            f"{r['size_min']}/{r['size_median']:g}/{r['size_max']} inputs, {r['items_min']}..{r['items_max']} items"
        )
        lines.append(f"  sizes (inputs): {_hist_line(r['hist_inputs'])}")
        if r["level"] > 1:
            lines.append(f"  sizes (items):  {_hist_line(r['hist_items'])}")
    return "\n".join(lines)


def format_shares(shares: dict[str, Any], n_shown: int = N_SHOWN) -> str:
    order = shares["order"]
    k = len(order)
    pb, sb = shares["pool_balance"], shares["sample_balance"]
    lines = [
        f"top-level clusters ({k}): normalised entropy pool {pb['normalized_entropy']:.3f} -> "
        f"sample {sb['normalized_entropy']:.3f}; largest cluster's share pool {pb['max_share']:.4f} -> "
        f"sample {sb['max_share']:.4f}; clusters touched by the sample {sb['n_touched']}/{k}",
        "  cluster    pool n  pool share  sample n  sample share   ratio",
    ]

    def rows(ids: np.ndarray) -> list[str]:
        out = []
        for j in ids:
            p, s = shares["pool_share"][j], shares["sample_share"][j]
            ratio = f"{s / p:7.2f}" if p > 0 else "    n/a"
            out.append(
                f"  {j:7d}  {shares['pool_count'][j]:8d}  {p:10.3g}  {shares['sample_count'][j]:8d}  {s:12.3g}  {ratio}"
            )
        return out

    if k <= 2 * n_shown:
        lines += rows(order)
    else:
        lines += [f"  largest {n_shown} in the pool:"] + rows(order[:n_shown])
        lines += [f"  smallest {n_shown} in the pool:"] + rows(order[-n_shown:])
    return "\n".join(lines)


def format_labels(report: dict[str, Any]) -> str:
    has_sample = "sample_share" in report
    lines = ["labels:  label   pool share" + ("  sample share   gain" if has_sample else "")]
    for c, p in enumerate(report["pool_share"]):
        line = f"  {c:12d}   {p:10.4f}"
        if has_sample:
            gain = report["gain"][c]
            line += f"  {report['sample_share'][c]:12.4f}  " + (f"{gain:5.2f}" if math.isfinite(gain) else "  n/a")
        lines.append(line)
    return "\n".join(lines)
