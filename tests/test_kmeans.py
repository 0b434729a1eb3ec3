"""k-means engine: kernels against brute force, quality against sklearn/faiss, determinism,
empty clusters, streaming, resume and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.kmeans import KMeans, TooFewDistinctPoints, assign_chunk, sq_dists
from curate.kmeans.kernels import accumulate_, argmin_rows, chunk_rows_for


def skewed(n: int = 4000, d: int = 16, seed: int = 0) -> np.ndarray:
    """A long-tailed mixture: one huge mode, a few mid ones, a sprinkle of rare ones."""
    rng = np.random.default_rng(seed)
    sizes = (np.array([0.6, 0.2, 0.1, 0.05, 0.03, 0.02]) * n).astype(int)
    centers = rng.normal(scale=4.0, size=(len(sizes), d))
    scales = [2.0, 1.0, 0.5, 0.5, 0.3, 0.3]
    x = np.concatenate([c + s * rng.normal(size=(m, d)) for c, m, s in zip(centers, sizes, scales)])
    return x.astype(np.float32)


# -- kernels --------------------------------------------------------------------------------
def test_assign_chunk_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(500, 24, generator=g), torch.randn(300, 24, generator=g)
    labels, d2 = assign_chunk(x, c, c.square().sum(1), out=torch.empty(512, 300))
    ref = torch.cdist(x.double(), c.double()).square()
    assert torch.equal(labels, ref.argmin(1))
    torch.testing.assert_close(d2.double(), ref.min(1).values, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [7, 255, 256, 1024, 1100])
def test_argmin_rows_equals_torch_min(k):
    s = torch.randn(300, k)
    s[3] = 1.0  # a row of ties: the first index must win
    v, i = argmin_rows(s)
    v_ref, i_ref = s.min(1)
    assert torch.equal(v, v_ref) and torch.equal(i, i_ref) and i[3] == 0


def test_sq_dists_exact_zero_for_duplicates_far_from_origin():
    x = torch.randn(50, 8) + 1000.0
    d2 = sq_dists(x, x[:5])
    assert torch.all(d2[torch.arange(5), torch.arange(5)] == 0)
    ref = torch.cdist(x.double(), x[:5].double()).square()
    torch.testing.assert_close(d2.double(), ref, rtol=1e-3, atol=1e-2)


def test_accumulate_sums_and_counts():
    x = torch.randn(100, 5)
    labels = torch.randint(0, 7, (100,))
    sums, counts = torch.zeros(7, 5, dtype=torch.float64), torch.zeros(7, dtype=torch.int64)
    accumulate_(x, labels, sums, counts)
    onehot = torch.nn.functional.one_hot(labels, 7).double()
    torch.testing.assert_close(sums, onehot.T @ x.double())
    assert torch.equal(counts, onehot.sum(0).long())


def test_chunk_rows_respects_budget():
    assert chunk_rows_for(2**20, k=1024, d=128, device="cuda") == 2**20 // (4 * 1024 + 12 * 128 + 32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert chunk_rows_for(2**30, k=1024, d=128, device="cpu") == 1024  # cache-sized on one thread
        torch.set_num_threads(2)
        assert chunk_rows_for(2**30, k=1024, d=128, device="cpu") == 8192  # fewer syncs on several
    finally:
        torch.set_num_threads(threads)
    assert chunk_rows_for(1, k=10, d=2) == 1


# -- quality against references -------------------------------------------------------------
@pytest.mark.parametrize("data", ["gauss", "skewed"])
def test_inertia_close_to_sklearn_and_faiss(data):
    import faiss
    from sklearn.cluster import KMeans as SKKMeans

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 16)).astype(np.float32) if data == "gauss" else skewed(3000)
    k, n_iter = 40, 25
    ours = np.mean([KMeans(k=k, n_iter=n_iter, seed=s).fit(x).inertia for s in range(3)])
    sk = np.mean(
        [
            SKKMeans(k, n_init=1, max_iter=n_iter, tol=0, random_state=s, algorithm="lloyd").fit(x).inertia_
            for s in range(3)
        ]
    )
    fa = []
    for s in range(3):
        km = faiss.Kmeans(16, k, niter=n_iter, seed=s + 1, max_points_per_centroid=10**9)
        km.train(x)
        fa.append(km.index.search(x, 1)[0].sum())
    assert ours <= 1.03 * sk and ours <= 1.03 * np.mean(fa)


def test_kmeanspp_beats_random_init_on_skewed_data():
    x = skewed(3000)
    pp = [KMeans(k=30, n_iter=0, seed=s).fit(x).inertia for s in range(4)]
    rnd = [KMeans(k=30, n_iter=0, seed=s, init="random").fit(x).inertia for s in range(4)]
    assert np.mean(pp) < 0.8 * np.mean(rnd)


def test_fit_recovers_separated_blobs(blobs):
    km = KMeans(k=6, n_iter=20, seed=0).fit(blobs)
    sizes = np.sort(np.bincount(km.labels_.numpy(), minlength=6))
    assert sizes.tolist() == [50, 150, 300, 500, 800, 1200]


def test_objective_decreases_and_stats_recorded(blobs):
    km = KMeans(k=12, n_iter=10, seed=3).fit(blobs)
    obj = [s["objective"] for s in km.stats]
    assert 2 <= len(obj) <= 10 and all(b <= a * (1 + 1e-6) for a, b in zip(obj, obj[1:]))
    assert {"objective", "centroid_shift", "empty_reseeded", "seconds"} <= set(km.stats[0])
    assert km.inertia <= obj[-1] * (1 + 1e-6)


def test_tol_stops_early(blobs):
    km = KMeans(k=6, n_iter=50, tol=1e-4, seed=0).fit(blobs)
    assert len(km.stats) < 50


# -- determinism ----------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["k-means++", "k-means||", "random"])
def test_same_seed_same_result_and_centroids_from_data(init, blobs):
    a = KMeans(k=20, n_iter=0, seed=7, init=init).fit(blobs)
    b = KMeans(k=20, n_iter=0, seed=7, init=init).fit(blobs)
    c = KMeans(k=20, n_iter=0, seed=8, init=init).fit(blobs)
    assert torch.equal(a.centroids, b.centroids)
    assert not torch.equal(a.centroids, c.centroids)
    # with 0 iterations the centroids are the chosen rows themselves (up to centring round-off)
    d2 = torch.cdist(a.centroids.double(), torch.from_numpy(blobs).double()).min(1).values
    assert d2.max() < 1e-4


def test_input_containers_agree(tmp_path, blobs):
    path = tmp_path / "x.npy"
    np.save(path, blobs)
    ref = KMeans(k=9, n_iter=5, seed=0).fit(blobs)
    for x in (torch.from_numpy(blobs), np.load(path, mmap_mode="r"), str(path), path):
        km = KMeans(k=9, n_iter=5, seed=0, memory_budget_mb=0.05).fit(x)  # many small chunks
        torch.testing.assert_close(km.centroids, ref.centroids)
        assert torch.equal(km.labels_, ref.labels_)


def test_float64_and_float16_inputs(blobs):
    a = KMeans(k=6, n_iter=5, seed=0).fit(blobs.astype(np.float64))
    b = KMeans(k=6, n_iter=5, seed=0).fit(blobs.astype(np.float16))
    assert abs(a.inertia - b.inertia) / a.inertia < 0.01


def test_bfloat16_storage_close_to_float32(blobs):
    a = KMeans(k=6, n_iter=10, seed=0).fit(blobs)
    b = KMeans(k=6, n_iter=10, seed=0, storage_dtype="bfloat16").fit(blobs)
    assert abs(a.inertia - b.inertia) / a.inertia < 0.02


# -- cosine ----------------------------------------------------------------------------------
def test_cosine_centroids_unit_norm_and_invariant_to_row_scale(blobs):
    km = KMeans(k=6, n_iter=10, seed=0, distance="cosine").fit(blobs)
    torch.testing.assert_close(km.centroids.norm(dim=1), torch.ones(6))
    scaled = blobs * np.random.default_rng(0).uniform(0.1, 10, size=(len(blobs), 1)).astype(np.float32)
    km2 = KMeans(k=6, n_iter=10, seed=0, distance="cosine").fit(scaled)
    torch.testing.assert_close(km2.centroids, km.centroids, rtol=1e-4, atol=1e-5)
    assert (km2.labels_ == km.labels_).float().mean() > 0.999


# -- empty clusters ---------------------------------------------------------------------------
def test_empty_clusters_are_reseeded_and_counted():
    rng = np.random.default_rng(0)
    dup = np.repeat(rng.normal(size=(4, 3)), 200, axis=0)  # 4 points repeated: random init picks copies
    x = np.concatenate([dup, rng.normal(size=(50, 3)) * 5]).astype(np.float32)
    km = KMeans(k=20, n_iter=15, seed=0, init="random").fit(x)
    assert sum(s["empty_reseeded"] for s in km.stats) > 0
    assert km.stats[-1]["empty_reseeded"] == 0
    assert (np.bincount(km.labels_.numpy(), minlength=20) > 0).all()


# -- resume -----------------------------------------------------------------------------------
def test_killed_fit_resumes_to_the_same_centroids(tmp_path, blobs, monkeypatch):
    ref = KMeans(k=15, n_iter=12, seed=0).fit(blobs)

    calls = {"n": 0}
    original = KMeans._lloyd_step

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(KMeans, "_lloyd_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        KMeans(k=15, n_iter=12, seed=0, checkpoint_dir=tmp_path, checkpoint_every=3).fit(blobs)
    monkeypatch.setattr(KMeans, "_lloyd_step", original)
    resumed = KMeans(k=15, n_iter=12, seed=0, checkpoint_dir=tmp_path, checkpoint_every=3).fit(blobs)
    assert len(ref.stats) == 12  # no early fixed point: the kill really happened mid-run
    assert len(resumed.stats) == 12  # stats of the first 6 iterations came from the checkpoint
    assert torch.equal(resumed.centroids, ref.centroids)
    assert torch.equal(resumed.labels_, ref.labels_)


def test_checkpoint_from_other_settings_is_refused(tmp_path, blobs):
    KMeans(k=5, n_iter=2, seed=0, checkpoint_dir=tmp_path).fit(blobs)
    with pytest.raises(ValueError, match="other settings"):
        KMeans(k=6, n_iter=2, seed=0, checkpoint_dir=tmp_path).fit(blobs)


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_row_is_named(bad, blobs):
    x = blobs.copy()
    x[1234, 3] = bad
    with pytest.raises(ValueError, match="row 1234 contains NaN or Inf"):
        KMeans(k=5).fit(x)


def test_zero_row_rejected_for_cosine(blobs):
    x = blobs.copy()
    x[17] = 0
    with pytest.raises(ValueError, match="row 17 is all zeros"):
        KMeans(k=5, distance="cosine").fit(x)


def test_assign_wrong_dimension(blobs):
    km = KMeans(k=5, n_iter=2).fit(blobs)
    with pytest.raises(ValueError, match="d=7 columns but the centroids have d=8"):
        km.assign(blobs[:, :7])
    with pytest.raises(ValueError, match="before fit"):
        KMeans(k=5).assign(blobs)


def test_k_larger_than_n():
    with pytest.raises(ValueError, match="k=11 exceeds the number of rows n=10"):
        KMeans(k=11).fit(np.random.default_rng(0).random((10, 2), dtype=np.float32))


def test_k_equal_n_places_every_point():
    x = np.random.default_rng(0).normal(size=(25, 3)).astype(np.float32)
    km = KMeans(k=25, n_iter=5).fit(x)
    assert km.inertia < 1e-6 and len(np.unique(km.labels_.numpy())) == 25


def test_fewer_distinct_points_than_k():
    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    with pytest.raises(TooFewDistinctPoints, match="only 3 distinct points found, fewer than k=5"):
        KMeans(k=5).fit(x)


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((0, 4), np.float32), "no rows"),
        (np.arange(40).reshape(10, 4), "not floating point"),
        (torch.arange(40).reshape(10, 4), "not floating point"),
        (np.zeros(10, np.float32), "expected a 2-D"),
    ],
)
def test_bad_arrays(x, match):
    with pytest.raises(ValueError, match=match):
        KMeans(k=2).fit(x)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found: .*nope.npy"):
        KMeans(k=2).fit(tmp_path / "nope.npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npy is not a .npy file"):
        KMeans(k=2).fit(tmp_path / "empty.npy")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=0), "k must be a positive integer"),
        (dict(k=3, init="kmeans++"), "init must be one of"),
        (dict(k=3, distance="ip"), "distance must be one of"),
        (dict(k=3, n_iter=-1), "n_iter must be >= 0"),
        (dict(k=3, storage_dtype="int8"), "storage_dtype"),
        (dict(k=3, init_max_points=2), "init_max_points=2 must be >= k=3"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KMeans(**kwargs)


def test_cuda_requested_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        KMeans(k=3, device="cuda")


def test_init_subset_is_deterministic_and_reasonable(blobs):
    a = KMeans(k=6, n_iter=10, seed=0, init_max_points=500).fit(blobs)
    b = KMeans(k=6, n_iter=10, seed=0, init_max_points=500).fit(blobs)
    full = KMeans(k=6, n_iter=10, seed=0).fit(blobs)
    assert torch.equal(a.centroids, b.centroids)
    assert a.inertia <= 1.05 * full.inertia


@pytest.mark.gpu
def test_cuda_matches_cpu(blobs):
    cpu = KMeans(k=6, n_iter=10, seed=0).fit(blobs)
    gpu = KMeans(k=6, n_iter=10, seed=0, device="cuda", allow_tf32=False).fit(blobs)
    torch.testing.assert_close(gpu.centroids.cpu(), cpu.centroids, rtol=1e-4, atol=1e-4)


def test_low_dimensional_assignment_is_exact_with_packed_centroids():
    """1-D, far from the origin, 5000 centroids 0.006 apart: the matmul expansion would cancel
    (it sent 19% of the points to a neighbour); the coordinate-wise path must be exact."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20000, 1, generator=g) * 30 + 5
    c = torch.sort(torch.rand(5000, 1, generator=g) * 30 + 5, dim=0).values
    labels, d2 = assign_chunk(x, c, c.square().sum(1))
    ref = (x - c.T).abs()
    assert torch.equal(ref.gather(1, labels[:, None]).squeeze(1), ref.min(1).values)
    torch.testing.assert_close(d2, ref.min(1).values.square())


class _CountingRows:
    """An on-disk-like input (not an ndarray, so it is streamed) that counts its row-range reads."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.shape, self.dtype, self.slices = x, x.shape, x.dtype, 0

    def __getitem__(self, index):
        if isinstance(index, slice):
            self.slices += 1
        return self.x[index]


def test_kmeanspp_reads_a_streamed_input_once_when_asked(blobs):
    chunks = -(-len(blobs) // chunk_rows_for(2**20, 20, blobs.shape[1]))
    ref = KMeans(k=20, n_iter=0, seed=4, memory_budget_mb=1.0).fit(blobs)
    # by default a streamed input stays out of core: k-means++ reads it once per centroid
    default = _CountingRows(blobs)
    km = KMeans(k=20, n_iter=0, seed=4, memory_budget_mb=1.0).fit(default)
    assert default.slices >= 20 * chunks and torch.equal(km.centroids, ref.centroids)
    # with init_cache_mb: the scan, one copy into memory and the final assignment
    held = _CountingRows(blobs)
    km = KMeans(k=20, n_iter=0, seed=4, memory_budget_mb=1.0, init_cache_mb=64).fit(held)
    assert held.slices <= 3 * chunks and torch.equal(km.centroids, ref.centroids)
    too_small = _CountingRows(blobs)  # 3000 x 8 float32 = 94 kB does not fit 0.01 MB
    KMeans(k=20, n_iter=0, seed=4, memory_budget_mb=1.0, init_cache_mb=0.01).fit(too_small)
    assert too_small.slices >= 20 * chunks
