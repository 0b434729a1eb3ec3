"""Benchmark the retrieval arm: faiss IVF's recall@N and time against exact search, in one run.

    python scripts/bench_retrieve.py                         # 200k x 64 clustered pool, 2000 queries, N=10
    python scripts/bench_retrieve.py --n 1000000 --d 384 --nlist 4096 --nprobe 8 16 64 --json retrieve.json

Rows (same pool, same queries, :func:`curate.retrieval.search`, one process):

- ``exact``: the chunked matmul with the running top-N merge (the reference).
- ``ivf nprobe=P``: ``IndexIVFFlat`` (inner product) with ``--nlist`` cells trained on
  ``--train-size`` pool rows, ``P`` cells searched per query; its ``wall_s`` includes training
  the quantizer (``train_s``, once) and indexing the pool (what ``curate.retrieve method=ivf``
  spends); ``index_search_s`` is indexing plus search.

recall@N: the share of each query's exact N nearest that the row also returns, averaged over the
queries. ``time_vs_exact``: wall seconds over those of the exact row measured in this run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from research.bench import timed, write_clustered_npy, write_rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="pool rows")
    parser.add_argument("--d", type=int, default=64, help="dimension")
    parser.add_argument("--clusters", type=int, default=1000, help="Gaussian components of the pool")
    parser.add_argument("--queries", type=int, default=2000, help="queries (pool rows plus noise)")
    parser.add_argument("--per-query", type=int, default=10, help="N nearest per query")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF cells")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 16, 64], help="cells searched per query")
    parser.add_argument("--train-size", type=int, default=100_000, help="pool rows the quantizer is trained on")
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads")
    parser.add_argument("--memory-budget-mb", type=float, default=256.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return parser.parse_args(argv)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of ``|found_q & exact_q| / N``."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), exact.tolist())]))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    import faiss
    import torch

    from curate.retrieval import ivf_topk, normalised_rows, search, train_ivf
    from research.machine import machine_info, machine_line

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pool = np.load(
            write_clustered_npy(Path(tmp) / "x.npy", args.n, args.d, args.clusters), mmap_mode="r", allow_pickle=False
        )
        pool = np.ascontiguousarray(pool)
    rng = np.random.default_rng(1)
    queries = pool[rng.choice(args.n, args.queries, replace=False)] + rng.normal(size=(args.queries, args.d))
    queries = queries.astype(np.float32)
    k = args.per_query
    print(machine_line(machine_info("cpu")) + f"; {args.threads} thread(s)", flush=True)
    print(f"pool {args.n} x {args.d} ({args.clusters} clusters), {args.queries} queries, N={k}, nlist={args.nlist}")
    (_, exact), exact_wall, exact_cpu = timed(lambda: search(pool, queries, k, memory_budget_mb=args.memory_budget_mb))
    rows: list[dict[str, Any]] = [
        {"impl": "exact", "recall": 1.0, "wall_s": round(exact_wall, 3), "cpu_s": round(exact_cpu, 3)}
    ]
    print(f"{'impl':<16}{'recall@N':>10}{'wall s':>9}{'index+search':>14}{'vs exact':>10}", flush=True)
    print(f"{'exact':<16}{1.0:>10.4f}{exact_wall:>9.2f}{exact_wall:>14.2f}{1.0:>10.3f}", flush=True)
    centroids, train_wall, _ = timed(lambda: train_ivf(pool, args.nlist, args.train_size, 0))
    q = normalised_rows(queries, 0, len(queries))
    for nprobe in args.nprobe:
        (_, found), wall, cpu = timed(
            lambda nprobe=nprobe: ivf_topk(pool, q, k, centroids, nprobe, memory_budget_mb=args.memory_budget_mb)
        )
        total = train_wall + wall
        row = {
            "impl": f"ivf nprobe={nprobe}",
            "nlist": args.nlist,
            "nprobe": nprobe,
            "recall": round(recall(found.numpy(), exact), 4),
            "wall_s": round(total, 3),
            "train_s": round(train_wall, 3),
            "index_search_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "time_vs_exact": round(total / exact_wall, 3),
        }
        rows.append(row)
        print(
            f"{row['impl']:<16}{row['recall']:>10.4f}{total:>9.2f}{wall:>14.2f}{row['time_vs_exact']:>10.3f}",
            flush=True,
        )
        write_rows(args.json, rows)
    for r in rows:
        r.update(n=args.n, d=args.d, queries=args.queries, per_query=k, threads=args.threads)
    write_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
