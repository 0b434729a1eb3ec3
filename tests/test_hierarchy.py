"""Hierarchical k-means: CSR levels, resampling, splitting, persistence, resume, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.hierarchy import HierarchicalKMeans, Level, LevelSpec, resample_members, validate_levels


def small_toy(n: int = 3000, seed: int = 0) -> np.ndarray:
    """The paper's 2-D toy at 1/3 scale: a dense mode, two lighter ones, a uniform background."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.normal((-1, -1), 0.5, (7 * n // 9, 2)),
        rng.normal((1, -1), 0.5, (n // 9, 2)),
        rng.normal((0, 1), 0.5, (n // 18, 2)),
        rng.uniform(-3, 3, (n - 7 * n // 9 - n // 9 - n // 18, 2)),
    ]
    return np.concatenate(parts).astype(np.float32)


def check_level(level: Level, n_inputs: int) -> None:
    assert level.assign.shape == level.dist.shape == level.members.shape == (n_inputs,)
    assert level.offsets[0] == 0 and level.offsets[-1] == n_inputs and len(level.offsets) == level.k + 1
    assert (level.sizes > 0).all()
    assert np.array_equal(np.sort(level.members), np.arange(n_inputs))
    cluster_of_position = np.repeat(np.arange(level.k), level.sizes)
    assert np.array_equal(level.assign[level.members], cluster_of_position)
    d = level.dist[level.members]
    same = cluster_of_position[1:] == cluster_of_position[:-1]
    assert (d[1:][same] >= d[:-1][same]).all()  # sorted by distance inside each cluster


def test_level_from_assignment_drops_empty_and_sorts():
    centroids = np.arange(8, dtype=np.float32).reshape(4, 2)
    assign = np.array([3, 0, 3, 0, 3])
    dist = np.array([0.5, 0.2, 0.1, 0.1, 0.5], dtype=np.float32)
    level = Level.from_assignment(centroids, assign, dist)
    assert level.k == 2 and level.stats["empty_dropped"] == 2
    np.testing.assert_array_equal(level.centroids, centroids[[0, 3]])
    np.testing.assert_array_equal(level.assign, [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(level.offsets, [0, 2, 5])
    np.testing.assert_array_equal(level.members, [3, 1, 2, 0, 4])  # ties broken by input id
    check_level(level, 5)


def test_resample_members_closest_and_random():
    rng = np.random.default_rng(0)
    assign = rng.integers(0, 5, 200)
    dist = rng.random(200).astype(np.float32)
    level = Level.from_assignment(np.zeros((5, 2), np.float32), assign, dist)
    closest = resample_members(level, 3, "closest", rng)
    expected = np.concatenate([level.members[a : a + 3] for a in level.offsets[:-1]])
    np.testing.assert_array_equal(closest, np.sort(expected))
    for j in range(5):  # the chosen members of cluster j are its 3 smallest distances
        mine = closest[assign[closest] == j]
        assert np.isclose(np.sort(dist[mine]), np.sort(dist[assign == j])[:3]).all()
    rand = resample_members(level, 3, "random", np.random.default_rng(1))
    assert len(rand) == 15 and (np.bincount(assign[rand], minlength=5) == 3).all()
    assert not np.array_equal(rand, closest)
    tiny = resample_members(level, 500, "closest", rng)  # clusters smaller than r give everything
    np.testing.assert_array_equal(tiny, np.arange(200))


def test_fit_builds_consistent_levels(blobs):
    hkm = HierarchicalKMeans([dict(k=60), dict(k=12), dict(k=4)], n_iter=10, seed=0).fit(blobs)
    assert [level.k for level in hkm.levels_] == [60, 12, 4]
    n_inputs = [len(blobs), 60, 12]
    for level, n in zip(hkm.levels_, n_inputs):
        check_level(level, n)
    # level-2 clusters level-1 centroids: its centroids are means of their members' centroids
    l1, l2 = hkm.levels_[0], hkm.levels_[1]
    members_mean = np.stack([l1.centroids[l2.assign == j].mean(0) for j in range(3)])
    np.testing.assert_allclose(l2.centroids[:3], members_mean, rtol=1e-4, atol=1e-4)


def test_same_seed_same_hierarchy(blobs):
    levels = [dict(k=80, resample_steps=2, sample_size=3), dict(k=10)]
    a = HierarchicalKMeans(levels, n_iter=5, seed=4).fit(blobs)
    b = HierarchicalKMeans(levels, n_iter=5, seed=4).fit(blobs)
    for la, lb in zip(a.levels_, b.levels_):
        np.testing.assert_array_equal(la.centroids, lb.centroids)
        np.testing.assert_array_equal(la.members, lb.members)
    np.testing.assert_array_equal(a.sample(200, seed=1), b.sample(200, seed=1))


def test_resampling_moves_centroids_out_of_the_dense_mode():
    x = small_toy()
    plain = HierarchicalKMeans([dict(k=300)], n_iter=20, seed=0).fit(x)
    resampled = HierarchicalKMeans([dict(k=300, resample_steps=4, sample_size=2)], n_iter=20, seed=0).fit(x)

    def dense_share(c: np.ndarray) -> float:
        return float((np.linalg.norm(c - np.array([-1.0, -1.0]), axis=1) < 1.0).mean())

    assert len(resampled.levels_[0].stats["inertia"]) == 5  # 1 full run + 4 resampling steps
    assert dense_share(resampled.levels_[0].centroids) < dense_share(plain.levels_[0].centroids) - 0.05


def test_more_levels_balance_top_clusters():
    x = small_toy()
    one = HierarchicalKMeans([dict(k=100)], n_iter=20, seed=0).fit(x)
    three = HierarchicalKMeans([dict(k=1000), dict(k=300), dict(k=100)], n_iter=20, seed=0).fit(x)

    def dense_share(c: np.ndarray) -> float:
        return float((np.linalg.norm(c - np.array([-1.0, -1.0]), axis=1) < 1.0).mean())

    assert dense_share(three.levels_[-1].centroids) < dense_share(one.levels_[-1].centroids)


def test_split_level(blobs):
    hkm = HierarchicalKMeans([dict(k=6, n_splits=5), dict(k=8)], n_iter=8, seed=0).fit(blobs)
    l1 = hkm.levels_[0]
    check_level(l1, len(blobs))
    assert 6 < l1.k <= 30 and l1.stats["split"]["n_splits"] == 5
    # every sub-cluster holds rows of a single blob (its parent is one well separated cluster)
    blob = np.repeat(np.arange(6), [1200, 800, 500, 300, 150, 50])
    per_cluster = [np.unique(blob[l1.assign == j]) for j in range(l1.k)]
    assert all(len(u) == 1 for u in per_cluster)
    # each row sits in the nearest sub-centroid among those of its own cluster (= its blob here)
    sub_blob = np.array([u[0] for u in per_cluster])
    d2 = ((blobs[:, None, :] - l1.centroids[None]) ** 2).sum(-1)
    d2[sub_blob[None, :] != blob[:, None]] = np.inf
    np.testing.assert_array_equal(d2.argmin(1), l1.assign)


def test_split_in_cluster_batches_equals_one_batch(blobs):
    levels = [dict(k=7, n_splits=5), dict(k=6)]
    one = HierarchicalKMeans(levels, n_iter=6, seed=1).fit(blobs)
    # 5 slots x (12 d + 21) bytes = 585 bytes per cluster: 2 clusters per batch, 4 batches
    batched = HierarchicalKMeans(levels, n_iter=6, seed=1, split_memory_mb=1200 / 2**20).fit(blobs)
    assert one.levels_[0].stats["split"]["cluster_batches"] == 1
    assert batched.levels_[0].stats["split"]["cluster_batches"] == 4
    for a, b in zip(one.levels_, batched.levels_):
        np.testing.assert_array_equal(a.centroids, b.centroids)
        np.testing.assert_array_equal(a.assign, b.assign)
        np.testing.assert_array_equal(a.dist, b.dist)


def test_every_lloyd_iteration_reaches_the_hook(blobs):
    records: list[dict] = []
    levels = [dict(k=30, resample_steps=2, sample_size=4), dict(k=5)]
    hkm = HierarchicalKMeans(levels, n_iter=4, seed=0, on_iteration=records.append).fit(blobs)
    assert [(r["level"], r["run"]) for r in records] == sorted((r["level"], r["run"]) for r in records)
    runs = {(r["level"], r["run"]) for r in records}
    assert runs == {(1, 0), (1, 1), (1, 2), (2, 0)}
    assert {"iteration", "objective", "centroid_shift", "seconds"} <= set(records[0])
    # the full run's last objective is the level's first inertia entry before resampling
    full = [r for r in records if (r["level"], r["run"]) == (2, 0)]
    assert len(full) <= 4 and full[-1]["objective"] >= hkm.levels_[1].stats["inertia"][0] - 1e-6


@pytest.mark.gpu
def test_cuda_matches_cpu(blobs):
    # random init: k-means++ could pick another candidate on a float tie and diverge
    levels = [dict(k=40), dict(k=6)]
    cpu = HierarchicalKMeans(levels, n_iter=6, seed=0, init="random").fit(blobs)
    gpu = HierarchicalKMeans(levels, n_iter=6, seed=0, init="random", device="cuda").fit(blobs)
    for a, b in zip(cpu.levels_, gpu.levels_):
        np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-3, atol=1e-3)
        assert (a.assign == b.assign).mean() > 0.99
    split = [dict(k=6, n_splits=5), dict(k=4)]
    a = HierarchicalKMeans(split, n_iter=6, seed=0, init="random", split_memory_mb=1e-3).fit(blobs)
    b = HierarchicalKMeans(split, n_iter=6, seed=0, init="random", device="cuda").fit(blobs)
    np.testing.assert_allclose(a.levels_[0].centroids, b.levels_[0].centroids, rtol=1e-3, atol=1e-3)


def test_save_load_round_trip(tmp_path, blobs):
    hkm = HierarchicalKMeans([dict(k=40, resample_steps=1, sample_size=4), dict(k=5)], n_iter=5, seed=2).fit(blobs)
    hkm.save(tmp_path / "h")
    assert (tmp_path / "h" / "manifest.json").exists()
    back = HierarchicalKMeans.load(tmp_path / "h")
    assert back.config() == hkm.config() and back.n_items_ == len(blobs)
    for a, b in zip(hkm.levels_, back.levels_):
        for name in ("centroids", "assign", "dist", "offsets", "members"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(hkm.sample(300, seed=5), back.sample(300, seed=5))
    assert not list((tmp_path / "h").rglob("*.tmp*"))


def test_load_without_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        HierarchicalKMeans.load(tmp_path)


def test_resume_after_kill_between_levels_and_steps(tmp_path, blobs, monkeypatch):
    levels = [dict(k=50, resample_steps=3, sample_size=3), dict(k=8, resample_steps=2, sample_size=2)]
    ref = HierarchicalKMeans(levels, n_iter=6, seed=1).fit(blobs)
    original = HierarchicalKMeans._resample_step
    calls = {"n": 0}

    def dying(self, t, step, *args, **kwargs):
        calls["n"] += 1
        if t == 2 and step == 2:
            raise KeyboardInterrupt("killed")
        return original(self, t, step, *args, **kwargs)

    monkeypatch.setattr(HierarchicalKMeans, "_resample_step", dying)
    with pytest.raises(KeyboardInterrupt):
        HierarchicalKMeans(levels, n_iter=6, seed=1, checkpoint_dir=tmp_path).fit(blobs)
    assert (tmp_path / "level1" / "done.json").exists() and (tmp_path / "level2" / "step1.npz").exists()
    monkeypatch.setattr(HierarchicalKMeans, "_resample_step", original)
    fits = {"n": 0}
    original_fit = HierarchicalKMeans._build_level

    def counting(self, t, *args, **kwargs):
        fits["n"] += 1
        assert t == 2, "level 1 was complete and must not be rebuilt"
        return original_fit(self, t, *args, **kwargs)

    monkeypatch.setattr(HierarchicalKMeans, "_build_level", counting)
    resumed = HierarchicalKMeans(levels, n_iter=6, seed=1, checkpoint_dir=tmp_path).fit(blobs)
    assert fits["n"] == 1
    for a, b in zip(ref.levels_, resumed.levels_):
        np.testing.assert_array_equal(a.centroids, b.centroids)
        np.testing.assert_array_equal(a.members, b.members)
    assert not list((tmp_path / "level2").glob("step*.npz"))  # scratch removed once the level completed


def test_checkpoint_of_other_settings_refused(tmp_path, blobs):
    HierarchicalKMeans([dict(k=10)], n_iter=2, checkpoint_dir=tmp_path).fit(blobs)
    with pytest.raises(ValueError, match="checkpoints of another clustering"):
        HierarchicalKMeans([dict(k=11)], n_iter=2, checkpoint_dir=tmp_path).fit(blobs)


@pytest.mark.parametrize(
    "levels, match",
    [
        ([], "at least one level"),
        ([dict(k=10), dict(k=10)], r"levels\[1\] \(level 2\): k=10 must be smaller than the 10 clusters"),
        ([dict(k=0)], "k must be >= 1"),
        ([dict(k=5, sample_size=0)], "sample_size must be >= 1"),
        ([dict(k=5, resample_steps=3, sample_size=1)], "needs sample_size >= 2"),
        ([dict(k=5, resample_steps=-1)], "resample_steps must be >= 0"),
        ([dict(k=5, n_splits=4, resample_steps=2, sample_size=2)], "cannot be combined"),
        ([dict(k=5, sampel_size=2)], r"unknown level keys \['sampel_size'\]"),
    ],
)
def test_level_validation(levels, match):
    with pytest.raises(ValueError, match=match):
        HierarchicalKMeans(levels)


def test_k_larger_than_items():
    with pytest.raises(ValueError, match="k=50 exceeds the number of items n=20"):
        HierarchicalKMeans([dict(k=50)]).fit(np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32))
    with pytest.raises(ValueError, match="k=50 exceeds"):
        validate_levels([LevelSpec(50)], n_items=20)


def test_bad_resample_strategy_and_device():
    with pytest.raises(ValueError, match="resample_strategy must be one of"):
        HierarchicalKMeans([dict(k=5)], resample_strategy="nearest")
    with pytest.raises(ValueError, match="distance must be one of"):
        HierarchicalKMeans([dict(k=5)], distance="manhattan")


def test_sample_before_fit():
    with pytest.raises(ValueError, match="not fitted"):
        HierarchicalKMeans([dict(k=5)]).sample(10)


def test_cosine_hierarchy(blobs):
    hkm = HierarchicalKMeans([dict(k=20), dict(k=4)], n_iter=5, distance="cosine").fit(blobs)
    torch.testing.assert_close(torch.from_numpy(hkm.levels_[0].centroids).norm(dim=1), torch.ones(20))


# -- the level-1 split's initialisation -----------------------------------------------------
def _split_rows(x: np.ndarray):
    from curate.kmeans.shard import LocalRows
    from curate.kmeans.source import RowSource

    rows = LocalRows(RowSource(torch.from_numpy(x)), torch.device("cpu"), 500, cosine=False, cache_bytes=1 << 40)
    rows.scan()
    return rows


def _reference_kmeanspp_in_cluster(x: np.ndarray, s: int, u: list[np.ndarray]) -> np.ndarray:
    """Greedy k-means++ on the rows of one cluster in float64, with the given uniforms per step."""
    x = x.astype(np.float64)
    pot = np.ones(len(x))
    chosen = []
    for j in range(s):
        if pot.sum() <= 0:
            break
        cum = np.cumsum(pot)
        cand = np.minimum(np.searchsorted(cum, u[j] * cum[-1], side="right"), len(x) - 1)
        d2 = ((x[:, None, :] - x[cand][None]) ** 2).sum(2)
        trial = d2 if j == 0 else np.minimum(pot[:, None], d2)
        best = int(trial.sum(0).argmin())
        chosen.append(int(cand[best]))
        pot = trial[:, best]
    return np.array(chosen)


@pytest.mark.parametrize("d", [3, 20], ids=["direct", "matmul"])
def test_split_kmeanspp_init_matches_a_per_cluster_reference(d):
    import math

    from curate.hierarchy.split import _mixed_seed, split_clusters

    rng = np.random.default_rng(d)
    k, s, seed = 5, 4, 11
    parent = rng.integers(0, k, 400)
    parent[:3] = 4  # cluster 4 keeps 3 members only: 3 slots filled, 1 unused
    parent[3:][parent[3:] == 4] = 0
    x = (rng.normal(size=(400, d)) + 3 * parent[:, None]).astype(np.float32)
    rows = _split_rows(x)
    sub, _, _, stats = split_clusters(rows, torch.from_numpy(parent), parent, k, s, 0, seed)
    xc = x - x.mean(0)
    t = 2 + int(math.log(s))
    u = [
        torch.rand(
            k, 1 if j == 0 else t, generator=torch.Generator().manual_seed(_mixed_seed(seed, j)), dtype=torch.float64
        ).numpy()
        for j in range(s)
    ]
    for c in range(k):
        members = np.flatnonzero(parent == c)
        ref = members[_reference_kmeanspp_in_cluster(xc[members], s, [u[j][c] for j in range(s)])]
        got = sub[c * s : (c + 1) * s]
        used = ~np.isnan(got[:, 0])
        np.testing.assert_allclose(got[used], xc[ref], atol=1e-5)
    assert stats["seeded_slots"] == 4 * s + 3 and stats["init"] == "k-means++"


def test_split_kmeanspp_init_beats_random_members():
    x = small_toy(3000, seed=1)
    inertia = {}
    for init in ("k-means++", "random"):
        vals = []
        for seed in range(3):
            hkm = HierarchicalKMeans([dict(k=8, n_splits=12), dict(k=10)], n_iter=0, seed=seed, init=init).fit(x)
            vals.append(float(hkm.levels_[0].dist.sum()))
        inertia[init] = np.mean(vals)
    assert inertia["k-means++"] < 0.85 * inertia["random"]


def test_split_reseeds_empty_slots_from_the_farthest_members():
    from curate.hierarchy.split import split_clusters

    rng = np.random.default_rng(0)
    # every cluster: 60 copies of one point (random members: several slots on the same point,
    # all but the first left empty) and 20 scattered points far away
    blocks = []
    for _ in range(4):
        centre = rng.normal(scale=20.0, size=6)
        blocks.append(np.concatenate([np.repeat(centre[None], 60, 0), centre + 5 * rng.normal(size=(20, 6))]))
    x = np.concatenate(blocks).astype(np.float32)
    parent = np.repeat(np.arange(4), 80)
    rows = _split_rows(x)
    sub, slot, sq, stats = split_clusters(rows, torch.from_numpy(parent), parent, 4, 5, 5, 3, init="random")
    assert stats["empty_reseeded"] > 0 and stats["empty_after_lloyd"] == 0
    sizes = np.bincount(slot.numpy(), minlength=20)
    assert (sizes[~np.isnan(sub[:, 0])] > 0).all()
    assert (slot.numpy() // 5 == parent).all()
