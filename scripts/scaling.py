"""How the paper's 4-level web configuration would run on this k-means engine: a cost model.

Nothing is clustered here: every number comes from the formulas printed with it
(:mod:`research.bench.costmodel`, rendered by :mod:`research.bench.scaling_report`), evaluated for a
configuration (defaults: the paper's web-image run, N = 743M x 1024 float32 embeddings; level 1 =
100k clusters split 100-way (~10M leaves); levels 2-4 = 500k / 50k / 10k clusters, 10
resampling steps, r = 10 / 5 / 3; 50 Lloyd iterations; 128 / 16 / 8 / 8 GPUs)::

    python scripts/scaling.py                          # print the markdown report
    python scripts/scaling.py --out docs/scaling.md    # and write it
    python scripts/scaling.py --n 2e9 --gpus 256,32,8,8 --tflops 400 --efficiency 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from research.bench.costmodel import Hardware, ScalingConfig, compute, hierarchy_settings
from research.bench.scaling_report import render, variant_section, write_report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hw, cfg = Hardware(), ScalingConfig(**hierarchy_settings())  # configs/cluster/web_4level.yaml
    p.add_argument("--n", type=float, default=cfg.n, help="number of embeddings (7.43e8 works)")
    p.add_argument("--d", type=int, default=cfg.d)
    p.add_argument("--level1-k", type=int, default=cfg.level1_k)
    p.add_argument("--n-splits", type=int, default=cfg.n_splits)
    p.add_argument("--levels", default=",".join(map(str, cfg.levels)), help="k of levels 2, 3, ...")
    p.add_argument("--r", default=",".join(map(str, cfg.sample_r)), help="r of levels 2, 3, ...")
    p.add_argument("--resample-steps", type=int, default=cfg.resample_steps)
    p.add_argument("--iters", type=int, default=cfg.n_iter)
    p.add_argument("--gpus", default=",".join(map(str, cfg.gpus)), help="GPUs of level 1, 2, ...")
    p.add_argument("--memory-budget-mb", type=float, default=cfg.memory_budget_mb)
    p.add_argument("--bf16", action="store_true", help="rows stored as bfloat16 on the GPU")
    p.add_argument("--row-passes", type=int, default=cfg.row_passes, help="row reads per k-means++ step")
    p.add_argument(
        "--init-max-points", type=float, default=cfg.init_max_points, help="k-means++ on at most this many rows"
    )
    p.add_argument("--init-points-per-cluster", type=float, default=None, help="... or this many x k rows")
    for name in ("tflops", "efficiency", "hbm_gbps", "host_gbps", "net_gbps", "coll_latency_us"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(hw, name))
    for name in ("step_overhead_us", "chunk_overhead_us", "gpu_mem_gb"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(hw, name))
    p.add_argument(
        "--variant-per-cluster",
        type=float,
        default=20.0,
        help="variant: k-means++ on this many x k rows (0: none)",
    )
    p.add_argument(
        "--split-memory-mb",
        type=float,
        default=4096.0,
        help="level-1 split: MB of sub-centroids + float64 sums per batch of clusters",
    )
    p.add_argument(
        "--replicated-upper",
        action="store_true",
        help="levels >= 2 replicated on their GPUs (default: sharded when >= 65,536 rows per GPU)",
    )
    p.add_argument(
        "--inits",
        default=",".join(cfg.inits),
        help="init of each level's first k-means: k-means++ or k-means|| (resampled runs: k-means++)",
    )
    p.add_argument("--kpar-rounds", type=int, default=cfg.kpar_rounds, help="k-means|| rounds")
    p.add_argument("--split-init", default=cfg.split_init, choices=("k-means++", "random"))
    p.add_argument(
        "--split-allreduce", action="store_true", help="level-1 split with slot all-reduce (split_regroup=False)"
    )
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> ScalingConfig:
    hw_fields = [f.name for f in dataclasses.fields(Hardware)]
    return ScalingConfig(
        n=int(a.n),
        d=a.d,
        level1_k=a.level1_k,
        n_splits=a.n_splits,
        levels=tuple(int(float(v)) for v in a.levels.split(",") if v),
        sample_r=tuple(int(v) for v in a.r.split(",") if v),
        resample_steps=a.resample_steps,
        n_iter=a.iters,
        gpus=tuple(int(v) for v in a.gpus.split(",") if v),
        memory_budget_mb=a.memory_budget_mb,
        storage_bytes=2 if a.bf16 else 4,
        row_passes=a.row_passes,
        init_max_points=int(a.init_max_points) if a.init_max_points else None,
        init_points_per_cluster=a.init_points_per_cluster,
        upper_replicated=a.replicated_upper,
        split_memory_mb=a.split_memory_mb,
        inits=tuple(v for v in a.inits.split(",") if v),
        kpar_rounds=a.kpar_rounds,
        split_init=a.split_init,
        split_regroup=not a.split_allreduce,
        hw=Hardware(**{name: getattr(a, name) for name in hw_fields}),
    )


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    cfg = config_from_args(args)
    res = compute(cfg)
    shown = sys.argv[1:] if argv is None else argv
    text = render(res, " ".join(["python scripts/scaling.py", *shown]))
    if args.variant_per_cluster:
        text += "\n".join(variant_section(cfg, args.variant_per_cluster)) + "\n"
    print(text)
    if args.out is not None:
        write_report(args.out, text)
    return text


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
