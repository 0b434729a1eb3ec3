"""Benchmark ``fit_fraction``: the inertia a level-1 fit on a subset costs against the full fit, in one run.

    python scripts/bench_fit_fraction.py                              # 200k x 64, k=1000, fractions 1 .5 .2 .1 .05
    python scripts/bench_fit_fraction.py --n 1000000 --d 128 --k 4000 --fractions 1 0.1 0.02 --json ff.json

Rows (same data, same seed, one process, a one-level :class:`~curate.hierarchy.HierarchicalKMeans`
with no resampling step, so the row measures only the first k-means of the level):

- ``fraction=1``: Lloyd on every row (the reference).
- ``fraction=f``: Lloyd on a seeded uniform subset of ``round(f * n)`` rows, then every row
  assigned once to the fitted centroids (what ``fit_fraction`` does in the cluster stage).

``inertia``: the k-means objective over **all** rows (the sum of squared distances to the assigned
centroid), whatever the rows the fit saw. ``inertia_vs_full`` and ``time_vs_full``: the row's
inertia and wall seconds over those of the ``fraction=1`` row measured in this run.
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
    parser.add_argument("--n", type=int, default=200_000, help="rows")
    parser.add_argument("--d", type=int, default=64, help="dimension")
    parser.add_argument("--clusters", type=int, default=2000, help="Gaussian components of the data")
    parser.add_argument("--k", type=int, default=1000, help="k of the level")
    parser.add_argument("--iters", type=int, default=20, help="Lloyd iterations")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.2, 0.1, 0.05])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return parser.parse_args(argv)


def fit_level(x: np.ndarray, k: int, fraction: float, iters: int, seed: int) -> dict[str, Any]:
    """One level-1 fit of ``x`` (N, d); returns its stats record (``inertia`` over all rows first)."""
    from curate.hierarchy import HierarchicalKMeans

    level = {"k": k, "resample_steps": 0, "sample_size": 1, "fit_fraction": fraction}
    hkm = HierarchicalKMeans([level], n_iter=iters, seed=seed).fit(x)
    return hkm.levels_[0].stats


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if 1.0 not in args.fractions:
        raise SystemExit("error: --fractions must include 1 (the full fit every row is compared with)")
    import torch

    from research.machine import machine_info, machine_line

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_clustered_npy(Path(tmp) / "x.npy", args.n, args.d, args.clusters, seed=args.seed)
        x = np.ascontiguousarray(np.load(path, mmap_mode="r", allow_pickle=False))
    print(machine_line(machine_info("cpu")) + f"; {args.threads} thread(s)", flush=True)
    print(f"data {args.n} x {args.d} ({args.clusters} components), k={args.k}, {args.iters} Lloyd iterations")
    print(f"{'fraction':>9}{'fit rows':>10}{'wall s':>9}{'inertia':>14}{'inertia/full':>14}{'time/full':>11}")
    rows: list[dict[str, Any]] = []
    full: dict[str, Any] = {}
    full_wall = 0.0
    for fraction in sorted(args.fractions, reverse=True):  # the full fit first: the others compare with it
        stats, wall, cpu = timed(lambda f=fraction: fit_level(x, args.k, f, args.iters, args.seed))
        row = {
            "fraction": fraction,
            "fit_rows": int(stats.get("fit_rows", args.n)),
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "inertia": float(stats["inertia"][0]),
        }
        full, full_wall = (full, full_wall) if full else (row, wall)
        row["inertia_vs_full"] = round(row["inertia"] / full["inertia"], 5)
        row["time_vs_full"] = round(wall / full_wall, 3)
        rows.append(row)
        print(
            f"{fraction:>9g}{row['fit_rows']:>10}{wall:>9.2f}{row['inertia']:>14.6g}"
            f"{row['inertia_vs_full']:>14.4f}{row['time_vs_full']:>11.3f}",
            flush=True,
        )
        write_rows(args.json, rows)
    for r in rows:
        r.update(n=args.n, d=args.d, k=args.k, iters=args.iters, threads=args.threads)
    write_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
