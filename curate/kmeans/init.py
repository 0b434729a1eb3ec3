"""Seeded centroid initialisation over a sharded input: greedy k-means++ and random rows.

Both draw their random numbers from one CPU ``torch.Generator`` that every rank holds in the
same state, so every rank takes the same decisions and the result does not depend on the number
of ranks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from curate.core import dist
from curate.core.progress import Progress
from curate.kmeans.kernels import (
    _CANCELLATION_RTOL,
    _DIRECT_MAX_D,
    chunk_rows_for,
    cpu_threads,
    one_cpu_thread,
    row_sqnorms,
    sq_dists,
)
from curate.kmeans.shard import LocalRows
from curate.kmeans.source import RowSource

_INIT_BUDGET_BYTES = 64 << 20
# rows of a k-means++ step's block: the (rows x t) scores and their float64 sum stay in cache
_STEP_CHUNK_ROWS = 8192
# exact pruned k-means++ (Raff 2021's triangle bound, per row): off until it is measured faster
# (docs/benchmarks.md, issue 22 item 2)
PRUNE_DEFAULT = False


class TooFewDistinctPoints(ValueError):
    """The data holds fewer distinct rows than the requested number of clusters."""


def _local_row_sqnorms(rows: LocalRows, chunk: int) -> torch.Tensor:
    """``(n_local,)`` squared norms of this rank's rows (once per k-means++, not per step)."""
    out = torch.empty(rows.n, dtype=torch.float32, device=rows.device)
    for start, x in rows.chunks(chunk):
        out[start : start + len(x)] = row_sqnorms(x)
    return out


def _local_sq_dists_to(rows: LocalRows, c: torch.Tensor, chunk: int, x_sq: torch.Tensor) -> torch.Tensor:
    """``(n_local, t)`` squared distances of this rank's rows to ``c: (t, d)``, ``chunk`` rows at a
    time. Rows-major: a tall-skinny ``x @ c.T`` ran 1.5x faster than ``c @ x.T`` for t = 6."""
    if rows.n <= chunk and rows._cache is not None:  # the common small case: one kernel call
        return sq_dists(rows._cache.float(), c, x_sq)
    out = torch.empty(rows.n, c.shape[0], dtype=torch.float32, device=rows.device)
    for start, x in rows.chunks(chunk):
        out[start : start + len(x)] = sq_dists(x, c, x_sq[start : start + len(x)])
    return out


def kpp_trials(k: int) -> int:
    """Candidates per greedy k-means++ step: ``2 + floor(ln k)`` (as scikit-learn)."""
    return 2 + int(math.log(k))


def kmeans_plusplus(
    rows: LocalRows,
    k: int,
    generator: torch.Generator,
    n_trials: int | None = None,
    weights: torch.Tensor | None = None,
    prune: bool | None = None,
) -> torch.Tensor:
    """Greedy k-means++ (D^2 sampling with ``2 + ln k`` local trials per centroid, as sklearn).

    For each new centroid, ``n_trials`` candidates are drawn with probability proportional to the
    squared distance to the nearest centroid chosen so far; the candidate that lowers the total
    potential most is kept.

    A step is one streamed pass over the shard that scores all candidates in one matmul into a
    preallocated ``(n_trials, n_local)`` block, plus a handful of ops on ``(n_local,)`` buffers;
    no per-step allocation beyond the ``n_trials`` candidates. The chosen rows are fetched once,
    at the end.

    Args:
        rows: this rank's shard (``rows.n_global >= k``).
        k: number of centroids.
        generator: CPU generator, in the same state on every rank.
        n_trials: candidates per centroid (default ``2 + int(ln k)``).
        weights: optional ``(n,)`` non-negative row weights (one process only): a row's
            potential is its weight times its squared distance (the weighted k-means++ that
            k-means|| runs on its candidates).
        prune: skip the rows whose potential no candidate can lower (see :class:`_TrialStep`;
            default :data:`PRUNE_DEFAULT`). On a CPU with ``d > 8`` (elsewhere unpruned); a
            streamed shard is still read whole at every step, its kept rows only are scored.
            The same picks as unpruned.

    Returns:
        ``(k, d)`` float32 centroids in the prepared space, identical on every rank.

    Raises:
        TooFewDistinctPoints: when the potential vanishes before ``k`` centroids are placed.
    """
    n_trials = n_trials or kpp_trials(k)
    distributed = dist.is_distributed()
    if weights is not None and distributed:
        raise ValueError("weighted k-means++ runs on one process (or under dist.local_only)")
    device = rows.device
    chosen = torch.empty(k, dtype=torch.int64, device=device if not distributed else "cpu")
    if weights is None:
        chosen[:1] = torch.randint(rows.n_global, (1,), generator=generator)
    else:
        weights = weights.to(device=device, dtype=torch.float32)
        cum_w = torch.cumsum(weights, 0, dtype=torch.float64)
        u0 = torch.rand(1, generator=generator, dtype=torch.float64).to(device) * cum_w[-1]
        chosen[:1] = torch.searchsorted(cum_w, u0, right=True).clamp_(max=rows.n - 1)
    # one draw of all the uniforms: the same stream as one draw of n_trials per step
    uniforms = torch.rand(max(k - 1, 0), n_trials, generator=generator, dtype=torch.float64)
    if not distributed:
        uniforms = uniforms.to(device)
    chunk = chunk_rows_for(_INIT_BUDGET_BYTES, n_trials, rows.d, "cuda")  # few columns: big chunks
    x_sq = _local_row_sqnorms(rows, chunk)
    first = rows.fetch_global(chosen[:1].cpu())
    pot = _local_sq_dists_to(rows, first, chunk, x_sq).squeeze(1)
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    step = _TrialStep(rows, x_sq, n_trials, chunk, weights, threads)
    if PRUNE_DEFAULT if prune is None else prune:
        step.enable_pruning(first, k)
    cum = torch.empty(rows.n, dtype=torch.float64, device=device)
    totals = torch.empty(max(k - 1, 0), dtype=torch.float64, device=device)
    check_now = device.type == "cpu"  # on an accelerator the check waits for the end of the loop
    # on a CPU the step's short ops run on one thread: with two OpenMP threads on a machine where
    # other processes run, a step took 1.7-2.3 s instead of 0.15 s (every op waits for the
    # descheduled thread); only the one matmul per step uses the threads (docs/benchmarks.md)
    with one_cpu_thread() if device.type == "cpu" else contextlib.nullcontext():
        _steps(rows, k, uniforms, weights, pot, step, cum, totals, chosen, check_now)
    if not check_now and len(totals) and not bool((totals > 0).all()):
        _raise_too_few(int((totals > 0).long().argmin()) + 1, k)
    return rows.fetch_global(chosen.cpu() if distributed else chosen)


def _steps(
    rows: LocalRows,
    k: int,
    uniforms: torch.Tensor,
    weights: torch.Tensor | None,
    pot: torch.Tensor,
    step: _TrialStep,
    cum: torch.Tensor,
    totals: torch.Tensor,
    chosen: torch.Tensor,
    check_now: bool,
) -> None:
    """Steps ``1 .. k-1`` of :func:`kmeans_plusplus`: fill ``chosen[1:]`` (global row indices)."""
    progress = Progress(k, f"k-means++ k={k}: centroid", done=1)
    for j in range(1, k):  # sequential by definition: each centroid depends on the previous ones
        target = pot if weights is None else pot * weights
        picked, total = _sample_by_potential(rows, target, uniforms[j - 1], cum)
        if check_now:
            if not total > 0.0:
                _raise_too_few(j, k)
        else:
            totals[j - 1] = total
        candidates = rows.fetch_global(picked)
        best, pot = step(candidates, pot)
        chosen[j : j + 1] = picked[best.to(picked.device)]
        progress.update()


def _raise_too_few(j: int, k: int) -> None:
    raise TooFewDistinctPoints(f"only {j} distinct points found, fewer than k={k}; lower k or deduplicate the data")


class _TrialStep:
    """One k-means++ step: score ``t`` candidates against the potential, keep the best.

    Holds the step's buffers, allocated once: the ``(t, n)`` trial block (rows along the
    contiguous axis, so every elementwise op runs on long contiguous rows) and a few
    ``(n,)`` vectors.

    In the matmul expansion, ``min(|x|^2 + s, pot) = |x|^2 + min(s, pot - |x|^2)`` with
    ``s = |c|^2 - 2 x.c``: one ``addmm`` and one two-sided ``clamp`` give every trial
    potential up to the per-row constant ``|x|^2``, which does not change which candidate is
    best. Rows whose new distance is below ``rtol (|x|^2 + |c|^2)``, where the expansion
    cancels, are recomputed exactly, so duplicates of a centroid are at exactly 0. With
    ``d <= 8`` the distances are summed coordinate by coordinate instead (exact).

    Pruning (:meth:`enable_pruning`, Raff 2021's bound applied per row): each row keeps the index
    ``a(x)`` of the centroid its potential ``D(x)`` was measured to. A candidate ``c`` can only
    lower it if ``|c - c_a(x)| < 2 sqrt(D(x))``; with the float error of the expansion allowed
    for (``r = sqrt(D + tau S)``, ``S = |x|^2 + max |c|^2``, ``tau`` = the cancellation rtol),
    rows with ``|c - c_a(x)| >= 2 r + sqrt(tau S)`` for every candidate get the clamp's value
    ``D - |x|^2`` without a matmul: their scores then equal the unpruned ones. The smallest
    candidate-to-centroid distance per centroid is gathered per row (one ``(n,)`` gather a
    step), the kept rows are scored in one matmul, and the sums run over the same blocks.
    """

    def __init__(
        self,
        rows: LocalRows,
        x_sq: torch.Tensor,
        t: int,
        chunk: int,
        weights: torch.Tensor | None,
        matmul_threads: int = 1,
    ) -> None:
        n, device = rows.n, rows.device
        self.matmul_threads = matmul_threads
        self.rows, self.x_sq, self.weights = rows, x_sq, weights
        self.direct = rows.d <= _DIRECT_MAX_D
        self.trial = torch.empty(t, n, dtype=torch.float32, device=device)
        self.q = torch.empty(n, dtype=torch.float32, device=device)
        self.tmp = torch.empty(n, dtype=torch.float32, device=device)
        self.new = torch.empty(n, dtype=torch.float32, device=device)
        self.mask = torch.empty(n, dtype=torch.bool, device=device)
        self.sums = torch.empty(t, dtype=torch.float64, device=device)
        self.c_sq = torch.empty(t, 1, dtype=torch.float32, device=device)
        self.neg_x_sq = -x_sq
        self.small_bound = -(1.0 - _CANCELLATION_RTOL) * x_sq  # d2 <= rtol (|x|^2 + |c|^2), minus |x|^2
        cache = rows._cache
        whole = cache if cache is not None and cache.dtype == torch.float32 else None
        # a cached shard is scored in cache-sized blocks; a streamed one in the chunks it is read in
        self.chunk = min(chunk, _STEP_CHUNK_ROWS) if cache is not None else rows.chunk_rows
        if whole is not None and self.direct:
            whole = whole.T.contiguous()  # (d, n): one contiguous row per coordinate
        self.whole = whole
        self.parts = torch.empty(max(1, -(-n // self.chunk)), t, dtype=torch.float64, device=device)
        self.centres: torch.Tensor | None = None  # set by enable_pruning
        self.kept_rows = 0  # rows scored by the matmul, summed over the steps (pruned path)

    def enable_pruning(self, first: torch.Tensor, k: int) -> None:
        """Prune from the next step on; ``first: (1, d)`` the first centroid, ``k`` centroids in all.
        A no-op with ``d <= 8`` (exact coordinate sums, no matmul to spare) and off a CPU."""
        if self.direct or self.trial.device.type != "cpu":
            return
        self.centres = torch.empty(k, self.rows.d, dtype=torch.float32, device=self.trial.device)
        self.centres[:1] = first
        self.n_centres = 1
        self.assign = torch.zeros(self.rows.n, dtype=torch.int64, device=self.trial.device)
        self.root = torch.empty(self.rows.n, dtype=torch.float32, device=self.trial.device)
        piece = min(self.rows.n, _STEP_CHUNK_ROWS)  # fresh (m, d) gathers page-faulted: 44 ms vs 7.5 ms
        self.x_buf = torch.empty(piece, self.rows.d, dtype=torch.float32, device=self.trial.device)
        self.s_buf = torch.empty(self.trial.shape[0] * piece, dtype=torch.float32, device=self.trial.device)

    def _kept(self, candidates: torch.Tensor, pot: torch.Tensor) -> torch.Tensor:
        """``(n,)`` bool: the rows that a candidate may bring closer (see the class docstring)."""
        root, j = self.root, self.n_centres
        # (t, j) candidate-to-centroid distances, exact differences (no cancellation)
        cc = (candidates.unsqueeze(1) - self.centres[:j].unsqueeze(0)).square_().sum(2).sqrt_()
        c_min = cc.amin(0)  # (j,): the closest candidate to each centroid
        slack = self.x_sq + float(self.c_sq.max())
        slack.mul_(_CANCELLATION_RTOL)
        torch.add(pot, slack, out=root).sqrt_().mul_(2.0).add_(slack.sqrt_())
        return c_min.index_select(0, self.assign) < root

    def _fill_kept(
        self, out: torch.Tensor, x: torch.Tensor, candidates: torch.Tensor, kept: torch.Tensor, start: int
    ) -> None:
        """Fill ``out: (t, m)``, the trial block of rows ``x: (m, d)`` from ``start``, as the
        unpruned matmul + clamp would, scoring only the ``kept: (m,)`` rows."""
        out.copy_(self.q[start : start + len(x)].expand_as(out))
        keep = kept.nonzero().squeeze(1)
        self.kept_rows += len(keep)
        piece, t = len(self.x_buf), len(candidates)
        for lo in range(0, len(keep), piece):  # gathered into a preallocated, cache-sized block
            idx = keep[lo : lo + piece]
            m, glob = len(idx), idx + start
            xb = torch.index_select(x, 0, idx, out=self.x_buf[:m])
            scores = torch.addmm(self.c_sq, candidates, xb.T, alpha=-2.0, out=self.s_buf[: t * m].view(t, m))
            torch.clamp(scores, min=self.neg_x_sq[glob], max=self.q[glob], out=scores)
            out.index_copy_(1, idx, scores)

    def _blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, x)`` with ``x: (m, d)`` rows (``(d, m)`` columns on the direct path)."""
        if self.whole is None:
            for start, x in self.rows.chunks(self.chunk):
                yield start, (x.T if self.direct else x)
        elif self.direct:
            yield 0, self.whole
        else:
            for start in range(0, self.rows.n, self.chunk):
                yield start, self.whole[start : start + self.chunk]

    def _score(self, candidates: torch.Tensor, pot: torch.Tensor) -> torch.Tensor:
        """Fill the trial block; return the ``(t,)`` float64 column sums of the (weighted) trial
        potentials, up to a constant. Block by block, so that each stays in cache."""
        trial, parts, c_sq = self.trial, self.parts, self.c_sq
        if not self.direct:
            torch.sum(candidates.square(), 1, keepdim=True, out=c_sq)
            torch.sub(pot, self.x_sq, out=self.q)
        kept = self._kept(candidates, pot) if self.centres is not None else None
        one_matmul = self.matmul_threads > 1 and self.whole is not None and not self.direct
        if kept is not None and self.whole is not None:  # one matmul over the kept rows of the shard
            with cpu_threads(self.matmul_threads):
                self._fill_kept(trial, self.whole, candidates, kept, 0)
        elif one_matmul:  # one threaded matmul over the whole shard; the short ops stay on one thread
            with cpu_threads(self.matmul_threads):
                torch.addmm(c_sq, candidates, self.whole.T, alpha=-2.0, out=trial)
        i = 0
        for start, x in self._blocks():
            stop = start + (x.shape[1] if self.direct else len(x))
            out = trial[:, start:stop]
            if kept is not None:
                if self.whole is None:  # a streamed shard: the kept rows of the chunk read
                    self._fill_kept(out, x, candidates, kept[start:stop], start)
            elif one_matmul:
                torch.clamp(out, min=self.neg_x_sq[start:stop], max=self.q[start:stop], out=out)
            elif self.direct:  # exact squared distances, one coordinate at a time
                torch.sub(x[0], candidates[:, :1], out=out).square_()
                for j in range(1, x.shape[0]):  # <= 8 coordinates
                    out.add_((x[j] - candidates[:, j : j + 1]).square_())
                torch.minimum(out, pot[start:stop], out=out)
            else:
                torch.addmm(c_sq, candidates, x.T, alpha=-2.0, out=out)
                torch.clamp(out, min=self.neg_x_sq[start:stop], max=self.q[start:stop], out=out)
            if self.weights is not None:
                out = out * self.weights[start:stop]
            torch.sum(out, 1, dtype=torch.float64, out=parts[i])
            i += 1
        if i == 1:
            return dist.all_reduce_sum_(parts[0])
        return dist.all_reduce_sum_(torch.sum(parts[:i], 0, out=self.sums))

    def __call__(self, candidates: torch.Tensor, pot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``candidates: (t, d)``, ``pot: (n,)`` -> the best candidate ``(1,)`` int64 and the new
        potential ``(n,)`` (``pot`` itself, or a buffer of this object that swaps with it)."""
        best = torch.argmin(self._score(candidates, pot)).reshape(1)
        col = self.trial.index_select(0, best).squeeze(0) if self.trial.device.type != "cpu" else self.trial[int(best)]
        if self.direct:
            pot.copy_(col)
            return best, pot
        q, tmp, new, mask = self.q, self.tmp, self.new, self.mask
        torch.lt(col, q, out=mask)
        torch.add(col, self.x_sq, out=tmp)
        torch.where(mask, tmp, pot, out=new)
        torch.add(self.small_bound, self.c_sq[best, 0], alpha=_CANCELLATION_RTOL, out=tmp)
        torch.le(col, tmp, out=mask)
        small = mask.nonzero().squeeze(1)
        if len(small):
            exact = (self.rows.take(small) - candidates.index_select(0, best)).square_().sum(dim=1)
            new[small] = torch.minimum(pot[small], exact)
        if self.centres is not None:  # the rows whose potential fell are now measured to the new centroid
            j = self.n_centres
            self.centres[j : j + 1] = candidates.index_select(0, best)
            torch.lt(new, pot, out=mask)
            self.assign.masked_fill_(mask, j)
            self.n_centres = j + 1
        self.new = pot
        return best, new


def _sample_by_potential(
    rows: LocalRows, pot: torch.Tensor, u: torch.Tensor, cum: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global row indices drawn with probability proportional to ``pot``, a sharded vector.

    Two stages, with no n-length vector crossing ranks: the rank is picked by its share of the
    total potential, then the row inside that rank's shard by a search in its local cumulative
    potential.

    Args:
        rows: this rank's shard.
        pot: ``(n_local,)`` float32 potential of this rank's rows.
        u: ``(t,)`` float64 uniforms in ``[0, 1)``, the same on every rank.
        cum: optional ``(n_local,)`` float64 buffer for the cumulative potential.

    Returns:
        ``(t,)`` int64 global row indices, the same on every rank, and the global total
        potential (a float64 scalar tensor).
    """
    cum = torch.cumsum(pot, dim=0, dtype=torch.float64, out=cum)
    if not dist.is_distributed():  # one shard: the same search without the rank stage
        total = cum[-1]
        return torch.searchsorted(cum, u * total, right=True).clamp_(max=rows.n - 1), total
    local_total = cum[-1:] if rows.n else torch.zeros(1, dtype=torch.float64, device=pot.device)
    rank_cum = torch.cumsum(dist.all_gather_stack(local_total.cpu()).flatten(), dim=0)
    total = rank_cum[-1]
    u = u * total
    owner = torch.searchsorted(rank_cum, u, right=True).clamp_(max=len(rank_cum) - 1)
    picked = torch.zeros(len(u), dtype=torch.int64)  # global index + 1, 0 where another rank owns it
    mine = owner == rows.rank
    if bool(mine.any()):
        before = rank_cum[rows.rank - 1] if rows.rank > 0 else 0.0
        local = torch.searchsorted(cum, (u[mine] - before).to(cum.device), right=True)
        picked[mine] = local.clamp_(max=rows.n - 1).cpu() + rows.offset + 1
    return dist.all_reduce_sum_(picked) - 1, total


def distinct_random_indices(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct indices in ``[0, n)`` drawn uniformly, ``(k,)`` int64 (O(k) memory for huge n)."""
    if n <= 8 * k or n <= 1 << 22:
        return torch.randperm(n, generator=generator)[:k]
    chosen = torch.empty(0, dtype=torch.int64)
    while len(chosen) < k:  # a few rounds at most: each draws twice what is missing
        draw = torch.randint(n, (2 * (k - len(chosen)),), generator=generator)
        merged = torch.cat([chosen, draw])
        uniq, first = _first_occurrences(merged)
        chosen = merged[first][:k]
    return chosen


def _first_occurrences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique values of ``x`` and the positions of their first occurrences, in order of appearance."""
    uniq, inverse = torch.unique(x, return_inverse=True)
    first = torch.full((len(uniq),), len(x), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(len(x)), reduce="amin")
    return uniq, first.sort().values


def random_init(rows: LocalRows, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct rows chosen uniformly at random: ``(k, d)`` float32, identical on every rank.

    Rows may hold equal values (empty clusters are then re-seeded by Lloyd). When the drawn rows
    hold copies and every row of the data equals one of the fewer than ``k`` drawn values,
    :class:`TooFewDistinctPoints` is raised, as k-means++ does: no clustering separates them.
    """
    c = rows.fetch_global(distinct_random_indices(rows.n_global, k, generator))
    distinct = torch.unique(c, dim=0)
    if len(distinct) == k:
        return c
    chunk = chunk_rows_for(_INIT_BUDGET_BYTES, len(distinct), rows.d, "cuda")
    x_sq = _local_row_sqnorms(rows, chunk)
    pot = _local_sq_dists_to(rows, distinct, chunk, x_sq).min(dim=1).values
    total = float(dist.all_reduce_sum_(pot.sum(dtype=torch.float64).reshape(1).cpu()))
    if total <= 0.0:
        raise TooFewDistinctPoints(
            f"only {len(distinct)} distinct points found, fewer than k={k}; lower k or deduplicate the data"
        )
    return c


# rows per block of the per-row uniforms of k-means||: each block has its own seeded generator,
# so a row's draw depends on its global index only, not on how rows are split over ranks
_ROW_BLOCK = 1 << 16


def _row_uniforms(rows: LocalRows, seed: int, round_: int) -> torch.Tensor:
    """``(n_local,)`` float64 uniforms, one per row, a function of (seed, round, global row)."""
    out = torch.empty(rows.n, dtype=torch.float64)
    lo, hi = rows.offset, rows.offset + rows.n
    for block in range(lo // _ROW_BLOCK, -(-hi // _ROW_BLOCK)):  # the blocks this shard overlaps
        b_lo = block * _ROW_BLOCK
        state = int(np.random.SeedSequence([seed, round_, block]).generate_state(1, np.uint64)[0] >> 1)
        u = torch.rand(_ROW_BLOCK, generator=torch.Generator().manual_seed(state), dtype=torch.float64)
        s, e = max(lo, b_lo), min(hi, b_lo + _ROW_BLOCK)
        out[s - lo : e - lo] = u[s - b_lo : e - b_lo]
    return out.to(rows.device)


def _nearest_update_(
    rows: LocalRows, c: torch.Tensor, first_label: int, x_sq: torch.Tensor, pot: torch.Tensor, label: torch.Tensor
) -> None:
    """Lower ``pot: (n,)`` to the squared distance to the nearest row of ``c: (m, d)`` where that
    is closer, and set ``label`` there to ``first_label + `` its index (exact zeros for duplicates)."""
    chunk = chunk_rows_for(_INIT_BUDGET_BYTES, len(c), rows.d, "cuda")
    for start, x in rows.chunks(chunk):
        stop = start + len(x)
        best, arg = sq_dists(x, c, x_sq[start:stop]).min(dim=1)
        closer = best < pot[start:stop]
        pot[start:stop] = torch.where(closer, best, pot[start:stop])
        label[start:stop] = torch.where(closer, arg + first_label, label[start:stop])


def kmeans_parallel(
    rows: LocalRows,
    k: int,
    generator: torch.Generator,
    rounds: int = 5,
    oversampling: float = 2.0,
) -> torch.Tensor:
    """k-means|| (Bahmani et al. 2012, "Scalable k-means++"), distributed and world-size independent.

    From one uniformly drawn row, ``rounds`` oversampling rounds each keep every row
    independently with probability ``min(1, l d^2 / phi)`` (``l = oversampling * k``, ``d^2``
    the squared distance to the nearest candidate so far, ``phi`` their total), so about ``l``
    candidates per round; each candidate is weighted by the rows nearest to it, and a weighted
    greedy k-means++ on the candidates (replicated on every rank) picks the ``k`` centroids.
    A row's draw depends on the seed, the round and its global index only, and only the chosen
    rows cross ranks, so the result does not depend on the number of ranks. Rounds continue
    (with ``l`` doubled) while fewer than ``k`` distinct candidates are found.

    Cost: ``rounds`` passes over the shard, each scoring ~``l`` candidates in one matmul
    (compute-bound, ~``2 rounds x oversampling`` Lloyd iterations), instead of k-means++'s ``k``
    memory-bound passes; the candidate k-means++ is local.

    Args:
        rows: this rank's shard (``rows.n_global >= k``).
        k: number of centroids.
        generator: CPU generator, in the same state on every rank.
        rounds: oversampling rounds (Bahmani et al.: 5 suffice; Spark MLlib's default is 2).
        oversampling: ``l / k``.

    Returns:
        ``(k, d)`` float32 centroids in the prepared space, identical on every rank.

    Raises:
        TooFewDistinctPoints: when the data has fewer than ``k`` distinct rows.
    """
    seed = int(torch.randint(2**62, (1,), generator=generator))
    first = torch.randint(rows.n_global, (1,), generator=generator)
    chunk = chunk_rows_for(_INIT_BUDGET_BYTES, 1, rows.d, "cuda")
    x_sq = _local_row_sqnorms(rows, chunk)
    found = [rows.fetch_global(first)]
    pot = _local_sq_dists_to(rows, found[0], chunk, x_sq).squeeze(1)
    label = torch.zeros(rows.n, dtype=torch.int64, device=rows.device)
    n_found, ell, round_ = 1, oversampling * k, 0
    while round_ < rounds or n_found < k:
        total = float(dist.all_reduce_sum_(pot.sum(dtype=torch.float64).reshape(1).cpu()))
        if total <= 0.0:  # every row sits on a candidate
            break
        if round_ >= rounds:  # short of k candidates: draw more per round
            ell *= 2
        keep = _row_uniforms(rows, seed, round_) * total < ell * pot.double()
        new = dist.all_gather_rows(rows.take(keep.nonzero().squeeze(1)))  # rank order = global order
        if len(new):
            _nearest_update_(rows, new, n_found, x_sq, pot, label)
            found.append(new)
            n_found += len(new)
        round_ += 1
    candidates = torch.cat(found)
    weight = torch.bincount(label, minlength=n_found).to(torch.float64)
    dist.all_reduce_sum_(weight)
    # identical candidates (duplicate rows drawn in one round) pool their weights
    candidates, inverse = torch.unique(candidates, dim=0, return_inverse=True)
    weight = torch.zeros(len(candidates), dtype=torch.float64, device=weight.device).index_add_(0, inverse, weight)
    if len(candidates) < k:
        raise TooFewDistinctPoints(
            f"only {len(candidates)} distinct points found, fewer than k={k}; lower k or deduplicate the data"
        )
    with dist.local_only():
        local = LocalRows(
            RowSource(candidates), candidates.device, chunk_rows=len(candidates), cosine=False, cache_bytes=1 << 62
        )
        local._cache = candidates
        return kmeans_plusplus(local, k, generator, weights=weight.float())
