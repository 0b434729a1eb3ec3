"""What a first GPU run needs, checked on a CPU where it can be (issue 15).

- the CUDA memory defaults, from a free-memory figure passed in;
- the double-buffered (pinned toward CUDA) block reader equals the plain one;
- host syncs: O(1) per Lloyd iteration and per split iteration, whatever the number of chunks;
- one TF32 setting reaches every k-means and the split;
- device-parametrised equality at d = 32 and 128 (k-means++, Lloyd, hierarchy, split, dedup):
  the ``cuda`` cases (marked gpu) compare CUDA with the CPU; the ``cpu`` cases run the same body
  here and compare the streamed (memory-mapped) path with the in-memory one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from curate.dedup import deduplicate
from curate.hierarchy import HierarchicalKMeans
from curate.hierarchy.split import split_clusters
from curate.kmeans import KMeans, RowSource
from curate.kmeans.device import default_memory_mb, matmul_precision, resolve_memory_mb
from curate.kmeans.shard import LocalRows
from curate.kmeans.syncs import count_host_syncs

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
GiB = 2**30


# ---- memory defaults -------------------------------------------------------------------------
def test_cuda_memory_defaults_from_free_memory():
    assert default_memory_mb("cpu", 80 * GiB) == (256.0, 2048.0)  # a CPU ignores the figure
    assert default_memory_mb("cuda", None) == (256.0, 2048.0)  # unknown: the CPU's
    chunk, cache = default_memory_mb("cuda", 140 * GiB)  # an H200, idle
    assert chunk == 4096.0 and cache == 0.5 * 140 * 1024 - 4096
    chunk, cache = default_memory_mb(torch.device("cuda", 1), 8 * GiB)
    assert chunk == 512.0 and cache == 0.5 * 8 * 1024 - 512
    assert default_memory_mb("cuda", 1 * GiB) == (256.0, 256.0)  # the floor
    assert resolve_memory_mb("cpu", 64.0, None) == (64.0, 2048.0)  # what is given is kept
    km = KMeans(k=2, device="cpu")
    assert (km.memory_budget_mb, km.cache_mb) == (256.0, 2048.0)
    assert HierarchicalKMeans([dict(k=2)], memory_budget_mb=32.0).memory_budget_mb == 32.0


# ---- the block reader ------------------------------------------------------------------------
def _containers(tmp_path, x: np.ndarray) -> dict:
    np.save(tmp_path / "x.npy", x)
    return {
        "array": x,
        "memmap": np.load(tmp_path / "x.npy", mmap_mode="r"),  # read-only
        "path": tmp_path / "x.npy",  # NpyRows (pread)
        "tensor": torch.from_numpy(x.copy()),
        "float64": x.astype(np.float64),
    }


@pytest.mark.parametrize("device", DEVICES)
def test_buffered_reader_equals_plain(tmp_path, device):
    x = np.random.default_rng(0).normal(size=(1003, 7)).astype(np.float32)
    for name, data in _containers(tmp_path, x).items():
        source = RowSource(data)
        for start, stop, step in [(0, 1003, 100), (5, 1003, 1003), (17, 40, 7), (0, 0, 10)]:
            plain = [(s, b.cpu().clone()) for s, b in source.blocks(start, stop, step, device, "plain")]
            buffered = [(s, b.cpu().clone()) for s, b in source.blocks(start, stop, step, device, "buffered")]
            assert [s for s, _ in plain] == [s for s, _ in buffered] == list(range(start, stop, step)), name
            for (_, a), (_, b) in zip(plain, buffered):
                assert b.device.type == "cpu" and b.dtype == torch.float32
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_buffered_reader_stops_cleanly_when_abandoned(tmp_path):
    source = RowSource(np.ones((1000, 4), dtype=np.float32))
    blocks = source.blocks(0, 1000, 10, "cpu", "buffered")
    next(blocks)
    blocks.close()  # the read-ahead thread is told to stop and joined: no hang, no leak
    with pytest.raises(ValueError, match="reader"):
        list(source.blocks(0, 10, 5, "cpu", "pinned"))


def test_buffered_reader_reports_read_errors():
    class Broken:
        shape, dtype = (100, 3), np.dtype(np.float32)

        def __getitem__(self, key):
            if key.start >= 50:
                raise OSError("disk gone")
            return np.zeros((key.stop - key.start, 3), dtype=np.float32)

    with pytest.raises(OSError, match="disk gone"):
        list(RowSource(Broken()).blocks(0, 100, 20, "cpu", "buffered"))


@pytest.mark.parametrize("cosine", [False, True])
def test_local_rows_buffered_stream_equals_plain(tmp_path, cosine):
    x = np.random.default_rng(1).normal(size=(2000, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    chunks = {}
    for reader in ("plain", "buffered"):
        rows = LocalRows(RowSource(tmp_path / "x.npy"), torch.device("cpu"), 300, cosine, 1 << 40, reader=reader)
        rows.scan()
        assert rows._cache is None  # a memory-mapped shard on a CPU stays streamed
        chunks[reader] = [(s, c.clone()) for s, c in rows.chunks()]
    assert [s for s, _ in chunks["plain"]] == [s for s, _ in chunks["buffered"]]
    for (_, a), (_, b) in zip(chunks["plain"], chunks["buffered"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_memory_mapped_shard_is_cached_on_cuda_only(tmp_path, device):
    x = np.random.default_rng(2).normal(size=(500, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rows = LocalRows(RowSource(tmp_path / "x.npy"), torch.device(device), 128, False, 1 << 30)
    rows.scan()
    assert (rows._cache is not None) == (device == "cuda")
    small = LocalRows(RowSource(tmp_path / "x.npy"), torch.device(device), 128, False, 500 * 16 * 4 - 1)
    small.scan()
    assert small._cache is None  # over the budget: streamed
    mem = LocalRows(RowSource(x), torch.device(device), 128, False, 1 << 30)
    mem.scan()
    got = torch.cat([c for _, c in rows.chunks()]).cpu()
    torch.testing.assert_close(got, torch.cat([c for _, c in mem.chunks()]).cpu(), rtol=0, atol=0)
    torch.testing.assert_close(got, torch.from_numpy(x - x.astype(np.float64).mean(0).astype(np.float32)))


def test_scan_names_the_first_bad_row_of_a_cached_shard(tmp_path):
    x = np.ones((1000, 4), dtype=np.float32)
    x[[640, 900], 1] = np.nan
    rows = LocalRows(RowSource(x, name="emb"), torch.device("cpu"), 100, False, 1 << 30)
    with pytest.raises(ValueError, match="emb: row 640 contains NaN"):
        rows.scan()
    assert rows._cache is None
    x = np.ones((1000, 4), dtype=np.float32)
    x[[333, 700]] = 0
    with pytest.raises(ValueError, match="row 333 is all zeros"):
        LocalRows(RowSource(x), torch.device("cpu"), 100, True, 1 << 30).scan()


# ---- host syncs ------------------------------------------------------------------------------
def test_sync_counter_sees_the_calls_that_block_a_gpu():
    x = torch.arange(10.0)
    with count_host_syncs() as c:
        bool(x.sum() > 1)
        float(x.sum())
        x.tolist()
        x[x > 3]
        torch.bincount(x.long())
        x.cpu()
        x.to("cpu")
        y = x.clone()
        y[x > 3] = 0
    assert c.counts == {
        "__bool__": 1,
        "__float__": 1,
        "tolist": 1,
        "__getitem__[bool mask]": 1,
        "bincount": 1,
        "cpu": 1,
        "to(cpu)": 1,
        "__setitem__[bool mask]": 1,
    }
    with count_host_syncs() as c:
        z = torch.zeros(5, dtype=torch.int64)
        z.index_add_(0, torch.tensor([1, 1, 3]), torch.ones(3, dtype=torch.int64))
        torch.where(z > 0, z, -z).sum()
    assert c.total == 0


def _lloyd_syncs(x, n_iter: int, budget_mb: float) -> tuple[int, int]:
    km = KMeans(k=20, n_iter=n_iter, seed=0, init="random", memory_budget_mb=budget_mb)
    with count_host_syncs() as c:
        km.fit(x)
    assert len(km.stats) == n_iter  # ran every iteration (no fixed point reached)
    n_chunks = km._local_rows(RowSource(x)).n // km._local_rows(RowSource(x)).chunk_rows
    return c.total, n_chunks


@pytest.mark.parametrize("where", ["memory", "memmap"])  # cached, streamed
def test_lloyd_iteration_syncs_once_whatever_the_chunking(tmp_path, where):
    x = np.random.default_rng(3).uniform(size=(6000, 16)).astype(np.float32)
    if where == "memmap":
        np.save(tmp_path / "x.npy", x)
        x = np.load(tmp_path / "x.npy", mmap_mode="r")
    per_iter, fits = {}, set()
    for budget in (0.05, 0.5):  # ~20 and ~2 chunks
        lo, chunks = _lloyd_syncs(x, 2, budget)
        hi, _ = _lloyd_syncs(x, 6, budget)
        per_iter[chunks] = (hi - lo) / 4
        fits.add(hi)
    assert len(per_iter) == 2 and max(per_iter) >= 10 * max(1, min(per_iter))
    assert set(per_iter.values()) == {1.0}, per_iter  # one host read per iteration
    assert len(fits) == 1  # and the whole fit (scan, init, final assignment) none per chunk


def test_split_iteration_does_not_sync():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 12)).astype(np.float32)
    parent = torch.from_numpy(rng.integers(0, 5, size=3000))
    rows = LocalRows(RowSource(x), torch.device("cpu"), 250, False, 1 << 30)
    rows.scan()
    totals = []
    for n_iter in (2, 7):
        with count_host_syncs() as c:
            split_clusters(rows, parent, parent.numpy(), 5, 4, n_iter, seed=0, memory_budget_mb=0.01)
        totals.append(c.total)
    # one sync per iteration: the empty-slot count that decides the re-seeding (counts by index_add_)
    assert totals[1] - totals[0] <= 5, totals


@pytest.mark.parametrize("memmap", [False, True], ids=["memory", "memmap"])
def test_batched_split_syncs_do_not_grow_with_the_sub_chunks(tmp_path, memmap):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = np.load(tmp_path / "x.npy", mmap_mode="r") if memmap else x  # streamed in 3 blocks / kept
    parent = torch.from_numpy(rng.integers(0, 6, size=3000))
    rows = LocalRows(RowSource(data), torch.device("cpu"), 1000, False, 1 << 30)
    rows.scan()
    per_cluster = 4 * (12 * 6 + 21)  # bytes of a cluster's 4 slots: 2 clusters per batch, 3 batches
    totals = {}
    for budget_mb in (0.01, 0.002):  # sub-chunks of 52 and 10 rows: ~20 and ~100 per batch and pass
        for n_iter in (2, 6):
            with count_host_syncs() as c:
                *_, stats = split_clusters(
                    rows, parent, parent.numpy(), 6, 4, n_iter, 0, budget_mb, 2.5 * per_cluster / 2**20
                )
            assert stats["cluster_batches"] == 3
            totals[budget_mb, n_iter] = c.total
    # per iteration: the empty-slot count of each batch (it decides the re-seeding), no row selection
    for budget_mb in (0.01, 0.002):
        assert (totals[budget_mb, 6] - totals[budget_mb, 2]) / 4 <= 3, totals
    # nor in the k-means++ inside the clusters: the whole split syncs as often at either sub-chunk size
    assert totals[0.002, 2] == totals[0.01, 2] and totals[0.002, 6] == totals[0.01, 6], totals


@pytest.mark.parametrize("memmap", [False, True], ids=["memory", "memmap"])
def test_kmeanspp_step_syncs_do_not_grow_with_the_chunks(tmp_path, memmap):
    x = np.random.default_rng(5).normal(size=(6000, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = np.load(tmp_path / "x.npy", mmap_mode="r") if memmap else x
    per_step = {}
    for budget_mb in (4.0, 0.1):  # 1 chunk against ~20 chunks per pass
        totals = []
        for k in (8, 24):
            with count_host_syncs() as c:
                KMeans(k=k, n_iter=0, seed=0, memory_budget_mb=budget_mb).fit(data)
            totals.append(c.total)
        per_step[budget_mb] = (totals[1] - totals[0]) / 16
    assert per_step[4.0] <= 12, per_step
    assert per_step[0.1] <= per_step[4.0] + 0.5, per_step  # no sync per chunk inside a step


@pytest.mark.gpu
def test_lloyd_iteration_syncs_once_on_cuda():
    x = torch.randn(20000, 64)
    counts = []
    for n_iter in (2, 5):
        km = KMeans(k=64, n_iter=n_iter, seed=0, init="random", device="cuda", memory_budget_mb=1.0)
        km.fit(x)  # warm up: caches, handles
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                km.fit(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    assert (counts[1] - counts[0]) / 3 <= 1, counts


# ---- one TF32 setting ------------------------------------------------------------------------
def test_matmul_precision_sets_and_restores_the_cuda_switch():
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        for want in (True, False):
            torch.backends.cuda.matmul.allow_tf32 = not want
            with matmul_precision("cuda", want):
                assert torch.backends.cuda.matmul.allow_tf32 is want
            assert torch.backends.cuda.matmul.allow_tf32 is (not want)
            with matmul_precision("cpu", want):  # a CPU has no TF32: left alone
                assert torch.backends.cuda.matmul.allow_tf32 is (not want)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_allow_tf32_reaches_every_kmeans_and_the_split(monkeypatch, blobs):
    import curate.hierarchy.model as model_module

    seen_split, seen_kmeans = [], []
    real = model_module.matmul_precision

    def spy(device, allow):
        seen_split.append(allow)
        return real(device, allow)

    monkeypatch.setattr(model_module, "matmul_precision", spy)
    real_fit = KMeans.fit
    monkeypatch.setattr(KMeans, "fit", lambda self, x: (seen_kmeans.append(self.allow_tf32), real_fit(self, x))[1])
    levels = [dict(k=6, n_splits=2), dict(k=3, resample_steps=1, sample_size=2)]
    for allow in (False, True):
        seen_split.clear(), seen_kmeans.clear()
        HierarchicalKMeans(levels, n_iter=2, seed=0, allow_tf32=allow).fit(blobs)
        assert seen_split == [allow] and len(seen_kmeans) == 3 and set(seen_kmeans) == {allow}


def test_cluster_config_sets_tf32(compose_config):
    from curate.cluster import build_model

    cfg = compose_config("cluster", ["cluster=toy_2d", "allow_tf32=false"])
    model = build_model(cfg, None)
    assert model.allow_tf32 is False and model._kmeans(3, seed=0).allow_tf32 is False
    assert model.memory_budget_mb == 256.0  # null in the config: the device's default


# ---- the same results on every device, at d = 32 and 128 -------------------------------------
def _blobs(d: int, n: int = 3000, centers: int = 8, seed: int = 0) -> np.ndarray:
    """``centers`` well separated Gaussian blobs in ``d`` dimensions, offset from the origin (so the
    centring matters), shuffled."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, d)) * 6 + 3
    x = means[rng.integers(0, centers, size=n)] + rng.normal(size=(n, d))
    return x.astype(np.float32)


@pytest.fixture
def on_disk(tmp_path):
    def save(x: np.ndarray) -> str:
        path = tmp_path / f"x{x.shape[1]}.npy"
        np.save(path, x)
        return str(path)

    return save


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [32, 128])
@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_kmeans_device_matches_cpu_tf32_off(device, d, init, on_disk):
    """CPU in memory = ``device`` from a memory-mapped file (streamed on a CPU, cached on CUDA),
    exactly up to float rounding: same k-means++ picks, labels and centroids."""
    x = _blobs(d)
    kwargs = dict(k=8, n_iter=8, seed=1, init=init, memory_budget_mb=0.25)  # several chunks
    ref = KMeans(**kwargs).fit(x)
    init_ref = KMeans(**{**kwargs, "n_iter": 0}).fit(x).centroids
    got = KMeans(**kwargs, device=device, allow_tf32=False).fit(on_disk(x))
    init_got = KMeans(**{**kwargs, "n_iter": 0}, device=device, allow_tf32=False).fit(on_disk(x)).centroids
    torch.testing.assert_close(init_got.cpu(), init_ref, rtol=1e-5, atol=1e-4)  # the same rows picked
    torch.testing.assert_close(got.centroids.cpu(), ref.centroids, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(got.labels_.numpy(), ref.labels_.numpy())
    assert abs(got.inertia - ref.inertia) <= 1e-5 * ref.inertia
    labels, sq = got.assign(on_disk(x))
    np.testing.assert_array_equal(labels.numpy(), ref.labels_.numpy())
    torch.testing.assert_close(sq, ref.sq_dist_, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [32, 128])
def test_kmeans_tf32_within_tolerance(device, d):
    """TF32 on (the CUDA default): the same clustering of separated blobs, centroids within the
    TF32 rounding (~1e-3 relative on a distance)."""
    x = _blobs(d, seed=2)
    ref = KMeans(k=8, n_iter=8, seed=1, init="random").fit(x)
    got = KMeans(k=8, n_iter=8, seed=1, init="random", device=device, allow_tf32=True).fit(x)
    assert (got.labels_.numpy() == ref.labels_.numpy()).mean() >= 0.999
    torch.testing.assert_close(got.centroids.cpu(), ref.centroids, rtol=1e-2, atol=1e-2)
    # distances through the TF32 expansion: ~1e-2 per point, averaging out over the points
    assert abs(got.inertia - ref.inertia) <= 5e-3 * ref.inertia


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [32, 128])
@pytest.mark.parametrize(
    "levels",
    [
        [dict(k=24, resample_steps=2, sample_size=5), dict(k=6, resample_steps=1, sample_size=2)],
        [dict(k=6, n_splits=4), dict(k=5)],
    ],
    ids=["resampling", "split"],
)
def test_hierarchy_device_matches_cpu(device, d, levels, on_disk):
    x = _blobs(d, n=2000, seed=3)
    ref = HierarchicalKMeans(levels, n_iter=5, seed=2).fit(x)
    got = HierarchicalKMeans(levels, n_iter=5, seed=2, device=device, allow_tf32=False, memory_budget_mb=0.25)
    got.fit(on_disk(x))
    for a, b in zip(ref.levels_, got.levels_):
        np.testing.assert_allclose(b.centroids, a.centroids, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(b.assign, a.assign)
        np.testing.assert_array_equal(b.members, a.members)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [32, 128])
def test_dedup_device_matches_cpu(device, d, on_disk):
    rng = np.random.default_rng(5)
    base = rng.normal(size=(1500, d)).astype(np.float32)
    src = rng.integers(0, 1500, size=300)
    copies = (base[src] + 0.01 * rng.normal(size=(300, d))) * rng.uniform(0.5, 2, size=(300, 1))
    x = np.concatenate([base, copies.astype(np.float32)])[rng.permutation(1800)]
    ref = deduplicate(x, threshold=0.95, chunk_size=128)
    got = deduplicate(np.load(on_disk(x), mmap_mode="r"), threshold=0.95, chunk_size=128, device=device)
    np.testing.assert_array_equal(got.keep, ref.keep)
    np.testing.assert_array_equal(got.duplicate_of, ref.duplicate_of)
    assert 1500 - 10 <= ref.keep.sum() <= 1500  # the copies go (a random pair rarely passes 0.95)


# ---- scripts/gpu_check.sh --------------------------------------------------------------------
GPU_CHECK = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def test_gpu_check_fits_one_device_call():
    """The steps' limits (the GPU run's, not --dry-run's extra step) and the setup fit in the
    budget, and the budget in one 10-minute call with a minute to spare; at most 8 result files."""
    import re

    text = GPU_CHECK.read_text()
    budget = int(re.search(r'BUDGET_S="\$\{GPU_CHECK_BUDGET_S:-(\d+)\}"', text).group(1))
    steps = dict(re.findall(r"^step (\w+) (\d+) ", text, flags=re.M))
    assert set(steps) == {"pytest_gpu", "bench_kmeans", "bench_dedup"}
    assert sum(map(int, steps.values())) + 15 <= budget <= 600 - 60
    files = {"summary.txt"} | {f"{name}.txt" for name in steps} | set(re.findall(r"\$OUT/(\w+\.jsonl?)", text))
    assert len(files) <= 8, files


def test_gpu_check_rejects_an_unknown_option():
    import subprocess

    proc = subprocess.run(["bash", str(GPU_CHECK), "--dryrun"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown option --dryrun")


def test_assign_syncs_once_and_names_a_bad_row():
    x = np.random.default_rng(6).normal(size=(4000, 16)).astype(np.float32)
    totals = []
    for budget in (0.05, 1.0):  # ~70 and ~4 chunks
        km = KMeans(k=10, n_iter=2, seed=0, init="random", memory_budget_mb=budget).fit(x)
        with count_host_syncs() as c:
            labels, _ = km.assign(x)
        np.testing.assert_array_equal(labels.numpy(), km.labels_.numpy())
        totals.append(c.total)
    # the bad-row flag read once, the two copies out, the shard offsets: nothing per chunk
    assert totals[0] == totals[1] <= 6, totals
    x[[2500, 3999], 3] = np.inf
    with pytest.raises(ValueError, match="row 2500 contains NaN or Inf"):
        km.assign(x)


def test_cublas_workspace_is_set_before_cuda_can_start():
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG at its first handle: importing the trainer sets it,
    before any CUDA work (setting it inside train() could come too late)."""
    import subprocess
    import sys

    code = (
        "import os; os.environ.pop('CUBLAS_WORKSPACE_CONFIG', None); import torch, selfsup.train; "
        "print(os.environ.get('CUBLAS_WORKSPACE_CONFIG'), torch.cuda.is_initialized())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == [":4096:8", "False"], proc.stderr[-2000:]


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_cache_is_the_prepared_rows_rounded(tmp_path, device):
    """bfloat16 storage takes the two-pass fill (centre in float32, then round): not raw rows
    rounded first, which would lose what the centring keeps."""
    x = (np.random.default_rng(7).normal(size=(700, 24)) + 100).astype(np.float32)
    rows = LocalRows(RowSource(x), torch.device(device), 128, False, 1 << 30, storage_dtype=torch.bfloat16)
    rows.scan()
    assert rows._cache is not None and rows._cache.dtype == torch.bfloat16
    centred = torch.from_numpy(x) - rows.shift.cpu()
    got = torch.cat([c for _, c in rows.chunks()]).cpu()
    torch.testing.assert_close(got, centred.to(torch.bfloat16).float(), rtol=0, atol=0)
