"""Measuring tools shared by the benchmarks: a matmul rate probe, peak memory, wall and CPU time,
worker subprocesses with a thread limit, and rows written as soon as they are measured."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "RESULT_TAG",
    "PeakMemory",
    "add_ratios",
    "append_jsonl",
    "matmul_gflops",
    "proc_status",
    "run_module",
    "timed",
    "write_rows",
]

RESULT_TAG = "BENCH_RESULT "


def matmul_gflops(rows: int, d: int, k: int, device: str = "cpu", min_seconds: float = 0.5) -> float:
    """Achieved GFLOP/s of ``torch.mm`` on an ``(rows, d) x (d, k)`` float32 product (TF32 on CUDA).

    The rate a k-means assignment step can at best reach: it is this product, chunk by chunk. Repeats
    double until they last ``min_seconds``; the best time per product counts.
    """
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


def proc_status() -> dict[str, int]:
    """``RssAnon``, ``RssFile`` and ``VmHWM`` of this process in kB (``{}`` without ``/proc``)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("RssAnon", "RssFile", "VmHWM")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0])
    except OSError:
        pass
    return out


class PeakMemory:
    """Context manager measuring this process's peak memory while its block runs.

    ``anon_mb``: the peak of ``RssAnon`` (private memory), sampled every ``every_s`` on a thread;
    ``ru_maxrss`` and ``VmHWM`` also count the mapped file pages a memory map touched.
    ``rss_mb``: ``VmHWM``, this process image's own peak (``ru_maxrss`` survives ``exec``, so a
    subprocess would report its parent's peak whenever that was higher), read on exit.
    """

    def __init__(self, every_s: float = 0.05) -> None:
        self.anon_mb = self.rss_mb = 0.0
        self._peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self._peak_kb = max(self._peak_kb, proc_status().get("RssAnon", 0))
            self._stop.wait(every_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        status = proc_status()
        self.anon_mb = max(self._peak_kb, status.get("RssAnon", 0)) / 1024
        self.rss_mb = (status.get("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(fn(), wall seconds, process CPU seconds)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_module(module: str, spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run ``python -m <module> '<spec as JSON>'`` in a fresh process limited to ``threads`` BLAS /
    OpenMP threads, and return the JSON it printed after :data:`RESULT_TAG` (its last such line).

    A fresh process per measurement keeps each implementation's peak memory its own.
    """
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(spec)], capture_output=True, text=True, env=env)
    what = spec.get("impl", module)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} worker failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError(f"{what} worker printed no result:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` and flush it to disk now (a run cut short keeps it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_rows(path: Path | None, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``path`` with the rows so far as a JSON list, atomically (no-op for ``None``)."""
    from curate.core.atomic import atomic_write_json

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, rows)


def add_ratios(rows: list[dict[str, Any]], peers: tuple[str, ...], fields: dict[str, str]) -> None:
    """Add ``<name>_ratio_to_<peer>`` = ``row[field] / peer_row[field]`` to every row, in place.

    Args:
        rows: measured rows of one comparison, each with an ``impl`` name.
        peers: the ``impl`` names to compare against (absent ones are skipped).
        fields: ``{name: field}``, e.g. ``{"time": "sec_per_iter"}``; a field missing in a row or
            its peer gives no ratio.
    """
    by_impl = {r["impl"]: r for r in rows}
    for r in rows:
        for peer in peers:
            if peer not in by_impl:
                continue
            for name, field in fields.items():
                if field in r and field in by_impl[peer]:
                    r[f"{name}_ratio_to_{peer}"] = r[field] / by_impl[peer][field]
