"""Pure, chunk-level k-means kernels. They take and return tensors on one device; no I/O, no
communication, no Python loop over clusters or points.

Shapes: ``x: (m, d)`` one chunk of rows, ``c: (k, d)`` centroids, ``c_sqnorm: (k,)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# Squared distances below this fraction of ||x||^2 + ||c||^2 are recomputed exactly: the matmul
# expansion loses them to cancellation, and k-means++ must see exact zeros for duplicate points.
_CANCELLATION_RTOL = 1e-3
_DIRECT_MAX_D = 8


# CPU chunks hold a (rows x k) float32 score block of at most this size. On one thread a
# cache-sized block is best (k = 1024: the argmin pass took half the time with 4 MB as with
# 32 MB blocks); several threads pay one OpenMP synchronisation per op and chunk, and on a busy
# 2-core machine ran 1.6x faster with 16-64 MB blocks than with 4 MB (docs/benchmarks.md).
_CPU_SCORE_BLOCK_BYTES = {1: 4 << 20}
_CPU_SCORE_BLOCK_BYTES_THREADED = 32 << 20
_ARGMIN_BLOCK = 64


def chunk_rows_for(
    budget_bytes: int, k: int, d: int, device: torch.device | str = "cpu", threads: int | None = None
) -> int:
    """Rows per chunk so that one chunk's working set fits in ``budget_bytes``.

    Per row: ``k`` float32 scores, the float32 row, its float64 copy for accumulation and a few
    scalars; the ``(k, d)`` centroids are not counted. On a CPU the chunk is further capped
    (the score block: 4 MB on one thread, 32 MB on several; ``threads``: the count to size it
    for, default torch's current one).
    """
    per_row = 4 * k + 12 * d + 32
    rows = max(1, int(budget_bytes) // per_row)
    if torch.device(device).type == "cpu":
        threads = torch.get_num_threads() if threads is None else threads
        block = _CPU_SCORE_BLOCK_BYTES.get(threads, _CPU_SCORE_BLOCK_BYTES_THREADED)
        rows = min(rows, max(256, block // (4 * k)))
    return rows


def argmin_rows(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise ``(min, argmin)`` of ``scores: (m, k)``; the first index wins ties.

    On a CPU, ``Tensor.min(dim=1)`` with indices is not vectorised while ``amin`` is: take the
    minimum of each block of 64 columns, pick the best block, then search inside it (2.6x faster
    than ``min(dim=1)`` at k = 1024 on 2 cores).
    """
    m, k = scores.shape
    if scores.device.type != "cpu" or k < 4 * _ARGMIN_BLOCK:
        return scores.min(dim=1)
    n_blocks = k // _ARGMIN_BLOCK
    head = scores[:, : n_blocks * _ARGMIN_BLOCK].view(m, n_blocks, _ARGMIN_BLOCK)
    block_min = head.amin(dim=2)
    best_val, best_block = block_min.min(dim=1)
    inside = head[torch.arange(m, device=scores.device), best_block].argmin(dim=1)
    best_idx = best_block * _ARGMIN_BLOCK + inside
    if n_blocks * _ARGMIN_BLOCK < k:
        tail_val, tail_idx = scores[:, n_blocks * _ARGMIN_BLOCK :].min(dim=1)
        use_tail = tail_val < best_val
        best_val = torch.where(use_tail, tail_val, best_val)
        best_idx = torch.where(use_tail, tail_idx + n_blocks * _ARGMIN_BLOCK, best_idx)
    return best_val, best_idx


def assign_chunk(
    x: torch.Tensor, c: torch.Tensor, c_sqnorm: torch.Tensor, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row under squared L2, via ``||x||^2 - 2 x.c + ||c||^2``.

    Args:
        x: ``(m, d)`` float32 rows.
        c: ``(k, d)`` centroids (same dtype as ``x``).
        c_sqnorm: ``(k,)`` float32 squared norms of ``c``.
        out: optional ``(>= m, k)`` float32 scratch buffer for the scores (re-using one buffer
            across chunks avoids an allocation per chunk).

    Returns:
        ``labels: (m,) int64`` and ``sq_dist: (m,) float32`` (clamped at 0).
    """
    m = x.shape[0]
    scratch = None if out is None else out[:m]
    if x.shape[1] <= _DIRECT_MAX_D:
        # Few coordinates: sum squared differences directly. The expansion below cancels
        # catastrophically when centroids are close relative to |x| (1-D, k = 5000: 19% of points
        # went to a neighbour of their nearest centroid), and with d this small it is no faster.
        scores = _direct_sq_dists(x, c, out=scratch)
        best, labels = argmin_rows(scores)
        return labels, best
    # ||x||^2 does not change the argmin: add it to the minimum only.
    scores = torch.addmm(c_sqnorm.unsqueeze(0), x, c.T, beta=1.0, alpha=-2.0, out=scratch)
    # the matmul keeps the threads; the argmin pass (a string of short ops, one OpenMP
    # synchronisation each) runs on one, so that it does not stall when another process runs
    with one_cpu_thread() if x.device.type == "cpu" else contextlib.nullcontext():
        best, labels = argmin_rows(scores)
        sq_dist = (best + row_sqnorms(x)).clamp_min_(0.0)
    return labels, sq_dist


def _direct_sq_dists(x: torch.Tensor, c: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(m, t)`` squared distances summed one coordinate at a time (exact; for small ``d``)."""
    out = torch.sub(x[:, :1], c[:, 0], out=out).square_()
    for j in range(1, x.shape[1]):  # a loop over <= 8 coordinates, not over points
        out.add_((x[:, j : j + 1] - c[:, j]).square_())
    return out


def row_sqnorms(x: torch.Tensor) -> torch.Tensor:
    """``(m,)`` squared L2 norms of the rows of ``x: (m, d)``, without an ``(m, d)`` temporary
    (``x.square().sum(1)`` allocates one: 54 ms against 15 ms for 200k x 128 on one thread)."""
    return torch.einsum("ij,ij->i", x, x)


def sq_dists(x: torch.Tensor, c: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
    """All squared L2 distances ``(m, t)`` between ``x: (m, d)`` and ``c: (t, d)``.

    Through matmul, with the small entries (where the expansion cancels) recomputed exactly, so
    identical rows are at distance exactly 0. In low dimension (``d <= 8``) the squared
    differences are summed one coordinate at a time instead: exact, and 5x faster than the
    matmul or a broadcast ``(m, t, d)`` difference for the 2-D toys. ``x_sq: (m,)``, the rows'
    squared norms when already known (k-means++ computes them once, not at every step).
    """
    if x.shape[1] <= _DIRECT_MAX_D:
        return _direct_sq_dists(x, c)
    x_sq = (row_sqnorms(x) if x_sq is None else x_sq).unsqueeze(1)
    c_sq = row_sqnorms(c)
    d2 = torch.addmm(x_sq + c_sq.unsqueeze(0), x, c.T, beta=1.0, alpha=-2.0).clamp_min_(0.0)
    small = d2 <= _CANCELLATION_RTOL * (x_sq + c_sq.unsqueeze(0))
    if bool(small.any()):
        rows, cols = small.nonzero(as_tuple=True)
        d2[rows, cols] = (x[rows] - c[cols]).square().sum(dim=1)
    return d2


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block's torch CPU ops on ``n`` threads, then restore the previous count."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def one_cpu_thread() -> Iterator[None]:
    """Run the block's torch CPU ops on one thread.

    For the scatter-like ops (``index_add_``): with two OpenMP threads on a machine where
    another process runs, float64 ``index_add_`` of 8192 x 128 rows took 200-330 ms against
    1-2 ms on one thread (the other thread is descheduled at every synchronisation;
    docs/benchmarks.md). Switching the pool size costs microseconds.
    """
    with cpu_threads(1):
        yield


def accumulate_(x: torch.Tensor, labels: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> None:
    """Add each row of ``x: (m, d)`` to ``sums[labels]: (k, d)`` and count it in ``counts: (k,)``.

    ``sums`` is float64 so that the result does not depend on the order rows arrive in (and so on
    the chunking or the number of ranks). On a CPU this runs on one thread (see
    :func:`one_cpu_thread`): the matmul keeps the others.
    """
    with one_cpu_thread() if sums.device.type == "cpu" else contextlib.nullcontext():
        sums.index_add_(0, labels, x.to(sums.dtype))
        # not bincount: on a GPU it reads the largest label back to the host (a sync per chunk)
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=counts.dtype))


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the rows of ``x: (m, d)`` (rows must be non-zero; checked upstream)."""
    return x / x.norm(dim=1, keepdim=True)
