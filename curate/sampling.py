"""Hierarchical balanced sampling (top-down) over a hierarchical k-means tree (METHOD.md section 2).

A hierarchy is a sequence of levels, index 0 = level 1 = the finest. Level ``t`` clusters the
``n_{t-1}`` inputs of that level (items for level 1, level-(t-1) clusters above) into ``k_t``
clusters, stored in CSR form (see :class:`ClusterLevel`).

The target size is split over the top-level clusters by *water-filling* on their item counts
(small clusters are taken whole, large ones capped at a common level, the integer remainder goes
+1 to randomly chosen clusters above the cap), then recursively over the children of every
cluster, down to level 1, and finally items are picked inside each level-1 cluster (``random``,
``closest`` to the centroid or ``farthest`` from it). Every level is processed for all its
clusters at once (segmented water-filling over CSR segments): no Python loop over clusters or
items.

Randomness: ``seed`` feeds a :class:`numpy.random.SeedSequence`; child ``t`` (t = 1..T) drives the
water-fill that produces the level-t quotas, child 0 the leaf selection. So the quotas do not
depend on the leaf strategy, and the same seed always gives the same indices.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "STRATEGIES",
    "ClusterLevel",
    "SampleResult",
    "allocate_quotas",
    "cluster_item_counts",
    "flat_sample",
    "hierarchical_sample",
    "log2_histogram",
    "resolve_target",
    "sample_budgets",
    "sample_stats",
    "segmented_water_fill",
    "water_fill",
]

STRATEGIES: tuple[str, ...] = ("random", "closest", "farthest")


@runtime_checkable
class ClusterLevel(Protocol):
    """One level of the cluster hierarchy (duck-typed; any object with these numpy attributes).

    Attributes:
        offsets: ``(k_t + 1,)`` int64 CSR offsets, ``offsets[0] == 0``, non-decreasing.
        members: ``(n_{t-1},)`` int64; the members of cluster ``j`` are
            ``members[offsets[j]:offsets[j + 1]]``, sorted by ascending distance to the centroid of
            ``j``. Item ids at level 1, level-(t-1) cluster ids above. Clusters may be empty.
        dist: ``(n_{t-1},)`` float32 squared distance of each input to its own centroid, indexed by
            input id (not CSR position).
        assign: ``(n_{t-1},)`` int64 cluster id of each input.
    """

    offsets: np.ndarray
    members: np.ndarray
    dist: np.ndarray
    assign: np.ndarray


@dataclass
class SampleResult:
    """A curated sample.

    Attributes:
        indices: ``(n,)`` int64 item indices, sorted ascending. With ``multiplier > 1`` an item may
            appear up to ``multiplier`` times (repeats are adjacent).
        stats: ``requested``, ``returned``, ``shortfall`` (``requested - returned``, 0 when the
            target was feasible), ``n_unique``, ``pool_size``, ``strategy``, ``multiplier``,
            ``seed``, ``method`` and ``levels`` (per-level balance, see :func:`sample_stats`).
    """

    indices: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Water-filling
# ----------------------------------------------------------------------------------------------
def segmented_water_fill(
    sizes: np.ndarray, offsets: np.ndarray, budgets: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Many independent water-fills at once, one per CSR segment.

    For segment ``j`` (children ``offsets[j]:offsets[j+1]`` of ``sizes``) with budget ``B_j``: if
    ``sum(s) <= B_j`` every child gets its size; otherwise ``x`` is the largest integer with
    ``sum_i min(x, s_i) <= B_j``, child ``i`` gets ``min(x, s_i)`` and the remainder
    ``B_j - sum_i min(x, s_i)`` (less than the number of children with ``s_i > x``) goes +1 to
    that many children with ``s_i > x``, chosen uniformly at random.

    Vectorised: one sort by (segment, size), segmented cumulative sums, and a random ranking of the
    eligible children for the remainder.

    Args:
        sizes: ``(n,)`` int, non-negative capacities of the children, in segment order.
        offsets: ``(k + 1,)`` int CSR offsets, ``offsets[0] == 0``, ``offsets[-1] == n``.
        budgets: ``(k,)`` int, non-negative budget of each segment.
        rng: random generator for the remainder (always draws ``n`` uniforms).

    Returns:
        ``(n,)`` int64 quotas, aligned with ``sizes``; per segment their sum is ``min(B_j, sum s)``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    budgets = np.asarray(budgets, dtype=np.int64)
    if sizes.ndim != 1 or offsets.ndim != 1 or budgets.ndim != 1:
        raise ValueError("sizes, offsets and budgets must be 1-D")
    k = offsets.shape[0] - 1
    n = sizes.shape[0]
    if k < 0 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
        raise ValueError(f"offsets must be non-decreasing from 0 to len(sizes)={n}")
    if budgets.shape[0] != k:
        raise ValueError(f"budgets has {budgets.shape[0]} entries, offsets describe {k} segments")
    if np.any(sizes < 0):
        raise ValueError("sizes must be non-negative")
    if np.any(budgets < 0):
        raise ValueError("budgets must be non-negative")

    counts = np.diff(offsets)
    starts = offsets[:-1]
    seg = np.repeat(np.arange(k, dtype=np.int64), counts)
    order = np.lexsort((sizes, seg))  # segment-major, ascending size inside a segment
    ss = sizes[order]
    csum = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(ss)])
    base = csum[starts]
    totals = csum[offsets[1:]] - base
    cs_excl = csum[:-1] - base[seg]  # sum of the smaller children of the same segment
    pos = np.arange(n, dtype=np.int64) - starts[seg]  # rank by size inside the segment
    # g = sum_i min(ss, s_i): the allocation with the cap at this child's size; non-decreasing in pos.
    g = cs_excl + (counts[seg] - pos) * ss
    p = np.bincount(seg[g <= budgets[seg]], minlength=k).astype(np.int64)  # children taken whole

    capped = totals > budgets  # for these, p < count (g at the largest child is the total)
    big = np.iinfo(np.int64).max
    cap = np.full(k, big, dtype=np.int64)
    rem = np.zeros(k, dtype=np.int64)
    if np.any(capped):
        cidx = np.flatnonzero(capped)
        n_above = counts[cidx] - p[cidx]
        taken = cs_excl[starts[cidx] + p[cidx]]
        cap[cidx] = (budgets[cidx] - taken) // n_above
        rem[cidx] = budgets[cidx] - taken - n_above * cap[cidx]
    q = np.minimum(ss, cap[seg])

    # Remainder: +1 to `rem` random children among those above the cap (sorted positions >= p).
    elig = np.flatnonzero(capped[seg] & (pos >= p[seg]))
    u = rng.random(n)
    if elig.size and np.any(rem > 0):
        e_sorted = elig[np.lexsort((u[elig], seg[elig]))]
        es = seg[e_sorted]
        rank = np.arange(es.shape[0]) - np.searchsorted(es, es, side="left")
        q[e_sorted[rank < rem[es]]] += 1

    out = np.empty(n, dtype=np.int64)
    out[order] = q
    return out


def water_fill(sizes: np.ndarray, budget: int, rng: np.random.Generator, multiplier: int = 1) -> np.ndarray:
    """Split ``budget`` over children of sizes ``sizes`` by water-filling.

    The largest integer cap ``x`` with ``sum_i min(x, c_i) <= budget`` is found (``c_i`` the
    capacity, ``multiplier * s_i``); child ``i`` gets ``min(x, c_i)`` and the remainder goes +1
    to randomly chosen children with ``c_i > x``. If ``sum_i c_i <= budget`` every child gets
    its capacity (the allocation is then smaller than ``budget``).

    Args:
        sizes: ``(n,)`` int, non-negative child sizes (items).
        budget: non-negative total to allocate.
        rng: random generator for the remainder.
        multiplier: times an item may be taken (``>= 1``); capacities are ``multiplier * sizes``.

    Returns:
        ``(n,)`` int64 quotas, ``quota_i <= multiplier * sizes_i``.
    """
    multiplier = _check_multiplier(multiplier)
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise ValueError(f"budget must be an integer, got {budget!r}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    if np.any(sizes < 0):
        raise ValueError("sizes must be non-negative")
    caps = sizes * multiplier
    offsets = np.array([0, caps.shape[0]], dtype=np.int64)
    return segmented_water_fill(caps, offsets, np.array([int(budget)], dtype=np.int64), rng)


# ----------------------------------------------------------------------------------------------
# Hierarchy helpers
# ----------------------------------------------------------------------------------------------
def _segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Exact int64 sums of ``values`` over CSR segments (empty segments give 0)."""
    csum = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(values, dtype=np.int64)])
    return csum[offsets[1:]] - csum[offsets[:-1]]


def _check_level(level: Any, n_inputs: int | None, name: str) -> int:
    """Validate one level's CSR arrays; return its number of clusters."""
    for attr in ("offsets", "members", "dist", "assign"):
        if not hasattr(level, attr):
            raise ValueError(f"{name} has no attribute {attr!r}")
    offsets = np.asarray(level.offsets)
    members = np.asarray(level.members)
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(f"{name}.offsets must be 1-D with at least one entry")
    if members.ndim != 1:
        raise ValueError(f"{name}.members must be 1-D")
    if not np.issubdtype(offsets.dtype, np.integer) or not np.issubdtype(members.dtype, np.integer):
        raise ValueError(f"{name}.offsets and {name}.members must be integer arrays")
    n = members.shape[0] if n_inputs is None else n_inputs
    if members.shape[0] != n:
        raise ValueError(f"{name}.members has {members.shape[0]} entries, the level below has {n} clusters")
    if offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{name}.offsets must be non-decreasing from 0 to len(members)={n}")
    if n and (members.min() < 0 or members.max() >= n):
        raise ValueError(f"{name}.members holds ids outside [0, {n})")
    if n and np.any(np.bincount(members, minlength=n) != 1):
        raise ValueError(f"{name}.members is not a permutation of its {n} inputs")
    for attr in ("dist", "assign"):
        arr = np.asarray(getattr(level, attr))
        if arr.shape != (n,):
            raise ValueError(f"{name}.{attr} has shape {arr.shape}, expected ({n},)")
    return offsets.shape[0] - 1


def _check_levels(levels: Sequence[ClusterLevel]) -> list[int]:
    """Validate a hierarchy; return the number of clusters per level."""
    if isinstance(levels, np.ndarray) or not isinstance(levels, Sequence) or len(levels) == 0:
        raise ValueError("levels must be a non-empty sequence of cluster levels")
    ks: list[int] = []
    n_inputs: int | None = None
    for t, level in enumerate(levels):
        k = _check_level(level, n_inputs, f"levels[{t}]")
        ks.append(k)
        n_inputs = k
    return ks


def item_clusters(levels: Sequence[Any], items: np.ndarray | None = None) -> list[np.ndarray]:
    """The cluster id of every item at every level: the composition of the levels' ``assign``.

    Args:
        levels: the hierarchy's levels, finest first (anything with an ``assign`` array).
        items: ``(m,)`` item ids to follow (None: all ``N`` items, in order).

    Returns:
        One ``(m,)`` (or ``(N,)``) int64 array per level: ``out[t][j]`` is the level-``t + 1``
        cluster holding item ``items[j]``.
    """
    ids = np.arange(len(levels[0].assign), dtype=np.int64) if items is None else np.asarray(items, dtype=np.int64)
    out = []
    for level in levels:
        ids = np.asarray(level.assign, dtype=np.int64)[ids]
        out.append(ids)
    return out


def cluster_item_counts(levels: Sequence[ClusterLevel]) -> list[np.ndarray]:
    """Number of level-1 items under every cluster of every level, computed bottom-up.

    Args:
        levels: the hierarchy, index 0 = level 1.

    Returns:
        One ``(k_t,)`` int64 array per level (same indexing as ``levels``).
    """
    _check_levels(levels)
    return _item_counts(levels)


def _item_counts(levels: Sequence[ClusterLevel]) -> list[np.ndarray]:
    counts = [np.diff(np.asarray(levels[0].offsets, dtype=np.int64))]
    for level in levels[1:]:
        members = np.asarray(level.members, dtype=np.int64)
        counts.append(_segment_sum(counts[-1][members], np.asarray(level.offsets, dtype=np.int64)))
    return counts


def _generators(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _check_multiplier(multiplier: Any) -> int:
    if isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Integral) or multiplier < 1:
        raise ValueError(f"multiplier must be an integer >= 1, got {multiplier!r}")
    return int(multiplier)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_strategy(strategy: Any) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return str(strategy)


def resolve_target(target: int | float, pool_size: int | None) -> int:
    """Absolute sample size from ``target``.

    Args:
        target: an int ``> 0`` (absolute count) or a float in ``(0, 1]`` (fraction of the pool,
            rounded to the nearest integer).
        pool_size: number of items ``N`` in the pool; None checks ``target`` alone (returns 0
            for a fraction).

    Returns:
        The requested number of items.

    Raises:
        ValueError: naming ``target`` when it is not positive, a fraction above 1, not a number,
            or a fraction of a non-empty pool that selects no item (``round(target * N) == 0``,
            i.e. ``target <= 0.5 / N``): the message gives the smallest fraction that selects one.
    """
    if isinstance(target, bool) or not isinstance(target, numbers.Real):
        raise ValueError(f"target must be an int count or a float fraction, got {target!r}")
    if isinstance(target, numbers.Integral):
        if target <= 0:
            raise ValueError(f"target must be > 0, got {target}")
        return int(target)
    target = float(target)
    if not math.isfinite(target) or target <= 0:
        raise ValueError(f"target must be > 0, got {target}")
    if target > 1:
        raise ValueError(f"target as a fraction must be in (0, 1], got {target} (pass an int for a count)")
    if pool_size is None:
        return 0
    count = int(round(target * pool_size))
    if count == 0 and pool_size > 0:
        raise ValueError(
            f"target {target:g} of a pool of {pool_size} items selects no item ({target * pool_size:.3g} rounds "
            f"to 0): the smallest fraction that selects an item is {smallest_fraction(pool_size):g}, "
            "or give a count (an int)"
        )
    return count


def smallest_fraction(pool_size: int) -> float:
    """The smallest fraction of three significant digits that selects an item of a pool of
    ``pool_size > 0`` (``round(f * pool_size) >= 1``; just above ``0.5 / pool_size``)."""
    f = 0.5 / pool_size
    while round(float(f"{f:.3g}") * pool_size) < 1:
        f *= 1.001
    return float(f"{f:.3g}")


# ----------------------------------------------------------------------------------------------
# Top-down allocation and leaf selection
# ----------------------------------------------------------------------------------------------
def allocate_quotas(
    levels: Sequence[ClusterLevel], budget: int, multiplier: int = 1, seed: int = 0
) -> list[np.ndarray]:
    """Top-down water-filling of ``budget`` through the hierarchy.

    The budget is water-filled over the top-level clusters on their item counts (times
    ``multiplier``), then every cluster's quota over its children, one vectorised segmented
    water-fill per level.

    Args:
        levels: the hierarchy, index 0 = level 1.
        budget: non-negative number of items to allocate (clamped at ``N * multiplier``).
        multiplier: times an item may be taken.
        seed: seed of the random remainders (see the module docstring).

    Returns:
        One ``(k_t,)`` int64 quota array per level (same indexing as ``levels``); the quotas of a
        cluster's children sum to its quota and every quota is ``<= multiplier * item count``.
    """
    _check_levels(levels)
    multiplier = _check_multiplier(multiplier)
    seed = _check_seed(seed)
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 0:
        raise ValueError(f"budget must be a non-negative integer, got {budget!r}")
    return _allocate(levels, _item_counts(levels), int(budget), multiplier, seed)


def _allocate(
    levels: Sequence[ClusterLevel], counts: list[np.ndarray], budget: int, multiplier: int, seed: int
) -> list[np.ndarray]:
    n_levels = len(levels)
    gens = _generators(seed, n_levels + 1)
    top_caps = counts[-1] * multiplier
    quotas: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * n_levels
    quotas[-1] = segmented_water_fill(
        top_caps, np.array([0, top_caps.shape[0]]), np.array([budget], dtype=np.int64), gens[n_levels]
    )
    for t in range(n_levels - 1, 0, -1):  # levels[t] splits its quotas over its children levels[t-1]
        members = np.asarray(levels[t].members, dtype=np.int64)
        offsets = np.asarray(levels[t].offsets, dtype=np.int64)
        child_q = segmented_water_fill(counts[t - 1][members] * multiplier, offsets, quotas[t], gens[t])
        q = np.zeros(counts[t - 1].shape[0], dtype=np.int64)
        q[members] = child_q
        quotas[t - 1] = q
    return quotas


def _select_leaves(level: ClusterLevel, quotas: np.ndarray, strategy: str, rng: np.random.Generator) -> np.ndarray:
    """Pick items inside every level-1 cluster given its quota; sorted int64 item indices.

    A cluster of size ``s`` with quota ``q`` takes every member ``q // s`` times plus ``q % s``
    more: the first ones in CSR order (``closest``), the last ones (``farthest``) or a uniform
    random subset without replacement (``random``).
    """
    offsets = np.asarray(level.offsets, dtype=np.int64)
    members = np.asarray(level.members, dtype=np.int64)
    sizes = np.diff(offsets)
    n = members.shape[0]
    seg = np.repeat(np.arange(sizes.shape[0], dtype=np.int64), sizes)
    pos = np.arange(n, dtype=np.int64) - offsets[:-1][seg]
    safe = np.maximum(sizes, 1)
    full = quotas // safe
    rem = quotas % safe
    if strategy == "closest":
        extra = pos < rem[seg]
    elif strategy == "farthest":
        extra = pos >= (sizes - rem)[seg]
    else:
        u = rng.random(n)
        rank = np.empty(n, dtype=np.int64)
        rank[np.lexsort((u, seg))] = pos  # segment-major order: position inside the segment
        extra = rank < rem[seg]
    take = full[seg] + extra
    return np.sort(np.repeat(members, take), kind="stable")


def _finish(
    levels: Sequence[ClusterLevel],
    indices: np.ndarray,
    requested: int,
    pool_size: int,
    strategy: str,
    multiplier: int,
    seed: int,
    method: str,
    stacklevel: int,
) -> SampleResult:
    returned = int(indices.shape[0])
    shortfall = requested - returned
    if shortfall > 0:
        warnings.warn(
            f"sample is smaller than asked: requested {requested} items, the pool holds {pool_size} "
            f"items x multiplier {multiplier} = {pool_size * multiplier}; returning {returned}",
            UserWarning,
            stacklevel=stacklevel,
        )
    stats: dict[str, Any] = {
        "method": method,
        "requested": int(requested),
        "returned": returned,
        "shortfall": int(max(shortfall, 0)),
        "n_unique": int(np.unique(indices).shape[0]) if multiplier > 1 else returned,
        "pool_size": int(pool_size),
        "strategy": strategy,
        "multiplier": int(multiplier),
        "seed": int(seed),
        "levels": sample_stats(levels, indices)["levels"],
    }
    return SampleResult(indices=indices, stats=stats)


def _hierarchical(
    levels: Sequence[ClusterLevel],
    counts: list[np.ndarray],
    target: int | float,
    strategy: str,
    multiplier: int,
    seed: int,
) -> SampleResult:
    pool = int(counts[0].sum())
    requested = resolve_target(target, pool)
    quotas = _allocate(levels, counts, requested, multiplier, seed)
    leaf_rng = _generators(seed, 1)[0]
    indices = _select_leaves(levels[0], quotas[0], strategy, leaf_rng)
    return _finish(levels, indices, requested, pool, strategy, multiplier, seed, "hierarchical", stacklevel=4)


def hierarchical_sample(
    levels: Sequence[ClusterLevel],
    target: int | float,
    strategy: str = "random",
    multiplier: int = 1,
    seed: int = 0,
) -> SampleResult:
    """Hierarchical balanced sampling of ``target`` items.

    Args:
        levels: the hierarchy, index 0 = level 1 (finest), each a :class:`ClusterLevel`.
        target: int ``> 0`` (absolute count) or float in ``(0, 1]`` (fraction of the pool ``N``).
        strategy: leaf selection inside level-1 clusters: ``"random"``, ``"closest"`` or
            ``"farthest"``.
        multiplier: times an item may be taken (``>= 1``); ``> 1`` oversamples small clusters.
        seed: seed of the random remainders and of ``random`` leaf selection.

    Returns:
        :class:`SampleResult` with ``indices: (n,) int64`` sorted item ids, ``n = min(target,
        N * multiplier)``. When the target cannot be met a ``UserWarning`` is emitted and
        ``stats["shortfall"]`` says by how much.

    Raises:
        ValueError: naming the bad argument (``target``, ``strategy``, ``multiplier``, ``seed``,
            ``levels[t].<field>``).
    """
    _check_levels(levels)
    strategy = _check_strategy(strategy)
    multiplier = _check_multiplier(multiplier)
    seed = _check_seed(seed)
    return _hierarchical(levels, _item_counts(levels), target, strategy, multiplier, seed)


def sample_budgets(
    levels: Sequence[ClusterLevel],
    targets: Sequence[int | float],
    strategy: str = "random",
    multiplier: int = 1,
    seed: int = 0,
) -> dict[int | float, SampleResult]:
    """Several sample sizes in one call (hierarchy validated and counted once).

    Every budget uses the same ``seed``, so ``result[b]`` equals ``hierarchical_sample(levels, b,
    ...)``.

    Args:
        levels: the hierarchy, index 0 = level 1.
        targets: sizes, each an int count or a float fraction in ``(0, 1]``.
        strategy: leaf selection, see :func:`hierarchical_sample`.
        multiplier: times an item may be taken.
        seed: seed shared by all budgets.

    Returns:
        ``{target: SampleResult}`` keyed by the targets as given.
    """
    _check_levels(levels)
    strategy = _check_strategy(strategy)
    multiplier = _check_multiplier(multiplier)
    seed = _check_seed(seed)
    if isinstance(targets, str | bytes) or not isinstance(targets, Sequence | np.ndarray) or len(targets) == 0:
        raise ValueError(f"targets must be a non-empty sequence of sizes, got {targets!r}")
    counts = _item_counts(levels)
    pool = int(counts[0].sum())
    for tgt in targets:  # validate all before sampling any
        resolve_target(tgt, pool)
    return {tgt: _hierarchical(levels, counts, tgt, strategy, multiplier, seed) for tgt in targets}


def flat_sample(
    level: ClusterLevel,
    target: int | float,
    strategy: str = "random",
    multiplier: int = 1,
    seed: int = 0,
) -> SampleResult:
    """Flat baseline: water-filling over the clusters of one level (level 1) only.

    Equal quota per cluster (clusters smaller than the common cap are taken whole), then the
    same leaf selection as :func:`hierarchical_sample`. Identical to ``hierarchical_sample([level],
    ...)``.

    Args:
        level: a level-1 :class:`ClusterLevel` (members are item ids).
        target: int count or float fraction in ``(0, 1]`` of the pool.
        strategy: ``"random"``, ``"closest"`` or ``"farthest"``.
        multiplier: times an item may be taken.
        seed: seed of the remainder and of ``random`` leaf selection.

    Returns:
        :class:`SampleResult`; ``stats["levels"]`` holds the balance over this level's clusters.
    """
    levels = [level]
    _check_levels(levels)
    strategy = _check_strategy(strategy)
    multiplier = _check_multiplier(multiplier)
    seed = _check_seed(seed)
    counts = _item_counts(levels)
    pool = int(counts[0].sum())
    requested = resolve_target(target, pool)
    quotas = _allocate(levels, counts, requested, multiplier, seed)
    indices = _select_leaves(level, quotas[0], strategy, _generators(seed, 1)[0])
    return _finish(levels, indices, requested, pool, strategy, multiplier, seed, "flat", stacklevel=3)


# ----------------------------------------------------------------------------------------------
# Balance statistics
# ----------------------------------------------------------------------------------------------
def random_rows(n: int, size: int, seed: int) -> np.ndarray:
    """The random baseline: ``(min(size, n),)`` int64 sorted rows of ``range(n)``, drawn uniformly
    without replacement from ``np.random.default_rng([seed, 7])`` (the one stream every random
    baseline uses: the sample stage's, the pipeline's ``sample_random``, the report's).

    Args:
        n: number of rows to draw from.
        size: rows wanted; more than ``n`` gives all ``n`` rows.
        seed: the run's seed.
    """
    rng = np.random.default_rng([int(seed), 7])
    return np.sort(rng.choice(int(n), size=min(int(size), int(n)), replace=False)).astype(np.int64)


def log2_histogram(sizes: np.ndarray) -> dict[str, list[int]]:
    """Histogram of positive sizes over power-of-two bins ``[1, 2), [2, 4), ...`` (zeros are left out).

    Returns:
        ``{"bin_edges": [1, 2, 4, ...], "counts": [...]}`` (``len(counts) == len(bin_edges) - 1``;
        both empty when no size is positive).
    """
    pos = np.asarray(sizes, dtype=np.int64)
    pos = pos[pos > 0]
    if pos.size == 0:
        return {"bin_edges": [], "counts": []}
    n_bins = int(np.floor(np.log2(pos.max()))) + 1
    edges = 2 ** np.arange(n_bins + 1, dtype=np.int64)
    counts, _ = np.histogram(pos, bins=edges)
    return {"bin_edges": edges.tolist(), "counts": counts.tolist()}


def sample_stats(levels: Sequence[ClusterLevel], indices: np.ndarray) -> dict[str, Any]:
    """How a sample spreads over the clusters of every level.

    Items are mapped to level-t clusters by composing the ``assign`` arrays.

    Args:
        levels: the hierarchy, index 0 = level 1.
        indices: ``(n,)`` int item ids (repeats allowed).

    Returns:
        ``{"n_samples", "n_unique", "levels": [...]}``, one entry per level with ``level`` (1-based),
        ``n_clusters``, ``n_nonempty`` (clusters holding at least one pool item), ``n_touched``
        (clusters holding at least one sampled item), ``entropy`` (nats, of the sample's
        distribution over the clusters), ``max_entropy`` (``log n_nonempty``),
        ``normalized_entropy`` (``entropy / max_entropy``; 1.0 when ``max_entropy == 0`` and the
        sample is non-empty, 0.0 for an empty sample), ``min_count``/``max_count`` (over touched
        clusters) and ``count_hist`` (``{"bin_edges", "counts"}``: histogram of the per-cluster
        counts of touched clusters over power-of-two bins ``[1, 2), [2, 4), ...``).
    """
    ks = _check_levels(levels)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    n_items = np.asarray(levels[0].assign).shape[0]
    if indices.size and (indices.min() < 0 or indices.max() >= n_items):
        raise ValueError(f"indices hold item ids outside [0, {n_items})")
    item_counts = _item_counts(levels)
    out_levels: list[dict[str, Any]] = []
    for t, ids in enumerate(item_clusters(levels, indices)):
        c = np.bincount(ids, minlength=ks[t])
        touched = c[c > 0]
        n_nonempty = int(np.count_nonzero(item_counts[t]))
        max_h = math.log(n_nonempty) if n_nonempty > 0 else 0.0
        hist_d = log2_histogram(touched)
        if touched.size:
            p = touched / touched.sum()
            h = float(-(p * np.log(p)).sum())
            norm = h / max_h if max_h > 0 else 1.0
            top, mn = int(touched.max()), int(touched.min())
        else:
            h, norm, top, mn = 0.0, 0.0, 0, 0
        out_levels.append(
            {
                "level": t + 1,
                "n_clusters": int(ks[t]),
                "n_nonempty": n_nonempty,
                "n_touched": int(touched.size),
                "entropy": h,
                "max_entropy": max_h,
                "normalized_entropy": float(norm),
                "min_count": mn,
                "max_count": top,
                "count_hist": hist_d,
            }
        )
    return {
        "n_samples": int(indices.shape[0]),
        "n_unique": int(np.unique(indices).shape[0]),
        "levels": out_levels,
    }
