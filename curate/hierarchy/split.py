"""Split every cluster of a level into up to ``n_splits`` sub-clusters, all clusters at once.

The paper reaches ~10M level-1 clusters as 100k clusters split 100-way by an in-cluster k-means.
Here the in-cluster k-means of *all* clusters runs as one batched, constrained Lloyd: a row is
compared only with the ``n_splits`` sub-centroids of its own cluster (a gather + batched matmul),
sums go to ``k * n_splits`` slots with ``index_add_``; no Python loop runs over clusters. The
sub-centroids start from a greedy k-means++ inside every cluster, also batched over all clusters
(or from random members). Distributed, either every rank processes its own shard and the slot
sums and counts are all-reduced every iteration (:func:`split_clusters`), or the rows are first
regrouped by cluster across ranks with one all-to-all and each rank splits its own clusters with
no further communication (:func:`split_clusters_regrouped`); both give the single-process result.

Clusters are independent, so when the sub-centroids and float64 sums of all slots exceed
``memory_mb`` they are split in batches of clusters, each run to the end before the next (one
pass over the shard per iteration and batch, over the rows of the batch's clusters): the device
holds one batch, the host the finished sub-centroids, and the result is the same as in one batch.
"""

from __future__ import annotations

import numpy as np
import torch

from curate.core import dist
from curate.core.progress import Progress
from curate.kmeans.init import kpp_trials
from curate.kmeans.kernels import _CANCELLATION_RTOL, _DIRECT_MAX_D, accumulate_, normalize_rows, row_sqnorms
from curate.kmeans.shard import LocalRows
from curate.kmeans.source import RowSource

SPLIT_INITS = ("k-means++", "random")


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


def _mixed_seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)


class _Grouped:
    """This rank's rows sorted by cluster once per split, so that a batch of clusters selects its
    rows without a host sync per chunk.

    The sort is stable and runs within every block of ``rows.chunks()`` (one block, the whole
    shard, when it is kept on the device): the rows of clusters ``[lo, hi)`` are then one
    contiguous range of ``order`` per block, read back once per batch (:meth:`ranges`) instead of
    a boolean mask per chunk and pass. A cluster's rows keep their order, so every slot sums them
    in the same order as a pass over the shard: the result is the same.
    """

    def __init__(self, rows: LocalRows, parent_local: torch.Tensor, k: int) -> None:
        self.rows, self.k = rows, k
        self.cached = rows._cache is not None  # rows are gathered from the device copy
        self.span = max(rows.n, 1) if self.cached else rows.chunk_rows
        key = torch.arange(rows.n, device=rows.device) // self.span * k + parent_local
        self.order = torch.argsort(key, stable=True)  # (n_local,)
        self.key = key[self.order]

    def ranges(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Per block, the range of ``order`` holding the rows of clusters ``[lo, hi)`` (one host read)."""
        base = torch.arange(0, self.rows.n, self.span, device=self.key.device) // self.span * self.k
        bounds = torch.searchsorted(self.key, torch.stack([base + lo, base + hi], 1))
        return [(a, b) for a, b in bounds.tolist()]

    def indices(self, ranges: list[tuple[int, int]]) -> torch.Tensor:
        """``(m,)`` local indices of the batch's rows."""
        return torch.cat([self.order[a:b] for a, b in ranges] or [self.order[:0]])


# a batch of clusters: (lo, hi, ranges of the grouped order; None when it holds every cluster)
_Batch = tuple[int, int, "list[tuple[int, int]] | None"]


def _batch_rows(rows: LocalRows, parent_local: torch.Tensor, batch: _Batch, grouped: _Grouped | None, chunk: int):
    """Yield ``(at, x, p)``: local row indices ``(m,)``, prepared rows ``(m, d)`` and their
    cluster within the batch ``(m,)``, for the rows of the batch's clusters, ``chunk`` at a time.
    No host sync: a batch of every cluster reads the shard in order, another its ranges."""
    lo, _, ranges = batch
    device = rows.device
    if ranges is None:
        for first, block in rows.chunks():
            for offset in range(0, len(block), chunk):
                x = block[offset : offset + chunk]
                at = torch.arange(first + offset, first + offset + len(x), device=device)
                yield at, x, parent_local[at] - lo
        return
    blocks = [(0, None)] if grouped.cached else rows.chunks()
    for (first, block), (a, b) in zip(blocks, ranges):
        for i in range(a, b, chunk):
            at = grouped.order[i : min(i + chunk, b)]
            # the device copy indexed directly: take() would move the indices (a no-op there)
            x = rows._cache[at].float() if block is None else block[at - first]
            yield at, x, parent_local[at] - lo


def _member_sq_dists(x: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """``(m, t)`` squared distances of rows ``x: (m, d)`` to their own candidates
    ``cand: (m, t, d)``; exact for duplicates (the expansion's small entries are recomputed)."""
    if x.shape[1] <= _DIRECT_MAX_D:
        return (cand - x.unsqueeze(1)).square_().sum(dim=2)
    x_sq = row_sqnorms(x).unsqueeze(1)
    c_sq = cand.square().sum(dim=2)
    d2 = torch.baddbmm((x_sq + c_sq).unsqueeze(2), cand, x.unsqueeze(2), alpha=-2.0).squeeze(2).clamp_min_(0.0)
    small = (d2 <= _CANCELLATION_RTOL * (x_sq + c_sq)).nonzero(as_tuple=True)
    if len(small[0]):
        d2[small] = (cand[small] - x[small[0]]).square().sum(dim=1)
    return d2


def _segment_sample(
    rows: LocalRows, pot: torch.Tensor, order: torch.Tensor, p_sorted: torch.Tensor, m: int, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """In every cluster, rows drawn with probability proportional to ``pot`` among its members.

    Like the flat k-means++ draw, in two stages so that no row-length vector crosses ranks: the
    rank by its share of the cluster's potential, then the row in that rank's cumulative
    potential of the cluster.

    Args:
        rows: this rank's shard; pot: ``(n_local,)`` potential.
        order: ``(b,)`` local indices of the batch's rows, sorted by cluster; p_sorted: ``(b,)``
            their cluster within the batch.
        m: clusters in the batch; u: ``(m, t)`` float64 uniforms, the same on every rank.

    Returns:
        ``(m, t)`` int64 global row indices (0 where the cluster has no potential) and the
        ``(m,)`` float64 total potential of every cluster.
    """
    device = pot.device
    pot_sorted = pot[order].double()
    local_total = torch.zeros(m, dtype=torch.float64, device=device).index_add_(0, p_sorted, pot_sorted)
    counts = torch.bincount(p_sorted, minlength=m)
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    cum = torch.cumsum(pot_sorted, 0)
    base = cum[(starts - 1).clamp_min(0)] * (starts > 0) if len(cum) else torch.zeros(m, dtype=torch.float64)
    rank_cum = torch.cumsum(dist.all_gather_stack(local_total.cpu()), dim=0).to(device)  # (world, m)
    total = rank_cum[-1]
    target = u.to(device) * total.unsqueeze(1)
    owner = (target.unsqueeze(0) >= rank_cum.unsqueeze(2)).sum(0).clamp_(max=len(rank_cum) - 1)
    before = rank_cum[rows.rank - 1] if rows.rank > 0 else torch.zeros_like(total)
    mine = (owner == rows.rank) & (counts > 0).unsqueeze(1)
    picked = torch.zeros(u.shape, dtype=torch.int64, device=device)  # global index + 1, 0 elsewhere
    if len(cum):
        local = target - before.unsqueeze(1) + base.unsqueeze(1)
        pos = torch.searchsorted(cum, local.contiguous(), right=True)
        pos = torch.minimum(torch.maximum(pos, starts.unsqueeze(1)), (ends - 1).clamp_min(0).unsqueeze(1))
        picked = torch.where(mine, order[pos] + rows.offset + 1, picked)
    return (dist.all_reduce_sum_(picked.cpu()) - 1).clamp_min_(0), total


def _kmeanspp_in_clusters(
    rows: LocalRows,
    parent_local: torch.Tensor,
    batch: _Batch,
    grouped: _Grouped | None,
    n_splits: int,
    seed: int,
    chunk: int,
    first_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-means++ inside every cluster of the batch, all clusters at once.

    Step ``j`` draws ``2 + ln n_splits`` candidates per cluster (one, uniformly, at the first
    step) from its members by their potential, scores each row against its own cluster's
    candidates only and keeps, per cluster, the one that lowers the cluster's potential most:
    ``n_splits`` passes over the batch's rows. A cluster with fewer distinct members than
    ``n_splits`` fills only as many slots. The draws of cluster ``c`` (global id ``first_id + c``)
    at step ``j`` come from a generator seeded by ``(seed, j)``, so they do not depend on the
    batching or the ranks.

    Returns:
        ``sub ((hi - lo) * n_splits, d)`` float32 and ``used ((hi - lo) * n_splits,)`` bool.
    """
    lo, hi, ranges = batch
    m, d, device = hi - lo, rows.d, rows.device
    s, t = n_splits, kpp_trials(n_splits)
    sub = torch.zeros(m, s, d, dtype=torch.float32, device=device)
    used = torch.zeros(m, s, dtype=torch.bool, device=device)
    batch_at = torch.arange(rows.n, device=device) if ranges is None else grouped.indices(ranges)
    p_batch = parent_local[batch_at] - lo
    sort = torch.argsort(p_batch, stable=True)
    order, p_sorted = batch_at[sort], p_batch[sort]
    pot = torch.ones(rows.n, dtype=torch.float32, device=device)
    for j in range(s):
        tj = 1 if j == 0 else t
        gen = torch.Generator().manual_seed(_mixed_seed(seed, j))
        u = torch.rand(first_id + hi, tj, generator=gen, dtype=torch.float64)[first_id + lo :]
        picked, total = _segment_sample(rows, pot, order, p_sorted, m, u)
        cand = rows.fetch_global(picked.flatten()).view(m, tj, d)
        sums = torch.zeros(m, tj, dtype=torch.float64, device=device)
        trial = torch.empty(rows.n, tj, dtype=torch.float32, device=device)
        for at, x, p in _batch_rows(rows, parent_local, batch, grouped, chunk):
            d2 = _member_sq_dists(x, cand[p])
            if j > 0:
                d2 = torch.minimum(d2, pot[at].unsqueeze(1))
            trial[at] = d2
            sums.index_add_(0, p, d2.double())
        best = torch.argmin(dist.all_reduce_sum_(sums), dim=1)  # (m,)
        pot[batch_at] = trial[batch_at].gather(1, best[p_batch].unsqueeze(1)).squeeze(1)
        valid = total > 0
        sub[:, j] = cand[torch.arange(m, device=device), best]
        used[:, j] = valid
    return sub.view(m * s, d), used.view(m * s)


def _reseed_slots(
    rows: LocalRows,
    parent_local: torch.Tensor,
    batch: _Batch,
    sq: torch.Tensor,
    empty: torch.Tensor,
    n_splits: int,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows for the empty slots ``empty: (e,)`` (slot ids within the batch): the members of the
    slot's cluster farthest from their sub-centroid, as the flat engine re-seeds. Ties by global
    row index, so every world size picks the same rows.

    Returns:
        the slots that got a row ``(e',)`` and those rows ``(e', d)``.
    """
    lo, hi, _ = batch
    device = rows.device
    need = torch.bincount(empty // n_splits, minlength=hi - lo)
    at = (need[(parent_local - lo).clamp(0, hi - lo - 1)] > 0) & (parent_local >= lo) & (parent_local < hi)
    at = at.nonzero().squeeze(1)
    local = torch.stack([parent_local[at] - lo, at + rows.offset], 1)  # (cluster, global row)
    table = dist.all_gather_rows(torch.cat([local.double(), sq[at].double().unsqueeze(1)], 1).cpu())
    cluster, row, dist2 = table[:, 0].long(), table[:, 1].long(), table[:, 2]
    order = torch.argsort(row, stable=True)
    order = order[torch.argsort(-dist2[order], stable=True)]
    order = order[torch.argsort(cluster[order], stable=True)]
    cluster, row = cluster[order], row[order]
    counts = torch.bincount(cluster, minlength=hi - lo)
    rank = torch.arange(len(cluster)) - (torch.cumsum(counts, 0) - counts)[cluster]
    take = rank < need.cpu()[cluster]
    cluster, row, rank = cluster[take], row[take], rank[take]
    # the empty slots of every cluster in increasing order, matched to its rows by rank
    empty = empty.sort().values.cpu()
    e_cluster = empty // n_splits
    e_counts = torch.bincount(e_cluster, minlength=hi - lo)
    e_rank = torch.arange(len(empty)) - (torch.cumsum(e_counts, 0) - e_counts)[e_cluster]
    key_slots = e_cluster * (n_splits + 1) + e_rank
    key_rows = cluster * (n_splits + 1) + rank
    filled = torch.isin(key_slots, key_rows)
    slots = empty[filled]
    pos = torch.searchsorted(key_rows, key_slots[filled])
    return slots.to(device), rows.fetch_global(row[pos])


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
    init: str = "k-means++",
    first_id: int = 0,
    seeds: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, dict]:
    """Batched in-cluster k-means (k-means++ or random-member init, Lloyd) of every cluster.

    Args:
        rows: this rank's prepared rows (``rows.scan()`` already called).
        parent_local: ``(n_local,)`` int64 cluster of this rank's rows.
        parent_global: ``(n,)`` cluster of every row (all ranks), used by the random init.
        k: number of clusters; n_splits: sub-clusters per cluster; n_iter: Lloyd iterations.
        seed: seeds the initialisation.
        memory_budget_mb: bounds the per-chunk temporaries (rows x n_splits scores).
        memory_mb: bounds the sub-centroids and float64 sums held at once (a batch of clusters).
        init: ``"k-means++"`` (greedy, inside every cluster, all clusters at once) or
            ``"random"`` (distinct random members).
        first_id: global id of cluster 0 here (a rank splitting its own range of clusters).
        seeds: the random init's ``(rows, slots)`` when already drawn (local rows, local slots).

    Returns:
        ``centroids (k * n_splits, d)`` float32 numpy in the prepared space (unused slots are
        NaN), ``slot_local (n_local,)`` int64, ``sq_dist_local (n_local,)`` float32 and stats.
    """
    if init not in SPLIT_INITS:
        raise ValueError(f"split init must be one of {SPLIT_INITS}, got {init!r}")
    d, device = rows.d, rows.device
    centroids = np.full((k * n_splits, d), np.nan, dtype=np.float32)  # on the host
    if init == "random":
        if seeds is None:
            seeds = pick_split_seeds(parent_global, k, n_splits, np.random.default_rng(seed))
        seed_rows, seed_slots = seeds
        centroids[seed_slots] = rows.fetch_global(torch.from_numpy(seed_rows)).cpu().numpy()
    per_cluster = n_splits * (12 * d + 21)  # sub float32 + sums float64 + counts, norms, flags
    batch = int(max(1, min(k, memory_mb * 2**20 // per_cluster)))
    chunk = max(1, int(memory_budget_mb * 2**20) // (4 * n_splits * (d + 2) + 12 * d))
    parent_local = parent_local.to(device)
    grouped = None if batch >= k else _Grouped(rows, parent_local, k)
    slot = torch.empty(rows.n, dtype=torch.int64, device=device)
    sq = torch.empty(rows.n, dtype=torch.float32, device=device)
    n_empty, n_reseeded, n_seeded = 0, 0, 0
    n_batches = -(-k // batch)
    progress = Progress(n_batches * (n_iter + 1), f"split of {k} clusters into {n_splits}: Lloyd pass")
    for lo in range(0, k, batch):  # batches of clusters, each run to the end
        hi = min(k, lo + batch)
        clusters = (lo, hi, None if grouped is None else grouped.ranges(lo, hi))
        if init == "random":
            sub = torch.from_numpy(centroids[lo * n_splits : hi * n_splits].copy()).to(device)
            used = ~torch.isnan(sub[:, 0])
            sub[~used] = 0.0
        else:
            sub, used = _kmeanspp_in_clusters(rows, parent_local, clusters, grouped, n_splits, seed, chunk, first_id)
        n_seeded += int(used.sum())
        empty, reseeded = _lloyd_batch(
            rows, parent_local, clusters, grouped, n_splits, n_iter, chunk, sub, used, slot, sq, progress=progress
        )
        n_empty, n_reseeded = n_empty + empty, n_reseeded + reseeded
        sub[~used] = torch.nan
        centroids[lo * n_splits : hi * n_splits] = sub.cpu().numpy()
    stats = {
        "n_splits": n_splits,
        "init": init,
        "seeded_slots": n_seeded,
        "empty_reseeded": n_reseeded,
        "empty_after_lloyd": n_empty,
        "cluster_batches": n_batches,
    }
    return centroids, slot.cpu(), sq.cpu(), stats


def _lloyd_batch(
    rows: LocalRows,
    parent_local: torch.Tensor,
    batch: _Batch,
    grouped: _Grouped | None,
    n_splits: int,
    n_iter: int,
    chunk: int,
    sub: torch.Tensor,
    used: torch.Tensor,
    slot: torch.Tensor,
    sq: torch.Tensor,
    reseed: bool = True,
    progress: Progress | None = None,
) -> tuple[int, int]:
    """Constrained Lloyd of the clusters of ``batch = (lo, hi, ranges)``: updates
    ``sub ((hi - lo) * n_splits, d)`` in place and writes ``slot`` / ``sq`` of their rows.

    A seeded slot that loses all its rows is re-seeded with its cluster's farthest row (as the
    flat engine does). Returns the seeded slots left empty and the re-seeds. ``progress`` counts
    the passes over the rows."""
    lo, hi, _ = batch
    k, d, device = hi - lo, rows.d, rows.device
    n_empty, n_reseeded = 0, 0
    for it in range(n_iter + 1):  # the last pass only assigns
        sqnorm = torch.where(used, sub.square().sum(dim=1), torch.inf).view(k, n_splits)
        sums = torch.zeros(k * n_splits, d, dtype=torch.float64, device=device)
        counts = torch.zeros(k * n_splits, dtype=torch.int64, device=device)
        sub3 = sub.view(k, n_splits, d)
        for at, x, p in _batch_rows(rows, parent_local, batch, grouped, chunk):
            s_lab, s_d2 = _constrained_assign(x, p, sub3, sqnorm)
            slot[at], sq[at] = s_lab + lo * n_splits, s_d2
            if it < n_iter:
                accumulate_(x, s_lab, sums, counts)
        if progress is not None:
            progress.update()
        if it == n_iter:
            break
        dist.all_reduce_sum_(sums)
        dist.all_reduce_sum_(counts)
        # on the device, no mask indexing: no host sync per iteration
        filled = counts > 0
        # the update stays on the device (no mask indexing); reading the empty count back is this
        # iteration's one host sync, and the re-seeding (rare) needs it
        new = (sums / counts.clamp_min(1).unsqueeze(1).double()).float()
        if rows.cosine:
            new = normalize_rows(torch.where(filled.unsqueeze(1), new, 1.0))  # unfilled: no 0/0 in the norm
        sub.copy_(torch.where(filled.unsqueeze(1), new, sub))
        n_empty = int((used & ~filled).sum())
        if n_empty and reseed:
            empty = (used & ~filled).nonzero().squeeze(1)
            slots, seeds = _reseed_slots(rows, parent_local, batch, sq, empty, n_splits, chunk)
            sub[slots] = seeds
            n_reseeded += len(slots)
            n_empty -= len(slots)
    return n_empty, n_reseeded


def cluster_owners(counts: torch.Tensor, world: int) -> torch.Tensor:
    """``(world + 1,)`` cluster boundaries: rank ``r`` owns clusters ``[b[r], b[r + 1])``, contiguous
    ranges with about ``N / world`` rows each (``counts: (k,)`` global rows per cluster)."""
    ends = torch.cumsum(counts, 0)
    n = int(ends[-1]) if len(ends) else 0
    starts = ends - counts
    # a cluster goes to the rank where its first row would fall in an even split of the rows
    owner = torch.clamp(starts * world // max(n, 1), max=world - 1)
    bounds = torch.searchsorted(owner, torch.arange(world + 1), right=False)
    bounds[-1] = len(counts)
    return bounds


def _exchange(t: torch.Tensor, send: list[int], recv: list[int]) -> torch.Tensor:
    """All-to-all of the rows of ``t`` (``send[r]`` rows to rank ``r``, in order)."""
    nccl = torch.distributed.get_backend() == "nccl"
    comm = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    out = torch.empty((sum(recv), *t.shape[1:]), dtype=t.dtype, device=comm)
    torch.distributed.all_to_all_single(out, t.to(comm).contiguous(), output_split_sizes=recv, input_split_sizes=send)
    return out.cpu()


def split_clusters_regrouped(
    rows: LocalRows,
    parent_local: torch.Tensor,
    parent_global: np.ndarray,
    k: int,
    n_splits: int,
    n_iter: int,
    seed: int,
    memory_budget_mb: float = 256.0,
    memory_mb: float = 4096.0,
    init: str = "k-means++",
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, dict]:
    """:func:`split_clusters` with the rows regrouped by cluster: no communication per iteration.

    Ranks own contiguous ranges of clusters balanced by rows (:func:`cluster_owners`); one
    all-to-all sends every prepared row to the owner of its cluster (received in global row
    order), each rank splits its clusters alone, another all-to-all returns the rows' slots and
    distances, and one all-gather shares the sub-centroids. Per split iteration nothing crosses
    ranks, against an all-reduce of ``k * n_splits * d`` float64 sums; the price is one exchange
    of the shard each way (on the CPU backend via the host). The result equals a single
    process's, row for row.

    Args and returns: as :func:`split_clusters` (distributed; ``rows`` prepared and scanned).
    """
    world, device = dist.get_world_size(), rows.device
    counts = dist.all_reduce_sum_(torch.bincount(parent_local.cpu(), minlength=k))
    bounds = cluster_owners(counts, world)
    parent_cpu = parent_local.cpu()
    owner = torch.searchsorted(bounds[1:], parent_cpu, right=True)
    order = torch.argsort(owner, stable=True)
    send = torch.bincount(owner, minlength=world)
    recv = dist.all_gather_stack(send)[:, dist.get_rank()]
    send_l, recv_l = send.tolist(), recv.tolist()
    local_x = torch.empty(rows.n, rows.d, dtype=torch.float32)
    for start, x in rows.chunks():
        local_x[start : start + len(x)] = x.cpu()
    x_mine = _exchange(local_x[order], send_l, recv_l)
    parent_mine = _exchange(parent_cpu[order], send_l, recv_l)
    gidx_mine = _exchange(order + rows.offset, send_l, recv_l)
    lo, hi = int(bounds[dist.get_rank()]), int(bounds[dist.get_rank() + 1])
    seeds = None
    if init == "random":
        seed_rows, seed_slots = pick_split_seeds(parent_global, k, n_splits, np.random.default_rng(seed))
        mine = (seed_slots >= lo * n_splits) & (seed_slots < hi * n_splits)
        local_rows = torch.searchsorted(gidx_mine, torch.from_numpy(seed_rows[mine])).numpy()
        seeds = (local_rows, seed_slots[mine] - lo * n_splits)
    with dist.local_only():
        mine_rows = LocalRows(
            RowSource(x_mine.to(device)), device, chunk_rows=rows.chunk_rows, cosine=False, cache_bytes=1 << 62
        )
        mine_rows._cache = x_mine.to(device) if len(x_mine) else None
        mine_rows.cosine = rows.cosine  # rows are prepared already; the flag re-normalises centroids
        if hi > lo:
            sub, slot, sq, stats = split_clusters(
                mine_rows,
                (parent_mine - lo).to(device),
                np.empty(0, np.int64),
                hi - lo,
                n_splits,
                n_iter,
                seed,
                memory_budget_mb,
                memory_mb,
                init,
                first_id=lo,
                seeds=seeds,
            )
        else:
            sub = np.empty((0, rows.d), np.float32)
            slot, sq = torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.float32)
            stats = {"n_splits": n_splits, "init": init, "cluster_batches": 0}
    back_slot = _exchange(slot + lo * n_splits, recv_l, send_l)
    back_sq = _exchange(sq, recv_l, send_l)
    slot_local = torch.empty(rows.n, dtype=torch.int64)
    sq_local = torch.empty(rows.n, dtype=torch.float32)
    slot_local[order], sq_local[order] = back_slot, back_sq
    centroids = dist.all_gather_rows(torch.from_numpy(sub)).numpy()
    totals = torch.tensor([stats.get(key, 0) for key in _SUMMED_STATS], dtype=torch.int64)
    dist.all_reduce_sum_(totals)
    stats.update(zip(_SUMMED_STATS, totals.tolist()))
    stats["cluster_batches"] = int(dist.all_reduce_(torch.tensor([stats["cluster_batches"]]), "max")[0])
    stats["regrouped"] = True
    return centroids, slot_local, sq_local, stats


_SUMMED_STATS = ("seeded_slots", "empty_reseeded", "empty_after_lloyd")
