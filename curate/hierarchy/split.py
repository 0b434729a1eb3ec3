"""Split every cluster of a level into up to ``n_splits`` sub-clusters, all clusters at once.

The paper reaches ~10M level-1 clusters as 100k clusters split 100-way by an in-cluster k-means.
Here the in-cluster k-means of *all* clusters runs as one batched, constrained Lloyd: a row is
compared only with the ``n_splits`` sub-centroids of its own cluster (a gather + batched matmul),
sums go to ``k * n_splits`` slots with ``index_add_``. Every rank processes its own shard and
only the slot sums and counts are all-reduced, so the work follows the data (balanced by rows,
whatever the cluster sizes) and no Python loop runs over clusters.

Clusters are independent, so when the sub-centroids and float64 sums of all slots exceed
``memory_mb`` they are split in batches of clusters, each run to the end before the next (one
pass over the shard per iteration and batch, over the rows of the batch's clusters): the device
holds one batch, the host the finished sub-centroids, and the result is the same as in one batch.
"""

from __future__ import annotations

import numpy as np
import torch

from curate import dist
from curate.kmeans.kernels import normalize_rows
from curate.kmeans.shard import LocalRows


def pick_split_seeds(
    assign: np.ndarray, k: int, n_splits: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Choose up to ``n_splits`` distinct random members of every cluster as initial sub-centroids.

    Args:
        assign: ``(n,)`` global cluster id of every row.
        k: number of clusters.
        n_splits: sub-clusters per cluster.
        rng: seeded generator (same state on every rank).

    Returns:
        ``rows (m,)`` global row indices and ``slots (m,)`` their sub-centroid slot
        ``cluster * n_splits + j``.
    """
    order = np.lexsort((rng.random(len(assign)), assign))
    counts = np.bincount(assign, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_cluster = np.arange(len(assign)) - starts[assign[order]]
    chosen = rank_in_cluster < n_splits
    rows = order[chosen]
    return rows.astype(np.int64), (assign[rows] * n_splits + rank_in_cluster[chosen]).astype(np.int64)


def _constrained_assign(
    x: torch.Tensor, parent: torch.Tensor, sub: torch.Tensor, sub_sqnorm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest sub-centroid of each row among its own cluster's.

    Args:
        x: ``(m, d)`` rows; parent: ``(m,)`` their cluster ids.
        sub: ``(k, s, d)`` sub-centroids; sub_sqnorm: ``(k, s)`` their squared norms, ``+inf``
            for unused slots.

    Returns:
        ``slot (m,)`` int64 (``parent * s + j``) and ``sq_dist (m,)`` float32.
    """
    s = sub.shape[1]
    scores = torch.baddbmm(sub_sqnorm[parent].unsqueeze(2), sub[parent], x.unsqueeze(2), alpha=-2.0).squeeze(2)
    best, j = scores.min(dim=1)
    return parent * s + j, (best + x.square().sum(dim=1)).clamp_min_(0.0)


def split_clusters(
    rows: LocalRows,
    parent_local: torch.Tensor,
    parent_global: np.ndarray,
    k: int,
    n_splits: int,
    n_iter: int,
    seed: int,
    memory_budget_mb: float = 256.0,
    memory_mb: float = 4096.0,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, dict]:
    """Batched in-cluster k-means (random-member init, Lloyd) of every cluster.

    Args:
        rows: this rank's prepared rows (``rows.scan()`` already called).
        parent_local: ``(n_local,)`` int64 cluster of this rank's rows.
        parent_global: ``(n,)`` cluster of every row (all ranks), used to seed identically.
        k: number of clusters; n_splits: sub-clusters per cluster; n_iter: Lloyd iterations.
        seed: seeds the choice of initial members.
        memory_budget_mb: bounds the per-chunk temporaries (rows x n_splits scores).
        memory_mb: bounds the sub-centroids and float64 sums held at once (a batch of clusters).

    Returns:
        ``centroids (k * n_splits, d)`` float32 numpy in the prepared space (unused slots are
        NaN), ``slot_local (n_local,)`` int64, ``sq_dist_local (n_local,)`` float32 and stats.
    """
    d, device = rows.d, rows.device
    seed_rows, seed_slots = pick_split_seeds(parent_global, k, n_splits, np.random.default_rng(seed))
    centroids = np.full((k * n_splits, d), np.nan, dtype=np.float32)  # on the host
    centroids[seed_slots] = rows.fetch_global(torch.from_numpy(seed_rows)).cpu().numpy()
    per_cluster = n_splits * (12 * d + 21)  # sub float32 + sums float64 + counts, norms, flags
    batch = int(max(1, min(k, memory_mb * 2**20 // per_cluster)))
    chunk = max(1, int(memory_budget_mb * 2**20) // (4 * n_splits * (d + 2) + 12 * d))
    parent_local = parent_local.to(device)
    slot = torch.empty(rows.n, dtype=torch.int64, device=device)
    sq = torch.empty(rows.n, dtype=torch.float32, device=device)
    n_empty = 0
    for lo in range(0, k, batch):  # batches of clusters, each run to the end
        hi = min(k, lo + batch)
        sub = torch.from_numpy(centroids[lo * n_splits : hi * n_splits].copy()).to(device)
        used = ~torch.isnan(sub[:, 0])
        sub[~used] = 0.0
        n_empty += _lloyd_batch(rows, parent_local, (lo, hi, batch >= k), n_splits, n_iter, chunk, sub, used, slot, sq)
        sub[~used] = torch.nan
        centroids[lo * n_splits : hi * n_splits] = sub.cpu().numpy()
    n_batches = -(-k // batch)
    stats = {
        "n_splits": n_splits,
        "seeded_slots": int(len(seed_slots)),
        "empty_after_lloyd": n_empty,
        "cluster_batches": n_batches,
    }
    return centroids, slot.cpu(), sq.cpu(), stats


def _lloyd_batch(
    rows: LocalRows,
    parent_local: torch.Tensor,
    clusters: tuple[int, int, bool],
    n_splits: int,
    n_iter: int,
    chunk: int,
    sub: torch.Tensor,
    used: torch.Tensor,
    slot: torch.Tensor,
    sq: torch.Tensor,
) -> int:
    """Constrained Lloyd of the clusters ``clusters = (lo, hi, all of them)``: updates
    ``sub ((hi - lo) * n_splits, d)`` in place and writes ``slot`` / ``sq`` of their rows; returns
    the seeded slots left empty."""
    lo, hi, whole = clusters
    k, d, device = hi - lo, rows.d, rows.device
    n_empty = 0
    for it in range(n_iter + 1):  # the last pass only assigns
        sqnorm = torch.where(used, sub.square().sum(dim=1), torch.inf).view(k, n_splits)
        sums = torch.zeros(k * n_splits, d, dtype=torch.float64, device=device)
        counts = torch.zeros(k * n_splits, dtype=torch.int64, device=device)
        sub3 = sub.view(k, n_splits, d)
        for first, block in rows.chunks():
            for offset in range(0, len(block), chunk):
                x = block[offset : offset + chunk]
                at = torch.arange(first + offset, first + offset + len(x), device=device)
                parent = parent_local[at]
                if not whole:  # only the rows of this batch's clusters
                    mine = (parent >= lo) & (parent < hi)
                    x, at, parent = x[mine], at[mine], parent[mine]
                s_lab, s_d2 = _constrained_assign(x, parent - lo, sub3, sqnorm)
                slot[at], sq[at] = s_lab + lo * n_splits, s_d2
                if it < n_iter:
                    sums.index_add_(0, s_lab, x.double())
                    counts.index_add_(0, s_lab, torch.ones_like(s_lab))  # bincount would sync
        if it == n_iter:
            break
        dist.all_reduce_sum_(sums)
        dist.all_reduce_sum_(counts)
        # on the device, no mask indexing: no host sync per iteration
        filled = counts > 0
        n_empty = (used & ~filled).sum()
        new = (sums / counts.clamp_min(1).unsqueeze(1).double()).float()
        if rows.cosine:
            new = torch.where(filled.unsqueeze(1), new, 1.0)  # unfilled slots: no 0/0 in the norm
            new = normalize_rows(new)
        sub.copy_(torch.where(filled.unsqueeze(1), new, sub))
    return int(n_empty)
