"""Balance of a sample: over the labels, over a fine reference clustering and over the pool's density.

One copy of the balance statistics the sample stage, the report and the demos share
(METHOD.md, "What balanced means, measured").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.analysis.metrics import rarest
from curate.sampling import item_clusters

__all__ = [
    "SCALARS",
    "cluster_purity",
    "label_balance",
    "label_gains",
    "mean_counts",
    "mean_std",
    "sample_balance",
    "top_level_purity",
]


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def sample_balance(
    indices: np.ndarray,
    labels: np.ndarray | None = None,
    n_rarest: int = 3,
    ref_assign: np.ndarray | None = None,
    ref_smallest_fraction: float = 0.1,
    radius: np.ndarray | None = None,
) -> dict[str, Any]:
    """How balanced a sample is over the labels and over a reference clustering of the pool.

    Args:
        indices: ``(m,)`` int item ids of the sample (repeats count).
        labels: ``(N,)`` int labels of the pool, or None.
        n_rarest: how many of the pool's rarest labels ``rarest_share`` pools.
        ref_assign: ``(N,)`` int reference-cluster id of every pool item (an independent k-means of
            the embeddings), or None.
        ref_smallest_fraction: ``ref_smallest_share`` (``ref_largest_share``) pools the smallest
            (largest) ``ceil(fraction * k)`` reference clusters by pool count.
        radius: ``(N,)`` k-NN radius of every pool item (:func:`knn_radius`, large = sparse region),
            or None.

    Returns:
        ``n`` and, with labels: ``label_counts``, ``label_entropy`` (nats), ``label_normalized_entropy``
        (over ``log`` of the number of labels present in the pool), ``rarest_labels``,
        ``rarest_share``; with ``ref_assign``: ``ref_k``, ``ref_counts``, ``ref_normalized_entropy``
        (over ``log ref_k``), ``ref_touched`` (reference clusters holding a sampled item),
        ``ref_max_share``, ``ref_smallest_share`` and ``ref_largest_share`` (share of the sample in the
        smallest / largest ``ceil(fraction * k)`` reference clusters by pool count). A uniform random
        sample gives about the pool's own numbers. With ``radius``: ``density_deciles`` (share of the
        sample in each tenth of the pool sorted by k-NN radius, densest first; 0.1 each for a random
        sample), ``sparsest_share`` (the last tenth) and ``densest_share`` (the first).
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    out: dict[str, Any] = {"n": int(indices.size)}
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        n_labels = int(labels.max()) + 1
        pool_counts = np.bincount(labels, minlength=n_labels)
        counts = np.bincount(labels[indices], minlength=n_labels)
        rare = rarest(pool_counts, n_rarest)
        h = _entropy(counts)
        present = int(np.count_nonzero(pool_counts))
        out.update(
            label_counts=counts.tolist(),
            label_entropy=h,
            label_normalized_entropy=h / math.log(present) if present > 1 else 1.0,
            rarest_labels=rare.tolist(),
            rarest_share=float(counts[rare].sum() / max(indices.size, 1)),
        )
    if ref_assign is not None:
        ref_assign = np.asarray(ref_assign, dtype=np.int64)
        k = int(ref_assign.max()) + 1
        pool_counts = np.bincount(ref_assign, minlength=k)
        counts = np.bincount(ref_assign[indices], minlength=k)
        n_tail = math.ceil(ref_smallest_fraction * k)
        smallest = rarest(pool_counts, n_tail)
        largest = np.argsort(-pool_counts, kind="stable")[:n_tail]
        nonempty = int(np.count_nonzero(pool_counts))
        out.update(
            ref_k=k,
            ref_counts=counts.tolist(),
            ref_normalized_entropy=_entropy(counts) / math.log(nonempty) if nonempty > 1 else 1.0,
            ref_touched=int(np.count_nonzero(counts)),
            ref_max_share=float(counts.max() / max(indices.size, 1)),
            ref_smallest_share=float(counts[smallest].sum() / max(indices.size, 1)),
            ref_largest_share=float(counts[largest].sum() / max(indices.size, 1)),
        )
    if radius is not None:
        radius = np.asarray(radius)
        edges = np.quantile(radius, np.linspace(0, 1, 11))
        decile = np.clip(np.searchsorted(edges, radius[indices], side="right") - 1, 0, 9)
        shares = np.bincount(decile, minlength=10) / max(indices.size, 1)
        out.update(
            density_deciles=shares.tolist(),
            sparsest_share=float(shares[-1]),
            densest_share=float(shares[0]),
        )
    return out


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` of per-seed values (``std`` is the sample std, 0 for one value).

    None values (a metric a seed could not measure) are left out of ``mean`` and ``std`` and kept
    in ``values``; with no value at all, ``mean`` is NaN and ``std`` 0.
    """
    kept = np.asarray([v for v in values if v is not None], dtype=np.float64)
    std = float(kept.std(ddof=1)) if kept.size > 1 else 0.0
    return {
        "mean": float(kept.mean()) if kept.size else math.nan,
        "std": std,
        "values": [None if v is None else float(v) for v in values],
    }


SCALARS = (
    "top_normalized_entropy",
    "label_entropy",
    "label_normalized_entropy",
    "rarest_share",
    "ref_normalized_entropy",
    "ref_touched",
    "ref_max_share",
    "ref_smallest_share",
    "ref_largest_share",
    "sparsest_share",
    "densest_share",
)


def label_balance(labels: np.ndarray, indices: np.ndarray, n_rarest: int = 3) -> dict[str, Any]:
    """The sample stage's ``stats.json`` view of :func:`sample_balance` over the labels.

    Args:
        labels: ``(N,)`` int label of every pool item.
        indices: ``(m,)`` sampled item indices.
        n_rarest: how many of the pool's rarest labels to pool into ``rarest_share``.

    Returns:
        ``share`` / ``pool_share`` (per label, rounded to 6 digits), ``entropy`` (nats), ``max_entropy``
        (``log`` of the number of labels), ``rarest_labels``, ``rarest_share`` and ``rarest_pool_share``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    sample = sample_balance(indices, labels, n_rarest)
    pool_counts = np.bincount(labels, minlength=len(sample["label_counts"]))
    rare = sample["rarest_labels"]
    return {
        "share": (np.asarray(sample["label_counts"]) / max(sample["n"], 1)).round(6).tolist(),
        "pool_share": (pool_counts / len(labels)).round(6).tolist(),
        "entropy": sample["label_entropy"],
        "max_entropy": float(np.log(len(pool_counts))),
        "rarest_labels": rare,
        "rarest_share": sample["rarest_share"],
        "rarest_pool_share": float(pool_counts[rare].sum() / len(labels)),
    }


def cluster_purity(assign: np.ndarray, labels: np.ndarray) -> float:
    """Share of items whose cluster's majority label is their own (1.0: clusters never mix labels).

    Args:
        assign: ``(N,)`` int cluster id of every item.
        labels: ``(N,)`` int label of every item.
    """
    assign = np.asarray(assign, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return 0.0
    k, c = int(assign.max()) + 1, int(labels.max()) + 1
    table = np.bincount(assign * c + labels, minlength=k * c).reshape(k, c)
    return float(table.max(axis=1).sum() / len(labels))


def top_level_purity(levels: Sequence[Any], labels: np.ndarray) -> float:
    """:func:`cluster_purity` of the hierarchy's top-level clusters."""
    return cluster_purity(item_clusters(levels)[-1], labels)


def label_gains(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per label: pool share, mean random and curated share over seeds, and curated / random."""
    pool = np.asarray(result["pool"]["label_counts"], dtype=np.float64)
    pool = pool / pool.sum()
    random, _ = mean_counts(result["runs"], "random", "label_counts")
    curated, _ = mean_counts(result["runs"], "curated", "label_counts")
    return [
        {
            "label": int(c),
            "pool_share": float(pool[c]),
            "random_share": float(random[c]),
            "curated_share": float(curated[c]),
            "gain": float(curated[c] / random[c]) if random[c] > 0 else None,
        }
        for c in range(len(pool))
        if pool[c] > 0
    ]


def mean_counts(runs: list[dict[str, Any]], name: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over ``runs`` of the shares ``run[name][key] / run[name]["n"]`` (per group)."""
    shares = np.asarray([np.asarray(r[name][key], dtype=np.float64) / max(r[name]["n"], 1) for r in runs])
    return shares.mean(axis=0), shares.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(shares.shape[1])
