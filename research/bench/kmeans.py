"""The k-means benchmark: our ``KMeans``, faiss ``Kmeans`` and scikit-learn ``KMeans`` (Lloyd) on
the same data for the same iterations, one measurement per fresh process, and its result rows.

A worker is ``python -m research.bench.kmeans '<spec JSON>'``; a spec names ``impl`` (``ours``,
``faiss``, ``sklearn``, or ``init``: our seeded initial centroids saved for the peers), ``data``
(a float32 ``.npy``), ``n, d, k, iters, seed, threads, device``, ``mmap`` (the input stays on disk)
and optionally ``init`` / ``init_path`` / ``init_max_points`` / ``reader`` / ``score_block_mb`` /
``save_centroids``.

Timings: ours ``km.stats[i]["seconds"]``; faiss the differences of the cumulative
``iteration_stats[i]["time"]``; sklearn the time of each call of its Lloyd step (the
``lloyd_iter_chunked_dense`` it calls once per iteration, wrapped here), falling back to the whole
fit divided by the iterations if that hook is gone. Inertia is each implementation's sum of squared
distances to its *final* centroids (ours ``km.inertia``, sklearn ``inertia_``, faiss a search of the
data in its index).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from research.bench.measure import RESULT_TAG, PeakMemory, add_ratios, run_module

__all__ = [
    "IMPLS",
    "ROW_KEYS",
    "RUN_KEYS",
    "SIZES",
    "format_table",
    "plan_jobs",
    "result_row",
    "run_worker",
    "spawn_worker",
]

# name: (n, d, k, on-disk input)
SIZES: dict[str, tuple[int, int, int, bool]] = {
    "tiny": (5_000, 16, 32, False),
    "small": (200_000, 128, 1024, False),
    "medium": (1_000_000, 64, 1000, False),
    "large": (500_000, 384, 4096, False),
    "stream": (2_000_000, 128, 1024, True),
}
IMPLS = ("ours", "faiss", "sklearn")
ROW_KEYS = ("impl", "n", "d", "k", "sec_per_iter", "inertia", "peak_rss_mb", "gflops")
# what a run's JSON line (--jsonl) keeps of its measurements
RUN_KEYS = ("inertia", "peak_rss_mb", "fit_seconds", "load1", "gpu_peak_mb", "iter_seconds")
# measurements copied from a run into its row when present
_DETAIL_KEYS = (
    "iter_seconds",
    "iter_cpu_seconds",
    "fit_seconds",
    "objective_per_iter",
    "empty_reseeded",
    "timing",
    "search_seconds",
    "gpu_peak_mb",
    "faiss_gpu",
    "load1",
)


def _load(spec: dict[str, Any]) -> Any:
    if spec["mmap"]:
        return np.load(spec["data"], mmap_mode="r", allow_pickle=False)
    return np.load(spec["data"], allow_pickle=False)


def _init_array(spec: dict[str, Any]) -> np.ndarray | None:
    return np.load(spec["init_path"], allow_pickle=False) if spec.get("init_path") else None


def _work_ours(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from curate.kmeans import KMeans

    torch.set_num_threads(spec["threads"])
    if spec.get("score_block_mb"):
        import curate.kmeans.kernels as kernels

        kernels._CPU_SCORE_BLOCK_BYTES = int(spec["score_block_mb"] * 2**20)
    # an on-disk input goes in as its path (the engine's own reader) unless a memory map is asked for
    x = spec["data"] if spec["mmap"] and spec.get("reader") != "mmap" else _load(spec)
    cpu_secs: list[float] = []

    class CpuTimedKMeans(KMeans):
        """Also records the process CPU time of each Lloyd step (robust to a shared CPU)."""

        def _lloyd_step(self, *args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            out = super()._lloyd_step(*args, **kwargs)
            cpu_secs.append(time.process_time() - t0)
            return out

    km = (CpuTimedKMeans if hasattr(KMeans, "_lloyd_step") else KMeans)(
        k=spec["k"],
        n_iter=spec["iters"],
        init=spec["init"],
        seed=spec["seed"],
        device=spec["device"],
        init_max_points=spec.get("init_max_points"),
    )
    t0 = time.perf_counter()
    km.fit(x)
    fit_s = time.perf_counter() - t0
    if spec.get("save_centroids"):
        np.save(spec["save_centroids"], km.centroids.cpu().numpy())
    secs = [s["seconds"] for s in km.stats]
    out = {
        "iter_seconds": secs,
        "inertia": km.inertia,
        "objective_per_iter": [s["objective"] for s in km.stats],
        "empty_reseeded": int(sum(s["empty_reseeded"] for s in km.stats)),
        "fit_seconds": fit_s,
    }
    if len(cpu_secs) == len(secs) and not spec["device"].startswith("cuda"):
        out["iter_cpu_seconds"] = cpu_secs
    if spec["device"].startswith("cuda"):
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _faiss_gpu_available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False


def _work_faiss(spec: dict[str, Any]) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(spec["threads"])
    x = _load(spec)
    n, d = x.shape
    gpu = spec["device"].startswith("cuda") and _faiss_gpu_available()
    km = faiss.Kmeans(
        d,
        spec["k"],
        niter=spec["iters"],
        seed=spec["seed"] + 1234,
        max_points_per_centroid=max(256, n // spec["k"] + 1),  # no subsampling
        verbose=False,
        gpu=gpu,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    km.train(x, init_centroids=_init_array(spec))
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0

    def per_iter(key: str) -> list[float]:
        cum = [s[key] for s in km.iteration_stats]
        return [b - a for a, b in zip([0.0] + cum[:-1], cum)]

    secs = per_iter("time")
    dist, _ = km.index.search(x, 1)
    return {
        "iter_seconds": secs,
        "search_seconds": per_iter("time_search"),
        "inertia": float(dist.sum(dtype=np.float64)),
        "objective_per_iter": [s["obj"] for s in km.iteration_stats],
        "fit_seconds": fit_s,
        # faiss has no per-iteration CPU time: its whole train() over the iterations (an upper
        # bound: it also counts computing the data's norms once)
        "iter_cpu_seconds": [] if gpu else [fit_cpu / max(1, len(secs))] * len(secs),
        "faiss_gpu": gpu,
    }


def _work_sklearn(spec: dict[str, Any]) -> dict[str, Any]:
    from sklearn.cluster import KMeans as SKMeans
    from sklearn.cluster import _kmeans

    x = _load(spec)
    init = _init_array(spec)
    times: list[float] = []
    cpu_times: list[float] = []
    original = getattr(_kmeans, "lloyd_iter_chunked_dense", None)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        result = original(*args, **kwargs)
        if kwargs.get("update_centers", True):  # the final E-step is not an iteration
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        return result

    if original is not None:
        _kmeans.lloyd_iter_chunked_dense = timed
    km = SKMeans(
        n_clusters=spec["k"],
        init=init if init is not None else "k-means++",
        n_init=1,
        max_iter=spec["iters"],
        tol=0.0,
        algorithm="lloyd",
        random_state=spec["seed"],
    )
    t0 = time.perf_counter()
    try:
        km.fit(x)
    finally:
        if original is not None:
            _kmeans.lloyd_iter_chunked_dense = original
    fit_s = time.perf_counter() - t0
    method = "per-call hook"
    if len(times) != km.n_iter_:
        times, cpu_times, method = [fit_s / km.n_iter_] * km.n_iter_, [], "fit / n_iter"
    return {
        "iter_seconds": times,
        "iter_cpu_seconds": cpu_times,
        "inertia": float(km.inertia_),
        "fit_seconds": fit_s,
        "n_iter": int(km.n_iter_),
        "timing": method,
    }


def _work_init(spec: dict[str, Any]) -> dict[str, Any]:
    """Our seeded initial centroids (``n_iter=0``), saved for the peers."""
    return {"fit_seconds": _work_ours(dict(spec, iters=0))["fit_seconds"]}


WORKERS = {"ours": _work_ours, "faiss": _work_faiss, "sklearn": _work_sklearn, "init": _work_init}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one implementation in this process; its measurements with ``peak_rss_mb`` (``VmHWM``)
    and ``peak_anon_mb`` (sampled private memory) added."""
    with PeakMemory() as peak:
        result = WORKERS[spec["impl"]](spec)
    result["peak_rss_mb"], result["peak_anon_mb"] = peak.rss_mb, peak.anon_mb
    return result


def spawn_worker(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """:func:`run_worker` in a fresh Python process limited to ``threads`` threads."""
    return run_module("research.bench.kmeans", spec, threads)


def plan_jobs(
    base: dict[str, Any],
    blocks: list[str],
    impls: list[str],
    init_path: Path,
    init_max_points: int | None = None,
    score_block_mb: float | None = None,
) -> list[tuple[str, str, dict[str, Any]]]:
    """The runs of one size: ``(block, row label, spec)``.

    ``same`` block: every implementation from the centroids at ``init_path`` (ours draws them
    itself with ``init="random"``), plus ours with a score-block cap and, for an on-disk input, ours
    through a memory map; ``default`` block: each implementation's own default init (ours: greedy
    k-means++ on ``init_max_points`` rows when given). sklearn is left out for an on-disk input (it
    copies the whole input into RAM), as is the ``default`` block without ``init_max_points``
    (greedy k-means++ makes k passes over the whole file).
    """
    on_disk, n = base["mmap"], base["n"]
    if on_disk:
        impls = [i for i in impls if i != "sklearn"]
    jobs: list[tuple[str, str, dict[str, Any]]] = []
    for block in blocks:
        if block == "same":
            for impl in impls:
                spec = dict(base, impl=impl, init="random", init_path=None if impl == "ours" else str(init_path))
                jobs.append((block, impl, spec))
            if "ours" in impls and score_block_mb:
                spec = dict(base, impl="ours", init="random", score_block_mb=score_block_mb)
                jobs.append((block, f"ours[block {score_block_mb:g}MB]", spec))
            if on_disk and "ours" in impls:
                jobs.append((block, "ours[mmap]", dict(base, impl="ours", init="random", reader="mmap")))
        elif not on_disk or init_max_points:
            for impl in impls:
                subset = init_max_points if impl == "ours" else None
                spec = dict(base, impl=impl, init="k-means++", init_path=None, init_max_points=subset)
                label = f"ours[++ on {init_max_points // 1000}k]" if subset and subset < n else impl
                jobs.append((block, label, spec))
    return jobs


def result_row(
    impl: str, block: str, n: int, d: int, k: int, res: dict[str, Any], mm: float, device: str, **extra: Any
) -> dict[str, Any]:
    """A table row from one run's measurements ``res``: median seconds per iteration, GFLOP/s of the
    ``2 n k d`` assignment FLOPs and their fraction of the ``torch.mm`` rate ``mm``; on a GPU also
    GB/s streamed and TFLOP/s. ``extra`` is added as is."""
    secs = res["iter_seconds"]
    spi = statistics.median(secs) if secs else float("nan")
    flops = 2.0 * n * k * d
    row = {
        "impl": impl,
        "n": n,
        "d": d,
        "k": k,
        "sec_per_iter": spi,
        "inertia": res["inertia"],
        "peak_rss_mb": res["peak_rss_mb"],
        "gflops": flops / spi / 1e9,
        "init": block,
        "iters": len(secs),
        "peak_anon_mb": res["peak_anon_mb"],
        "matmul_gflops": mm,
        "matmul_fraction": flops / spi / 1e9 / mm,
        "device": device,
        **extra,
    }
    if res.get("iter_cpu_seconds"):
        row["cpu_sec_per_iter"] = statistics.median(res["iter_cpu_seconds"])
        row["gflops_cpu"] = flops / row["cpu_sec_per_iter"] / 1e9  # per CPU-second: robust to a shared CPU
    row.update({key: res[key] for key in _DETAIL_KEYS if key in res})
    row["on_gpu"] = device == "cuda" and (impl.startswith("ours") or bool(res.get("faiss_gpu")))
    if row["on_gpu"]:  # sklearn (and faiss without GPU support) still run on the CPU
        row["gb_per_s"] = n * d * 4 / spi / 1e9
        row["tflops"] = row["gflops"] / 1e3
    return row


def add_peer_ratios(rows: list[dict[str, Any]]) -> None:
    """Time, CPU time and inertia ratios of every row to the faiss and sklearn rows, in place."""
    fields = {"time": "sec_per_iter", "cpu": "cpu_sec_per_iter", "inertia": "inertia"}
    add_ratios(rows, ("faiss", "sklearn"), fields)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table (and, for CUDA rows, a second table of GB/s and TFLOP/s)."""
    head = (
        "| init | impl | n | d | k | s/iter | ratio to faiss | CPU s/iter | CPU ratio to faiss | inertia | "
        "inertia / faiss | inertia / sklearn | peak RSS MB | GFLOP/s | of torch.mm | load |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]

    def fmt(r: dict[str, Any], key: str) -> str:
        if key not in r:
            return "-"
        return f"{r[key]:.3f}" if "ratio" in key else f"{r[key]:.4g}"

    for r in rows:
        lines.append(
            f"| {r['init']} | {r['impl']} | {r['n']:,} | {r['d']} | {r['k']:,} | {r['sec_per_iter']:.4g} | "
            f"{fmt(r, 'time_ratio_to_faiss')} | {fmt(r, 'cpu_sec_per_iter')} | "
            f"{fmt(r, 'cpu_ratio_to_faiss')} | {r['inertia']:.6g} | {fmt(r, 'inertia_ratio_to_faiss')} | "
            f"{fmt(r, 'inertia_ratio_to_sklearn')} | "
            f"{r['peak_rss_mb']:.0f} | {r['gflops']:.1f} | {100 * r['matmul_fraction']:.0f}% | "
            f"{r.get('load1', '-')} |"
        )
    if any(r["device"] == "cuda" for r in rows):
        lines += ["", "| impl | GB/s streamed | TFLOP/s | of torch.mm (TF32) |", "|---|---|---|---|"]
        for r in rows:
            if "gb_per_s" in r:
                lines.append(
                    f"| {r['impl']} | {r['gb_per_s']:.1f} | {r['tflops']:.2f} | {100 * r['matmul_fraction']:.0f}% |"
                )
    return "\n".join(lines)


if __name__ == "__main__":  # a worker: python -m research.bench.kmeans '<spec JSON>'
    print(RESULT_TAG + json.dumps(run_worker(json.loads(sys.argv[1]))), flush=True)
