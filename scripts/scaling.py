"""How the paper's 4-level web configuration would run on this k-means engine: a cost model.

Nothing is clustered here: every number comes from the formulas printed with it, evaluated for a
configuration (defaults: the paper's web-image run, N = 743M x 1024 float32 embeddings; level 1 =
100k clusters split 100-way (~10M leaves); levels 2-4 = 500k / 50k / 10k clusters, 10
resampling steps, r = 10 / 5 / 3; 50 Lloyd iterations; 128 / 16 / 8 / 8 GPUs)::

    python scripts/scaling.py                          # print the markdown report
    python scripts/scaling.py --out docs/scaling.md    # and write it
    python scripts/scaling.py --n 2e9 --gpus 256,32,8,8 --tflops 400 --efficiency 0.5

``compute(Config())`` returns the numbers as a dict; ``render`` turns them into markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
class Config:
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


# -- formulas ---------------------------------------------------------------------------------
FORMULAS = """\
Notation: a level has n input rows of dimension d, k clusters, W ranks, n_loc = n / W rows per rank;
R = per-GPU matmul rate (peak x efficiency), B_hbm / B_host / B_net = bandwidths.

- **assignment FLOPs** per Lloyd iteration = 2 n k d (the `-2 x c^T` matmul; the `+ ||c||^2`, the
  argmin and the accumulation are O(n k) and O(n d))
- **rows streamed** per iteration = 4 n d bytes (float32 through the kernels)
- **score traffic** per iteration = 8 n k bytes: the (chunk, k) float32 block written by `addmm`
  and read back by the argmin (not fused in this engine)
- **all-reduce** per iteration = 8 k d (float64 sums) + 8 k (int64 counts) bytes; ring time =
  2 (W-1)/W x bytes / B_net + 2 log2(W) x latency
- **t_iter** = 2 n k d / (W R) + 8 n k / (W B_hbm) + 4 n_loc d / B_in + t_allreduce + t_update
  + chunks x launch overhead, where B_in = B_hbm when the shard is resident, B_host when streamed;
  t_update = (3 x 8 k d + 8 n_loc d) / B_hbm (float64 sums, divide, shift; `index_add_`)
- **memory per rank**: shard n_loc d 4 (resident; 2 with bfloat16) or 2 chunks x 4 d (streamed);
  centroids 4 k d; float64 sums 8 k d; update temporaries 2 x 8 k d (sums / counts, then
  (new - old).double() for the shift); scores 4 x chunk x k with chunk = budget / (4k + 12d + 32)
  (`chunk_rows_for`); labels 8 n_loc + squared distances 4 n_loc
- **k-means++** (greedy, trials = 2 + ln k): FLOPs = 2 k trials n d (= `trials` Lloyd iterations) but
  **k sequential steps**, each a memory-bound pass over the n_loc rows with only `trials` columns:
  t_step = max(passes x 4 n_loc d / B_hbm, 2 trials n_loc d / R) + 4 collectives x 2 log2(W) x
  latency + launch/sync overhead; t = k x t_step. The row norms are computed once per run, so a
  step reads the rows once (`passes` = 1; it was 4 while `sq_dists` recomputed them through a
  temporary at every step: 1.76x slower on one CPU thread, docs/benchmarks.md).
  With `init_max_points` the subset stays spread over the W ranks: the pass shrinks, the step count
  and the collectives do not.
- **k-means||** (`init="k-means||"`, Bahmani et al. 2012): R rounds, each one pass over the n_loc rows
  scoring the ~l = oversampling x k rows drawn in the previous round (2 n_loc l d FLOPs, the (chunk, l)
  distance block written and read back: 8 n_loc l bytes, an all-gather of the l d 4 bytes drawn);
  then a weighted greedy k-means++ on the m = R l + 1 candidates, replicated on every rank (no
  collectives): k steps of max(4 m d / B_hbm, 2 trials m d / R) + launch overhead. It replaces k
  sequential passes over the shard by R; it pays when m << n_loc (k small against the level input).
- **resampling step** (levels 2-4): sample S = the r_t members closest to each centroid,
  |S| <= r_t k_t; a fresh k-means++ on S, n_iter Lloyd iterations on S, then one assignment pass
  over the whole level input (2 n k d FLOPs, no all-reduce of sums). A level runs 1 full k-means
  + m resampled ones.
- **level-1 split** (`curate.hierarchy.split.split_clusters`): one batched, constrained Lloyd over
  all k1 clusters at once, data-parallel by rows: each row is scored against the n_splits
  sub-centroids of its own cluster (`baddbmm` on the gathered `sub[parent]`, a (chunk, n_splits, d)
  block), FLOPs = 2 N n_splits d per iteration, but the gather moves 4 N n_splits d bytes, so it is
  bandwidth-bound; per iteration the k1 n_splits slot sums
  are all-reduced: 8 k1 n_splits d bytes; sub-centroids 4 k1 n_splits d + float64 sums
  8 k1 n_splits d, held on the device in B = ceil(k1 n_splits (12 d + 21) / split_memory) batches of
  clusters (each batch run to the end: one more read of the shard per iteration and batch; the
  finished sub-centroids wait on the host). Init (`split_init="k-means++"`): greedy k-means++ inside
  every cluster, all clusters at once: n_splits steps, each one pass over the shard scoring each row
  against its own cluster's t = 2 + ln n_splits candidates (a (chunk, t, d) gather: 4 n_loc t d bytes)
  plus the candidates' fetch, an all-reduce of 4 k1 t d bytes, and the k1 t float64 trial sums;
  run per batch of clusters (one more read of the shard per step and batch).
  Regrouped (`split_regroup=True`, the default when distributed): ranks own contiguous ranges of
  clusters balanced by rows; one all-to-all sends each row to its cluster's rank (4 n_loc d bytes per
  rank), slots and distances return (12 n_loc), the leaf centroids are all-gathered (4 k1 n_splits d);
  then no communication per iteration or init step, and a rank holds only its k1 / W clusters' slots
- **upper levels** (2..T) run data-parallel over their W GPUs in `curate.hierarchy` when the
  level input has at least `shard_min_rows` (65,536) rows per GPU, replicated otherwise (every
  rank computes the same thing on the whole level input, no collectives): W_eff = 1
  (`--replicated-upper` models them all replicated, as the engine did before)
"""


def kpp_trials(k: int) -> int:
    """Candidates per k-means++ step, as the engine: 2 + floor(ln k)."""
    return 2 + int(math.log(k))


def chunk_rows(budget_bytes: float, k: int, d: int) -> int:
    """Rows per chunk, as ``curate.kmeans.chunk_rows_for`` on a GPU: budget / (4k + 12d + 32)."""
    return max(1, int(budget_bytes // (4 * k + 12 * d + 32)))


def coll_latency_s(world: int, hw: Hardware) -> float:
    """Latency of one small collective: 2 log2(W) hops (tree all-reduce)."""
    return 0.0 if world <= 1 else 2 * math.ceil(math.log2(world)) * hw.coll_latency_us * 1e-6


def ring_allreduce_s(nbytes: float, world: int, hw: Hardware) -> float:
    """Ring all-reduce of ``nbytes``: 2(W-1)/W x bytes over the per-GPU link, plus latency."""
    if world <= 1:
        return 0.0
    return 2 * (world - 1) / world * nbytes / (hw.net_gbps * GB) + coll_latency_s(world, hw)


def memory_per_rank(n_local: int, k: int, d: int, chunk: int, cfg: Config, resident: bool) -> dict[str, float]:
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


def lloyd(n: int, k: int, d: int, world: int, cfg: Config) -> dict[str, Any]:
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


def init_rows(n: int, k: int, cfg: Config) -> int:
    """Rows k-means++ runs on: all, or the ``init_max_points`` / per-cluster subset."""
    m = n
    if cfg.init_max_points:
        m = min(m, max(k, cfg.init_max_points))
    if cfg.init_points_per_cluster:
        m = min(m, max(k, int(cfg.init_points_per_cluster * k)))
    return m


def kmeanspp(n: int, k: int, d: int, world: int, cfg: Config) -> dict[str, Any]:
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


def kmeans_parallel(n: int, k: int, d: int, world: int, cfg: Config) -> dict[str, Any]:
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


def first_init(n: int, k: int, d: int, world: int, cfg: Config, init: str) -> dict[str, Any]:
    """Cost of the first k-means' init of a level, in the shape of :func:`kmeanspp`'s record."""
    pp = kmeanspp(n, k, d, world, cfg)
    if init == "k-means++":
        return {**pp, "init": init}
    par = kmeans_parallel(n, k, d, world, cfg)
    return {**pp, "init": init, "flops": par["flops"], "t_total": par["t_total"], "kpar": par}


def split_init_cost(cfg: Config, n_local: int, world: int, batches: int, shard_bytes: float) -> float:
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


def compute(cfg: Config) -> dict[str, Any]:
    """Per-level costs of the whole hierarchy (times in seconds, sizes in bytes)."""
    cfg.validate()
    d, it, hw = cfg.d, cfg.n_iter, cfg.hw
    levels: list[dict[str, Any]] = []
    # level 1: k-means with level1_k clusters on all N rows ...
    w1 = cfg.gpus[0]
    l1 = lloyd(cfg.n, cfg.level1_k, d, w1, cfg)
    p1 = first_init(cfg.n, cfg.level1_k, d, w1, cfg, cfg.inits[0])
    # ... then every cluster split n_splits-way: one batched constrained Lloyd, data-parallel by rows
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
    split = {
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
    levels.append(
        {
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
            "flops": it * l1["flops"] + p1["flops"] + split_flops,
            "t_total": it * l1["t_iter"] + p1["t_total"] + split["t"],
        }
    )
    n_in = leaves
    for j, (k, r) in enumerate(zip(cfg.levels, cfg.sample_r)):
        replicated = cfg.upper_replicated or n_in < cfg.shard_min_rows * cfg.gpus[1 + j]
        w = 1 if replicated else cfg.gpus[1 + j]
        m = cfg.resample_steps if r >= 1 else 0
        s = min(n_in, r * k)  # at most r members of each cluster
        full, pp_full = lloyd(n_in, k, d, w, cfg), first_init(n_in, k, d, w, cfg, cfg.inits[1 + j])
        samp, pp_s = lloyd(s, k, d, w, cfg), kmeanspp(s, k, d, w, cfg)
        t_lloyd = it * full["t_iter"] + m * it * samp["t_iter"]
        t_kpp = pp_full["t_total"] + m * pp_s["t_total"]
        t_reassign = m * full["t_assign_only"]
        levels.append(
            {
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
                "flops": it * full["flops"]
                + pp_full["flops"]
                + m * (it * samp["flops"] + pp_s["flops"] + full["flops"]),
                "t_total": t_lloyd + t_kpp + t_reassign,
            }
        )
        n_in = k
    return {
        "config": asdict(cfg),
        "levels": levels,
        "t_total": sum(lv["t_total"] for lv in levels),
        "gpu_hours": sum(lv["t_total"] * lv["gpus"] for lv in levels) / 3600,
        "kpp_steps": sum(lv["k"] * lv["runs"] for lv in levels),
    }


# -- report -----------------------------------------------------------------------------------
def _b(x: float) -> str:
    for unit, scale in (("TB", TB), ("GB", GB), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def _f(x: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}FLOP"
    return f"{x:.3g} FLOP"


def _t(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.3g} ms"


def _runs(lv: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any], int]]:
    """(tag, costs, how many runs) of a level's full and resampled k-means."""
    full, samp = ("lloyd", "lloyd_sample") if kind == "lloyd" else ("kpp", "kpp_sample")
    out = [("full", lv[full], 1)]
    if lv["resample_steps"]:
        out.append(("resampled", lv[samp], lv["resample_steps"]))
    return out


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def render(res: dict[str, Any], command: str) -> str:
    """The markdown report."""
    cfg, hw = res["config"], res["config"]["hw"]
    init_on = "all rows"
    if cfg["init_max_points"] or cfg["init_points_per_cluster"]:
        subset = f"init_max_points={cfg['init_max_points']}, per cluster={cfg['init_points_per_cluster']}"
        init_on = f"a subset ({subset})"
    lines = [
        "# Scaling the paper's 4-level web configuration on this engine",
        "",
        f"Produced by `{command}` (scripts/scaling.py). A cost model evaluated from the formulas below,",
        "not a measurement: it shows where time and memory go and what breaks first. CPU measurements of",
        "the engine are in docs/benchmarks.md.",
        "",
        "## Configuration",
        "",
        f"- N = {cfg['n']:,} embeddings, d = {cfg['d']}, float32: {_b(4.0 * cfg['n'] * cfg['d'])}",
        f"- level 1: k = {cfg['level1_k']:,}, then each cluster split {cfg['n_splits']}-way -> "
        f"{cfg['level1_k'] * cfg['n_splits']:,} leaves",
        f"- levels 2-{1 + len(cfg['levels'])}: k = {', '.join(f'{k:,}' for k in cfg['levels'])}; "
        f"r = {', '.join(map(str, cfg['sample_r']))}; {cfg['resample_steps']} resampling steps "
        "(1 full run + m resampled runs)",
        f"- {cfg['n_iter']} Lloyd iterations per k-means; GPUs per level: {', '.join(map(str, cfg['gpus']))}",
        f"- per GPU: {hw['tflops']:.0f} TFLOP/s TF32 dense x {hw['efficiency']:.0%} = "
        f"{hw['tflops'] * hw['efficiency']:.0f} TFLOP/s achieved; HBM {hw['hbm_gbps']:.0f} GB/s; "
        f"host->GPU {hw['host_gbps']:.0f} GB/s; network {hw['net_gbps']:.0f} GB/s per GPU",
        f"- latencies: {hw['coll_latency_us']:.0f} us per collective hop; {hw['step_overhead_us']:.0f} us of "
        f"launches + host syncs per k-means++ step; {hw['chunk_overhead_us']:.0f} us per Lloyd chunk; "
        f"{hw['gpu_mem_gb']:.0f} GB per GPU",
        f"- chunk budget {cfg['memory_budget_mb']:.0f} MB (`memory_budget_mb`); rows stored as "
        f"{'float32' if cfg['storage_bytes'] == 4 else 'bfloat16'}; k-means++ on {init_on}; "
        f"{cfg['row_passes']} row passes per k-means++ step",
        "",
        "## Formulas",
        "",
        FORMULAS,
        "## Per level",
        "",
    ]
    rows = []
    for lv in res["levels"]:
        ll = lv["lloyd"]
        rows.append(
            [
                lv["name"],
                f"{lv['n_in']:,}",
                f"{lv['k']:,}",
                str(lv["gpus"]),
                str(lv["runs"]),
                _f(ll["flops"]),
                _b(ll["rows_bytes"]),
                _b(ll["score_bytes"]),
                f"{_b(ll['allreduce_bytes'])} ({_t(ll['t_allreduce'])})" if lv["world"] > 1 else "none (replicated)",
                _t(ll["t_iter"]),
                _t(lv["t_lloyd"]),
                _t(lv["t_kpp"]),
                _t(lv["t_reassign"]),
                f"**{_t(lv['t_total'])}**",
            ]
        )
    head = ["level", "input n", "k", "GPUs", "runs", "FLOPs/iter (2nkd)", "rows/iter", "scores/iter"]
    head += ["all-reduce/iter", "t/iter", "all Lloyd", "all k-means++", "reassign", "level"]
    lines += _table(head, rows)
    l1 = res["levels"][0]
    lines += [
        "",
        f"Whole hierarchy: **{_t(res['t_total'])}** wall clock (levels run one after the other), "
        f"**{res['gpu_hours']:,.0f} GPU-hours** (GPUs as listed, busy or replicated). Level 1 includes its "
        f"split ({_t(l1['split']['t'])}). Levels 2-{len(res['levels'])} "
        + (
            "run replicated (`--replicated-upper`): one GPU's worth of speed each."
            if cfg["upper_replicated"]
            else f"run data-parallel when they have at least {cfg['shard_min_rows']:,} rows per GPU, as "
            "`curate.hierarchy` does, replicated (one GPU's worth of speed) otherwise."
        ),
        "",
        "### One Lloyd iteration, term by term",
        "",
    ]
    rows = []
    for lv in res["levels"]:
        for tag, ll, _ in _runs(lv, "lloyd"):
            rows.append(
                [
                    f"{lv['name']} ({tag})",
                    f"{ll['n_local']:,}",
                    f"{ll['chunk']:,}",
                    _t(ll["t_matmul"]),
                    _t(ll["t_scores"]),
                    f"{_t(ll['t_rows'])} ({'HBM' if ll['resident'] else 'host'})",
                    _t(ll["t_allreduce"]),
                    _t(ll["t_update"]),
                    _t(ll["t_launch"]),
                    _t(ll["t_iter"]),
                ]
            )
    head = ["level (run)", "rows per rank", "chunk rows", "matmul", "score traffic", "rows in", "all-reduce"]
    lines += _table(head + ["update", "launches", "t/iter"], rows)
    lines += ["", "### k-means++ (sequential steps)", ""]
    rows = []
    for lv in res["levels"]:
        for tag, pp, count in _runs(lv, "kpp"):
            rows.append(
                [
                    f"{lv['name']} ({tag})",
                    f"{pp['n_init']:,}",
                    f"{pp['k']:,}",
                    str(pp["trials"]),
                    _f(pp["flops"]),
                    _b(pp["step_bytes_per_rank"]),
                    f"{_t(pp['t_step'])} ({_t(pp['t_step_coll'])})",
                    _t(pp["t_total"]),
                    str(count),
                    _t(pp["t_total"] * count),
                ]
            )
    head = ["level (run)", "rows", "k = steps", "trials", "FLOPs (= trials Lloyd iters)", "bytes/step/rank"]
    lines += _table(head + ["t/step (collectives)", "t/run", "runs", "total"], rows)
    lines += ["", "### Init of each level's first k-means: k-means++ or k-means||", ""]
    lines += init_choice_table(res)
    sp = l1["split"]
    lines += [
        "",
        f"Level-1 split (batched constrained Lloyd, {cfg['n_iter']} iterations + a final assignment): "
        f"{_f(sp['flops'])} in all, but each iteration gathers {_b(sp['gather_bytes_per_rank'])} of "
        f"sub-centroids per rank and "
        + (
            f"all-reduces nothing (rows regrouped by cluster once: {_t(sp['t_regroup'])} for the all-to-all "
            "of the shard, the slots back and the all-gather of the leaf centroids)"
            if sp["regroup"]
            else f"all-reduces {_b(sp['allreduce_bytes'])} of float64 slot sums ({_t(sp['t_allreduce'])})"
        )
        + f": {_t(sp['t_iter'])} per iteration, in {sp['batches']} batch(es) of "
        f"clusters (`split_memory_mb` = {cfg['split_memory_mb']:,.0f}); its {cfg['split_init']} init "
        f"({cfg['n_splits']} steps): {_t(sp['t_init'])}. Memory per rank: sub-centroids "
        f"{_b(sp['memory']['sub_centroids'])} + float64 sums {_b(sp['memory']['sums_f64'])} + shard "
        f"{_b(sp['memory']['shard'])} = {_b(sp['memory']['total'])}: "
        f"{'fits' if sp['fits'] else '**does not fit**'} in {hw['gpu_mem_gb']:.0f} GB. The "
        f"{sp['leaves']:,} leaf centroids ({_b(sp['leaf_centroid_bytes'])}) are level 2's input.",
        "",
        "## Memory per rank (peak of a Lloyd step, shard resident)",
        "",
    ]
    rows = []
    for lv in res["levels"]:
        for tag, ll, _ in _runs(lv, "lloyd"):
            m = ll["memory_resident"]
            fits = "yes" if ll["resident"] else f"no: stream it ({_b(ll['memory']['total'])})"
            rows.append(
                [f"{lv['name']} ({tag})"]
                + [_b(m[key]) for key in ("shard", "centroids", "sums_f64", "update_temps", "scores", "labels")]
                + [_b(m["total"]), fits]
            )
    head = ["level (run)", "shard", "centroids", "float64 sums", "update temps", "scores chunk", "labels"]
    lines += _table(head + ["total", f"fits in {hw['gpu_mem_gb']:.0f} GB?"], rows)
    lines += ["", "## What would break first", ""] + breaks_first(res) + [""]
    return "\n".join(lines)


def init_choice_table(res: dict[str, Any]) -> list[str]:
    """Per level, the first k-means' init both ways, and which one the configuration uses."""
    raw = res["config"]
    cfg = Config(**{**raw, "hw": Hardware(**raw["hw"])})
    cfg.levels, cfg.sample_r, cfg.gpus, cfg.inits = (
        tuple(raw["levels"]),
        tuple(raw["sample_r"]),
        tuple(raw["gpus"]),
        tuple(raw["inits"]),
    )
    rows = []
    for lv, init in zip(res["levels"], cfg.inits):
        n, k, w = lv["n_in"], lv["k"], lv["world"]
        pp, par = kmeanspp(n, k, cfg.d, w, cfg), kmeans_parallel(n, k, cfg.d, w, cfg)
        best = "k-means++" if pp["t_total"] <= par["t_total"] else "k-means||"
        rows.append(
            [
                lv["name"],
                f"{n:,}",
                f"{k:,}",
                f"{_t(pp['t_total'])} ({pp['n_init']:,} rows, {k:,} steps)",
                f"{_t(par['t_rounds'])} + {_t(par['t_local'])} ({par['candidates']:,} candidates, "
                f"{_b(par['candidate_bytes'])} per rank)",
                f"**{init}**" + ("" if init == best else f" (model prefers {best})"),
            ]
        )
    head = ["level", "input n", "k", "k-means++", f"k-means|| ({cfg.kpar_rounds} rounds + local k-means++)"]
    return _table(head + ["configured (`inits`)"], rows)


def breaks_first(res: dict[str, Any]) -> list[str]:
    """The bottlenecks, worst first, with their numbers."""
    cfg, hw = res["config"], res["config"]["hw"]
    lv1, lv2 = res["levels"][0], res["levels"][1]
    p1, ll1, ll2, ls2 = lv1["kpp"], lv1["lloyd"], lv2["lloyd"], lv2["lloyd_sample"]
    shares = ", ".join(f"level {lv['name']} {lv['t_kpp'] / lv['t_total']:.0%}" for lv in res["levels"])
    sp = lv1["split"]
    mem = sp["memory"]
    shuffle = 4.0 * cfg["n"] * cfg["d"]
    out = []
    if not sp["fits"]:
        out.append(
            f"{len(out) + 1}. **The level-1 split does not fit on a GPU**: {sp['batches']} batch(es) of "
            f"clusters hold sub-centroids {_b(mem['sub_centroids'])} + float64 slot sums "
            f"{_b(mem['sums_f64'])} + the {_b(mem['shard'])} shard = {_b(mem['total'])} per rank against "
            f"{hw['gpu_mem_gb']:.0f} GB: lower `split_memory_mb`."
        )
    if sp["regroup"]:
        out.append(
            f"{len(out) + 1}. **The level-1 split's exchange.** Regrouped by cluster "
            "(`HierarchicalKMeans(split_regroup=True)`, the default), a rank splits its own "
            f"{math.ceil(cfg['level1_k'] / lv1['gpus']):,} clusters with no communication per iteration; the "
            f"price is one all-to-all of the shard ({_b(shuffle)} in all) plus the slots back and the "
            f"all-gather of the {_b(sp['leaf_centroid_bytes'])} of leaf centroids: {_t(sp['t_regroup'])} once, "
            f"against {_t(ring_allreduce_s(8.0 * sp['leaves'] * (cfg['d'] + 1), lv1['gpus'], Hardware(**hw)))} "
            f"of slot all-reduce per iteration ({cfg['n_iter'] + 1} iterations) with `split_regroup=False`. "
            "The regrouped rows are held in host memory, and ranks are balanced by rows, not by work: a "
            "cluster larger than N / W rows leaves its rank the long pole."
        )
    else:
        out.append(
            f"{len(out) + 1}. **The level-1 split's slot sums.** {sp['leaves']:,} slots: "
            f"{_b(sp['leaf_centroid_bytes'])} of sub-centroids (on the host between batches) and a "
            f"{_b(sp['allreduce_bytes'])} all-reduce per iteration ({_t(sp['t_allreduce'])}, "
            f"{sp['t_allreduce'] / sp['t_iter']:.0%} of a split iteration). In {sp['batches']} batches the device "
            f"holds {_b(mem['sub_centroids'] + mem['sums_f64'])} ({_b(mem['total'])} with the shard), at the "
            f"price of {sp['batches'] - 1} extra reads of the shard per iteration. Regrouping the rows by "
            f"cluster once (an all-to-all of {_b(shuffle)}, "
            f"{_t(shuffle / lv1['gpus'] / (hw['net_gbps'] * GB))} at the network rate, `split_regroup=True`) lets "
            "each rank split whole clusters with no all-reduce."
        )
    if cfg["upper_replicated"]:
        pp2 = lv2["kpp"]
        m2r = ll2["memory_resident"]
        out.append(
            f"{len(out) + 1}. **Upper levels run replicated: their GPUs do not help.** Level 2 clusters "
            f"{lv2['n_in']:,} rows on every one of its {lv2['gpus']} GPUs: {_t(ll2['t_iter'])} per full "
            "Lloyd iteration and "
            f"{_t(pp2['t_total'])} per full k-means++ ({pp2['k']:,} steps of {_t(pp2['t_step'])}, each "
            f"{cfg['row_passes']} passes over {_b(lv2['n_in'] * cfg['d'] * 4.0)}), "
            f"{_t(lv2['t_total'])} for the level; memory per GPU {_b(m2r['total'])}. Sharding level 2 over "
            f"its {lv2['gpus']} GPUs (what `curate.hierarchy` does by default) divides the "
            "Lloyd and k-means++ passes by 16."
        )
    out += [
        f"{len(out) + 1}. **k-means++ is sequential and dominates the rest.** {res['kpp_steps']:,} "
        f"dependent steps in the whole run (level 2 alone: {lv2['k']:,} steps x {lv2['runs']} runs); "
        "its share of each level's time: "
        f"{shares}. At level 1 a step is {cfg['row_passes']} pass(es) over a "
        f"{_b(ll1['n_local'] * cfg['d'] * 4.0)} shard ({_t(p1['t_step_mem'])}) plus "
        f"{KPP_COLLECTIVES} collectives over {lv1['gpus']} ranks ({_t(p1['t_step_coll'])}) plus "
        f"{hw['step_overhead_us']:.0f} us of launches and syncs: {_t(p1['t_total'])} for k-means++ against "
        f"{_t(lv1['t_lloyd'])} for all {cfg['n_iter']} Lloyd iterations. In FLOPs it is only "
        f"{p1['trials']} Lloyd iterations; the time is the {p1['k']:,} memory-bound steps. Remedies: "
        "`init_max_points` (the pass shrinks with the subset, the step count does not), k-means|| "
        '(`init="k-means||"`: a few passes instead of k, but k sequential steps of a local k-means++ '
        "on ~R l candidates remain; the init table above says where it pays), or random init for the "
        "resampled runs. The variant below quantifies the first.",
    ]
    out += [
        f"{len(out) + 1}. **All-reduce volume.** Level 1: {_b(ll1['allreduce_bytes'])} of float64 sums per "
        f"iteration ({_t(ll1['t_allreduce'])} at {hw['net_gbps']:.0f} GB/s per GPU, "
        f"{ll1['t_allreduce'] / ll1['t_iter']:.0%} of an iteration); level 2: {_b(ll2['allreduce_bytes'])} "
        + (
            "(none while the upper levels run replicated; "
            f"{_t(ring_allreduce_s(ll2['allreduce_bytes'], lv2['gpus'], Hardware(**hw)))} "
            f"on {lv2['gpus']} GPUs "
            "if sharded). "
            if lv2["world"] == 1
            else f"({_t(ll2['t_allreduce'])}: {ll2['t_allreduce'] / ll2['t_iter']:.0%} of a full iteration, "
            f"{ls2['t_allreduce'] / ls2['t_iter']:.0%} of a resampled one). "
        )
        + "Float32 sums with compensation, or a reduce-scatter so each rank updates k/W centroids, would "
        "halve it. Not what breaks first.",
    ]
    m2 = ll2["memory_resident"]
    out.append(
        f"{len(out) + 1}. **Memory and chunking at level 2** (k = {lv2['k']:,}): centroids "
        f"{_b(m2['centroids'])}, float64 sums {_b(m2['sums_f64'])}, update temporaries "
        f"{_b(m2['update_temps'])}, one score chunk "
        f"{_b(m2['scores'])}: {_b(m2['total'])} per rank with the {_b(m2['shard'])} shard; it fits, but "
        f"4k = {_b(4.0 * lv2['k'])} of scores per row leaves {ll2['chunk']:,} rows per chunk, and the score "
        f"traffic ({_t(ll2['t_scores'])} per iteration) adds {ll2['t_scores'] / ll2['t_matmul']:.0%} to the "
        "matmul time. A fused matmul + argmin kernel (as faiss' GPU search does) removes that term; "
        "the float64 update temporaries could be done in place."
    )
    m1 = ll1["memory_resident"]
    per_gpu_cap = 0.9 * hw["gpu_mem_gb"] * GB - (m1["total"] - m1["shard"])
    min_gpus = math.ceil(cfg["n"] * cfg["d"] * cfg["storage_bytes"] / per_gpu_cap)
    out.append(
        f"{len(out) + 1}. **Level-1 shard.** {ll1['n_local']:,} rows per rank = {_b(m1['shard'])} resident "
        f"(rank total {_b(m1['total'])}): fits on {lv1['gpus']} GPUs; below ~{min_gpus} GPUs it must be "
        f"streamed from the host at {hw['host_gbps']:.0f} GB/s ({_t(m1['shard'] / (hw['host_gbps'] * GB))} "
        f"per pass now, against {_t(ll1['t_matmul'])} of matmul per iteration: still compute-bound), or "
        "kept as bfloat16."
    )
    return out


def variant_section(cfg: Config, per_cluster: float) -> list[str]:
    """Totals again with k-means++ on at most ``per_cluster x k`` rows."""
    base = compute(cfg)
    var = compute(dataclasses.replace(cfg, init_points_per_cluster=per_cluster))
    both = None
    if cfg.upper_replicated:
        both = compute(dataclasses.replace(cfg, init_points_per_cluster=per_cluster, upper_replicated=False))
    rows = [
        [
            a["name"],
            f"{b['kpp']['n_init']:,}",
            _t(a["t_kpp"]),
            _t(b["t_kpp"]),
            _t(a["t_total"]),
            _t(b["t_total"]),
        ]
        for a, b in zip(base["levels"], var["levels"])
    ]
    head = ["level", "k-means++ rows (full run)", "k-means++ as configured", "k-means++ variant"]
    return [
        "",
        f"## Variant: k-means++ on at most {per_cluster:g} x k rows",
        "",
        *_table(head + ["level as configured", "level variant"], rows),
        "",
        f"Whole hierarchy: **{_t(var['t_total'])}**, {var['gpu_hours']:,.0f} GPU-hours with the variant "
        f"(as configured: {_t(base['t_total'])}, {base['gpu_hours']:,.0f} GPU-hours). The subset only "
        "shrinks the pass; the k sequential steps, their collectives and their launch overhead remain, "
        "which is why level 2 (500k steps x 11 runs) stays the long pole."
        + (
            f" With the upper levels also sharded over their GPUs: **{_t(both['t_total'])}** "
            f"(level 2: {_t(both['levels'][1]['t_total'])})."
            if both is not None
            else ""
        ),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hw, cfg = Hardware(), Config()
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
    p.add_argument("--init-max-points", type=float, default=None, help="k-means++ on at most this many rows")
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


def config_from_args(a: argparse.Namespace) -> Config:
    hw_fields = [f.name for f in dataclasses.fields(Hardware)]
    return Config(
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


HAND_WRITTEN = "<!-- hand-written below this line: scripts/scaling.py --out keeps it -->"


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
        args.out.parent.mkdir(parents=True, exist_ok=True)
        old = args.out.read_text() if args.out.exists() else ""
        if HAND_WRITTEN in old:  # sections written by hand below the marker survive a regeneration
            text = text.rstrip("\n") + "\n\n" + old[old.index(HAND_WRITTEN) :]
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    from curate.errors import cli_entry

    cli_entry(main)
