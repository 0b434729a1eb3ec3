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
import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


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
    p.add_argument("--repo", type=Path, default=None, help="checkout whose curate package to import")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return p.parse_args(argv)


_INITS_FILE = "BENCH_INIT_CODE"


def _inits_module():
    """``research.bench.inits``, or the file the ``--repo`` parent names (the other checkout may lack it)."""
    if _INITS_FILE not in os.environ:
        from research.bench import inits

        return inits
    spec = importlib.util.spec_from_file_location("_bench_inits", os.environ[_INITS_FILE])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _in_repo(repo: Path, argv: list[str]) -> list[dict[str, Any]]:
    """Run this script again with ``repo`` first on PYTHONPATH (so its ``curate`` is imported)."""
    args = list(argv)
    i = args.index("--repo") if "--repo" in args else None
    if i is not None:
        del args[i : i + 2]
    else:
        args = [a for a in args if not a.startswith("--repo=")]
    from research.bench import inits  # this checkout's benchmark code, run against the other's engine

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo.resolve()), os.environ.get("PYTHONPATH", "")])}
    env[_INITS_FILE] = inits.__file__
    proc = subprocess.run([sys.executable, __file__, *args], env=env, stdout=subprocess.PIPE, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode:
        raise SystemExit(proc.returncode)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.repo is not None:
        return _in_repo(args.repo, sys.argv[1:] if argv is None else argv)
    import torch

    from research.machine import machine_info

    inits = _inits_module()

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {
        "init": lambda: inits.init_rows(args.size, args.seeds, args.impls, args.rounds, args.lloyd_iters),
        "load": inits.load_rows,
        "curation": lambda: inits.curation_rows(args.seeds, args.lloyd_iters),
        "quality": lambda: inits.quality_rows(args.seeds, args.hierarchy),
    }[args.what]
    out: list[dict[str, Any]] = []
    for row in itertools.chain([{"what": "machine", **machine_info()}], rows()):
        out.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
