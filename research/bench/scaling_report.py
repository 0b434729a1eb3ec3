"""The markdown report of the scaling cost model (:mod:`research.bench.costmodel`): configuration,
formulas, per-level tables, memory per rank and what would break first.

    >>> text = render(compute(cfg), "python scripts/scaling.py")
    >>> text += "\n".join(variant_section(cfg, 20.0)) + "\n"
    >>> write_report(path, text)    # keeps what is written by hand below HAND_WRITTEN
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curate.core.atomic import atomic_write_text
from research.bench.costmodel import (
    GB,
    KPP_COLLECTIVES,
    TB,
    Hardware,
    ScalingConfig,
    compute,
    kmeans_parallel,
    kmeanspp,
    ring_allreduce_s,
)

__all__ = ["FORMULAS", "HAND_WRITTEN", "breaks_first", "init_choice_table", "render", "variant_section", "write_report"]

HAND_WRITTEN = "<!-- hand-written below this line: scripts/scaling.py --out keeps it -->"

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


def _config_section(cfg: dict[str, Any], command: str) -> list[str]:
    """Title, provenance and the configuration's bullet list."""
    hw = cfg["hw"]
    init_on = "all rows"
    if cfg["init_max_points"] or cfg["init_points_per_cluster"]:
        subset = f"init_max_points={cfg['init_max_points']}, per cluster={cfg['init_points_per_cluster']}"
        init_on = f"a subset ({subset})"
    return [
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
    ]


def _per_level_section(res: dict[str, Any]) -> list[str]:
    """The per-level table and the whole hierarchy's totals."""
    cfg = res["config"]
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
    l1 = res["levels"][0]
    return _table(head, rows) + [
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
    ]


def _per_run(res: dict[str, Any], kind: str, cells: Callable[[dict[str, Any], int], list[str]]) -> list[list[str]]:
    """One table row per run of every level (full, resampled): ``"<level> (<run>)"`` then
    ``cells(costs, runs)`` of its Lloyd (``kind="lloyd"``) or k-means++ (``"kpp"``) record."""
    runs = [(lv["name"], tag, rec, count) for lv in res["levels"] for tag, rec, count in _runs(lv, kind)]
    return [[f"{name} ({tag})", *cells(rec, count)] for name, tag, rec, count in runs]


def _lloyd_terms_table(res: dict[str, Any]) -> list[str]:
    """One Lloyd iteration of every run, term by term."""
    rows = _per_run(
        res,
        "lloyd",
        lambda ll, _: [
            f"{ll['n_local']:,}",
            f"{ll['chunk']:,}",
            _t(ll["t_matmul"]),
            _t(ll["t_scores"]),
            f"{_t(ll['t_rows'])} ({'HBM' if ll['resident'] else 'host'})",
            _t(ll["t_allreduce"]),
            _t(ll["t_update"]),
            _t(ll["t_launch"]),
            _t(ll["t_iter"]),
        ],
    )
    head = ["level (run)", "rows per rank", "chunk rows", "matmul", "score traffic", "rows in", "all-reduce"]
    return _table(head + ["update", "launches", "t/iter"], rows)


def _kpp_table(res: dict[str, Any]) -> list[str]:
    """k-means++ of every run: its sequential steps and their cost."""
    rows = _per_run(
        res,
        "kpp",
        lambda pp, count: [
            f"{pp['n_init']:,}",
            f"{pp['k']:,}",
            str(pp["trials"]),
            _f(pp["flops"]),
            _b(pp["step_bytes_per_rank"]),
            f"{_t(pp['t_step'])} ({_t(pp['t_step_coll'])})",
            _t(pp["t_total"]),
            str(count),
            _t(pp["t_total"] * count),
        ],
    )
    head = ["level (run)", "rows", "k = steps", "trials", "FLOPs (= trials Lloyd iters)", "bytes/step/rank"]
    return _table(head + ["t/step (collectives)", "t/run", "runs", "total"], rows)


def _split_paragraph(res: dict[str, Any]) -> str:
    """The level-1 split in one paragraph."""
    cfg, hw = res["config"], res["config"]["hw"]
    sp = res["levels"][0]["split"]
    return (
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
        f"{sp['leaves']:,} leaf centroids ({_b(sp['leaf_centroid_bytes'])}) are level 2's input."
    )


def _memory_table(res: dict[str, Any]) -> list[str]:
    """Memory per rank at the peak of a Lloyd step, shard resident."""
    hw = res["config"]["hw"]
    keys = ("shard", "centroids", "sums_f64", "update_temps", "scores", "labels", "total")

    def cells(ll: dict[str, Any], _: int) -> list[str]:
        fits = "yes" if ll["resident"] else f"no: stream it ({_b(ll['memory']['total'])})"
        return [_b(ll["memory_resident"][key]) for key in keys] + [fits]

    head = ["level (run)", "shard", "centroids", "float64 sums", "update temps", "scores chunk", "labels"]
    return _table(head + ["total", f"fits in {hw['gpu_mem_gb']:.0f} GB?"], _per_run(res, "lloyd", cells))


def render(res: dict[str, Any], command: str) -> str:
    """The markdown report of :func:`~research.bench.costmodel.compute`'s result.

    Args:
        res: ``compute(cfg)``.
        command: the command line that produced it (printed in the report).
    """
    lines = _config_section(res["config"], command)
    lines += ["## Formulas", "", FORMULAS, "## Per level", ""]
    lines += _per_level_section(res)
    lines += ["", "### One Lloyd iteration, term by term", ""] + _lloyd_terms_table(res)
    lines += ["", "### k-means++ (sequential steps)", ""] + _kpp_table(res)
    lines += ["", "### Init of each level's first k-means: k-means++ or k-means||", ""] + init_choice_table(res)
    lines += ["", _split_paragraph(res), "", "## Memory per rank (peak of a Lloyd step, shard resident)", ""]
    lines += _memory_table(res)
    lines += ["", "## What would break first", ""] + breaks_first(res) + [""]
    return "\n".join(lines)


def init_choice_table(res: dict[str, Any]) -> list[str]:
    """Per level, the first k-means' init both ways, and which one the configuration uses."""
    cfg = ScalingConfig.from_dict(res["config"])
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


def _split_items(res: dict[str, Any]) -> list[str]:
    """The level-1 split's bottlenecks."""
    cfg, hw = res["config"], res["config"]["hw"]
    lv1 = res["levels"][0]
    sp = lv1["split"]
    mem = sp["memory"]
    shuffle = 4.0 * cfg["n"] * cfg["d"]
    out: list[str] = []
    if not sp["fits"]:
        out.append(
            f"**The level-1 split does not fit on a GPU**: {sp['batches']} batch(es) of "
            f"clusters hold sub-centroids {_b(mem['sub_centroids'])} + float64 slot sums "
            f"{_b(mem['sums_f64'])} + the {_b(mem['shard'])} shard = {_b(mem['total'])} per rank against "
            f"{hw['gpu_mem_gb']:.0f} GB: lower `split_memory_mb`."
        )
    if sp["regroup"]:
        out.append(
            f"**The level-1 split's exchange.** Regrouped by cluster "
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
            f"**The level-1 split's slot sums.** {sp['leaves']:,} slots: "
            f"{_b(sp['leaf_centroid_bytes'])} of sub-centroids (on the host between batches) and a "
            f"{_b(sp['allreduce_bytes'])} all-reduce per iteration ({_t(sp['t_allreduce'])}, "
            f"{sp['t_allreduce'] / sp['t_iter']:.0%} of a split iteration). In {sp['batches']} batches the device "
            f"holds {_b(mem['sub_centroids'] + mem['sums_f64'])} ({_b(mem['total'])} with the shard), at the "
            f"price of {sp['batches'] - 1} extra reads of the shard per iteration. Regrouping the rows by "
            f"cluster once (an all-to-all of {_b(shuffle)}, "
            f"{_t(shuffle / lv1['gpus'] / (hw['net_gbps'] * GB))} at the network rate, `split_regroup=True`) lets "
            "each rank split whole clusters with no all-reduce."
        )
    return out


def _upper_items(res: dict[str, Any]) -> list[str]:
    """Replicated upper levels, and k-means++, all-reduce and memory at every level."""
    cfg, hw = res["config"], res["config"]["hw"]
    lv1, lv2 = res["levels"][0], res["levels"][1]
    p1, ll1, ll2, ls2 = lv1["kpp"], lv1["lloyd"], lv2["lloyd"], lv2["lloyd_sample"]
    shares = ", ".join(f"level {lv['name']} {lv['t_kpp'] / lv['t_total']:.0%}" for lv in res["levels"])
    out: list[str] = []
    if cfg["upper_replicated"]:
        pp2 = lv2["kpp"]
        m2r = ll2["memory_resident"]
        out.append(
            f"**Upper levels run replicated: their GPUs do not help.** Level 2 clusters "
            f"{lv2['n_in']:,} rows on every one of its {lv2['gpus']} GPUs: {_t(ll2['t_iter'])} per full "
            "Lloyd iteration and "
            f"{_t(pp2['t_total'])} per full k-means++ ({pp2['k']:,} steps of {_t(pp2['t_step'])}, each "
            f"{cfg['row_passes']} passes over {_b(lv2['n_in'] * cfg['d'] * 4.0)}), "
            f"{_t(lv2['t_total'])} for the level; memory per GPU {_b(m2r['total'])}. Sharding level 2 over "
            f"its {lv2['gpus']} GPUs (what `curate.hierarchy` does by default) divides the "
            "Lloyd and k-means++ passes by 16."
        )
    out += [
        f"**k-means++ is sequential and dominates the rest.** {res['kpp_steps']:,} "
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
        f"**All-reduce volume.** Level 1: {_b(ll1['allreduce_bytes'])} of float64 sums per "
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
        f"**Memory and chunking at level 2** (k = {lv2['k']:,}): centroids "
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
        f"**Level-1 shard.** {ll1['n_local']:,} rows per rank = {_b(m1['shard'])} resident "
        f"(rank total {_b(m1['total'])}): fits on {lv1['gpus']} GPUs; below ~{min_gpus} GPUs it must be "
        f"streamed from the host at {hw['host_gbps']:.0f} GB/s ({_t(m1['shard'] / (hw['host_gbps'] * GB))} "
        f"per pass now, against {_t(ll1['t_matmul'])} of matmul per iteration: still compute-bound), or "
        "kept as bfloat16."
    )
    return out


def breaks_first(res: dict[str, Any]) -> list[str]:
    """The bottlenecks, worst first, with their numbers (a numbered markdown list)."""
    return [f"{i}. {item}" for i, item in enumerate(_split_items(res) + _upper_items(res), 1)]


def variant_section(cfg: ScalingConfig, per_cluster: float) -> list[str]:
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


def write_report(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; what stands below :data:`HAND_WRITTEN` in the old file
    is kept (sections written by hand survive a regeneration)."""
    old = path.read_text() if path.exists() else ""
    if HAND_WRITTEN in old:
        text = text.rstrip("\n") + "\n\n" + old[old.index(HAND_WRITTEN) :]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
