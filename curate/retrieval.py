"""Nearest pool items of each query by cosine similarity: exact (chunked) or approximate (faiss IVF).

Exact search streams the pool in chunks that fit a memory budget. Each chunk is compared with the
(L2-normalised, in-memory) queries in tiles; a tile's top-N joins each query's running top-N in a
merge. The order is total: higher similarity first, the smaller pool row among equal similarities
(:func:`merge_topk`), so the result does not depend on the chunk size nor on the number of ranks.

Distributed (every rank calls :func:`search` with the same arguments): rank ``r`` searches its
contiguous shard of pool rows (:func:`curate.io.shards.shard_range`); the ranks all-gather each
query block's ``(N,)`` candidates and merge them the same way, so every rank returns the result of
one process. Cost: ``O(Q * P * d / world_size)`` per rank for ``Q`` queries and ``P`` pool rows.

``method="ivf"``: rank 0 trains a spherical k-means quantizer of ``nlist`` cells on a seeded
random subset of the pool and broadcasts it; each rank indexes its shard in an
``IndexIVFFlat`` (inner product) and searches ``nprobe`` cells per query; the merge is the same.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from curate.core import dist
from curate.core.errors import InputError
from curate.io.shards import shard_range

METHODS = ("exact", "ivf")


def normalised_rows(x: Any, start: int, stop: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Rows ``[start, stop)`` of ``x`` as L2-normalised float32 on ``device``.

    Args:
        x: ``(n, d)`` rows: array, memmap, :class:`~curate.io.store.ConcatenatedRows` or tensor.

    Returns:
        ``(stop - start, d)`` float32; a zero row stays zero.
    """
    rows = x[start:stop]
    if isinstance(rows, torch.Tensor):
        rows = rows.to(torch.float32)
    else:  # a copy: memory-mapped rows are read-only
        rows = torch.from_numpy(np.array(rows, dtype=np.float32).reshape(stop - start, x.shape[1]))
    rows = rows.to(device)
    # scale first: the squared norm of a row of magnitude ~1e20 overflows float32 (its direction does not)
    scale = rows.abs().amax(dim=1, keepdim=True)
    return F.normalize(rows / torch.where(scale > 0, scale, 1.0), dim=1)


def check_finite(rows: torch.Tensor, start: int, what: str) -> None:
    """Refuse NaN / Inf rows, naming the first one (``start`` is the row number of ``rows[0]``)."""
    finite = torch.isfinite(rows).all(1)
    if not bool(finite.all()):
        raise InputError(f"{what}: row {start + int(torch.nonzero(~finite)[0])} holds NaN or Inf")


def merge_topk(scores: torch.Tensor, index: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best candidates of each row: higher score first, then the smaller index.

    Args:
        scores: ``(q, m)`` float32 candidate similarities (``-inf`` for an empty slot).
        index: ``(q, m)`` int64 their pool rows (``-1`` for an empty slot).
        k: how many to keep (``<= m``).

    Returns:
        ``(scores (q, k), index (q, k))``, sorted.
    """
    order = torch.argsort(index, dim=1, stable=True)
    scores, index = scores.gather(1, order), index.gather(1, order)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), index.gather(1, order)


def tile_topk(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` columns of each row of ``sim: (q, c)`` (ties: the smaller column).

    ``torch.topk`` picks any of equal values at the boundary; the rows where equal values straddle
    it (exact duplicates in the pool) are sorted instead, with a stable sort.

    Returns:
        ``(values (q, min(k, c)), columns (q, min(k, c)) int64)``, not necessarily sorted.
    """
    k = min(k, sim.shape[1])
    values, columns = sim.topk(k, dim=1)
    kth = values[:, -1:]
    straddle = (sim == kth).sum(1) > (values == kth).sum(1)
    if bool(straddle.any()):
        rows = torch.nonzero(straddle).flatten()
        fixed, cols = torch.sort(sim[rows], dim=1, descending=True, stable=True)
        values[rows], columns[rows] = fixed[:, :k], cols[:, :k]
    return values, columns


def tile_sizes(d: int, n_queries: int, memory_budget_mb: float) -> tuple[int, int]:
    """``(pool rows per chunk, queries per tile)`` so that a pool chunk and a similarity tile (with
    the top-N temporaries, about 3 copies) fit ``memory_budget_mb``."""
    budget = max(1.0, memory_budget_mb) * 2**20 / 4  # float32 entries
    query_rows = max(1, min(n_queries, 1024))
    return max(1, int(budget // (d + 3 * query_rows))), query_rows


def exact_topk(
    pool: Any,
    queries: torch.Tensor,
    k: int,
    start: int = 0,
    stop: int | None = None,
    device: torch.device | str = "cpu",
    memory_budget_mb: float = 256.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` rows of ``pool[start:stop]`` for each query, by cosine similarity.

    Args:
        pool: ``(P, d)`` rows (array, memmap, store view, tensor); read chunk by chunk.
        queries: ``(Q, d)`` L2-normalised float32 on ``device``.
        k: neighbours per query.
        start, stop: the pool rows to search (a rank's shard); indices returned are pool rows.
        device: where the similarities are computed.
        memory_budget_mb: a pool chunk and one similarity tile fit in it.

    Returns:
        ``(scores (Q, k) float32, index (Q, k) int64)`` on the CPU, sorted; slots beyond the rows
        searched hold ``-inf`` / ``-1``.
    """
    stop = int(pool.shape[0]) if stop is None else stop
    n_q, d = queries.shape
    chunk_rows, query_rows = tile_sizes(d, n_q, memory_budget_mb)
    best = torch.full((n_q, k), -math.inf, device=device)
    where = torch.full((n_q, k), -1, dtype=torch.int64, device=device)
    for lo in range(start, stop, chunk_rows):
        hi = min(stop, lo + chunk_rows)
        chunk = normalised_rows(pool, lo, hi, device)
        check_finite(chunk, lo, "input")
        for q in range(0, n_q, query_rows):
            values, columns = tile_topk(queries[q : q + query_rows] @ chunk.T, k)
            best[q : q + query_rows], where[q : q + query_rows] = merge_topk(
                torch.cat([best[q : q + query_rows], values], 1),
                torch.cat([where[q : q + query_rows], columns + lo], 1),
                k,
            )
    return best.cpu(), where.cpu()


def train_ivf(pool: Any, nlist: int, train_size: int, seed: int) -> np.ndarray:
    """``(nlist, d)`` float32 unit-norm IVF centroids: spherical k-means (faiss) on a seeded
    random subset of ``train_size`` normalised pool rows."""
    import faiss

    n, d = int(pool.shape[0]), int(pool.shape[1])
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, max(train_size, nlist)), replace=False))
    sample = normalised_rows(np.asarray(pool[rows], dtype=np.float32).reshape(len(rows), d), 0, len(rows))
    kmeans = faiss.Kmeans(d, nlist, niter=20, seed=seed, spherical=True, verbose=False)
    kmeans.train(np.ascontiguousarray(sample.numpy()))
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def ivf_topk(
    pool: Any,
    queries: torch.Tensor,
    k: int,
    centroids: np.ndarray,
    nprobe: int,
    start: int = 0,
    stop: int | None = None,
    memory_budget_mb: float = 256.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-``k`` rows of ``pool[start:stop]`` for each query: a faiss
    ``IndexIVFFlat`` (inner product) with the given cells, ``nprobe`` of them searched per query.

    Returns:
        As :func:`exact_topk`.
    """
    import faiss

    stop = int(pool.shape[0]) if stop is None else stop
    n_q, d = queries.shape
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, d, len(centroids), faiss.METRIC_INNER_PRODUCT)
    chunk_rows, query_rows = tile_sizes(d, n_q, memory_budget_mb)
    for lo in range(start, stop, chunk_rows):
        hi = min(stop, lo + chunk_rows)
        chunk = normalised_rows(pool, lo, hi)
        check_finite(chunk, lo, "input")
        index.add_with_ids(np.ascontiguousarray(chunk.numpy()), np.arange(lo, hi, dtype=np.int64))
    index.nprobe = int(nprobe)
    best = torch.full((n_q, k), -math.inf)
    where = torch.full((n_q, k), -1, dtype=torch.int64)
    if index.ntotal:
        for q in range(0, n_q, query_rows):
            scores, found = index.search(np.ascontiguousarray(queries[q : q + query_rows].cpu().numpy()), k)
            scores, found = torch.from_numpy(scores), torch.from_numpy(found)
            scores = torch.where(found >= 0, scores, -math.inf)
            best[q : q + query_rows], where[q : q + query_rows] = merge_topk(scores, found, k)
    return best, where


def merge_ranks(
    scores: torch.Tensor, index: torch.Tensor, k: int, block: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's ``(Q, k)`` candidates merged into the global top-``k`` (the same on every rank);
    gathered ``block`` queries at a time, so a rank holds ``world_size * block * k`` candidates."""
    if not dist.is_distributed():
        return scores, index
    out_scores, out_index = torch.empty_like(scores), torch.empty_like(index)
    for q in range(0, len(scores), block):
        gathered_scores = dist.all_gather_stack(scores[q : q + block].contiguous())  # (W, b, k)
        gathered_index = dist.all_gather_stack(index[q : q + block].contiguous())
        b = gathered_scores.shape[1]
        out_scores[q : q + b], out_index[q : q + b] = merge_topk(
            gathered_scores.permute(1, 0, 2).reshape(b, -1), gathered_index.permute(1, 0, 2).reshape(b, -1), k
        )
    return out_scores, out_index


def search(
    pool: Any,
    queries: Any,
    k: int,
    method: str = "exact",
    device: torch.device | str = "cpu",
    memory_budget_mb: float = 256.0,
    nlist: int = 1024,
    nprobe: int = 16,
    train_size: int = 100_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` nearest pool rows by cosine similarity; every rank of a group calls it
    with the same arguments and gets the same result.

    Args:
        pool: ``(P, d)`` rows; each rank reads only its shard.
        queries: ``(Q, d)`` rows (held in memory, normalised).
        k: neighbours per query (``1 <= k <= P``).
        method: ``exact`` or ``ivf``.
        device: where exact similarities are computed (IVF runs on the CPU).
        memory_budget_mb: a pool chunk and a similarity tile fit in it.
        nlist, nprobe, train_size, seed: IVF cells, cells searched per query, quantizer training
            rows and their seed.

    Returns:
        ``(scores (Q, k) float32, index (Q, k) int64)``: per query, pool rows by decreasing
        similarity (ties: the smaller row).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n, d = int(pool.shape[0]), int(pool.shape[1])
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the pool's rows), got {k}")
    if queries.shape[1] != d:
        raise InputError(f"queries have dimension {queries.shape[1]}, the pool {d}")
    start, stop = shard_range(n, dist.get_rank(), dist.get_world_size())
    qdevice = device if method == "exact" else "cpu"
    q = normalised_rows(queries, 0, int(queries.shape[0]), qdevice)
    check_finite(q, 0, "queries")
    if method == "exact":
        scores, index = exact_topk(pool, q, k, start, stop, device, memory_budget_mb)
    else:
        if not 1 <= nlist <= n:
            raise InputError(f"nlist must be in [1, {n}] (the pool's rows), got {nlist}")
        centroids = torch.zeros(nlist, d)
        if dist.is_main_process():
            centroids = torch.from_numpy(train_ivf(pool, nlist, train_size, seed))
        centroids = dist.all_reduce_(centroids, "sum").numpy()  # rank 0's, on every rank
        scores, index = ivf_topk(pool, q, k, centroids, nprobe, start, stop, memory_budget_mb)
    scores, index = merge_ranks(scores, index, k)
    return scores.numpy(), index.numpy()
