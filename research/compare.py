"""Curated vs random over several clustering seeds (the demos' core) and its markdown table."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.analysis.balance import SCALARS, mean_std, sample_balance
from curate.core.atomic import atomic_save_npy, atomic_write_json
from curate.hierarchy import HierarchicalKMeans
from curate.sampling import random_rows
from research.neighbours import cached_knn_radius

log = logging.getLogger(__name__)

__all__ = [
    "METRIC_LABELS",
    "CurationSettings",
    "compare_over_seeds",
    "embeddings_file",
    "fit_hierarchy",
    "reference_clustering",
    "summary_table",
]


@dataclass
class CurationSettings:
    """How a demo clusters and samples.

    Attributes:
        levels: ``{k, resample_steps, sample_size}`` per level, finest first.
        n_iter: Lloyd iterations of every k-means.
        distance: ``"cosine"`` (spherical k-means) or ``"l2"``.
        init_max_points: k-means++ of the first k-means of each level on a seeded subset of at
            most this many rows (None: all rows). Resampling steps always run on their own sample.
        leaf_strategy: leaf selection inside level-1 clusters (``random``, the paper's best).
        ref_k: clusters of the reference k-means (an independent, flat, fine clustering).
        ref_seed: its seed (distinct from the curation seeds).
        ref_n_iter: its Lloyd iterations.
    """

    levels: list[dict[str, int]]
    n_iter: int = 20
    distance: str = "cosine"
    init_max_points: int | None = None
    leaf_strategy: str = "random"
    ref_k: int = 1000
    ref_seed: int = 1000
    ref_n_iter: int = 50


def fit_hierarchy(
    input_path: str | Path, settings: CurationSettings, seed: int, folder: Path
) -> tuple[HierarchicalKMeans, float, bool]:
    """The curation hierarchy of ``seed`` in ``folder``, made by the cluster stage's driver
    (:func:`curate.cluster.cluster`): fitted and saved there, or reused when ``folder`` already holds
    the clustering of these settings and this input. ``folder`` is a clustering folder
    ``curate.report`` and ``curate.sample`` read.

    Args:
        input_path: the ``(N, d)`` embeddings: an embedding store or a ``.npy`` (``input.path``).
        settings: the clustering settings (``cluster.*`` of the stage's config).
        seed: clustering seed.
        folder: the clustering folder.

    Returns:
        ``(HierarchicalKMeans, seconds the fit took, reused)``.

    Raises:
        IdentityError: ``folder`` holds a clustering with other settings or of another input.
    """
    from omegaconf import OmegaConf

    from curate.cluster import cluster
    from curate.pipeline import compose_stage

    values = {
        "input.path": str(input_path),
        "seed": int(seed),
        "name": folder.name,
        "cluster.n_iter": settings.n_iter,
        "cluster.distance": settings.distance,
        "cluster.init_max_points": settings.init_max_points,
        "device": "cpu",
    }
    cfg = compose_stage("cluster", [], values)
    cfg = OmegaConf.merge(cfg, {"cluster": {"levels": [dict(level) for level in settings.levels]}})  # typed records
    manifest = folder / "manifest.json"
    before = manifest.read_bytes() if manifest.exists() else None
    cluster(cfg, out=folder)
    reused = before is not None and manifest.read_bytes() == before  # the stage skipped: nothing rewritten
    seconds = float(json.loads((folder / "metrics.json").read_text()).get("seconds", 0.0))
    return HierarchicalKMeans.load(folder), seconds, reused


def embeddings_file(x: Any, folder: Path) -> Path:
    """``folder/embeddings.npy``: the ``(N, d)`` embeddings ``x`` (float32) for the cluster stage,
    which reads its input from disk; kept when it already holds them.

    Raises:
        ValueError: it holds other embeddings.
    """
    path = folder / "embeddings.npy"
    x = np.asarray(x, dtype=np.float32)
    if path.exists():
        held = np.load(path, mmap_mode="r", allow_pickle=False)
        if held.shape == x.shape and np.array_equal(held, x):
            return path
        raise ValueError(f"{path} holds other embeddings than these; use another --out")
    atomic_save_npy(path, x)
    return path


def reference_clustering(x: Any, settings: CurationSettings, folder: Path | None = None) -> tuple[np.ndarray, float]:
    """The fine reference clustering: a flat k-means (``ref_k``, ``ref_seed``) of the embeddings.

    It is independent of the curation hierarchy (own seed, flat, no resampling): a label-free view
    of the concepts the embedding separates. Caveat (docs/demos.md): in high dimension its cells
    hold nearly equal pool mass (centroids follow about p), so the *entropy* over them is already
    near its maximum for the pool and a random sample; read the shares of its smallest / largest
    clusters instead. Cached in ``folder/ref_assign.npy`` (+ ``ref.json``).

    Returns:
        ``((N,) int64 assignment, seconds)``.
    """
    from curate.kmeans import KMeans

    meta = {
        "k": settings.ref_k,
        "seed": settings.ref_seed,
        "n_iter": settings.ref_n_iter,
        "distance": settings.distance,
    }
    if folder is not None and (folder / "ref.json").exists():
        saved = json.loads((folder / "ref.json").read_text())
        assign = np.load(folder / "ref_assign.npy", allow_pickle=False)
        if saved.get("settings") == meta and len(assign) == len(x):
            return assign, float(saved.get("seconds", 0.0))
    t0 = time.perf_counter()
    km = KMeans(
        k=min(settings.ref_k, len(x)),
        n_iter=settings.ref_n_iter,
        seed=settings.ref_seed,
        distance=settings.distance,
    ).fit(x)
    assign = km.labels_.numpy().astype(np.int64)
    seconds = time.perf_counter() - t0
    if folder is not None:
        atomic_save_npy(folder / "ref_assign.npy", assign)
        atomic_write_json(folder / "ref.json", {"settings": meta, "seconds": seconds, "inertia": km.inertia})
    return assign, seconds


def compare_over_seeds(
    x: Any,
    labels: np.ndarray | None,
    settings: CurationSettings,
    budget: int,
    seeds: Sequence[int],
    n_rarest: int = 3,
    out: Path | None = None,
    input_desc: dict[str, Any] | None = None,
    ref_assign: np.ndarray | None = None,
    density: bool = True,
) -> dict[str, Any]:
    """Curate ``budget`` items with each seed, draw a random sample of the same size, measure both.

    Per seed ``s``: the hierarchy (:func:`fit_hierarchy`, seed ``s``), a hierarchical balanced sample
    of ``budget`` items (sampling seed ``s``), a uniform random sample of the same size
    (:func:`curate.sampling.random_rows`, seed ``s``); both measured by :func:`sample_balance` over the labels
    (never shown to the clustering) and over the reference clustering. With ``out``, writes
    ``out/cluster_seed<s>/`` (the hierarchy, by the cluster stage: reused by a re-run),
    ``out/sample_seed<s>/indices.npy`` and ``out/random_seed<s>/indices.npy``.

    Args:
        x: ``(N, d)`` embeddings.
        labels: ``(N,)`` int labels, or None.
        settings: clustering settings (and the reference clustering's).
        budget: sample size.
        seeds: clustering / sampling seeds.
        n_rarest: rare labels pooled by ``rarest_share``.
        out: output folder (also caches hierarchies and the reference clustering).
        input_desc: ``{"kind": "store" | "npy", "path": ...}``: where ``x`` lies on disk, the cluster
            stage's ``input.path`` (recorded, with its identity, in the hierarchies' manifests); None:
            ``x`` is written to ``out/embeddings.npy`` (:func:`embeddings_file`; a temporary folder
            without ``out``).
        ref_assign: a precomputed reference clustering (else computed, or loaded from ``out``).
        density: also measure the share of the sparsest / densest 10% of the pool
            (:func:`knn_radius`, cached in ``out/knn_radius.npy``).

    Returns:
        ``pool`` (balance of the whole pool), ``runs`` (per seed: ``seed``, ``cluster_seconds``,
        ``reused``, and for ``curated``, ``random`` and ``pool`` the balance numbers plus
        ``level_entropy`` / ``top_normalized_entropy``: the normalised entropy over the clusters of
        every level of this seed's hierarchy), ``summary``
        (``{"curated" | "random" | "pool": {metric: mean_std}}``), ``ref_seconds`` and the settings.
    """
    n = len(x)
    ref_seconds = 0.0
    if ref_assign is None:
        ref_assign, ref_seconds = reference_clustering(x, settings, out)
    radius, radius_seconds = None, 0.0
    if density:
        radius, radius_seconds = cached_knn_radius(x, settings.distance, out)
    pool = sample_balance(np.arange(n), labels, n_rarest, ref_assign, radius=radius)
    measure = {"labels": labels, "n_rarest": n_rarest, "ref_assign": ref_assign, "radius": radius}
    runs = []
    with contextlib.ExitStack() as stack:
        work = out if out is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        input_path = Path(input_desc["path"]) if input_desc and input_desc.get("path") else embeddings_file(x, work)
        for seed in seeds:
            runs.append(_one_seed(x, settings, budget, seed, measure, out, input_path, work))
            log.info(
                "seed %d: %d items; ref entropy curated %.4f / random %.4f%s",
                seed,
                runs[-1]["curated"]["n"],
                runs[-1]["curated"].get("ref_normalized_entropy", math.nan),
                runs[-1]["random"].get("ref_normalized_entropy", math.nan),
                ""
                if labels is None
                else f"; rarest share curated {runs[-1]['curated']['rarest_share']:.4f} / "
                f"random {runs[-1]['random']['rarest_share']:.4f} (pool {pool['rarest_share']:.4f})",
            )
    return {
        "settings": asdict(settings),
        "budget": int(budget),
        "seeds": [int(s) for s in seeds],
        "n_rarest": int(n_rarest),
        "pool": pool,
        "runs": runs,
        "summary": _summarise(pool, runs, labels is not None),
        "ref_seconds": ref_seconds,
        "radius_seconds": radius_seconds,
    }


def _one_seed(
    x: Any,
    settings: CurationSettings,
    budget: int,
    seed: int,
    measure: dict[str, Any],
    out: Path | None,
    input_path: Path,
    work: Path,
) -> dict[str, Any]:
    """One seed of :func:`compare_over_seeds`: fit (or reuse) in ``work``, sample, draw the
    baseline, measure (samples written to ``out``, when given)."""
    from curate.sampling import hierarchical_sample, sample_stats

    n = len(x)
    folder = work / f"cluster_seed{seed}"
    model, seconds, reused = fit_hierarchy(input_path, settings, seed, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a shortfall is reported through `n`
        curated = hierarchical_sample(model.levels_, budget, strategy=settings.leaf_strategy, seed=seed).indices
    random = random_rows(n, len(curated), seed)
    if out is not None:
        for name, idx in (("sample", curated), ("random", random)):
            atomic_save_npy(out / f"{name}_seed{seed}" / "indices.npy", idx)
            atomic_write_json(
                out / f"{name}_seed{seed}" / "stats.json",
                {"seed": seed, "returned": int(len(idx)), "requested": int(budget), "cluster_dir": str(folder)},
            )
    run: dict[str, Any] = {
        "seed": int(seed),
        "cluster_seconds": seconds,
        "reused": reused,
        "levels_k": [level.k for level in model.levels_],
    }
    for name, idx in (("curated", curated), ("random", random), ("pool", np.arange(n))):
        balance = {}
        if name != "pool":
            balance = sample_balance(
                idx, measure["labels"], measure["n_rarest"], measure["ref_assign"], radius=measure["radius"]
            )
        own = sample_stats(model.levels_, idx)["levels"]
        balance["level_entropy"] = [lv["normalized_entropy"] for lv in own]
        balance["top_normalized_entropy"] = own[-1]["normalized_entropy"]
        run[name] = balance
    return run


def _summarise(pool: dict[str, Any], runs: list[dict[str, Any]], has_labels: bool) -> dict[str, dict[str, Any]]:
    """``{"pool" | "curated" | "random": {metric: value or mean_std over seeds}}``."""
    summary: dict[str, dict[str, Any]] = {"pool": {k: pool[k] for k in SCALARS if k in pool}}
    summary["pool"]["top_normalized_entropy"] = float(np.mean([r["pool"]["top_normalized_entropy"] for r in runs]))
    for name in ("curated", "random"):
        summary[name] = {k: mean_std([r[name][k] for r in runs]) for k in SCALARS if k in runs[0][name]}
        if has_labels:
            summary[name]["rarest_gain"] = mean_std([r[name]["rarest_share"] / pool["rarest_share"] for r in runs])
    return summary


METRIC_LABELS = {
    "top_normalized_entropy": "entropy over the hierarchy's own top-level clusters / log(k_top)",
    "label_entropy": "label entropy (nats)",
    "label_normalized_entropy": "label entropy / log(#labels)",
    "rarest_share": "share of the {n} rarest labels",
    "rarest_gain": "rare-label gain (share / pool share)",
    "ref_normalized_entropy": "reference-cluster entropy / log(k_ref)",
    "ref_smallest_share": "share of the smallest 10% reference clusters",
    "ref_largest_share": "share of the largest 10% reference clusters",
    "ref_max_share": "largest share one reference cluster takes",
    "ref_touched": "reference clusters touched",
    "sparsest_share": "share of the sparsest 10% of the pool (10-NN radius)",
    "densest_share": "share of the densest 10% of the pool (10-NN radius)",
}


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, dict):
        if len(value.get("values", [])) > 1:
            return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"
        return f"{value['mean']:.{digits}f}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_table(result: dict[str, Any], rare_label: str = "labels") -> str:
    """A markdown table pool / random / curated of :func:`compare_over_seeds`'s summary."""
    summary = result["summary"]
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [
        f"| metric | pool | random (seeds {seeds}) | curated (seeds {seeds}) |",
        "|---|---|---|---|",
    ]
    for key, label in METRIC_LABELS.items():
        if key not in summary["curated"]:
            continue
        label = label.format(n=result["n_rarest"]).replace("labels", rare_label)
        digits = 0 if key == "ref_touched" else 4
        pool = summary["pool"].get(key, 1.0 if key == "rarest_gain" else "")
        lines.append(
            f"| {label} | {_fmt(pool, digits)} | {_fmt(summary['random'][key], digits)} | "
            f"{_fmt(summary['curated'][key], digits)} |"
        )
    return "\n".join(lines)
