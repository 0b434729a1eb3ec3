"""Benchmark the k-means initialisations, the accumulation under load, and the curation fits.

Rows are printed as soon as they are measured; every number is a ratio against a peer measured
in the same run (absolute times on a shared machine are noisy)::

    python scripts/bench_init.py init --size small            # k-means++, k-means||, sklearn, bound
    python scripts/bench_init.py load                          # accumulation / Lloyd, +busy process
    python scripts/bench_init.py curation                      # 14.4k x 32, 3 levels
    python scripts/bench_init.py curation --repo /path/to/other/checkout   # the same, other code
    python scripts/bench_init.py quality --seeds 5 --hierarchy # Fig. 3 KL rows per init

``init``: on bench_kmeans.py's data of that size (Zipf-weighted Gaussian mixture), times our
greedy k-means++ and k-means|| (on the prepared rows, the init alone), scikit-learn's
``kmeans_plusplus`` (same rows, its own threads), and the memory-bound estimate of k-means++:
``k`` passes over the rows at the bandwidth of a ``sum`` pass measured in the same run. For every
init: the potential (sum of squared distances to the initial centroids) and the inertia after
20 of our Lloyd iterations started from those centroids.

``load``: float64 ``index_add_`` (raw, on 1 and 2 threads), our ``accumulate_`` and one same-init
Lloyd iteration of ``KMeans``, first as the machine is, then with a busy-loop process started by
this script competing for the cores.

``quality``: on the 2-D toy of Fig. 3, per init (k-means++, k-means||) and seed: the KL to uniform
of the 300 centroids of a flat k-means, and with ``--hierarchy`` of the (3000, 1000, 300) hierarchy
with resampling (the init of each level's first k-means; resampling steps use k-means++) and of a
900-point hierarchical sample, plus that sample's share of the dense mode.

``curation``: ``HierarchicalKMeans`` on 14,400 points in 32-d, k = n/10, n/50, n/250 with 10
resampling steps each (r = 5, 3, 2), seconds per fit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

REPO = Path(__file__).resolve().parents[1]


def _emit(row: dict[str, Any], out: list[dict[str, Any]]) -> None:
    out.append(row)
    print(json.dumps(row), flush=True)


def _median_time(fn: Callable[[], Any], repeat: int = 5) -> float:
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
    import torch

    from curate.kmeans.kernels import assign_chunk

    total = 0.0
    c = c.float()
    c_sq = c.square().sum(1)
    for _, xb in rows.chunks():
        total += float(assign_chunk(xb, c, c_sq)[1].sum(dtype=torch.float64))
    return total


def _lloyd_from(x: np.ndarray, c_prepared, k: int, n_iter: int) -> float:
    from curate.kmeans import KMeans

    km = KMeans(k=k, n_iter=n_iter, seed=0)
    km._initialise = lambda rows: c_prepared.clone()  # the centroids under test, in prepared space
    return km.fit(x).inertia


def bench_init(args: argparse.Namespace, out: list[dict[str, Any]]) -> None:
    import torch

    from curate.bench.data import write_clustered_npy
    from curate.bench.kmeans import SIZES
    from curate.kmeans.init import kmeans_parallel, kmeans_plusplus

    n, d, k, _ = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        x = np.load(write_clustered_npy(Path(tmp) / "x.npy", n, d, k), allow_pickle=False)
    rows = _prepared_rows(x)
    data = rows._cache
    sum_pass = _median_time(lambda: data.sum(), repeat=5)
    bandwidth = data.numel() * 4 / sum_pass
    bound = k * sum_pass
    _emit(
        {
            "what": "bound",
            "n": n,
            "d": d,
            "k": k,
            "sum_pass_s": sum_pass,
            "GB_per_s": bandwidth / 1e9,
            "kmeanspp_bound_s": bound,
        },
        out,
    )

    def row(name: str, seconds: float, c_prepared) -> None:
        pot = _potential(rows, c_prepared)
        inertia = _lloyd_from(x, c_prepared, k, args.lloyd_iters) if args.lloyd_iters else float("nan")
        _emit(
            {
                "what": "init",
                "impl": name,
                "seconds": seconds,
                "x_bound": seconds / bound,
                "potential": pot,
                f"inertia_after_{args.lloyd_iters}": inertia,
                "loadavg_1m": round(os.getloadavg()[0], 2),
            },
            out,
        )

    for seed in range(args.seeds):
        if "k-means++" in args.impls:
            t0 = time.perf_counter()
            c = kmeans_plusplus(rows, k, torch.Generator().manual_seed(seed))
            row(f"ours k-means++ (seed {seed})", time.perf_counter() - t0, c)
        if "k-means||" in args.impls:
            t0 = time.perf_counter()
            c = kmeans_parallel(rows, k, torch.Generator().manual_seed(seed), rounds=args.rounds)
            row(f"ours k-means|| {args.rounds} rounds (seed {seed})", time.perf_counter() - t0, c)
    if "sklearn" in args.impls:
        from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
        from threadpoolctl import threadpool_limits

        xc = data.numpy()
        with threadpool_limits(torch.get_num_threads()):
            t0 = time.perf_counter()
            c, _ = sk_kmeans_plusplus(xc, k, random_state=0)
            row("sklearn kmeans_plusplus (seed 0)", time.perf_counter() - t0, torch.from_numpy(c))


# -- load ----------------------------------------------------------------------------------------
def bench_load(args: argparse.Namespace, out: list[dict[str, Any]]) -> None:
    import torch

    from curate.kmeans import KMeans
    from curate.kmeans.kernels import accumulate_

    m, d, k = 8192, 128, 1024
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, d, generator=gen)
    labels = torch.randint(0, k, (m,), generator=gen)
    sums, counts = torch.zeros(k, d, dtype=torch.float64), torch.zeros(k, dtype=torch.int64)
    lloyd_x = torch.randn(50_000, 64, generator=gen).numpy()

    def lloyd_iteration() -> float:
        km = KMeans(k=256, n_iter=4, seed=0, init="random").fit(lloyd_x)
        return statistics.median(s["seconds"] for s in km.stats[1:])

    def measure(load: str) -> None:
        before = torch.get_num_threads()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            raw = _median_time(lambda: sums.index_add_(0, labels, x.double()))
            ours = _median_time(lambda: accumulate_(x, labels, sums, counts))
            lloyd = lloyd_iteration()
            _emit(
                {
                    "what": "load",
                    "load": load,
                    "threads": threads,
                    "index_add_f64_ms": raw * 1e3,
                    "accumulate_ms": ours * 1e3,
                    "lloyd_iter_s (50k x 64, k 256)": lloyd,
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                },
                out,
            )
        torch.set_num_threads(before)

    measure("as is")
    with busy_process():
        measure("+1 busy-loop process")


# -- curation -------------------------------------------------------------------------------------
def bench_curation(args: argparse.Namespace, out: list[dict[str, Any]]) -> None:
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
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        hkm = HierarchicalKMeans(levels, n_iter=args.lloyd_iters, seed=seed).fit(x)
        _emit(
            {
                "what": "curation",
                "code": str(Path(curate.__file__).parents[1]),
                "n": n,
                "d": d,
                "seed": seed,
                "n_iter": args.lloyd_iters,
                "seconds": time.perf_counter() - t0,
                "inertia_l1": hkm.levels_[0].stats["inertia"][-1],
                "loadavg_1m": round(os.getloadavg()[0], 2),
            },
            out,
        )


# -- quality -------------------------------------------------------------------------------------
def bench_quality(args: argparse.Namespace, out: list[dict[str, Any]]) -> None:
    """Fig. 3 KL rows (300 centroids on the 2-D toy) and the balance of a hierarchical sample, per init."""
    from curate.datasets.toy import toy_2d
    from curate.hierarchy import HierarchicalKMeans
    from curate.kmeans import KMeans
    from curate.metrics import kl_to_uniform
    from curate.sampling import hierarchical_sample

    levels = [dict(k=k, resample_steps=10, sample_size=2) for k in (3000, 1000, 300)]
    for seed in range(args.seeds):
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
            if args.hierarchy:
                hkm = HierarchicalKMeans(levels, n_iter=50, seed=seed, init=init).fit(x)
                pick = hierarchical_sample(hkm.levels_, 900, strategy="random", seed=seed).indices
                row.update(
                    hkmeans_3_resampling_kl=kl_to_uniform(hkm.levels_[-1].centroids),
                    sample_900_kl=kl_to_uniform(x[pick]),
                    sample_900_dense_mode_share=float((labels[pick] == 0).mean()),
                )
            row["seconds"] = time.perf_counter() - t0
            _emit(row, out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("init", "load", "curation", "quality"))
    p.add_argument("--size", default="small", help="bench_kmeans.py size (init)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5, help="k-means|| rounds")
    p.add_argument("--lloyd-iters", type=int, default=20)
    p.add_argument("--impls", default="k-means++,k-means||,sklearn", help="init: which inits to run")
    p.add_argument("--hierarchy", action="store_true", help="quality: also the 3-level hierarchy and its sample")
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose curate package to import")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    sys.path.insert(0, str(args.repo.resolve()))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out: list[dict[str, Any]] = []
    from curate.analysis import machine_info

    _emit({"what": "machine", **machine_info()}, out)
    {"init": bench_init, "load": bench_load, "curation": bench_curation, "quality": bench_quality}[args.what](args, out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    from curate.errors import cli_entry

    cli_entry(main)
