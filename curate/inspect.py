"""Inspect a saved hierarchy (and optionally a sample of it): cluster sizes per level, balance of the sample.

    python -m curate.inspect outputs/cluster/toy_2d
    python -m curate.inspect outputs/cluster/toy_2d --sample outputs/sample/toy_2d \\
        --labels outputs/data/toy_2d/labels.npy --out inspect.png

Prints, per level: the number of clusters, a histogram of the cluster sizes over power-of-two bins
(``[1, 2), [2, 4), ...``; sizes counted in level inputs and in items), and the number of empty and
singleton clusters. With ``--sample`` (a folder holding ``indices.npy``, or the ``.npy`` itself): the
share of every top-level cluster in the pool and in the sample (the 10 largest and the 10 smallest
clusters of the pool) and the balance over the top-level clusters. With ``--labels`` (``(N,)`` int
``.npy``, e.g. the toy's true modes): the share of every label in the pool (and the sample).
``--out`` writes a PNG with the size histograms and the share bars.

This is an inspection tool (plain argparse), not a pipeline stage.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import IdentityError, cli_entry
from curate.hierarchy import HierarchicalKMeans, Level
from curate.io.identity import file_sha256
from curate.metrics import cluster_balance, label_shares
from curate.sampling import cluster_item_counts
from curate.stage import item_rows, read_clustering_manifest, read_json, to_positions

__all__ = ["label_report", "level_report", "load_indices", "main", "plot_report", "top_cluster_shares"]

N_SHOWN = 10


def log2_histogram(sizes: np.ndarray) -> dict[str, list[int]]:
    """Histogram of positive sizes over power-of-two bins ``[1, 2), [2, 4), ...`` (zeros are left out).

    Returns:
        ``{"bin_edges": [1, 2, 4, ...], "counts": [...]}`` (``len(counts) == len(bin_edges) - 1``).
    """
    pos = np.asarray(sizes, dtype=np.int64)
    pos = pos[pos > 0]
    if pos.size == 0:
        return {"bin_edges": [], "counts": []}
    n_bins = int(np.floor(np.log2(pos.max()))) + 1
    edges = 2 ** np.arange(n_bins + 1, dtype=np.int64)
    counts, _ = np.histogram(pos, bins=edges)
    return {"bin_edges": edges.tolist(), "counts": counts.tolist()}


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


def load_indices(path: str | Path, n_items: int) -> np.ndarray:
    """Sampled item indices from ``path/indices.npy`` (or the ``.npy`` file ``path``), checked against the pool.

    Raises:
        FileNotFoundError: no ``indices.npy``.
        ValueError: not a 1-D integer array, or ids outside ``[0, n_items)``.
    """
    path = Path(path)
    file = path / "indices.npy" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"{file} not found: --sample takes a sample folder holding indices.npy")
    indices = np.load(file, allow_pickle=False)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{file}: expected a 1-D integer array, got shape {indices.shape} dtype {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= n_items):
        raise ValueError(f"{file}: indices outside [0, {n_items}) (the hierarchy has {n_items} items)")
    return indices.astype(np.int64)


def _top_assign(levels: Sequence[Level]) -> np.ndarray:
    """``(N,)`` top-level cluster of every item (composing the ``assign`` arrays)."""
    ids = np.asarray(levels[0].assign, dtype=np.int64)
    for level in levels[1:]:
        ids = np.asarray(level.assign, dtype=np.int64)[ids]
    return ids


def top_cluster_shares(levels: Sequence[Level], indices: np.ndarray) -> dict[str, Any]:
    """Share of every top-level cluster in the pool and in the sample.

    Args:
        levels: the hierarchy, finest first.
        indices: ``(n,)`` sampled item ids.

    Returns:
        ``pool_count`` / ``sample_count (k,)`` items, ``pool_share (k,)``, ``sample_share (k,)``, ``order``
        (cluster ids by decreasing pool share, ties by id) and ``pool_balance`` / ``sample_balance``
        (:func:`curate.metrics.cluster_balance` of the pool items and of the sample over the ``k`` top-level
        clusters).
    """
    top = _top_assign(levels)
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


def load_labels(path: str | Path, n_items: int | None) -> np.ndarray:
    """``(N,)`` int64 labels from a ``.npy`` file, checked against the pool size (when given).

    Raises:
        FileNotFoundError: missing file.
        ValueError: wrong length, not integer or negative labels.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: --labels takes a (N,) integer .npy file")
    labels = np.load(path, allow_pickle=False)
    if labels.ndim != 1 or (n_items is not None and len(labels) != n_items):
        raise ValueError(f"{path}: expected shape ({n_items},) (one label per item), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError(f"{path}: labels must be non-negative integers, got dtype {labels.dtype}")
    return labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Picture
# ----------------------------------------------------------------------------------------------
def plot_report(
    report: list[dict[str, Any]],
    shares: dict[str, Any] | None,
    labels: dict[str, Any] | None,
    path: str | Path,
) -> None:
    """PNG: the size histograms (items per cluster, log-2 bins, log counts) per level, then share bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curate.io.atomic import atomic_path

    n_panels = len(report) + (shares is not None) + (labels is not None)
    fig, axes = plt.subplots(1, n_panels, figsize=(4 * n_panels, 3.4), squeeze=False)
    axes = list(axes.flat)
    for ax, r in zip(axes, report):
        hist = r["hist_items"]
        if hist["counts"]:
            edges = np.array(hist["bin_edges"])
            ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="tab:blue", edgecolor="k")
            ax.set_xscale("log", base=2)
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
        ax.set_yscale("log")
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
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m curate.inspect", description="Inspect a saved hierarchy and, optionally, a sample of it."
    )
    parser.add_argument("dir", type=Path, help="clustering output folder (manifest.json, level<t>/)")
    parser.add_argument("--sample", type=Path, default=None, help="sample folder holding indices.npy")
    parser.add_argument("--labels", type=Path, default=None, help="(N,) integer labels .npy (e.g. true modes)")
    parser.add_argument("--out", type=Path, default=None, help="write a PNG here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Print the report; returns it (``levels``, and ``shares`` / ``labels`` when asked for).
    Raises on bad input; ``python -m curate.inspect`` runs it in :func:`curate.errors.cli_entry`
    (one ``error:`` line and exit code 2; ``--traceback``: the traceback)."""
    return inspect_clustering(parse_args(argv))


def inspect_clustering(args: argparse.Namespace) -> dict[str, Any]:
    """The body of :func:`main` on parsed arguments."""
    read_clustering_manifest(args.dir)  # a clustering, with the files its manifest vouches for
    if args.sample is not None:
        check_sample_of(args.sample, args.dir)
    hkm = HierarchicalKMeans.load(args.dir)
    levels = hkm.levels_
    n_items = int(len(levels[0].assign))
    report = level_report(levels)
    print(f"{args.dir}: {n_items} items, {len(levels)} level(s)")
    print(format_levels(report))
    rows = item_rows(args.dir)  # the clustering saw a subset: samples and labels hold input rows
    n_input = n_items if rows is None else int(rows[-1]) + 1
    indices = None
    if args.sample is not None:
        indices = to_positions(rows, load_indices(args.sample, max(n_input, n_items)), str(args.sample))
    shares = None
    if indices is not None:
        shares = top_cluster_shares(levels, indices)
        print(f"\nsample {args.sample}: {len(indices)} items ({len(np.unique(indices))} distinct)")
        print(format_shares(shares))
    labels = None
    if args.labels is not None:
        pool_labels = load_labels(args.labels, n_items if rows is None else None)
        if rows is not None:
            if len(pool_labels) <= rows[-1]:
                raise ValueError(f"{args.labels}: {len(pool_labels)} labels, the clustered subset names row {rows[-1]}")
            pool_labels = pool_labels[rows]
        labels = label_report(pool_labels, indices)
        print()
        print(format_labels(labels))
    if args.out is not None:
        plot_report(report, shares, labels, args.out)
        print(f"\nwrote {args.out}")
    return {"levels": report, "shares": shares, "labels": labels}


def check_sample_of(sample: Path, cluster_dir: Path) -> None:
    """A sample folder whose ``stats.json`` names its clustering must name this one, unchanged
    since (the manifest's hash); samples without that record (older ones, plain ``.npy``) pass."""
    stats_path = Path(sample) / "stats.json"
    if not Path(sample).is_dir() or not stats_path.exists():
        return
    record = read_json(stats_path).get("clustering")
    if not isinstance(record, dict):
        return
    same_dir = record.get("path") == str(Path(cluster_dir).resolve())
    if not same_dir or record.get("manifest_sha256") != file_sha256(Path(cluster_dir) / "manifest.json"):
        raise IdentityError(
            f"sample {sample} was drawn from the clustering {record.get('path')}, not from {cluster_dir} as it is "
            f"now; draw the sample again ({stats_path})"
        )


if __name__ == "__main__":
    cli_entry(main)
