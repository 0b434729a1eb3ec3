"""A cost model of the hierarchical k-means engine at scale: time, FLOPs, bytes and memory per level.

Nothing is clustered: every number comes from the formulas in
:data:`research.bench.scaling_report.FORMULAS`, evaluated for a :class:`ScalingConfig` (defaults: the
paper's web-image run, ``configs/cluster/web_4level.yaml`` on N = 743M x 1024 float32 embeddings,
128 / 16 / 8 / 8 GPUs). The engine's own rules are imported, not retyped: rows per chunk
(:func:`curate.kmeans.kernels.chunk_rows_for` on a GPU) and k-means++ trials
(:func:`curate.kmeans.init.kpp_trials`).

    >>> res = compute(ScalingConfig(**hierarchy_settings()))   # the hierarchy read from web_4level.yaml
    >>> res = compute(ScalingConfig())          # {"config", "levels", "t_total", "gpu_hours", ...}
    >>> res["levels"][0]["lloyd"]["t_iter"]     # seconds of one level-1 Lloyd iteration

``scripts/scaling.py`` is its command line; :mod:`research.bench.scaling_report` renders it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate.kmeans.init import kpp_trials
from curate.kmeans.kernels import chunk_rows_for

__all__ = [
    "GB",
    "KPP_COLLECTIVES",
    "TB",
    "Hardware",
    "ScalingConfig",
    "hierarchy_settings",
    "chunk_rows",
    "compute",
    "kmeans_parallel",
    "kmeanspp",
    "kpp_trials",
    "level1_split",
    "level_one",
    "lloyd",
    "ring_allreduce_s",
    "upper_level",
]

GB = 1e9
TB = 1e12
# per k-means++ step in curate.kmeans.init when distributed: the all-gather of the ranks' potential
# totals, the all-reduce of the picked rows, fetch_global's all-reduce, the trial totals' all-reduce
KPP_COLLECTIVES = 4


@dataclass
class Hardware:
    """Per-GPU rates. Defaults: an H100 SXM, TF32 dense matmul at 50% of 400 TFLOP/s."""

    tflops: float = 400.0  # dense TF32 rate assumed per GPU
    efficiency: float = 0.5  # achieved fraction of it in the assignment matmul
    hbm_gbps: float = 2700.0  # achievable HBM bandwidth (3.35 TB/s peak x ~0.8)
    host_gbps: float = 25.0  # host -> GPU streaming (PCIe Gen5 x16 from page cache / local NVMe)
    net_gbps: float = 25.0  # per-GPU network bandwidth for collectives (200 Gb/s per GPU)
    coll_latency_us: float = 5.0  # per hop; a small collective costs 2 log2(W) hops (tree)
    step_overhead_us: float = 300.0  # launches + host syncs of one k-means++ step (~30 kernels, >= 7 syncs)
    chunk_overhead_us: float = 50.0  # launches of one Lloyd chunk (~10 kernels)
    gpu_mem_gb: float = 80.0

    @property
    def rate(self) -> float:
        """Achieved FLOP/s per GPU."""
        return self.tflops * 1e12 * self.efficiency


@dataclass
class ScalingConfig:
    """The hierarchy, the engine's settings and the hardware."""

    n: int = 743_000_000
    d: int = 1024
    level1_k: int = 100_000
    n_splits: int = 100
    levels: tuple[int, ...] = (500_000, 50_000, 10_000)
    sample_r: tuple[int, ...] = (10, 5, 3)
    resample_steps: int = 10
    n_iter: int = 50
    gpus: tuple[int, ...] = (128, 16, 8, 8)
    memory_budget_mb: float = 4096.0  # KMeans(memory_budget_mb=...) on the GPU: sets the chunk
    storage_bytes: int = 4  # 4: float32 rows resident on the GPU, 2: storage_dtype="bfloat16"
    row_passes: int = 1  # reads of the rows per k-means++ step in the current engine (see FORMULAS)
    # KMeans(init_max_points=...): k-means++ on a subset (configs/cluster/web_4level.yaml: 25.6M;
    # docs/scaling.md is written with --init-max-points 25.6e6)
    init_max_points: int | None = None
    init_points_per_cluster: float | None = None  # same, as a multiple of k (min of the two)
    # curate.hierarchy runs a level >= 2 sharded over its GPUs when its input has at least
    # shard_min_rows rows per GPU (HierarchicalKMeans(shard_min_rows=...)), replicated otherwise
    # (every rank the same computation: its GPUs add no speed). True models them all replicated.
    upper_replicated: bool = False
    shard_min_rows: int = 65536
    # HierarchicalKMeans(split_memory_mb=...): the level-1 split holds the sub-centroids and float64
    # sums of at most this many MB of clusters at once; more run in batches, one shard pass each
    split_memory_mb: float = 4096.0
    # init of the first k-means of each level (level 1, 2, ...): "k-means++" or "k-means||";
    # the resampled runs always use k-means++ (the method's choice; their sample is only r x k rows)
    # (chosen with this model: see docs/scaling.md, "Init of each level's first k-means")
    inits: tuple[str, ...] = ("k-means++", "k-means++", "k-means++", "k-means++")
    kpar_rounds: int = 5  # KMeans(init="k-means||"): oversampling rounds ...
    kpar_oversampling: float = 2.0  # ... of l = oversampling x k candidates each
    split_init: str = "k-means++"  # level-1 split: "k-means++" inside every cluster or "random" members
    # HierarchicalKMeans(split_regroup=...): rows regrouped by cluster across ranks once (all-to-all),
    # each rank splits its own clusters with no per-iteration communication; False: slot all-reduce
    split_regroup: bool = True
    hw: Hardware = field(default_factory=Hardware)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScalingConfig:
        """The configuration back from ``asdict(cfg)`` (``compute(cfg)["config"]``)."""
        tuples = {key: tuple(raw[key]) for key in ("levels", "sample_r", "gpus", "inits")}
        return cls(**{**raw, **tuples, "hw": Hardware(**raw["hw"])})

    def validate(self) -> None:
        if len(self.levels) != len(self.sample_r):
            raise ValueError(f"levels {self.levels} and sample_r {self.sample_r} differ in length")
        if len(self.gpus) != 1 + len(self.levels):
            raise ValueError(f"gpus needs {1 + len(self.levels)} entries (level 1, then levels), got {self.gpus}")
        ks = (self.level1_k * self.n_splits, *self.levels)
        if any(a <= b for a, b in zip(ks, ks[1:])):
            raise ValueError(f"cluster counts must decrease level by level, got {ks}")
        if min(self.gpus) < 1:
            raise ValueError(f"gpus must be >= 1, got {self.gpus}")
        if len(self.inits) != len(self.gpus) or set(self.inits) - {"k-means++", "k-means||"}:
            raise ValueError(f"inits needs one of k-means++ / k-means|| per level, got {self.inits}")
        if self.n < ks[0]:
            raise ValueError(f"n={self.n} is below the number of level-1 leaves {ks[0]}")


def chunk_rows(budget_bytes: float, k: int, d: int) -> int:
    """Rows per chunk of the engine on a GPU (:func:`~curate.kmeans.kernels.chunk_rows_for`):
    budget / (4k + 12d + 32)."""
    return chunk_rows_for(int(budget_bytes), k, d, "cuda")


def coll_latency_s(world: int, hw: Hardware) -> float:
    """Latency of one small collective: 2 log2(W) hops (tree all-reduce)."""
    return 0.0 if world <= 1 else 2 * math.ceil(math.log2(world)) * hw.coll_latency_us * 1e-6


def ring_allreduce_s(nbytes: float, world: int, hw: Hardware) -> float:
    """Ring all-reduce of ``nbytes``: 2(W-1)/W x bytes over the per-GPU link, plus latency."""
    if world <= 1:
        return 0.0
    return 2 * (world - 1) / world * nbytes / (hw.net_gbps * GB) + coll_latency_s(world, hw)


def memory_per_rank(n_local: int, k: int, d: int, chunk: int, cfg: ScalingConfig, resident: bool) -> dict[str, float]:
    """Bytes per rank of the engine's buffers at the peak of a Lloyd step."""
    mem = {
        "shard": float(n_local * d * cfg.storage_bytes) if resident else 0.0,
        "stream_chunk": 0.0 if resident else 2.0 * chunk * d * 4,
        "centroids": k * d * 4.0 + k * 4,
        "sums_f64": k * d * 8.0 + k * 8,
        "update_temps": 2 * k * d * 8.0,
        "scores": chunk * k * 4.0,
        "labels": n_local * 12.0,
    }
    mem["total"] = sum(mem.values())
    return mem


def lloyd(n: int, k: int, d: int, world: int, cfg: ScalingConfig) -> dict[str, Any]:
    """Costs of one Lloyd iteration (assignment + accumulation + all-reduce + update)."""
    hw = cfg.hw
    n_local = math.ceil(n / world)
    chunk = min(n_local, chunk_rows(cfg.memory_budget_mb * 2**20, k, d))
    mem_resident = memory_per_rank(n_local, k, d, chunk, cfg, resident=True)
    resident = mem_resident["total"] <= 0.9 * hw.gpu_mem_gb * GB
    mem = mem_resident if resident else memory_per_rank(n_local, k, d, chunk, cfg, resident=False)
    flops = 2.0 * n * k * d
    allreduce_bytes = k * d * 8.0 + k * 8
    t = {
        "t_matmul": flops / world / hw.rate,
        "t_scores": 8.0 * n * k / world / (hw.hbm_gbps * GB),
        "t_rows": n_local * d * cfg.storage_bytes / ((hw.hbm_gbps if resident else hw.host_gbps) * GB),
        "t_allreduce": ring_allreduce_s(allreduce_bytes, world, hw),
        "t_update": (3 * 8.0 * k * d + 8.0 * n_local * d) / (hw.hbm_gbps * GB),
        "t_launch": math.ceil(n_local / chunk) * hw.chunk_overhead_us * 1e-6,
    }
    return {
        "n": n,
        "k": k,
        "world": world,
        "n_local": n_local,
        "chunk": chunk,
        "flops": flops,
        "rows_bytes": 4.0 * n * d,
        "score_bytes": 8.0 * n * k,
        "allreduce_bytes": allreduce_bytes,
        "resident": resident,
        **t,
        "t_iter": sum(t.values()),
        "t_assign_only": t["t_matmul"] + t["t_scores"] + t["t_rows"] + t["t_launch"],
        "memory": mem,
        "memory_resident": mem_resident,
    }


def init_rows(n: int, k: int, cfg: ScalingConfig) -> int:
    """Rows k-means++ runs on: all, or the ``init_max_points`` / per-cluster subset."""
    m = n
    if cfg.init_max_points:
        m = min(m, max(k, cfg.init_max_points))
    if cfg.init_points_per_cluster:
        m = min(m, max(k, int(cfg.init_points_per_cluster * k)))
    return m


def kmeanspp(n: int, k: int, d: int, world: int, cfg: ScalingConfig) -> dict[str, Any]:
    """Greedy k-means++: k sequential steps; each scores ``trials`` candidates against the rows."""
    hw = cfg.hw
    n_init = init_rows(n, k, cfg)
    trials = kpp_trials(k)
    n_local = math.ceil(n_init / world)
    step_bytes = n_local * d * 4.0 * cfg.row_passes + n_local * (3 * 4.0 * trials + 8)  # + (n, t), cumsum
    t_mem = step_bytes / (hw.hbm_gbps * GB)
    t_flop = 2.0 * trials * n_local * d / hw.rate
    t_coll = KPP_COLLECTIVES * coll_latency_s(world, hw)
    t_step = max(t_mem, t_flop) + t_coll + hw.step_overhead_us * 1e-6
    return {
        "n_init": n_init,
        "k": k,
        "trials": trials,
        "flops": 2.0 * k * trials * n_init * d,
        "step_bytes_per_rank": step_bytes,
        "t_step_mem": t_mem,
        "t_step_coll": t_coll,
        "t_step": t_step,
        "t_total": k * t_step,
    }


def kmeans_parallel(n: int, k: int, d: int, world: int, cfg: ScalingConfig) -> dict[str, Any]:
    """k-means||: R oversampling passes over the rows, then a local weighted k-means++ on the
    ~R l candidates (replicated: one GPU's speed, no collectives)."""
    hw = cfg.hw
    n_local = math.ceil(n / world)
    ell = cfg.kpar_oversampling * k
    m = int(min(n, cfg.kpar_rounds * ell + 1))
    t_round = (
        max(2.0 * n_local * ell * d / hw.rate, 4.0 * n_local * d / (hw.hbm_gbps * GB))
        + 8.0 * n_local * ell / (hw.hbm_gbps * GB)
        + ((world - 1) / max(world, 1)) * ell * d * 4.0 / (hw.net_gbps * GB)
        + coll_latency_s(world, hw) * 3
    )
    trials = kpp_trials(k)
    t_step = max(4.0 * m * d / (hw.hbm_gbps * GB), 2.0 * trials * m * d / hw.rate) + hw.step_overhead_us * 1e-6
    return {
        "rounds": cfg.kpar_rounds,
        "l": ell,
        "candidates": m,
        "flops": cfg.kpar_rounds * 2.0 * n * ell * d + 2.0 * k * trials * m * d,
        "t_round": t_round,
        "t_rounds": cfg.kpar_rounds * t_round,
        "t_local": k * t_step,
        "candidate_bytes": 4.0 * m * d,
        "t_total": cfg.kpar_rounds * t_round + k * t_step,
    }


def first_init(n: int, k: int, d: int, world: int, cfg: ScalingConfig, init: str) -> dict[str, Any]:
    """Cost of the first k-means' init of a level, in the shape of :func:`kmeanspp`'s record."""
    pp = kmeanspp(n, k, d, world, cfg)
    if init == "k-means++":
        return {**pp, "init": init}
    par = kmeans_parallel(n, k, d, world, cfg)
    return {**pp, "init": init, "flops": par["flops"], "t_total": par["t_total"], "kpar": par}


def split_init_cost(cfg: ScalingConfig, n_local: int, world: int, batches: int, shard_bytes: float) -> float:
    """Seconds of the level-1 split's in-cluster k-means++ (0 for random members). Regrouped, a
    rank draws from its own clusters: no collectives (``world`` = 1 here)."""
    if cfg.split_init != "k-means++":
        return 0.0
    hw, d, k1 = cfg.hw, cfg.d, cfg.level1_k
    k_here = k1 if world > 1 else math.ceil(k1 / cfg.gpus[0])
    t = kpp_trials(cfg.n_splits)
    per_step = (
        max(2.0 * n_local * t * d / hw.rate, 4.0 * n_local * t * d / (hw.hbm_gbps * GB))
        + ring_allreduce_s(4.0 * k_here * t * d, world, hw)  # the candidates, fetched by an all-reduce
        + ring_allreduce_s(8.0 * k_here * t * 2 + 8.0 * k_here * world, world, hw)  # trial sums, picks
        + (batches - 1) * shard_bytes / (hw.hbm_gbps * GB)
        + hw.step_overhead_us * 1e-6
    )
    return cfg.n_splits * per_step


def level1_split(cfg: ScalingConfig) -> dict[str, Any]:
    """The level-1 split: one batched, constrained Lloyd over all level-1 clusters, data-parallel by
    rows (regrouped by cluster across ranks once, or with a slot all-reduce per iteration)."""
    d, it, hw = cfg.d, cfg.n_iter, cfg.hw
    w1 = cfg.gpus[0]
    leaves = cfg.level1_k * cfg.n_splits
    n1_local = math.ceil(cfg.n / w1)
    split_flops = it * 2.0 * cfg.n * cfg.n_splits * d
    gather_bytes = 4.0 * n1_local * cfg.n_splits * d  # sub[parent] materialised, per rank and iteration
    regroup = cfg.split_regroup and w1 > 1
    split_ar_bytes = 0.0 if regroup else leaves * d * 8.0 + leaves * 8
    own_leaves = math.ceil(cfg.level1_k / w1) * cfg.n_splits if regroup else leaves  # slots a rank holds
    batches = max(1, math.ceil(own_leaves * (12.0 * d + 21) / (cfg.split_memory_mb * 2**20)))
    shard_bytes = float(n1_local * d * cfg.storage_bytes)
    t_split_init = split_init_cost(cfg, n1_local, 1 if regroup else w1, batches, shard_bytes)
    # regrouped: the shard's rows go to their cluster's rank once (all-to-all at the network rate),
    # slots and distances come back (12 bytes a row), the leaf centroids are all-gathered
    t_regroup = (
        (4.0 * n1_local * d + 12.0 * n1_local + 4.0 * leaves * d * (w1 - 1) / w1) / (hw.net_gbps * GB)
        if regroup
        else 0.0
    )
    t_split_iter = (
        max(2.0 * n1_local * cfg.n_splits * d / hw.rate, gather_bytes / (hw.hbm_gbps * GB))
        + ring_allreduce_s(split_ar_bytes, w1, hw)
        + 3 * 8.0 * own_leaves * d / (hw.hbm_gbps * GB)
        + (batches - 1) * shard_bytes / (hw.hbm_gbps * GB)  # each extra batch reads the shard again
    )
    split_mem = {
        "sub_centroids": 4.0 * own_leaves * d / batches,
        "sums_f64": (8.0 * own_leaves * d + 8.0 * own_leaves) / batches,
        "shard": shard_bytes,
        "gather_chunk": cfg.memory_budget_mb * 2**20,
    }
    split_mem["total"] = sum(split_mem.values())
    return {
        "avg_cluster": cfg.n / cfg.level1_k,
        "n_splits": cfg.n_splits,
        "flops": split_flops,
        "gather_bytes_per_rank": gather_bytes,
        "allreduce_bytes": split_ar_bytes,
        "t_allreduce": ring_allreduce_s(split_ar_bytes, w1, hw),
        "regroup": regroup,
        "t_regroup": t_regroup,
        "t_iter": t_split_iter,
        "t_init": t_split_init,
        "t": (it + 1) * t_split_iter + t_split_init + t_regroup,
        "memory": split_mem,
        "fits": split_mem["total"] <= 0.9 * hw.gpu_mem_gb * GB,
        "leaves": leaves,
        "leaf_centroid_bytes": 4.0 * leaves * d,
        "batches": batches,
    }


def level_one(cfg: ScalingConfig) -> dict[str, Any]:
    """Level 1: k-means with ``level1_k`` clusters on all N rows, then its split."""
    d, it = cfg.d, cfg.n_iter
    w1 = cfg.gpus[0]
    l1 = lloyd(cfg.n, cfg.level1_k, d, w1, cfg)
    p1 = first_init(cfg.n, cfg.level1_k, d, w1, cfg, cfg.inits[0])
    split = level1_split(cfg)
    return {
        "name": "1",
        "n_in": cfg.n,
        "k": cfg.level1_k,
        "gpus": w1,
        "world": w1,
        "runs": 1,
        "resample_steps": 0,
        "lloyd": l1,
        "kpp": p1,
        "t_lloyd": it * l1["t_iter"],
        "t_kpp": p1["t_total"],
        "t_reassign": 0.0,
        "split": split,
        "flops": it * l1["flops"] + p1["flops"] + split["flops"],
        "t_total": it * l1["t_iter"] + p1["t_total"] + split["t"],
    }


def upper_level(cfg: ScalingConfig, j: int, n_in: int) -> dict[str, Any]:
    """Level ``2 + j`` on ``n_in`` rows: one full k-means, then its resampling steps (each a k-means
    on the sample and one assignment pass over the whole level input)."""
    d, it = cfg.d, cfg.n_iter
    k, r = cfg.levels[j], cfg.sample_r[j]
    replicated = cfg.upper_replicated or n_in < cfg.shard_min_rows * cfg.gpus[1 + j]
    w = 1 if replicated else cfg.gpus[1 + j]
    m = cfg.resample_steps if r >= 1 else 0
    s = min(n_in, r * k)  # at most r members of each cluster
    full, pp_full = lloyd(n_in, k, d, w, cfg), first_init(n_in, k, d, w, cfg, cfg.inits[1 + j])
    samp, pp_s = lloyd(s, k, d, w, cfg), kmeanspp(s, k, d, w, cfg)
    t_lloyd = it * full["t_iter"] + m * it * samp["t_iter"]
    t_kpp = pp_full["t_total"] + m * pp_s["t_total"]
    t_reassign = m * full["t_assign_only"]
    return {
        "name": str(2 + j),
        "n_in": n_in,
        "k": k,
        "gpus": cfg.gpus[1 + j],
        "world": w,
        "r": r,
        "sample": s,
        "resample_steps": m,
        "runs": 1 + m,
        "lloyd": full,
        "lloyd_sample": samp,
        "kpp": pp_full,
        "kpp_sample": pp_s,
        "t_lloyd": t_lloyd,
        "t_kpp": t_kpp,
        "t_reassign": t_reassign,
        "flops": it * full["flops"] + pp_full["flops"] + m * (it * samp["flops"] + pp_s["flops"] + full["flops"]),
        "t_total": t_lloyd + t_kpp + t_reassign,
    }


def hierarchy_settings(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The :class:`ScalingConfig` fields a cluster config sets, read from its YAML (default:
    ``configs/cluster/web_4level.yaml``): level 1's ``k`` and ``n_splits``, the upper levels' ``k``,
    ``sample_size`` (r) and ``resample_steps`` (one value for all), ``n_iter`` and ``init_max_points``
    (:class:`curate.conf.HierarchyConfig`'s defaults where the file is silent)."""
    from omegaconf import OmegaConf

    from curate import CONFIG_DIR
    from curate.conf import HierarchyConfig, LevelConfig

    path = Path(path) if path is not None else Path(CONFIG_DIR) / "cluster" / "web_4level.yaml"
    node = OmegaConf.load(path)
    first, upper = node.levels[0], node.levels[1:]
    steps = {int(lv.get("resample_steps", LevelConfig.resample_steps)) for lv in upper}
    if len(steps) > 1:
        raise ValueError(f"{path}: the cost model takes one resample_steps for the upper levels, got {sorted(steps)}")
    return {
        "level1_k": int(first.k),
        "n_splits": int(first.get("n_splits", LevelConfig.n_splits)),
        "levels": tuple(int(lv.k) for lv in upper),
        "sample_r": tuple(int(lv.get("sample_size", LevelConfig.sample_size)) for lv in upper),
        "resample_steps": steps.pop() if steps else 0,
        "n_iter": int(node.get("n_iter", HierarchyConfig.n_iter)),
        "init_max_points": node.get("init_max_points", HierarchyConfig.init_max_points),
    }


def compute(cfg: ScalingConfig) -> dict[str, Any]:
    """Per-level costs of the whole hierarchy (times in seconds, sizes in bytes).

    Returns:
        ``{"config": asdict(cfg), "levels": [level 1, level 2, ...], "t_total", "gpu_hours",
        "kpp_steps"}``; a level holds its Lloyd / k-means++ records (:func:`lloyd`, :func:`kmeanspp`),
        level 1 also its ``split`` (:func:`level1_split`).

    Raises:
        ValueError: an inconsistent configuration (:meth:`ScalingConfig.validate`).
    """
    cfg.validate()
    levels = [level_one(cfg)]
    n_in = levels[0]["split"]["leaves"]
    for j, k in enumerate(cfg.levels):
        levels.append(upper_level(cfg, j, n_in))
        n_in = k
    return {
        "config": asdict(cfg),
        "levels": levels,
        "t_total": sum(lv["t_total"] for lv in levels),
        "gpu_hours": sum(lv["t_total"] * lv["gpus"] for lv in levels) / 3600,
        "kpp_steps": sum(lv["k"] * lv["runs"] for lv in levels),
    }
