"""Tests of hierarchical balanced sampling (curate.sampling)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.sampling import (
    ClusterLevel,
    SampleResult,
    allocate_quotas,
    cluster_item_counts,
    flat_sample,
    hierarchical_sample,
    sample_budgets,
    sample_stats,
    segmented_water_fill,
    water_fill,
)


# ----------------------------------------------------------------------------------------------
# Synthetic hierarchies
# ----------------------------------------------------------------------------------------------
@dataclass
class Level:
    offsets: np.ndarray
    members: np.ndarray
    dist: np.ndarray
    assign: np.ndarray


def make_level(assign: np.ndarray, k: int, rng: np.random.Generator) -> Level:
    """CSR level from an assignment; members sorted by a random distance to their centroid."""
    assign = np.asarray(assign, dtype=np.int64)
    dist = rng.random(assign.shape[0]).astype(np.float32)
    members = np.lexsort((dist, assign)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=k))]).astype(np.int64)
    return Level(offsets=offsets, members=members, dist=dist, assign=assign)


def make_hierarchy(assigns: list[np.ndarray], ks: list[int], seed: int = 0) -> list[Level]:
    rng = np.random.default_rng(seed)
    return [make_level(a, k, rng) for a, k in zip(assigns, ks)]


def random_hierarchy(n: int, ks: list[int], seed: int = 0, skew: float = 1.2) -> list[Level]:
    """Long-tailed random hierarchy: Zipf-like cluster sizes, some empty clusters possible."""
    rng = np.random.default_rng(seed)
    assigns = []
    n_in = n
    for k in ks:
        w = 1.0 / np.arange(1, k + 1) ** skew
        w = rng.permutation(w / w.sum())
        assigns.append(rng.choice(k, size=n_in, p=w))
        n_in = k
    return make_hierarchy(assigns, ks, seed + 1)


@pytest.fixture(scope="module")
def hier() -> list[Level]:
    levels = random_hierarchy(3000, [150, 20, 4], seed=0)
    counts = cluster_item_counts(levels)
    assert (counts[0] == 0).any()  # the fixture exercises empty clusters
    return levels


def item_to_level(levels: list[Level], idx: np.ndarray, t: int) -> np.ndarray:
    """Cluster id at level index t (0 = level 1) of every item in idx."""
    ids = np.asarray(idx)
    for level in levels[: t + 1]:
        ids = level.assign[ids]
    return ids


# ----------------------------------------------------------------------------------------------
# Reference water-filling (loops on purpose)
# ----------------------------------------------------------------------------------------------
def ref_cap(caps: list[int], budget: int) -> int | None:
    """Largest integer x with sum(min(x, c)) <= budget; None when everything fits."""
    if sum(caps) <= budget:
        return None
    x = 0
    while sum(min(x + 1, c) for c in caps) <= budget:
        x += 1
    return x


def check_water_fill(q: np.ndarray, caps: np.ndarray, budget: int) -> None:
    """Assert q is a valid water-filling of budget over capacities caps."""
    q = np.asarray(q)
    caps = np.asarray(caps)
    assert q.dtype == np.int64
    assert q.shape == caps.shape
    assert (q >= 0).all() and (q <= caps).all()
    assert q.sum() == min(budget, caps.sum())
    x = ref_cap(caps.tolist(), budget)
    if x is None:
        np.testing.assert_array_equal(q, caps)
        return
    base = np.minimum(caps, x)
    extra = q - base
    assert set(np.unique(extra).tolist()) <= {0, 1}
    assert (caps[extra == 1] > x).all()  # the remainder only goes to children above the cap
    assert extra.sum() == budget - base.sum() < (caps > x).sum()
    # equal caps: every child is either taken whole or gets x or x + 1
    assert ((q == caps) | (q == x) | (q == x + 1)).all()


# ----------------------------------------------------------------------------------------------
# water_fill
# ----------------------------------------------------------------------------------------------
sizes_st = st.lists(st.integers(0, 40), min_size=0, max_size=25)


@settings(max_examples=150, deadline=None)
@given(sizes=sizes_st, budget=st.integers(0, 1200), mult=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_water_fill_properties(sizes: list[int], budget: int, mult: int, seed: int) -> None:
    s = np.array(sizes, dtype=np.int64)
    q = water_fill(s, budget, np.random.default_rng(seed), multiplier=mult)
    check_water_fill(q, s * mult, budget)
    q2 = water_fill(s, budget, np.random.default_rng(seed), multiplier=mult)
    np.testing.assert_array_equal(q, q2)  # deterministic for a fixed seed


def test_water_fill_example() -> None:
    s = np.array([1, 5, 10, 3, 100])
    q = water_fill(s, 15, np.random.default_rng(0))
    # cap 3 -> 1 + 3 + 3 + 3 + 3 = 13, remainder 2 to two of {5, 10, 100}
    assert q[0] == 1 and q[3] == 3 and q.sum() == 15
    assert sorted(q[[1, 2, 4]].tolist()) == [3, 4, 4]
    np.testing.assert_array_equal(water_fill(s, 500, np.random.default_rng(0)), s)
    np.testing.assert_array_equal(water_fill(s, 15, np.random.default_rng(0), multiplier=3), [3] * 5)
    assert water_fill(np.zeros(0, np.int64), 7, np.random.default_rng(0)).shape == (0,)


def test_water_fill_remainder_is_uniform() -> None:
    s = np.array([10, 10, 10, 10, 2])
    hits = np.zeros(5)
    for seed in range(1000):
        q = water_fill(s, 2 + 4 * 5 + 2, np.random.default_rng(seed))  # cap 5, remainder 2 of 4
        hits += q - np.minimum(s, 5)
    assert hits[4] == 0
    assert np.all(np.abs(hits[:4] - 500) < 80)


def test_water_fill_bad_args() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="budget"):
        water_fill(np.array([1, 2]), -1, rng)
    with pytest.raises(ValueError, match="sizes"):
        water_fill(np.array([1, -2]), 3, rng)
    with pytest.raises(ValueError, match="multiplier"):
        water_fill(np.array([1, 2]), 3, rng, multiplier=0)


# ----------------------------------------------------------------------------------------------
# Segmented water-fill == loop reference
# ----------------------------------------------------------------------------------------------
@st.composite
def segments_st(draw):
    n_seg = draw(st.integers(1, 12))
    seg_sizes = [draw(st.lists(st.integers(0, 30), max_size=10)) for _ in range(n_seg)]
    budgets = [draw(st.integers(0, 150)) for _ in range(n_seg)]
    return seg_sizes, budgets


@settings(max_examples=100, deadline=None)
@given(data=segments_st(), seed=st.integers(0, 10_000))
def test_segmented_matches_loop_reference(data, seed: int) -> None:
    seg_sizes, budgets = data
    sizes = np.array([s for seg in seg_sizes for s in seg], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(seg) for seg in seg_sizes])]).astype(np.int64)
    q = segmented_water_fill(sizes, offsets, np.array(budgets), np.random.default_rng(seed))
    for j, (seg, b) in enumerate(zip(seg_sizes, budgets)):  # loop reference, one segment at a time
        check_water_fill(q[offsets[j] : offsets[j + 1]], np.array(seg, dtype=np.int64), b)
    q2 = segmented_water_fill(sizes, offsets, np.array(budgets), np.random.default_rng(seed))
    np.testing.assert_array_equal(q, q2)


def test_segmented_exact_without_remainder() -> None:
    sizes = np.array([1, 5, 10, 3, 100, 0, 2, 7, 7])
    offsets = np.array([0, 3, 3, 5, 7, 9])
    budgets = np.array([7, 0, 50, 1, 14])
    q = segmented_water_fill(sizes, offsets, budgets, np.random.default_rng(0))
    # seg0: cap 3 -> 1+3+3 = 7; seg2: 3 + 47; seg3: sizes (0, 2) budget 1 -> 0, 1; seg4: 7, 7
    np.testing.assert_array_equal(q, [1, 3, 3, 3, 47, 0, 1, 7, 7])


def test_segmented_bad_args() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="budgets"):
        segmented_water_fill(np.array([1, 2]), np.array([0, 2]), np.array([1, 2]), rng)
    with pytest.raises(ValueError, match="offsets"):
        segmented_water_fill(np.array([1, 2]), np.array([0, 3]), np.array([1]), rng)


# ----------------------------------------------------------------------------------------------
# hierarchical_sample
# ----------------------------------------------------------------------------------------------
def test_protocol_is_satisfied(hier) -> None:
    assert all(isinstance(level, ClusterLevel) for level in hier)


@pytest.mark.parametrize("target", [1, 7, 100, 1000, 2999, 3000])
@pytest.mark.parametrize("strategy", ["random", "closest", "farthest"])
def test_hierarchical_basic(hier, target: int, strategy: str) -> None:
    res = hierarchical_sample(hier, target, strategy=strategy, seed=3)
    assert isinstance(res, SampleResult)
    idx = res.indices
    assert idx.dtype == np.int64 and idx.shape == (target,)
    assert (np.diff(idx) > 0).all()  # sorted, no duplicates
    assert idx.min() >= 0 and idx.max() < 3000
    assert res.stats["shortfall"] == 0
    assert res.stats["requested"] == res.stats["returned"] == target
    np.testing.assert_array_equal(hierarchical_sample(hier, target, strategy=strategy, seed=3).indices, idx)


def test_quotas_follow_water_filling_at_every_level(hier) -> None:
    target = 700
    counts = cluster_item_counts(hier)
    quotas = allocate_quotas(hier, target, seed=5)
    res = hierarchical_sample(hier, target, seed=5)
    # top level: water-filling of the target over the top-level item counts
    check_water_fill(quotas[-1], counts[-1], target)
    # every parent splits its quota over its children by water-filling
    for t in range(len(hier) - 1, 0, -1):
        level = hier[t]
        for j in range(len(level.offsets) - 1):
            kids = level.members[level.offsets[j] : level.offsets[j + 1]]
            check_water_fill(quotas[t - 1][kids], counts[t - 1][kids], int(quotas[t][j]))
    # the sample realises the quotas at every level
    for t in range(len(hier)):
        got = np.bincount(item_to_level(hier, res.indices, t), minlength=len(counts[t]))
        np.testing.assert_array_equal(got, quotas[t])


def test_small_clusters_taken_whole(hier) -> None:
    counts = cluster_item_counts(hier)
    target = 1000
    x = ref_cap(counts[-1].tolist(), target)
    assert x is not None and (counts[-1] <= x).any() and (counts[-1] > x).any()
    res = hierarchical_sample(hier, target, seed=0)
    top = item_to_level(hier, np.arange(3000), 2)
    taken = np.zeros(3000, bool)
    taken[res.indices] = True
    for j in np.flatnonzero(counts[-1] <= x):
        assert taken[top == j].all()
    got = np.bincount(item_to_level(hier, res.indices, 2), minlength=len(counts[-1]))
    assert (got[counts[-1] > x] >= x).all() and (got[counts[-1] > x] <= x + 1).all()


def test_shortfall_warns_and_reports(hier) -> None:
    with pytest.warns(UserWarning, match="smaller than asked"):
        res = hierarchical_sample(hier, 5000)
    np.testing.assert_array_equal(res.indices, np.arange(3000))
    assert res.stats["shortfall"] == 2000
    assert res.stats["requested"] == 5000 and res.stats["returned"] == 3000


def test_no_warning_when_feasible(hier) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = hierarchical_sample(hier, 3000)
    assert res.stats["shortfall"] == 0


def test_multiplier_fills_budget_from_small_pool() -> None:
    levels = random_hierarchy(100, [12, 3], seed=4)
    res = hierarchical_sample(levels, 250, multiplier=3, seed=1)
    assert res.indices.shape == (250,)
    reps = np.bincount(res.indices, minlength=100)
    assert reps.max() <= 3
    assert (np.diff(res.indices) >= 0).all()
    assert res.stats["shortfall"] == 0 and res.stats["n_unique"] == np.count_nonzero(reps)
    with pytest.warns(UserWarning, match="smaller than asked"):
        full = hierarchical_sample(levels, 400, multiplier=3)
    np.testing.assert_array_equal(np.bincount(full.indices, minlength=100), np.full(100, 3))
    assert full.stats["shortfall"] == 100


def test_multiplier_oversamples_small_clusters() -> None:
    # one big cluster (90 items) and one small (10): with m=3 the small one gives 30 of 60.
    levels = make_hierarchy([np.array([0] * 90 + [1] * 10)], [2])
    one = hierarchical_sample(levels, 60, multiplier=1)
    three = hierarchical_sample(levels, 60, multiplier=3)
    assert (one.indices >= 90).sum() == 10
    assert (three.indices >= 90).sum() == 30
    assert (np.bincount(three.indices, minlength=100)[90:] == 3).all()


@pytest.mark.parametrize("strategy", ["closest", "farthest"])
@pytest.mark.parametrize("mult", [1, 2])
def test_closest_farthest_ordered_by_distance(hier, strategy: str, mult: int) -> None:
    target = 1500 * mult // 2
    res = hierarchical_sample(hier, target, strategy=strategy, multiplier=mult, seed=2)
    quotas = allocate_quotas(hier, target, multiplier=mult, seed=2)[0]
    reps = np.bincount(res.indices, minlength=3000)
    leaf = hier[0]
    for j in range(len(leaf.offsets) - 1):
        items = leaf.members[leaf.offsets[j] : leaf.offsets[j + 1]]
        if items.size == 0:
            continue
        q = int(quotas[j])
        assert reps[items].sum() == q
        base, rem = divmod(q, items.size)
        by_dist = items[np.argsort(leaf.dist[items], kind="stable")]
        chosen = by_dist[:rem] if strategy == "closest" else by_dist[items.size - rem :]
        expect = np.full(items.size, base)
        expect[np.isin(by_dist, chosen)] += 1
        np.testing.assert_array_equal(reps[by_dist], expect)


def test_random_leaf_selection_is_uniform() -> None:
    levels = make_hierarchy([np.zeros(10, dtype=np.int64)], [1])
    hits = np.zeros(10)
    for seed in range(1000):
        hits[hierarchical_sample(levels, 3, seed=seed).indices] += 1
    assert np.all(np.abs(hits - 300) < 70)


def test_seed_changes_random_choices_but_not_sizes(hier) -> None:
    a = hierarchical_sample(hier, 500, seed=0).indices
    b = hierarchical_sample(hier, 500, seed=1).indices
    assert a.shape == b.shape and not np.array_equal(a, b)
    # quotas do not depend on the leaf strategy
    c = hierarchical_sample(hier, 500, strategy="closest", seed=0)
    got = np.bincount(hier[0].assign[c.indices], minlength=150)
    np.testing.assert_array_equal(got, np.bincount(hier[0].assign[a], minlength=150))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 200),
    k1=st.integers(1, 30),
    k2=st.integers(1, 6),
    target=st.integers(1, 500),
    mult=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_hierarchical_random_hierarchies(n, k1, k2, target, mult, seed) -> None:
    levels = random_hierarchy(n, [k1, k2], seed=seed)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = hierarchical_sample(levels, target, multiplier=mult, seed=seed)
    expected = min(target, n * mult)
    assert res.indices.shape == (expected,)
    assert np.bincount(res.indices, minlength=n).max() <= mult
    assert res.stats["shortfall"] == target - expected
    assert (len(rec) > 0) == (target > n * mult)


# ----------------------------------------------------------------------------------------------
# Budgets, fractions, flat baseline
# ----------------------------------------------------------------------------------------------
def test_sample_budgets_consistent(hier) -> None:
    targets = [10, 500, 0.25, 1.0, 2000]
    out = sample_budgets(hier, targets, seed=7)
    assert list(out) == targets
    sizes = {10: 10, 500: 500, 0.25: 750, 1.0: 3000, 2000: 2000}
    for t in targets:
        assert out[t].indices.shape == (sizes[t],)
        alone = hierarchical_sample(hier, t, seed=7)
        np.testing.assert_array_equal(out[t].indices, alone.indices)
        assert out[t].stats == alone.stats


def test_fraction_target(hier) -> None:
    res = hierarchical_sample(hier, 0.1)
    assert res.indices.shape == (300,) and res.stats["requested"] == 300
    np.testing.assert_array_equal(hierarchical_sample(hier, 1.0).indices, np.arange(3000))


def test_flat_equals_one_level_hierarchy(hier) -> None:
    for strategy in ("random", "closest"):
        a = flat_sample(hier[0], 400, strategy=strategy, seed=9)
        b = hierarchical_sample([hier[0]], 400, strategy=strategy, seed=9)
        np.testing.assert_array_equal(a.indices, b.indices)
        assert a.stats["method"] == "flat"
    q = np.bincount(hier[0].assign[a.indices], minlength=150)
    check_water_fill(q, cluster_item_counts(hier)[0], 400)


def test_hierarchical_balances_better_than_flat() -> None:
    # top cluster 0 has 50 level-1 children of 20 items; top clusters 1..4 have 2 children of 100.
    a1 = np.concatenate([np.repeat(np.arange(50), 20), 50 + np.repeat(np.arange(8), 100)])
    a2 = np.concatenate([np.zeros(50, dtype=np.int64), 1 + np.repeat(np.arange(4), 2)])
    levels = make_hierarchy([a1, a2], [58, 5])
    target = 400
    h = hierarchical_sample(levels, target, seed=0)
    f = flat_sample(levels[0], target, seed=0)
    share_h = np.mean(item_to_level(levels, h.indices, 1) == 0)
    share_f = np.mean(item_to_level(levels, f.indices, 1) == 0)
    assert share_h == pytest.approx(0.2)  # 80 of 400: equal split over the 5 top clusters
    assert share_f > 0.8  # ~ 50 / 58 of the level-1 clusters
    top_h = sample_stats(levels, h.indices)["levels"][1]["normalized_entropy"]
    top_f = sample_stats(levels, f.indices)["levels"][1]["normalized_entropy"]
    assert top_h == pytest.approx(1.0) and top_f < 0.6


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------
def test_sample_stats_values() -> None:
    a1 = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # level-1 cluster 3 holds item 9; cluster 4 empty
    a2 = np.array([0, 0, 1, 1, 1])
    levels = make_hierarchy([a1, a2], [5, 2])
    st_ = sample_stats(levels, np.array([0, 1, 3, 5, 5]))
    assert st_["n_samples"] == 5 and st_["n_unique"] == 4
    l1, l2 = st_["levels"]
    assert l1["level"] == 1 and l1["n_clusters"] == 5 and l1["n_nonempty"] == 4 and l1["n_touched"] == 3
    p = np.array([2, 1, 2]) / 5
    assert l1["entropy"] == pytest.approx(-(p * np.log(p)).sum())
    assert l1["max_entropy"] == pytest.approx(math.log(4))
    assert l1["normalized_entropy"] == pytest.approx(l1["entropy"] / math.log(4))
    assert l1["min_count"] == 1 and l1["max_count"] == 2
    assert l1["count_hist"]["bin_edges"] == [1, 2, 4] and l1["count_hist"]["counts"] == [1, 2]
    assert l2["n_touched"] == 2 and l2["n_nonempty"] == 2
    assert l2["entropy"] == pytest.approx(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)))
    res = hierarchical_sample(levels, 4)
    assert [lv["level"] for lv in res.stats["levels"]] == [1, 2]
    assert sum(res.stats["levels"][0]["count_hist"]["counts"]) == res.stats["levels"][0]["n_touched"]


def test_sample_stats_bad_indices(hier) -> None:
    with pytest.raises(ValueError, match="indices"):
        sample_stats(hier, np.array([0, 3000]))


# ----------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"target": 0}, "target"),
        ({"target": -5}, "target"),
        ({"target": 0.0}, "target"),
        ({"target": 1.5}, "target"),
        ({"target": float("nan")}, "target"),
        ({"target": "10"}, "target"),
        ({"target": True}, "target"),
        ({"target": 10, "strategy": "nearest"}, "strategy"),
        ({"target": 10, "multiplier": 0}, "multiplier"),
        ({"target": 10, "multiplier": 1.5}, "multiplier"),
        ({"target": 10, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments(hier, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        hierarchical_sample(hier, **kwargs)
    if name != "target" or kwargs["target"] != 10:
        with pytest.raises(ValueError, match=name):
            sample_budgets(hier, [kwargs.pop("target")], **kwargs)


def test_bad_levels(hier) -> None:
    with pytest.raises(ValueError, match="levels"):
        hierarchical_sample([], 10)
    bad = Level(hier[1].offsets, hier[1].members[:-1], hier[1].dist, hier[1].assign)
    with pytest.raises(ValueError, match=r"levels\[1\]\.members"):
        hierarchical_sample([hier[0], bad], 10)
    dup = hier[0].members.copy()
    dup[0] = dup[1]
    with pytest.raises(ValueError, match=r"levels\[0\]\.members"):
        hierarchical_sample([Level(hier[0].offsets, dup, hier[0].dist, hier[0].assign)], 10)
    offs = hier[0].offsets.copy()
    offs[-1] += 1
    with pytest.raises(ValueError, match=r"levels\[0\]\.offsets"):
        flat_sample(Level(offs, hier[0].members, hier[0].dist, hier[0].assign), 10)
    with pytest.raises(ValueError, match="targets"):
        sample_budgets(hier, [])


# ----------------------------------------------------------------------------------------------
# Scale (not timed: it must simply be quick because everything is vectorised)
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_large_hierarchy_runs() -> None:
    levels = random_hierarchy(200_000, [20_000, 2_000, 100], seed=11, skew=0.8)
    res = hierarchical_sample(levels, 50_000, seed=0)
    assert res.indices.shape == (50_000,)
    assert (np.diff(res.indices) > 0).all()
    out = sample_budgets(levels, [1000, 0.5], strategy="closest", multiplier=2)
    assert out[1000].indices.shape == (1000,) and out[0.5].indices.shape == (100_000,)


def test_random_rows_is_the_one_seeded_baseline_stream():
    """random_rows: sorted distinct int64 rows from default_rng([seed, 7]); capped at n; the seed matters."""
    from curate.sampling import random_rows

    rows = random_rows(1000, 100, seed=3)
    expected = np.sort(np.random.default_rng([3, 7]).choice(1000, size=100, replace=False))
    np.testing.assert_array_equal(rows, expected)
    assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)
    assert not np.array_equal(rows, random_rows(1000, 100, seed=4))
    np.testing.assert_array_equal(random_rows(5, 9, seed=0), np.arange(5))  # more than n: all rows
    assert random_rows(5, 0, seed=0).size == 0
