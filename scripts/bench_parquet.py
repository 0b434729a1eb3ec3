"""Peak memory of reading a parquet embedding table by row groups, against the table's size.

    python scripts/bench_parquet.py                      # 600k x 128 float32 (293 MiB), groups of 20k rows
    python scripts/bench_parquet.py --n 2000000 --row-group 50000 --json parquet.json

Writes a table (``id`` strings, ``embedding`` fixed-size lists of float32) larger than one row
group many times over, then measures in a fresh process each (so each peak is its own):

- ``stream``: one pass over every row through :class:`curate.io.parquet.ParquetRows` in chunks of
  ``--chunk`` rows (what a k-means pass reads), checking the sum against the generator's;
- ``kmeans``: ``curate.kmeans.KMeans`` fitted on the table (``--k`` clusters, ``--iters`` Lloyd
  iterations, random init, nothing cached: the input is streamed at every iteration);
- ``read_table`` (the peer): ``pyarrow.parquet.read_table`` of the column and its conversion to one
  ``(n, d)`` array, what one writes without the reader.

Each row reports the process's peak RSS (``VmHWM``) and how far the work raised it above the peak
after the imports (``extra_mb``), next to the table's size on disk and as float32 rows, and one
row group's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

TAG = "RESULT "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=600_000, help="rows")
    p.add_argument("--d", type=int, default=128, help="dimension")
    p.add_argument("--row-group", type=int, default=20_000, help="rows per row group")
    p.add_argument("--chunk", type=int, default=8192, help="rows per read of the stream pass")
    p.add_argument("--k", type=int, default=64, help="clusters of the k-means row")
    p.add_argument("--iters", type=int, default=2, help="Lloyd iterations of the k-means row")
    p.add_argument("--skip", nargs="*", default=[], help="rows to leave out: stream, kmeans, read_table")
    p.add_argument("--tmp", type=Path, default=None, help="folder for the table (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def write_table(path: Path, n: int, d: int, row_group: int, seed: int = 0) -> float:
    """Write ``n`` rows group by group (never all in memory); returns the sum of all values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), d))])
    total = 0.0
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, row_group):
            x = rng.normal(size=(min(row_group, n - start), d)).astype(np.float32)
            total += float(x.sum(dtype=np.float64))
            ids = pa.array([f"row{i}" for i in range(start, start + len(x))])
            column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d)
            writer.write_table(pa.table({"id": ids, "embedding": column}, schema=schema), row_group_size=row_group)
    return total


def worker(mode: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process: ``{"peak_rss_mb", "extra_mb", "seconds", ...}``."""
    import pyarrow.parquet as pq
    import torch

    from curate.io.parquet import ParquetRows
    from curate.kmeans import KMeans
    from research.bench import PeakMemory, timed
    from research.bench.measure import proc_status

    torch.set_num_threads(1)
    before = proc_status().get("VmHWM", 0) / 1024  # the peak so far: imports, torch
    out: dict[str, Any] = {}
    with PeakMemory() as peak:
        if mode == "stream":
            rows = ParquetRows(path)

            def run() -> float:
                return sum(
                    float(rows[s : s + args.chunk].sum(dtype=np.float64)) for s in range(0, rows.shape[0], args.chunk)
                )

        elif mode == "kmeans":

            def run() -> float:
                km = KMeans(k=args.k, n_iter=args.iters, init="random", seed=0, memory_budget_mb=64, cache_mb=0)
                return float(km.fit(ParquetRows(path)).inertia)

        elif mode == "read_table":

            def run() -> float:
                column = pq.read_table(path, columns=["embedding"]).column(0).combine_chunks()
                return float(column.flatten().to_numpy().reshape(-1, args.d).sum(dtype=np.float64))

        else:
            raise SystemExit(f"unknown worker {mode!r}")
        value, seconds, _ = timed(run)
    out.update(peak_rss_mb=peak.rss_mb, extra_mb=peak.rss_mb - before, seconds=seconds, value=value)
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.worker is not None:
        print(TAG + json.dumps(worker(args.worker, args.path, args)), flush=True)
        return []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "embeddings.parquet"
        total = write_table(path, args.n, args.d, args.row_group)
        mib = 2**20
        table_mb, rows_mb = path.stat().st_size / mib, args.n * args.d * 4 / mib
        group_mb = args.row_group * args.d * 4 / mib
        print(
            f"table: {args.n} x {args.d} float32, {path.stat().st_size / mib:.0f} MiB on disk, {rows_mb:.0f} MiB as "
            f"rows; row groups of {args.row_group} rows ({group_mb:.1f} MiB), {-(-args.n // args.row_group)} groups"
        )
        results = []
        for mode in ("stream", "kmeans", "read_table"):
            if mode in args.skip:
                continue
            cmd = [sys.executable, __file__, "--worker", mode, "--path", str(path)]
            cmd += ["--d", str(args.d), "--chunk", str(args.chunk), "--k", str(args.k), "--iters", str(args.iters)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{mode} worker failed:\n{proc.stderr[-3000:]}")
            res = json.loads(
                next(line for line in reversed(proc.stdout.splitlines()) if line.startswith(TAG))[len(TAG) :]
            )
            if mode != "kmeans" and not np.isclose(res["value"], total, rtol=1e-6, atol=1e-3):
                raise RuntimeError(f"{mode}: sum {res['value']} != {total} written")
            row = {"impl": mode, "n": args.n, "d": args.d, "row_group": args.row_group, "table_mb": table_mb}
            row.update(rows_mb=rows_mb, group_mb=group_mb, **{k: v for k, v in res.items() if k != "value"})
            results.append(row)
            print(
                f"{mode:>10}: peak RSS {res['peak_rss_mb']:.0f} MiB, {res['extra_mb']:.0f} MiB above the imports "
                f"({res['extra_mb'] / rows_mb:.2f} x the rows), {res['seconds']:.1f} s",
                flush=True,
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
