"""Benchmark ``curate.dedup.deduplicate`` against a faiss peer, and 2 ranks against 1, in one run.

    python scripts/bench_dedup.py                          # 60k x 128, 20% near-duplicates, 1 thread
    python scripts/bench_dedup.py --n 200000 --d 384 --json dedup.json
    python scripts/bench_dedup.py --device cuda            # ours on a GPU (the peers stay on CPU)

Rows (same data, same threshold, each checked to keep exactly the rows the others keep):

- ``ours-torch``: the chunked-matmul kernel, one process.
- ``ours-torch-2ranks``: the same, 2 gloo ranks (``torch.multiprocessing.spawn``), each rank
  ``--threads`` threads; its CPU time is the sum over the ranks.
- ``ours-faiss``: our driver with faiss ``IndexFlatIP.range_search`` against the kept rows.
- ``faiss-allpairs`` (the peer): what one writes without this module: a faiss ``IndexFlatIP``
  of every row, one ``range_search`` of every row against it, then the greedy rule over the
  neighbour lists, one row at a time in Python.

The table gives wall seconds, process CPU seconds, and ratios to the peer. On a shared machine
read the CPU column; wall time of the 2-rank row shows the parallel speed-up when cores are free.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from research.bench import near_duplicate_pool, timed, write_rows
from research.bench.dedup import faiss_allpairs, run_ranks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60_000, help="rows")
    parser.add_argument("--d", type=int, default=128, help="dimension")
    parser.add_argument("--dup-frac", type=float, default=0.2, help="share of rows that copy an earlier row")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: the device's (curate.dedup)")
    parser.add_argument("--sim-budget", type=int, default=None, help="default: the device's (curate.dedup)")
    parser.add_argument("--threads", type=int, default=1, help="threads per process (torch and faiss)")
    parser.add_argument("--device", default="cpu", help="ours: cpu or cuda")
    parser.add_argument("--skip", nargs="*", default=[], help="rows to leave out (e.g. faiss-allpairs)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")

    from curate.dedup import deduplicate
    from research.machine import machine_info, machine_line

    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        faiss = None
    x = near_duplicate_pool(args.n, args.d, args.dup_frac)
    print(
        machine_line(machine_info(args.device)) + f"; {args.threads} thread(s) per process; device {args.device}",
        flush=True,
    )
    print(f"data: n={args.n} d={args.d}, {args.dup_frac:.0%} near-duplicate copies, threshold {args.threshold}")
    run = {
        "ours-torch": lambda: (
            deduplicate(x, args.threshold, args.chunk_size, args.device, "torch", args.sim_budget).kept_indices
        ),
        "ours-faiss": lambda: deduplicate(x, args.threshold, args.chunk_size, "cpu", "faiss").kept_indices,
        "faiss-allpairs": lambda: faiss_allpairs(x, args.threshold),
    }
    if faiss is None:
        args.skip += ["ours-faiss", "faiss-allpairs"]

    def ranks() -> tuple[np.ndarray, float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "x.npy", x)
            spec = {k: getattr(args, k) for k in ("threshold", "chunk_size", "device", "sim_budget", "threads")}
            return run_ranks(Path(tmp) / "x.npy", 2, spec, Path(tmp))

    # Each row is checked, printed and written (--json: the rows so far) as soon as it finishes,
    # so a run cut short by a time limit keeps what it measured; ratios are added at the end.
    print(f"{'impl':<20}{'kept':>8}{'wall s':>9}{'CPU s':>9}", flush=True)
    results: dict[str, tuple[np.ndarray, float, float]] = {}
    rows: list[dict[str, Any]] = []
    for name, fn in [*run.items(), ("ours-torch-2ranks", None)]:
        if name in args.skip:
            continue
        kept, wall, cpu = ranks() if fn is None else timed(fn)
        if results and not np.array_equal(kept, next(iter(results.values()))[0]):
            raise AssertionError(f"{name} keeps other rows than {next(iter(results))}")
        results[name] = (kept, wall, cpu)
        rows.append(
            {
                "impl": name,
                "n": args.n,
                "d": args.d,
                "device": args.device if name in ("ours-torch", "ours-torch-2ranks") else "cpu",
                "kept": int(len(kept)),
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
            }
        )
        print(f"{name:<20}{len(kept):>8}{wall:>9.2f}{cpu:>9.2f}", flush=True)
        write_rows(args.json, rows)
    reference = next(iter(results.values()))[0]
    peer = results.get("faiss-allpairs")
    for r in rows:
        _, wall, cpu = results[r["impl"]]
        r["cpu_vs_peer"] = None if peer is None else round(cpu / peer[2], 3)
        r["wall_vs_peer"] = None if peer is None else round(wall / peer[1], 3)
    print(f"\nall rows keep the same {len(reference)} of {args.n} rows")
    print(f"{'impl':<20}{'wall s':>9}{'CPU s':>9}{'CPU/peer':>10}{'wall/peer':>11}")
    for r in rows:
        ratio = "" if r["cpu_vs_peer"] is None else f"{r['cpu_vs_peer']:>10.2f}{r['wall_vs_peer']:>11.2f}"
        print(f"{r['impl']:<20}{r['wall_s']:>9.2f}{r['cpu_s']:>9.2f}{ratio}")
    if "ours-torch" in results and "ours-torch-2ranks" in results:
        one, two = results["ours-torch"], results["ours-torch-2ranks"]
        print(f"2 ranks vs 1: wall {one[1] / two[1]:.2f}x faster, total CPU {two[2] / one[2]:.2f}x")
    write_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
