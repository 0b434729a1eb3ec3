"""The init, load, curation and quality benchmarks of ``scripts/bench_init.py``: generators of
result rows (dicts), each measured against a peer in the same run.

- :func:`init_rows`: our greedy k-means++ and k-means|| (the init alone, on prepared rows), scikit-
  learn's ``kmeans_plusplus``, and the memory-bound estimate of k-means++ (``k`` passes at the
  bandwidth of a ``sum`` pass); per init the potential and the inertia after a few Lloyd iterations.
- :func:`load_rows`: float64 ``index_add_``, our ``accumulate_`` and one Lloyd iteration, as the
  machine is and with a busy-loop process competing (:func:`busy_process`).
- :func:`curation_rows`: ``HierarchicalKMeans`` fits on a 14,400 x 32 Zipf mixture.
- :func:`quality_rows`: Fig. 3's KL to uniform per init (flat k-means, and the 3-level hierarchy).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["busy_process", "curation_rows", "init_rows", "load_rows", "median_time", "quality_rows"]


def _loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def median_time(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median wall seconds of ``repeat`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def busy_process() -> Iterator[None]:
    """A second process spinning on one core for the duration of the block."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


# -- init ----------------------------------------------------------------------------------------
def _prepared_rows(x: np.ndarray):
    import torch

    from curate.kmeans.shard import LocalRows
    from curate.kmeans.source import RowSource

    rows = LocalRows(RowSource(x), torch.device("cpu"), chunk_rows=8192, cosine=False, cache_bytes=1 << 40)
    rows.scan()
    return rows


def _potential(rows, c) -> float:
    """Sum of squared distances of the prepared rows to ``c: (k, d)``."""
    import torch

    from curate.kmeans.kernels import assign_chunk

    total = 0.0
    c = c.float()
    c_sq = c.square().sum(1)
    for _, xb in rows.chunks():
        total += float(assign_chunk(xb, c, c_sq)[1].sum(dtype=torch.float64))
    return total


def _lloyd_from(x: np.ndarray, c_prepared, k: int, n_iter: int) -> float:
    """Inertia after ``n_iter`` of our Lloyd iterations started from ``c_prepared``."""
    from curate.kmeans import KMeans

    km = KMeans(k=k, n_iter=n_iter, seed=0)
    km._initialise = lambda rows: c_prepared.clone()  # the centroids under test, in prepared space
    return km.fit(x).inertia


def init_rows(size: str, seeds: int, impls: str, rounds: int = 5, lloyd_iters: int = 20) -> Iterator[dict[str, Any]]:
    """Rows ``{"what": "bound", ...}`` then one ``{"what": "init", "impl", "seconds", "x_bound",
    "potential", "inertia_after_<lloyd_iters>"}`` per init and seed.

    Args:
        size: a :data:`research.bench.kmeans.SIZES` name (its clustered data).
        seeds: seeds of our inits (scikit-learn: seed 0 only).
        impls: comma-separated ``k-means++``, ``k-means++-pruned`` (the exact pruned step),
            ``k-means||``, ``sklearn``.
        rounds: k-means|| rounds.
        lloyd_iters: Lloyd iterations after each init (0: none).
    """
    import torch

    from curate.kmeans.init import kmeans_parallel, kmeans_plusplus
    from research.bench.data import write_clustered_npy
    from research.bench.kmeans import SIZES

    n, d, k, _ = SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        x = np.load(write_clustered_npy(Path(tmp) / "x.npy", n, d, k), allow_pickle=False)
    rows = _prepared_rows(x)
    data = rows._cache
    sum_pass = median_time(lambda: data.sum(), repeat=5)
    bound = k * sum_pass
    yield {
        "what": "bound",
        "n": n,
        "d": d,
        "k": k,
        "sum_pass_s": sum_pass,
        "GB_per_s": data.numel() * 4 / sum_pass / 1e9,
        "kmeanspp_bound_s": bound,
    }

    def row(name: str, seconds: float, c_prepared) -> dict[str, Any]:
        inertia = _lloyd_from(x, c_prepared, k, lloyd_iters) if lloyd_iters else float("nan")
        return {
            "what": "init",
            "impl": name,
            "seconds": seconds,
            "x_bound": seconds / bound,
            "potential": _potential(rows, c_prepared),
            f"inertia_after_{lloyd_iters}": inertia,
            "loadavg_1m": _loadavg(),
        }

    names = impls.split(",")
    for seed in range(seeds):
        for name, prune in (("k-means++", False), ("k-means++-pruned", True)):
            if name in names:
                t0 = time.perf_counter()
                # no prune= on the plain row: a --repo checkout's engine may predate it
                extra = {"prune": True} if prune else {}
                c = kmeans_plusplus(rows, k, torch.Generator().manual_seed(seed), **extra)
                yield row(f"ours {name} (seed {seed})", time.perf_counter() - t0, c)
        if "k-means||" in names:
            t0 = time.perf_counter()
            c = kmeans_parallel(rows, k, torch.Generator().manual_seed(seed), rounds=rounds)
            yield row(f"ours k-means|| {rounds} rounds (seed {seed})", time.perf_counter() - t0, c)
    if "sklearn" in names:
        from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
        from threadpoolctl import threadpool_limits

        with threadpool_limits(torch.get_num_threads()):
            t0 = time.perf_counter()
            c, _ = sk_kmeans_plusplus(data.numpy(), k, random_state=0)
            seconds = time.perf_counter() - t0
        yield row("sklearn kmeans_plusplus (seed 0)", seconds, torch.from_numpy(c))


# -- load ----------------------------------------------------------------------------------------
def load_rows() -> Iterator[dict[str, Any]]:
    """Per load (as is, +1 busy-loop process) and thread count (1, 2): milliseconds of a raw float64
    ``index_add_`` and of our ``accumulate_`` on 8192 x 128 rows into 1024 sums, and the median
    seconds of a Lloyd iteration of ``KMeans(k=256)`` on 50k x 64."""
    import torch

    from curate.kmeans import KMeans
    from curate.kmeans.kernels import accumulate_

    m, d, k = 8192, 128, 1024
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, d, generator=gen)
    labels = torch.randint(0, k, (m,), generator=gen)
    sums, counts = torch.zeros(k, d, dtype=torch.float64), torch.zeros(k, dtype=torch.int64)
    lloyd_x = torch.randn(50_000, 64, generator=gen).numpy()

    def measure(load: str) -> Iterator[dict[str, Any]]:
        before = torch.get_num_threads()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            raw = median_time(lambda: sums.index_add_(0, labels, x.double()))
            ours = median_time(lambda: accumulate_(x, labels, sums, counts))
            km = KMeans(k=256, n_iter=4, seed=0, init="random").fit(lloyd_x)
            yield {
                "what": "load",
                "load": load,
                "threads": threads,
                "index_add_f64_ms": raw * 1e3,
                "accumulate_ms": ours * 1e3,
                "lloyd_iter_s (50k x 64, k 256)": statistics.median(s["seconds"] for s in km.stats[1:]),
                "loadavg_1m": _loadavg(),
            }
        torch.set_num_threads(before)

    yield from measure("as is")
    with busy_process():
        yield from measure("+1 busy-loop process")


# -- curation -------------------------------------------------------------------------------------
def curation_rows(seeds: int, n_iter: int) -> Iterator[dict[str, Any]]:
    """Seconds of ``HierarchicalKMeans`` per seed on 14,400 x 32 points (a Zipf mixture of 200
    Gaussians), k = n/10, n/50, n/250 with 10 resampling steps (r = 5, 3, 2); ``code`` names the
    checkout whose ``curate`` ran."""
    import curate
    from curate.hierarchy import HierarchicalKMeans

    n, d = 14_400, 32
    rng = np.random.default_rng(0)
    centers = 3.0 * rng.standard_normal((200, d))
    weights = 1.0 / np.arange(1, 201) ** 0.8
    x = (centers[rng.choice(200, n, p=weights / weights.sum())] + rng.standard_normal((n, d))).astype(np.float32)
    levels = [
        dict(k=n // 10, resample_steps=10, sample_size=5),
        dict(k=n // 50, resample_steps=10, sample_size=3),
        dict(k=n // 250, resample_steps=10, sample_size=2),
    ]
    for seed in range(seeds):
        t0 = time.perf_counter()
        hkm = HierarchicalKMeans(levels, n_iter=n_iter, seed=seed).fit(x)
        yield {
            "what": "curation",
            "code": str(Path(curate.__file__).parents[1]),
            "n": n,
            "d": d,
            "seed": seed,
            "n_iter": n_iter,
            "seconds": time.perf_counter() - t0,
            "inertia_l1": hkm.levels_[0].stats["inertia"][-1],
            "loadavg_1m": _loadavg(),
        }


# -- quality -------------------------------------------------------------------------------------
def quality_rows(seeds: int, hierarchy: bool) -> Iterator[dict[str, Any]]:
    """Fig. 3 KL rows (300 centroids on the 2-D toy) per init (k-means++, k-means||) and seed; with
    ``hierarchy`` also the (3000, 1000, 300) hierarchy with resampling and a 900-point sample of it
    (its KL and its share of the dense mode)."""
    from curate.analysis.metrics import kl_to_uniform
    from curate.data.datasets.toy import toy_2d
    from curate.hierarchy import HierarchicalKMeans
    from curate.kmeans import KMeans
    from curate.sampling import hierarchical_sample

    levels = [dict(k=k, resample_steps=10, sample_size=2) for k in (3000, 1000, 300)]
    for seed in range(seeds):
        x, labels = toy_2d(seed)
        for init in ("k-means++", "k-means||"):
            t0 = time.perf_counter()
            km = KMeans(k=300, n_iter=50, seed=seed, init=init).fit(x)
            row = {
                "what": "quality",
                "init": init,
                "seed": seed,
                "kmeans_300_kl": kl_to_uniform(km.centroids.numpy()),
                "kmeans_inertia": km.inertia,
            }
            if hierarchy:
                hkm = HierarchicalKMeans(levels, n_iter=50, seed=seed, init=init).fit(x)
                pick = hierarchical_sample(hkm.levels_, 900, strategy="random", seed=seed).indices
                row.update(
                    hkmeans_3_resampling_kl=kl_to_uniform(hkm.levels_[-1].centroids),
                    sample_900_kl=kl_to_uniform(x[pick]),
                    sample_900_dense_mode_share=float((labels[pick] == 0).mean()),
                )
            row["seconds"] = time.perf_counter() - t0
            yield row
