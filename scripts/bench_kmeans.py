"""Benchmark ``curate.kmeans.KMeans`` against faiss ``Kmeans`` and scikit-learn ``KMeans`` (Lloyd).

Same data, same number of Lloyd iterations, each implementation in a fresh subprocess (so the
peak RSS reported is that implementation's own), peers measured in the same run::

    python scripts/bench_kmeans.py --size small --iters 5 --json bench_small.json
    python scripts/bench_kmeans.py --size large --iters 5 --skip sklearn
    python scripts/bench_kmeans.py --size stream           # 2M x 128 on-disk .npy (1 GB), k = 1024
    python scripts/bench_kmeans.py --size small --device cuda   # ours (+ faiss-gpu) on a GPU
    python scripts/bench_kmeans.py --size small --init same --threads 2 --busy 1   # under load

Two blocks of rows per size:

- ``same`` init: all implementations start from the same centroids, the ones our
  ``KMeans(init="random", seed)`` draws (faiss gets them through ``train(x, init_centroids=)``,
  sklearn through ``init=array``); this is the like-for-like speed and inertia comparison. For the
  on-disk size, ``ours`` reads the file through the engine's own reader and ``ours[mmap]`` through a
  memory map.
- ``default`` init: each implementation's own default (ours: greedy k-means++, on a subset of
  ``--init-max-points`` rows when given; faiss: random rows; sklearn: greedy k-means++).

The table's time is the median over the iterations (how each implementation is timed:
``research.bench.kmeans``). On a shared CPU prefer ``--threads 1`` and the ``CPU s/iter`` column
(process CPU time per iteration; faiss: its whole ``train()`` over the iterations), which other
processes barely move. ``--busy N`` starts N competing busy processes (one spinning Python loop
each) for the whole run and stops them at the end: the loaded rows of docs/benchmarks.md. Each
run is printed (and appended to ``--jsonl``) as soon as it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from research.bench import append_jsonl, matmul_gflops, write_clustered_npy, write_rows
from research.bench.kmeans import (
    IMPLS,
    RUN_KEYS,
    SIZES,
    add_peer_ratios,
    format_table,
    plan_jobs,
    result_row,
    run_worker,
    spawn_worker,
)
from research.machine import machine_info, machine_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", default="small", help=f"one of {', '.join(SIZES)}, or several comma-separated")
    p.add_argument("--iters", type=int, default=5, help="Lloyd iterations for every implementation (>= 3)")
    p.add_argument("--skip", default="", help="comma-separated implementations to leave out: faiss, sklearn")
    p.add_argument("--init", default="same,default", help="blocks to run: same, default (comma-separated)")
    p.add_argument(
        "--init-max-points", type=int, default=None, help="our k-means++ (default-init block) on this many rows"
    )
    p.add_argument("--stream", action="store_true", help="also run the 2M x 128 on-disk streaming scenario")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--repeat", type=int, default=1, help="run every implementation this many times (alternating), keep the fastest"
    )
    p.add_argument(
        "--ours-score-block-mb",
        type=float,
        default=None,
        help="also run ours with this CPU score-block cap (monkeypatched; default engine: 4 MB)",
    )
    p.add_argument("--threads", type=int, default=None, help="threads per implementation (default: all cores)")
    p.add_argument(
        "--busy", type=int, default=0, help="start this many competing busy processes for the run (loaded rows)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the rows as a JSON list here (after each size)")
    p.add_argument("--jsonl", type=Path, default=None, help="append one JSON line per run here as soon as it ends")
    p.add_argument("--tmp", type=Path, default=None, help="folder for the data files (default: a temp dir)")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the implementations in this process (for tests: peak RSS is then not per implementation)",
    )
    args = p.parse_args(argv)
    args.sizes = [s for s in args.size.split(",") if s]
    bad = [s for s in args.sizes if s not in SIZES]
    if bad:
        p.error(f"--size {bad[0]!r}: expected one of {', '.join(SIZES)}")
    if args.stream and "stream" not in args.sizes:
        args.sizes.append("stream")
    args.skip_set = {s for s in args.skip.split(",") if s}
    if args.skip_set - set(IMPLS):
        p.error(f"--skip: unknown implementation(s) {sorted(args.skip_set - set(IMPLS))}")
    args.blocks = [b for b in args.init.split(",") if b]
    if not args.blocks or set(args.blocks) - {"same", "default"}:
        p.error("--init takes 'same', 'default' or 'same,default'")
    if args.busy < 0:
        p.error("--busy must be >= 0")
    if args.iters < 3:
        p.error("--iters must be >= 3 (the table reports a median over iterations)")
    return args


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[list[subprocess.Popen]]:
    """``n`` competing processes, each spinning one core, for the block; stopped after it."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


def print_ratios(rows: list[dict[str, Any]]) -> None:
    """One line per row of ours: its time and CPU-time ratio to faiss in this run."""
    for r in rows:
        if r["impl"].startswith("ours") and "time_ratio_to_faiss" in r:
            cpu = r.get("cpu_ratio_to_faiss")
            cpu_s = f", CPU time {cpu:.3f}" if cpu is not None else ""
            print(
                f"[{r['size']}] {r['init']}: {r['impl']} / faiss = {r['time_ratio_to_faiss']:.3f} "
                f"({r['sec_per_iter']:.3f} s/iter){cpu_s}",
                flush=True,
            )


def mm_rates(chunk: int, d: int, k: int, device: str, seconds: float) -> tuple[float, float]:
    """``torch.mm`` GFLOP/s at the engine's chunk and at >= 4096 rows."""
    return matmul_gflops(chunk, d, k, device, seconds), matmul_gflops(max(chunk, 4096), d, k, device, seconds)


def bench_size(size: str, args: argparse.Namespace, tmp: Path, threads: int) -> list[dict[str, Any]]:
    import torch

    from curate.kmeans import chunk_rows_for
    from curate.kmeans.device import resolve_memory_mb

    n, d, k, on_disk = SIZES[size]
    device = args.device
    data = tmp / f"{size}_{n}x{d}.npy"
    t0 = time.perf_counter()
    if not data.exists():
        write_clustered_npy(data, n, d, k, seed=args.seed)
    print(f"[{size}] data {n} x {d} float32 ({n * d * 4 / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s: {data}")
    budget_mb, _ = resolve_memory_mb(device, None, None)  # KMeans' default on this device
    chunk = chunk_rows_for(int(budget_mb * 2**20), k, d, device)
    mm_seconds = 0.05 if size == "tiny" else 0.5
    torch.set_num_threads(threads)
    mm_chunk, mm_big = mm_rates(chunk, d, k, device, mm_seconds)
    mm = max(mm_chunk, mm_big)
    print(f"[{size}] torch.mm at {chunk} rows: {mm_chunk:.1f} GFLOP/s; at {max(chunk, 4096)}: {mm_big:.1f}", flush=True)
    base = dict(data=str(data), n=n, d=d, k=k, iters=args.iters, seed=args.seed, threads=threads, device=device)
    base["mmap"] = on_disk
    launch = run_worker if args.in_process else (lambda spec: spawn_worker(spec, threads))
    init_path = tmp / f"{size}_init_seed{args.seed}.npy"
    if "same" in args.blocks:
        res = launch(dict(base, impl="init", init="random", save_centroids=str(init_path)))
        print(f"[{size}] shared init: our random init (seed {args.seed}) in {res['fit_seconds']:.1f} s", flush=True)
    impls = [i for i in IMPLS if i not in args.skip_set]
    jobs = plan_jobs(base, args.blocks, impls, init_path, args.init_max_points, args.ours_score_block_mb)
    if on_disk and "default" in args.blocks and not args.init_max_points:
        print(f"[{size}] default-init block skipped on a file: pass --init-max-points to run it", flush=True)
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
                record = dict(size=size, rep=rep, block=block, impl=label, n=n, d=d, k=k, device=device)
                record.update(sec_per_iter=spi, **{key: res[key] for key in RUN_KEYS if key in res})
                append_jsonl(args.jsonl, record)
            print(
                f"[{size}] rep {rep} {block:7s} {label:18s} {spi:8.3f} s/iter  inertia {res['inertia']:.6g}  "
                f"rss {res['peak_rss_mb']:.0f} MB  ({res['fit_seconds']:.1f} s fit, load {res['load1']})",
                flush=True,
            )
    mm_after = max(mm_rates(chunk, d, k, device, mm_seconds))
    mm = max(mm, mm_after)
    print(f"[{size}] torch.mm rate after the runs: {mm_after:.1f} GFLOP/s (rate used: {mm:.1f})", flush=True)
    rows: list[dict[str, Any]] = []
    for block in args.blocks:
        block_rows = []
        for (b, label), reps in results.items():
            if b == block:
                best = min(reps, key=lambda r: statistics.median(r["iter_seconds"]))
                extra = dict(size=size, matmul_gflops_chunk=mm_chunk, chunk_rows=chunk, threads=threads)
                row = result_row(label, block, n, d, k, best, mm, device, **extra)
                row["repeats_sec_per_iter"] = [statistics.median(r["iter_seconds"]) for r in reps]
                block_rows.append(row)
        add_peer_ratios(block_rows)
        rows += block_rows
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    info = dict(machine_info(args.device), threads=threads, busy=args.busy)
    busy = f"; {args.busy} competing busy process(es)" if args.busy else ""
    print(machine_line(info) + f"; {threads} thread(s) per implementation{busy}", flush=True)
    tmp = args.tmp or Path(tempfile.mkdtemp(prefix="bench_kmeans_"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        with busy_processes(args.busy):
            for size in args.sizes:
                rows += bench_size(size, args, tmp, threads)
                write_rows(args.json, rows)  # after each size, so a long multi-size run keeps what it measured
    finally:
        if args.tmp is None:
            shutil.rmtree(tmp, ignore_errors=True)
    info["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    for r in rows:
        r["machine"] = info
    print("\ncommand: python scripts/bench_kmeans.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(
        machine_line(info)
        + f"; {threads} thread(s) per implementation{busy}; load at the end {info['load_avg_end'][0]}"
    )
    print(format_table(rows))
    print_ratios(rows)
    write_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
