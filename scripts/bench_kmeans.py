"""Benchmark ``curate.kmeans.KMeans`` against faiss ``Kmeans`` and scikit-learn ``KMeans`` (Lloyd).

Same data, same number of Lloyd iterations, each implementation in a fresh subprocess (so the
peak RSS reported is that implementation's own), peers measured in the same run::

    python scripts/bench_kmeans.py --size small --iters 5 --json bench_small.json
    python scripts/bench_kmeans.py --size large --iters 5 --skip sklearn
    python scripts/bench_kmeans.py --size stream           # 2M x 128 memmap (1 GB), k = 1024
    python scripts/bench_kmeans.py --size small --device cuda   # ours (+ faiss-gpu) on a GPU

Two blocks of rows per size:

- ``same`` init: all implementations start from the same centroids, the ones our
  ``KMeans(init="random", seed)`` draws (faiss gets them through ``train(x, init_centroids=)``,
  sklearn through ``init=array``); this is the like-for-like speed and inertia comparison.
- ``default`` init: each implementation's own default (ours: greedy k-means++, on a subset of
  ``--init-max-points`` rows when given; faiss: random rows; sklearn: greedy k-means++).

Timings: ours ``km.stats[i]["seconds"]``; faiss the differences of the cumulative
``iteration_stats[i]["time"]``; sklearn the time of each call of its Lloyd step (the
``lloyd_iter_chunked_dense`` it calls once per iteration, wrapped in the subprocess), falling
back to the whole fit divided by the iterations if that hook is gone. The column is the median
over the iterations. On a shared CPU prefer ``--threads 1`` and the ``CPU s/iter`` column (process
CPU time per iteration; faiss: its whole ``train()`` over the iterations), which other processes
barely move. Inertia is each implementation's sum of squared distances to its *final*
centroids (ours ``km.inertia``, sklearn ``inertia_``, faiss a search of the data in its index).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/bench_kmeans.py` from a checkout
    sys.path.insert(0, str(REPO))
RESULT_TAG = "BENCH_RESULT "

# name: (n, d, k, on-disk memmap input)
SIZES: dict[str, tuple[int, int, int, bool]] = {
    "tiny": (5_000, 16, 32, False),
    "small": (200_000, 128, 1024, False),
    "medium": (1_000_000, 64, 1000, False),
    "large": (500_000, 384, 4096, False),
    "stream": (2_000_000, 128, 1024, True),
}
IMPLS = ("ours", "faiss", "sklearn")
ROW_KEYS = ("impl", "n", "d", "k", "sec_per_iter", "inertia", "peak_rss_mb", "gflops")


# -- data ------------------------------------------------------------------------------------
def write_dataset(path: Path, n: int, d: int, k: int, seed: int = 0, chunk_rows: int = 1 << 16) -> Path:
    """Write an ``(n, d)`` float32 ``.npy`` of clustered points chunk by chunk (never whole in RAM).

    ``k`` Gaussian components with Zipf-like weights (a long tail, as in web embeddings), unit
    variance around centres drawn from N(0, 4 I).
    """
    rng = np.random.default_rng(seed)
    centers = (2.0 * rng.standard_normal((k, d))).astype(np.float32)
    weights = 1.0 / np.arange(1, k + 1) ** 0.8
    weights /= weights.sum()
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        for i, start in enumerate(range(0, n, chunk_rows)):
            m = min(chunk_rows, n - start)
            r = np.random.default_rng([seed, i])
            z = r.choice(k, size=m, p=weights)
            block = centers[z] + r.standard_normal((m, d), dtype=np.float32)
            f.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
    return path


class PreadRows:
    """An ``(n, d)`` float32 ``.npy`` read with ``os.pread`` instead of a memory map.

    ``curate.kmeans.RowSource`` accepts any object with ``shape``, ``dtype`` and row slicing, so
    this shows what the engine's streaming memory is when the pages it read do not stay mapped
    into the process (a memory map keeps every touched page resident in the process's RSS).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            self.header = f.tell()
        if fortran or np.dtype(dtype) != np.float32 or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered (n, d) float32 .npy")
        self.shape, self.dtype = tuple(shape), np.dtype(np.float32)
        self.row_bytes = self.shape[1] * 4
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.shape[1]), dtype=np.float32)
        view, offset = memoryview(out).cast("B"), self.header + start * self.row_bytes
        done = 0
        while done < len(view):  # pread may return short counts
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"short read at byte {offset + done} of the .npy file")
            done += got
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise ValueError("PreadRows supports contiguous slices only")
            return self._read(start, max(start, stop))
        idx = np.asarray(key, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), self.shape[1]), dtype=np.float32)
        for j, i in enumerate(idx):  # row gathers are rare (init, re-seeding): k rows at most
            out[j] = self._read(int(i), int(i) + 1)[0]
        return out


# -- machine and reference rates ---------------------------------------------------------------
def machine_info(device: str) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss": _version("faiss"),
        "sklearn": _version("sklearn"),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return "not installed"


def matmul_gflops(rows: int, d: int, k: int, device: str = "cpu", min_seconds: float = 0.5) -> float:
    """Achieved GFLOP/s of ``torch.mm`` on an ``(rows, d) x (d, k)`` float32 product (TF32 on CUDA)."""
    import torch

    dev = torch.device(device)
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what KMeans(allow_tf32=True) runs with
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(rows, d, generator=g).to(dev)
        b = torch.randn(d, k, generator=g).to(dev)
        out = torch.empty(rows, k, device=dev)

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        for _ in range(3):
            torch.mm(a, b, out=out)
        sync()
        reps, best = 1, float("inf")
        while True:
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=out)
            sync()
            dt = time.perf_counter() - t0
            best = min(best, dt / reps)
            if dt >= min_seconds:
                break
            reps *= 2
        return 2.0 * rows * d * k / best / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32


# -- workers (each runs in a fresh subprocess) -------------------------------------------------
class _AnonPeak:
    """Samples ``RssAnon`` (private memory; ``ru_maxrss`` also counts mapped file pages)."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    @staticmethod
    def _status() -> dict[str, int]:
        out = {}
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(("RssAnon", "RssFile", "VmHWM")):
                    key, val = line.split(":", 1)
                    out[key] = int(val.split()[0])
        except OSError:
            pass
        return out

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self._status().get("RssAnon", 0))
            self._stop.wait(every_s)

    def __enter__(self) -> _AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, self._status().get("RssAnon", 0))


def _load(spec: dict[str, Any]) -> Any:
    if spec.get("reader") == "pread":
        return PreadRows(spec["data"])
    if spec["mmap"]:
        return np.load(spec["data"], mmap_mode="r")
    return np.load(spec["data"])


def _init_array(spec: dict[str, Any]) -> np.ndarray | None:
    return np.load(spec["init_path"]) if spec.get("init_path") else None


def _work_ours(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from curate.kmeans import KMeans

    torch.set_num_threads(spec["threads"])
    if spec.get("score_block_mb"):
        import curate.kmeans.kernels as kernels

        kernels._CPU_SCORE_BLOCK_BYTES = int(spec["score_block_mb"] * 2**20)
    x = spec["data"] if spec["mmap"] and spec.get("reader") != "pread" else _load(spec)
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
    cum = [s["time"] for s in km.iteration_stats]
    secs = [b - a for a, b in zip([0.0] + cum[:-1], cum)]
    dist, _ = km.index.search(x, 1)
    return {
        "iter_seconds": secs,
        "search_seconds": [
            b - a
            for a, b in zip(
                [0.0] + [s["time_search"] for s in km.iteration_stats][:-1],
                [s["time_search"] for s in km.iteration_stats],
            )
        ],
        "inertia": float(dist.sum(dtype=np.float64)),
        "objective_per_iter": [s["obj"] for s in km.iteration_stats],
        "fit_seconds": fit_s,
        # faiss has no per-iteration CPU time: its whole train() over the iterations (an upper
        # bound: it also counts computing the data's norms once)
        "iter_cpu_seconds": [] if gpu else [fit_cpu / max(1, len(secs))] * len(secs),
        "faiss_gpu": gpu,
    }


def _faiss_gpu_available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001
        return False


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
    spec = dict(spec, iters=0)
    out = _work_ours(spec)
    return {"fit_seconds": out["fit_seconds"]}


WORKERS = {"ours": _work_ours, "faiss": _work_faiss, "sklearn": _work_sklearn, "init": _work_init}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one implementation in this process and return its measurements."""
    with _AnonPeak() as anon:
        result = WORKERS[spec["impl"]](spec)
    # VmHWM is this process image's own peak; ru_maxrss survives exec, so a subprocess would
    # report its parent's peak whenever that was higher.
    hwm_kb = _AnonPeak._status().get("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["peak_rss_mb"] = hwm_kb / 1024
    result["peak_anon_mb"] = anon.peak_kb / 1024
    return result


def spawn_worker(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run one implementation in a fresh Python process; return its measurements."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['impl']} worker failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError(f"{spec['impl']} worker printed no result:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


# -- the benchmark -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", default="small", help=f"one of {', '.join(SIZES)}, or several comma-separated")
    p.add_argument("--iters", type=int, default=5, help="Lloyd iterations for every implementation (>= 3)")
    p.add_argument("--skip", default="", help="comma-separated implementations to leave out: faiss, sklearn")
    p.add_argument("--init", default="same,default", help="blocks to run: same, default (comma-separated)")
    p.add_argument(
        "--init-max-points",
        type=int,
        default=None,
        help="our k-means++ (default-init block) on a seeded subset of this many rows",
    )
    p.add_argument("--stream", action="store_true", help="also run the 2M x 128 memmap streaming scenario")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every implementation this many times (alternating) and keep each one's fastest run",
    )
    p.add_argument(
        "--ours-score-block-mb",
        type=float,
        default=None,
        help="also run ours with this CPU score-block cap (monkeypatched; default engine: 4 MB)",
    )
    p.add_argument("--threads", type=int, default=None, help="threads per implementation (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the rows as a JSON list here")
    p.add_argument(
        "--jsonl",
        type=Path,
        default=None,
        help="append one JSON line per run here as soon as it finishes (a run cut short keeps the rest)",
    )
    p.add_argument("--tmp", type=Path, default=None, help="folder for the data files (default: a temp dir)")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the implementations in this process (for tests: peak RSS is then not per implementation)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = [s for s in args.size.split(",") if s]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        p.error(f"--size {bad[0]!r}: expected one of {', '.join(SIZES)}")
    if args.stream and "stream" not in sizes:
        sizes.append("stream")
    args.sizes = sizes
    args.skip_set = {s for s in args.skip.split(",") if s}
    if args.skip_set - {"faiss", "sklearn", "ours"}:
        p.error(f"--skip: unknown implementation(s) {sorted(args.skip_set - set(IMPLS))}")
    args.blocks = [b for b in args.init.split(",") if b]
    if not args.blocks or set(args.blocks) - {"same", "default"}:
        p.error("--init takes 'same', 'default' or 'same,default'")
    if args.worker is None and args.iters < 3:
        p.error("--iters must be >= 3 (the table reports a median over iterations)")
    return args


def _row(
    impl: str, block: str, n: int, d: int, k: int, res: dict[str, Any], mm: float, device: str, **extra: Any
) -> dict[str, Any]:
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
    for key in (
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
    ):
        if key in res:
            row[key] = res[key]
    row["on_gpu"] = device == "cuda" and (impl.startswith("ours") or bool(res.get("faiss_gpu")))
    if row["on_gpu"]:  # sklearn (and faiss without GPU support) still run on the CPU
        row["gb_per_s"] = n * d * 4 / spi / 1e9
        row["tflops"] = row["gflops"] / 1e3
    return row


def bench_size(size: str, args: argparse.Namespace, tmp: Path, threads: int) -> list[dict[str, Any]]:
    import torch

    from curate.kmeans import chunk_rows_for
    from curate.kmeans.device import resolve_memory_mb

    n, d, k, on_disk = SIZES[size]
    device = args.device
    data = tmp / f"{size}_{n}x{d}.npy"
    t0 = time.perf_counter()
    if not data.exists():
        write_dataset(data, n, d, k, seed=args.seed)
    print(
        f"[{size}] data {n} x {d} float32 ({n * d * 4 / 2**30:.2f} GiB) written in "
        f"{time.perf_counter() - t0:.1f} s: {data}",
        flush=True,
    )
    budget_mb, _ = resolve_memory_mb(device, None, None)  # KMeans' default on this device
    chunk = chunk_rows_for(int(budget_mb * 2**20), k, d, device)
    mm_seconds = 0.05 if size == "tiny" else 0.5
    torch.set_num_threads(threads)
    mm_chunk = matmul_gflops(chunk, d, k, device, mm_seconds)
    mm_big = matmul_gflops(max(chunk, 4096), d, k, device, mm_seconds)
    mm = max(mm_chunk, mm_big)
    print(
        f"[{size}] torch.mm ({chunk} x {d}) x ({d} x {k}): {mm_chunk:.1f} GFLOP/s; "
        f"({max(chunk, 4096)} x {d}) x ({d} x {k}): {mm_big:.1f} GFLOP/s",
        flush=True,
    )
    base = {
        "data": str(data),
        "n": n,
        "d": d,
        "k": k,
        "iters": args.iters,
        "seed": args.seed,
        "threads": threads,
        "device": device,
        "mmap": on_disk,
    }
    impls = [i for i in IMPLS if i not in args.skip_set]
    if on_disk:
        impls = [i for i in impls if i != "sklearn"]  # sklearn copies the whole input into RAM

    def launch(spec: dict[str, Any]) -> dict[str, Any]:
        return run_worker(spec) if args.in_process else spawn_worker(spec, threads)

    jobs: list[tuple[str, str, dict[str, Any]]] = []  # (block, label, spec)
    for block in args.blocks:
        if block == "same":
            init_path = tmp / f"{size}_init_seed{args.seed}.npy"
            res = launch(dict(base, impl="init", init="random", save_centroids=str(init_path)))
            print(
                f"[{size}] shared init: our random init (seed {args.seed}) in {res['fit_seconds']:.1f} s",
                flush=True,
            )
            for impl in impls:
                spec = dict(base, impl=impl, init="random", init_path=None if impl == "ours" else str(init_path))
                jobs.append((block, impl, spec))
            if "ours" in impls and args.ours_score_block_mb:
                spec = dict(base, impl="ours", init="random", score_block_mb=args.ours_score_block_mb)
                jobs.append((block, f"ours[block {args.ours_score_block_mb:g}MB]", spec))
            if on_disk and "ours" in impls:
                jobs.append((block, "ours[pread]", dict(base, impl="ours", init="random", reader="pread")))
        elif on_disk and not args.init_max_points:
            print(
                f"[{size}] default-init block skipped: greedy k-means++ makes k passes over the whole "
                "memmap; pass --init-max-points to run it on a subset",
                flush=True,
            )
        else:
            for impl in impls:
                spec = dict(
                    base,
                    impl=impl,
                    init="k-means++",
                    init_path=None,
                    init_max_points=args.init_max_points if impl == "ours" else None,
                )
                label = impl
                if impl == "ours" and args.init_max_points and args.init_max_points < n:
                    label = f"ours[++ on {args.init_max_points // 1000}k]"
                jobs.append((block, label, spec))
    # Repeats alternate the implementations, so a burst of load from other processes does not
    # land on one of them only; each row keeps its fastest repeat.
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rep in range(args.repeat):
        for block, label, spec in jobs:
            load = os.getloadavg()[0]
            res = launch(spec)
            res["load1"] = round(max(load, os.getloadavg()[0]), 2)
            results.setdefault((block, label), []).append(res)
            spi = statistics.median(res["iter_seconds"])
            if args.jsonl is not None:
                record = {"size": size, "rep": rep, "block": block, "impl": label, "n": n, "d": d, "k": k}
                record.update(device=device, sec_per_iter=spi, **{key: res[key] for key in _RUN_KEYS if key in res})
                _append_line(args.jsonl, record)
            print(
                f"[{size}] rep {rep} {block:7s} {label:18s} {spi:8.3f} s/iter  inertia {res['inertia']:.6g}  "
                f"rss {res['peak_rss_mb']:.0f} MB  ({res['fit_seconds']:.1f} s fit, load {res['load1']})",
                flush=True,
            )
    mm_after = max(
        matmul_gflops(chunk, d, k, device, mm_seconds),
        matmul_gflops(max(chunk, 4096), d, k, device, mm_seconds),
    )
    mm = max(mm, mm_after)
    print(f"[{size}] torch.mm rate after the runs: {mm_after:.1f} GFLOP/s (rate used: {mm:.1f})", flush=True)
    rows: list[dict[str, Any]] = []
    for block in args.blocks:
        block_rows = []
        for (b, label), reps in results.items():
            if b != block:
                continue
            best = min(reps, key=lambda r: statistics.median(r["iter_seconds"]))
            row = _row(
                label,
                block,
                n,
                d,
                k,
                best,
                mm,
                device,
                size=size,
                matmul_gflops_chunk=mm_chunk,
                chunk_rows=chunk,
                threads=threads,
            )
            row["repeats_sec_per_iter"] = [statistics.median(r["iter_seconds"]) for r in reps]
            block_rows.append(row)
        _add_ratios(block_rows)
        rows += block_rows
    return rows


_RUN_KEYS = ("inertia", "peak_rss_mb", "fit_seconds", "load1", "gpu_peak_mb", "iter_seconds")


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    ref = {r["impl"]: r for r in rows}
    for r in rows:
        for peer in ("faiss", "sklearn"):
            if peer in ref:
                r[f"time_ratio_to_{peer}"] = r["sec_per_iter"] / ref[peer]["sec_per_iter"]
                if "cpu_sec_per_iter" in r and "cpu_sec_per_iter" in ref[peer]:
                    r[f"cpu_ratio_to_{peer}"] = r["cpu_sec_per_iter"] / ref[peer]["cpu_sec_per_iter"]
                r[f"inertia_ratio_to_{peer}"] = r["inertia"] / ref[peer]["inertia"]


def format_table(rows: list[dict[str, Any]]) -> str:
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
        lines.append("")
        lines.append("| impl | GB/s streamed | TFLOP/s | of torch.mm (TF32) |")
        lines.append("|---|---|---|---|")
        for r in rows:
            if "gb_per_s" in r:
                gpu_fraction = f"{100 * r['matmul_fraction']:.0f}%"
                lines.append(f"| {r['impl']} | {r['gb_per_s']:.1f} | {r['tflops']:.2f} | {gpu_fraction} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.worker is not None:
        spec = json.loads(args.worker)
        print(RESULT_TAG + json.dumps(run_worker(spec)), flush=True)
        return []
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    info = machine_info(args.device)
    info["threads"] = threads
    print("machine: " + ", ".join(f"{key} {val}" for key, val in info.items()), flush=True)
    tmp = args.tmp or Path(tempfile.mkdtemp(prefix="bench_kmeans_"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        for size in args.sizes:
            rows += bench_size(size, args, tmp, threads)
            if args.json is not None:  # after each size, so a long multi-size run keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(rows, indent=1))
    finally:
        if args.tmp is None:
            shutil.rmtree(tmp, ignore_errors=True)
    info["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    for r in rows:
        r["machine"] = info
    print()
    print("command: python scripts/bench_kmeans.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print("machine: " + ", ".join(f"{key} {val}" for key, val in info.items()))
    print(format_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
