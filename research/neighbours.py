"""Neighbourhood views of an embedding: k-NN radius (density), k-NN label agreement, diagnostics."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.core.atomic import atomic_save_npy, atomic_write_json

__all__ = ["cached_knn_radius", "embedding_diagnostics", "knn_agreement", "knn_radius"]


def knn_radius(
    x: Any, k: int = 10, n_ref: int = 20000, distance: str = "cosine", seed: int = 0, chunk: int = 1024
) -> np.ndarray:
    """Local sparsity of every item: the distance to its ``k``-th nearest neighbour among ``n_ref`` pool items.

    A label-free, clustering-free view of density (large radius = sparse region). The neighbours are
    searched in a seeded uniform subset of ``n_ref`` items (the item itself excluded), which scales
    every radius alike and keeps the cost at ``N x n_ref`` distances.

    Args:
        x: ``(N, d)`` embeddings.
        k: which neighbour.
        n_ref: size of the neighbour subset (all items when ``N <= n_ref``).
        distance: ``"cosine"`` (``1 - cos``) or ``"l2"`` (Euclidean).
        seed: seed of the subset.
        chunk: query rows per matmul.

    Returns:
        ``(N,)`` float32 radii.
    """
    import torch

    n = len(x)
    ref_idx = np.arange(n) if n <= n_ref else np.sort(np.random.default_rng(seed).choice(n, n_ref, replace=False))
    position = np.full(n, -1, dtype=np.int64)
    position[ref_idx] = np.arange(len(ref_idx))
    ref = torch.from_numpy(np.array(x[ref_idx], dtype=np.float32))
    if distance == "cosine":
        ref = torch.nn.functional.normalize(ref, dim=1)
    ref_sq = (ref * ref).sum(1)
    k = min(k, len(ref_idx) - 1)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        q = torch.from_numpy(np.array(x[start : start + chunk], dtype=np.float32))
        if distance == "cosine":
            q = torch.nn.functional.normalize(q, dim=1)
        d = (q * q).sum(1, keepdim=True) - 2 * q @ ref.T + ref_sq[None, :]
        pos = torch.from_numpy(position[start : start + len(q)])
        mine = torch.nonzero(pos >= 0).flatten()
        d[mine, pos[mine]] = math.inf  # an item is not its own neighbour
        kth = d.topk(k, dim=1, largest=False).values[:, -1].clamp_(min=0)
        out[start : start + len(q)] = (kth / 2 if distance == "cosine" else kth.sqrt()).numpy()
    return out


def cached_knn_radius(x: Any, distance: str, out: Path | None) -> tuple[np.ndarray, float]:
    """:func:`knn_radius` of ``x`` (default settings), cached in ``out/knn_radius.npy``."""
    path = out / "knn_radius.npy" if out is not None else None
    if path is not None and path.exists():
        radius = np.load(path, allow_pickle=False)
        if len(radius) == len(x):
            meta = out / "knn_radius.json"
            return radius, float(json.loads(meta.read_text()).get("seconds", 0.0)) if meta.exists() else 0.0
    t0 = time.perf_counter()
    radius = knn_radius(x, distance=distance)
    seconds = time.perf_counter() - t0
    if path is not None:
        atomic_save_npy(path, radius)
        atomic_write_json(out / "knn_radius.json", {"k": 10, "n_ref": 20000, "distance": distance, "seconds": seconds})
    return radius, seconds


def knn_agreement(
    x: Any,
    labels: np.ndarray,
    k: int = 20,
    n_queries: int | None = None,
    seed: int = 0,
    distance: str = "cosine",
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out ``k``-NN label agreement: for each query, the share of its neighbours with its label.

    How well an embedding separates the labels (1.0: every neighbourhood is pure). The neighbours are
    searched in the whole pool, the item itself excluded.

    Args:
        x: ``(N, d)`` embeddings.
        labels: ``(N,)`` int labels.
        k: neighbours per query.
        n_queries: query a seeded uniform subset of this many items (None: every item).
        seed: seed of the query subset.
        distance: ``"cosine"`` or ``"l2"``.
        chunk: query rows per matmul.

    Returns:
        ``((q,) float32 agreement, (q,) int64 query item ids)``.
    """
    import torch

    n = len(x)
    queries = (
        np.arange(n)
        if n_queries is None or n_queries >= n
        else np.sort(np.random.default_rng(seed).choice(n, n_queries, replace=False))
    )
    base = torch.from_numpy(np.array(x[:], dtype=np.float32))
    if distance == "cosine":
        base = torch.nn.functional.normalize(base, dim=1)
    base_sq = (base * base).sum(1)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    k = min(k, n - 1)
    out = []
    for start in range(0, len(queries), chunk):
        idx = torch.from_numpy(queries[start : start + chunk])
        q = base[idx]
        d = base_sq[idx, None] - 2 * q @ base.T + base_sq[None, :]
        d[torch.arange(len(idx)), idx] = math.inf  # not its own neighbour
        nn = d.topk(k, dim=1, largest=False).indices
        out.append((y[nn] == y[idx, None]).float().mean(dim=1))
    return torch.cat(out).numpy(), queries.astype(np.int64)


def embedding_diagnostics(
    x: Any,
    labels: np.ndarray,
    radius: np.ndarray,
    rare_labels: Sequence[int],
    distance: str = "cosine",
    n_queries: int | None = 5000,
) -> dict[str, Any]:
    """Does the embedding make the rare labels rare *regions*? What bounds the labels' gain.

    Returns:
        ``knn20_agreement`` (mean leave-one-out 20-NN label agreement over ``n_queries`` items),
        ``knn20_agreement_rare`` (over the queries of the rare labels), ``radius_percentile`` (per label,
        the median percentile of its items' k-NN radius among all pool items: above 0.5 = the label sits
        in sparser regions than the pool's typical item, which curation favours) and
        ``rare_radius_percentile`` (the same over the rare labels' items).
    """
    labels = np.asarray(labels, dtype=np.int64)
    agree, queries = knn_agreement(x, labels, 20, n_queries, distance=distance)
    rare_mask = np.isin(labels, np.asarray(rare_labels, dtype=np.int64))
    pct = np.empty(len(radius), dtype=np.float64)
    pct[np.argsort(radius, kind="stable")] = np.arange(len(radius)) / max(len(radius) - 1, 1)
    n_labels = int(labels.max()) + 1
    per_label = [float(np.median(pct[labels == c])) if np.any(labels == c) else None for c in range(n_labels)]
    rare_q = rare_mask[queries]
    return {
        "knn20_agreement": float(agree.mean()),
        "knn20_agreement_rare": float(agree[rare_q].mean()) if rare_q.any() else None,
        "knn_queries": int(len(queries)),
        "radius_percentile": per_label,
        "rare_radius_percentile": float(np.median(pct[rare_mask])) if rare_mask.any() else None,
    }
