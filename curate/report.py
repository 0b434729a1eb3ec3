"""What curation did, for a data team: balance numbers and a static HTML report.

    python -m curate.report --cluster outputs/cluster/web [--sample outputs/sample/web] [--out DIR]

Writes ``DIR/report.html`` with its PNGs beside it (no JavaScript, no external CSS, no network):
per level the cluster-size distribution, pool vs curated share of the top-level clusters, example
items of a few top-level clusters (images for Fashion-MNIST / image-folder / image-list stores,
texts for WordNet / text-lines / JSONL stores), pool / random / curated label histograms when the
store has labels, and for 2-D ``.npy`` inputs a scatter of pool vs sample. ``DIR`` defaults to
``<sample>/report`` (or ``<cluster>/report`` without ``--sample``). Without ``--sample`` the report
draws a hierarchical sample of ``--target`` items itself and says so.

The first part of the module holds the balance numbers the demo scripts report
(``scripts/demo_text_wordnet.py``, ``scripts/demo_images_fmnist.py``): balance of a sample over the
labels *and* over an independent fine reference clustering of the embeddings, curated vs a uniform
random sample of the same size, averaged over several clustering seeds (METHOD.md, "What balanced
means, measured").
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.io.atomic import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "CurationSettings",
    "build_report",
    "cached_knn_radius",
    "compare_over_seeds",
    "embedding_diagnostics",
    "fit_hierarchy",
    "knn_agreement",
    "knn_radius",
    "label_gains",
    "load_images",
    "load_report_data",
    "load_texts",
    "mean_std",
    "random_baseline",
    "reference_clustering",
    "sample_balance",
    "summary_table",
    "top_level_purity",
]


# ----------------------------------------------------------------------------------------------
# Balance of a sample: over labels and over a fine reference clustering
# ----------------------------------------------------------------------------------------------
def _rarest(pool_counts: np.ndarray, n: int) -> np.ndarray:
    """Ids of the ``n`` smallest non-empty groups of the pool (fewest items first, ties by id)."""
    present = np.flatnonzero(pool_counts)
    return present[np.argsort(pool_counts[present], kind="stable")[: max(0, min(n, len(present)))]]


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def sample_balance(
    indices: np.ndarray,
    labels: np.ndarray | None = None,
    n_rarest: int = 3,
    ref_assign: np.ndarray | None = None,
    ref_smallest_fraction: float = 0.1,
    radius: np.ndarray | None = None,
) -> dict[str, Any]:
    """How balanced a sample is over the labels and over a reference clustering of the pool.

    Args:
        indices: ``(m,)`` int item ids of the sample (repeats count).
        labels: ``(N,)`` int labels of the pool, or None.
        n_rarest: how many of the pool's rarest labels ``rarest_share`` pools.
        ref_assign: ``(N,)`` int reference-cluster id of every pool item (an independent k-means of
            the embeddings), or None.
        ref_smallest_fraction: ``ref_smallest_share`` (``ref_largest_share``) pools the smallest
            (largest) ``ceil(fraction * k)`` reference clusters by pool count.
        radius: ``(N,)`` k-NN radius of every pool item (:func:`knn_radius`, large = sparse region),
            or None.

    Returns:
        ``n`` and, with labels: ``label_counts``, ``label_entropy`` (nats), ``label_normalized_entropy``
        (over ``log`` of the number of labels present in the pool), ``rarest_labels``,
        ``rarest_share``; with ``ref_assign``: ``ref_k``, ``ref_counts``, ``ref_normalized_entropy``
        (over ``log ref_k``), ``ref_touched`` (reference clusters holding a sampled item),
        ``ref_max_share``, ``ref_smallest_share`` and ``ref_largest_share`` (share of the sample in the
        smallest / largest ``ceil(fraction * k)`` reference clusters by pool count). A uniform random
        sample gives about the pool's own numbers. With ``radius``: ``density_deciles`` (share of the
        sample in each tenth of the pool sorted by k-NN radius, densest first; 0.1 each for a random
        sample), ``sparsest_share`` (the last tenth) and ``densest_share`` (the first).
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    out: dict[str, Any] = {"n": int(indices.size)}
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        n_labels = int(labels.max()) + 1
        pool_counts = np.bincount(labels, minlength=n_labels)
        counts = np.bincount(labels[indices], minlength=n_labels)
        rare = _rarest(pool_counts, n_rarest)
        h = _entropy(counts)
        present = int(np.count_nonzero(pool_counts))
        out.update(
            label_counts=counts.tolist(),
            label_entropy=h,
            label_normalized_entropy=h / math.log(present) if present > 1 else 1.0,
            rarest_labels=rare.tolist(),
            rarest_share=float(counts[rare].sum() / max(indices.size, 1)),
        )
    if ref_assign is not None:
        ref_assign = np.asarray(ref_assign, dtype=np.int64)
        k = int(ref_assign.max()) + 1
        pool_counts = np.bincount(ref_assign, minlength=k)
        counts = np.bincount(ref_assign[indices], minlength=k)
        n_tail = math.ceil(ref_smallest_fraction * k)
        smallest = _rarest(pool_counts, n_tail)
        largest = np.argsort(-pool_counts, kind="stable")[:n_tail]
        nonempty = int(np.count_nonzero(pool_counts))
        out.update(
            ref_k=k,
            ref_counts=counts.tolist(),
            ref_normalized_entropy=_entropy(counts) / math.log(nonempty) if nonempty > 1 else 1.0,
            ref_touched=int(np.count_nonzero(counts)),
            ref_max_share=float(counts.max() / max(indices.size, 1)),
            ref_smallest_share=float(counts[smallest].sum() / max(indices.size, 1)),
            ref_largest_share=float(counts[largest].sum() / max(indices.size, 1)),
        )
    if radius is not None:
        radius = np.asarray(radius)
        edges = np.quantile(radius, np.linspace(0, 1, 11))
        decile = np.clip(np.searchsorted(edges, radius[indices], side="right") - 1, 0, 9)
        shares = np.bincount(decile, minlength=10) / max(indices.size, 1)
        out.update(
            density_deciles=shares.tolist(),
            sparsest_share=float(shares[-1]),
            densest_share=float(shares[0]),
        )
    return out


def knn_radius(
    x: Any, k: int = 10, n_ref: int = 20000, distance: str = "cosine", seed: int = 0, chunk: int = 1024
) -> np.ndarray:
    """Local sparsity of every item: the distance to its ``k``-th nearest neighbour among ``n_ref`` pool items.

    A label-free, clustering-free view of density (large radius = sparse region). The neighbours are
    searched in a seeded uniform subset of ``n_ref`` items (the item itself excluded), which scales
    every radius alike and keeps the cost at ``N x n_ref`` distances.

    Args:
        x: ``(N, d)`` embeddings.
        k: which neighbour.
        n_ref: size of the neighbour subset (all items when ``N <= n_ref``).
        distance: ``"cosine"`` (``1 - cos``) or ``"l2"`` (Euclidean).
        seed: seed of the subset.
        chunk: query rows per matmul.

    Returns:
        ``(N,)`` float32 radii.
    """
    import torch

    n = len(x)
    ref_idx = np.arange(n) if n <= n_ref else np.sort(np.random.default_rng(seed).choice(n, n_ref, replace=False))
    position = np.full(n, -1, dtype=np.int64)
    position[ref_idx] = np.arange(len(ref_idx))
    ref = torch.from_numpy(np.array(x[ref_idx], dtype=np.float32))
    if distance == "cosine":
        ref = torch.nn.functional.normalize(ref, dim=1)
    ref_sq = (ref * ref).sum(1)
    k = min(k, len(ref_idx) - 1)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        q = torch.from_numpy(np.array(x[start : start + chunk], dtype=np.float32))
        if distance == "cosine":
            q = torch.nn.functional.normalize(q, dim=1)
        d = (q * q).sum(1, keepdim=True) - 2 * q @ ref.T + ref_sq[None, :]
        pos = torch.from_numpy(position[start : start + len(q)])
        mine = torch.nonzero(pos >= 0).flatten()
        d[mine, pos[mine]] = math.inf  # an item is not its own neighbour
        kth = d.topk(k, dim=1, largest=False).values[:, -1].clamp_(min=0)
        out[start : start + len(q)] = (kth / 2 if distance == "cosine" else kth.sqrt()).numpy()
    return out


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` of per-seed values (``std`` is the sample std, 0 for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()) if arr.size else math.nan, "std": std, "values": arr.tolist()}


SCALARS = (
    "top_normalized_entropy",
    "label_entropy",
    "label_normalized_entropy",
    "rarest_share",
    "ref_normalized_entropy",
    "ref_touched",
    "ref_max_share",
    "ref_smallest_share",
    "ref_largest_share",
    "sparsest_share",
    "densest_share",
)


# ----------------------------------------------------------------------------------------------
# Curated vs random over several clustering seeds (the demos' core)
# ----------------------------------------------------------------------------------------------
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
    x: Any,
    settings: CurationSettings,
    seed: int,
    folder: Path | None = None,
    input_desc: dict[str, Any] | None = None,
) -> tuple[Any, float, bool]:
    """Fit the curation hierarchy for ``seed`` or load the one saved in ``folder``.

    Args:
        x: ``(N, d)`` embeddings.
        settings: the clustering settings.
        seed: clustering seed.
        folder: where the hierarchy is saved (a clustering folder ``curate.report`` and
            ``curate.sample`` read); a finished one with the same settings is reused.
        input_desc: ``{"kind": "store" | "npy", "path": ...}`` recorded as the manifest's ``input``.

    Returns:
        ``(HierarchicalKMeans, seconds, reused)``.

    Raises:
        ValueError: ``folder`` holds a clustering with other settings or another input size.
    """
    from curate.hierarchy import HierarchicalKMeans

    t0 = time.perf_counter()
    model = HierarchicalKMeans(
        settings.levels,
        n_iter=settings.n_iter,
        seed=seed,
        distance=settings.distance,
        init_max_points=settings.init_max_points,
    )
    if folder is not None and (folder / "manifest.json").exists():
        saved = HierarchicalKMeans.load(folder)
        if saved.config() != model.config() or saved.n_items_ != len(x):
            raise ValueError(f"{folder} holds another clustering (settings or data differ); use another --out")
        return saved, float(json.loads((folder / "manifest.json").read_text()).get("fit_seconds", 0.0)), True
    model.fit(x)
    seconds = time.perf_counter() - t0
    if folder is not None:
        model.save(folder, extra={"input": input_desc or {}, "fit_seconds": seconds})
    return model, seconds, False


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
        assign = np.load(folder / "ref_assign.npy")
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


def random_baseline(n_items: int, size: int, seed: int) -> np.ndarray:
    """``(size,) int64`` sorted uniform random item ids without replacement (the baseline sample)."""
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(n_items, size=min(size, n_items), replace=False)).astype(np.int64)


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
    (:func:`random_baseline`, seed ``s``); both measured by :func:`sample_balance` over the labels
    (never shown to the clustering) and over the reference clustering. With ``out``, writes
    ``out/cluster_seed<s>/`` (the hierarchy), ``out/sample_seed<s>/indices.npy`` and
    ``out/random_seed<s>/indices.npy``.

    Args:
        x: ``(N, d)`` embeddings.
        labels: ``(N,)`` int labels, or None.
        settings: clustering settings (and the reference clustering's).
        budget: sample size.
        seeds: clustering / sampling seeds.
        n_rarest: rare labels pooled by ``rarest_share``.
        out: output folder (also caches hierarchies and the reference clustering).
        input_desc: recorded in the saved hierarchies' manifests.
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
    from curate.sampling import hierarchical_sample, sample_stats

    n = len(x)
    ref_seconds = 0.0
    if ref_assign is None:
        ref_assign, ref_seconds = reference_clustering(x, settings, out)
    radius, radius_seconds = None, 0.0
    if density:
        radius, radius_seconds = cached_knn_radius(x, settings.distance, out)
    pool = sample_balance(np.arange(n), labels, n_rarest, ref_assign, radius=radius)
    runs = []
    for seed in seeds:
        folder = out / f"cluster_seed{seed}" if out is not None else None
        model, seconds, reused = fit_hierarchy(x, settings, seed, folder, input_desc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a shortfall is reported through `n` below
            curated = hierarchical_sample(model.levels_, budget, strategy=settings.leaf_strategy, seed=seed).indices
        random = random_baseline(n, len(curated), seed)
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
            balance = sample_balance(idx, labels, n_rarest, ref_assign, radius=radius) if name != "pool" else {}
            own = sample_stats(model.levels_, idx)["levels"]
            balance["level_entropy"] = [lv["normalized_entropy"] for lv in own]
            balance["top_normalized_entropy"] = own[-1]["normalized_entropy"]
            run[name] = balance
        runs.append(run)
        log.info(
            "seed %d: %d items; ref entropy curated %.4f / random %.4f%s",
            seed,
            len(curated),
            runs[-1]["curated"].get("ref_normalized_entropy", math.nan),
            runs[-1]["random"].get("ref_normalized_entropy", math.nan),
            ""
            if labels is None
            else f"; rarest share curated {runs[-1]['curated']['rarest_share']:.4f} / "
            f"random {runs[-1]['random']['rarest_share']:.4f} (pool {pool['rarest_share']:.4f})",
        )
    summary: dict[str, dict[str, Any]] = {"pool": {k: pool[k] for k in SCALARS if k in pool}}
    summary["pool"]["top_normalized_entropy"] = float(np.mean([r["pool"]["top_normalized_entropy"] for r in runs]))
    for name in ("curated", "random"):
        summary[name] = {k: mean_std([r[name][k] for r in runs]) for k in SCALARS if k in runs[0][name]}
    if labels is not None:
        for name in ("curated", "random"):
            gains = [r[name]["rarest_share"] / pool["rarest_share"] for r in runs]
            summary[name]["rarest_gain"] = mean_std(gains)
    return {
        "settings": asdict(settings),
        "budget": int(budget),
        "seeds": [int(s) for s in seeds],
        "n_rarest": int(n_rarest),
        "pool": pool,
        "runs": runs,
        "summary": summary,
        "ref_seconds": ref_seconds,
        "radius_seconds": radius_seconds,
    }


def cached_knn_radius(x: Any, distance: str, out: Path | None) -> tuple[np.ndarray, float]:
    """:func:`knn_radius` of ``x`` (default settings), cached in ``out/knn_radius.npy``."""
    path = out / "knn_radius.npy" if out is not None else None
    if path is not None and path.exists():
        radius = np.load(path)
        if len(radius) == len(x):
            meta = out / "knn_radius.json"
            return radius, float(json.loads(meta.read_text()).get("seconds", 0.0)) if meta.exists() else 0.0
    t0 = time.perf_counter()
    radius = knn_radius(x, distance=distance)
    seconds = time.perf_counter() - t0
    if path is not None:
        atomic_save_npy(path, radius)
        atomic_write_json(out / "knn_radius.json", {"k": 10, "n_ref": 20000, "distance": distance, "seconds": seconds})
    return radius, seconds


def knn_agreement(
    x: Any,
    labels: np.ndarray,
    k: int = 20,
    n_queries: int | None = None,
    seed: int = 0,
    distance: str = "cosine",
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out ``k``-NN label agreement: for each query, the share of its neighbours with its label.

    How well an embedding separates the labels (1.0: every neighbourhood is pure). The neighbours are
    searched in the whole pool, the item itself excluded.

    Args:
        x: ``(N, d)`` embeddings.
        labels: ``(N,)`` int labels.
        k: neighbours per query.
        n_queries: query a seeded uniform subset of this many items (None: every item).
        seed: seed of the query subset.
        distance: ``"cosine"`` or ``"l2"``.
        chunk: query rows per matmul.

    Returns:
        ``((q,) float32 agreement, (q,) int64 query item ids)``.
    """
    import torch

    n = len(x)
    queries = (
        np.arange(n)
        if n_queries is None or n_queries >= n
        else np.sort(np.random.default_rng(seed).choice(n, n_queries, replace=False))
    )
    base = torch.from_numpy(np.array(x[:], dtype=np.float32))
    if distance == "cosine":
        base = torch.nn.functional.normalize(base, dim=1)
    base_sq = (base * base).sum(1)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    k = min(k, n - 1)
    out = []
    for start in range(0, len(queries), chunk):
        idx = torch.from_numpy(queries[start : start + chunk])
        q = base[idx]
        d = base_sq[idx, None] - 2 * q @ base.T + base_sq[None, :]
        d[torch.arange(len(idx)), idx] = math.inf  # not its own neighbour
        nn = d.topk(k, dim=1, largest=False).indices
        out.append((y[nn] == y[idx, None]).float().mean(dim=1))
    return torch.cat(out).numpy(), queries.astype(np.int64)


def embedding_diagnostics(
    x: Any,
    labels: np.ndarray,
    radius: np.ndarray,
    rare_labels: Sequence[int],
    distance: str = "cosine",
    n_queries: int | None = 5000,
) -> dict[str, Any]:
    """Does the embedding make the rare labels rare *regions*? What bounds the labels' gain.

    Returns:
        ``knn20_agreement`` (mean leave-one-out 20-NN label agreement over ``n_queries`` items),
        ``knn20_agreement_rare`` (over the queries of the rare labels), ``radius_percentile`` (per label,
        the median percentile of its items' k-NN radius among all pool items: above 0.5 = the label sits
        in sparser regions than the pool's typical item, which curation favours) and
        ``rare_radius_percentile`` (the same over the rare labels' items).
    """
    labels = np.asarray(labels, dtype=np.int64)
    agree, queries = knn_agreement(x, labels, 20, n_queries, distance=distance)
    rare_mask = np.isin(labels, np.asarray(rare_labels, dtype=np.int64))
    pct = np.empty(len(radius), dtype=np.float64)
    pct[np.argsort(radius, kind="stable")] = np.arange(len(radius)) / max(len(radius) - 1, 1)
    n_labels = int(labels.max()) + 1
    per_label = [float(np.median(pct[labels == c])) if np.any(labels == c) else None for c in range(n_labels)]
    rare_q = rare_mask[queries]
    return {
        "knn20_agreement": float(agree.mean()),
        "knn20_agreement_rare": float(agree[rare_q].mean()) if rare_q.any() else None,
        "knn_queries": int(len(queries)),
        "radius_percentile": per_label,
        "rare_radius_percentile": float(np.median(pct[rare_mask])) if rare_mask.any() else None,
    }


def top_level_purity(levels: Sequence[Any], labels: np.ndarray) -> float:
    """Share of items whose top-level cluster's majority label is their own (1.0: clusters never mix labels)."""
    ids = np.arange(len(levels[0].assign), dtype=np.int64)
    for level in levels:
        ids = np.asarray(level.assign, dtype=np.int64)[ids]
    labels = np.asarray(labels, dtype=np.int64)
    k, c = int(ids.max()) + 1, int(labels.max()) + 1
    table = np.bincount(ids * c + labels, minlength=k * c).reshape(k, c)
    return float(table.max(axis=1).sum() / len(labels))


def label_gains(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per label: pool share, mean random and curated share over seeds, and curated / random."""
    pool = np.asarray(result["pool"]["label_counts"], dtype=np.float64)
    pool = pool / pool.sum()
    random, _ = _mean_counts(result["runs"], "random", "label_counts")
    curated, _ = _mean_counts(result["runs"], "curated", "label_counts")
    return [
        {
            "label": int(c),
            "pool_share": float(pool[c]),
            "random_share": float(random[c]),
            "curated_share": float(curated[c]),
            "gain": float(curated[c] / random[c]) if random[c] > 0 else None,
        }
        for c in range(len(pool))
        if pool[c] > 0
    ]


# ----------------------------------------------------------------------------------------------
# Tables, figures and run facts shared by the demos
# ----------------------------------------------------------------------------------------------
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


def hardware_info() -> dict[str, Any]:
    """CPU model, cores, load average, torch version and threads: the facts that go with wall times."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }


def _mean_counts(runs: list[dict[str, Any]], name: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    shares = np.asarray([np.asarray(r[name][key], dtype=np.float64) / max(r[name]["n"], 1) for r in runs])
    return shares.mean(axis=0), shares.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(shares.shape[1])


COLORS = {"pool": "0.6", "random": "tab:orange", "curated": "tab:blue"}


def _log_axis(ax: Any, axis: str = "y") -> None:
    """Log scale with plain tick labels (0.01, 0.1, 100) and unlabelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    getattr(ax, f"set_{axis}scale")("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def plot_label_shares(
    ax: Any, result: dict[str, Any], names: Sequence[str] | None = None, title: str = "", log: bool = True
) -> None:
    """Grouped bars: share of every label in the pool, the random and the curated samples.

    Labels are sorted by pool share (largest first); error bars are the std over seeds; the
    ``n_rarest`` rarest labels are shaded.
    """
    pool = np.asarray(result["pool"]["label_counts"], dtype=np.float64)
    pool = pool / pool.sum()
    order = np.argsort(-pool, kind="stable")
    order = order[pool[order] > 0]
    xs = np.arange(len(order))
    width = 0.28
    ax.bar(xs - width, pool[order], width, color=COLORS["pool"], label="pool")
    for shift, name in ((0.0, "random"), (width, "curated")):
        mean, std = _mean_counts(result["runs"], name, "label_counts")
        ax.bar(xs + shift, mean[order], width, yerr=std[order], color=COLORS[name], label=name, error_kw={"lw": 0.6})
    rare = set(result["pool"]["rarest_labels"])
    for i, label in enumerate(order):
        if label in rare:
            ax.axvspan(i - 0.5, i + 0.5, color="0.93", zorder=-1)
    ax.set_xticks(xs)
    ax.set_xticklabels([names[i] if names else str(i) for i in order], rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(order) - 0.4)
    if log:
        _log_axis(ax)
    ax.set_ylabel("share of the set")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def _decile_bars(ax: Any, pool: np.ndarray, curves: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str) -> None:
    xs = np.arange(1, len(pool) + 1)
    w = 0.28
    ax.bar(xs - w, pool, w, color=COLORS["pool"], label="pool")
    for shift, name in ((0.0, "random"), (w, "curated")):
        mean, std = curves[name]
        ax.bar(xs + shift, mean, w, yerr=std, color=COLORS[name], label=name, error_kw={"lw": 0.6})
    ax.axhline(0.1, color="k", ls=":", lw=0.8)
    ax.set_xticks(xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of the set")
    ax.legend(fontsize=8)


def plot_ref_shares(ax: Any, result: dict[str, Any], title: str = "") -> None:
    """Share of the set held by each tenth of the reference clusters, sorted from largest to smallest in the pool.

    A random sample follows the pool (decreasing bars); a sample that favours the sparse regions
    moves mass to the right-hand tenths (the smallest reference clusters).
    """
    pool_counts = np.asarray(result["pool"]["ref_counts"], dtype=np.float64)
    order = np.argsort(-pool_counts, kind="stable")
    groups = np.array_split(order, 10)

    def deciles(counts: np.ndarray) -> np.ndarray:
        return np.array([counts[g].sum() for g in groups]) / max(counts.sum(), 1)

    curves = {}
    for name in ("random", "curated"):
        per_seed = np.array([deciles(np.asarray(r[name]["ref_counts"], dtype=np.float64)) for r in result["runs"]])
        curves[name] = (per_seed.mean(0), per_seed.std(0, ddof=1) if len(per_seed) > 1 else np.zeros(10))
    _decile_bars(
        ax,
        deciles(pool_counts),
        curves,
        f"tenth of the {len(order)} reference clusters (1 = largest in the pool, 10 = smallest)",
    )
    ax.set_title(title, fontsize=10)


def plot_density_shares(ax: Any, result: dict[str, Any], title: str = "") -> None:
    """Share of the set in each density decile of the pool (10-NN radius; 1 = densest, 10 = sparsest)."""
    curves = {}
    for name in ("random", "curated"):
        per_seed = np.array([r[name]["density_deciles"] for r in result["runs"]], dtype=np.float64)
        curves[name] = (per_seed.mean(0), per_seed.std(0, ddof=1) if len(per_seed) > 1 else np.zeros(10))
    pool = np.asarray(result["pool"]["density_deciles"], dtype=np.float64)
    _decile_bars(ax, pool, curves, "density decile of the pool by 10-NN radius (1 = densest, 10 = sparsest)")
    ax.set_title(title, fontsize=10)


def save_figure(fig: Any, path: Path, dpi: int = 90) -> None:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# The HTML report
# ----------------------------------------------------------------------------------------------
@dataclass
class ReportData:
    """Everything the report shows, loaded once.

    Attributes:
        cluster_dir: the clustering folder.
        manifest: its ``manifest.json``.
        levels: the hierarchy's levels (finest first).
        input_path: the clustered embeddings (store folder or ``.npy``), or None when unknown.
        array: ``(N, d)`` embeddings (memory-mapped) or None.
        ids: item ids (store) or None.
        labels: ``(N,)`` labels or None; ``label_names`` their names.
        source: the store's source description (``{"kind": "wordnet", ...}``) or None.
        sample: ``(m,)`` curated item ids; ``sample_origin`` says where they come from.
        random: ``(m,)`` uniform random item ids of the same size (the baseline).
        item_clusters: per level, ``(N,)`` cluster id of every item.
    """

    cluster_dir: Path
    manifest: dict[str, Any]
    levels: list[Any]
    input_path: Path | None
    array: Any
    ids: Sequence | None
    labels: np.ndarray | None
    label_names: list[str] | None
    source: dict[str, Any] | None
    sample: np.ndarray
    sample_origin: str
    random: np.ndarray
    item_clusters: list[np.ndarray] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return int(len(self.levels[0].assign))


def _find_sample(sample_dir: Path) -> tuple[np.ndarray, str, list[str]]:
    """The curated indices in a sample-stage folder (one budget, or the first ``n<size>/`` sub-folder)."""
    notes: list[str] = []
    path = sample_dir / "indices.npy"
    if not path.exists():
        subs = sorted(sample_dir.glob("*/indices.npy"))
        if not subs:
            raise FileNotFoundError(f"no indices.npy in {sample_dir} nor in its sub-folders")
        path = subs[0]
        if len(subs) > 1:
            notes.append(f"{sample_dir} holds {len(subs)} budgets; the report shows {path.parent.name}.")
    indices = np.load(path, allow_pickle=False)
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise ValueError(f"{path}: indices must be a 1-D integer array, got {indices.dtype} {indices.shape}")
    return indices.astype(np.int64), str(path), notes


def load_report_data(
    cluster_dir: str | os.PathLike,
    sample_dir: str | os.PathLike | None = None,
    input_path: str | os.PathLike | None = None,
    target: int | float = 0.1,
    seed: int = 0,
) -> ReportData:
    """Load the hierarchy, its input, labels, the curated sample and a random baseline.

    Args:
        cluster_dir: a clustering folder (``manifest.json`` + ``level<t>/``).
        sample_dir: a sample-stage folder (``indices.npy``); None: draw a hierarchical sample of
            ``target`` items here (the report says so).
        input_path: the clustered embeddings, when the manifest does not name them (or to override).
        target: sample size (count or fraction) when ``sample_dir`` is None.
        seed: seed of the drawn sample and of the random baseline.

    Raises:
        FileNotFoundError: no clustering, sample or input where named.
        ValueError: the input or the sample does not fit the hierarchy (the message names the file).
    """
    from curate.hierarchy import HierarchicalKMeans
    from curate.sampling import hierarchical_sample
    from curate.stage import item_rows, open_input, to_positions

    cluster_dir = Path(cluster_dir)
    model = HierarchicalKMeans.load(cluster_dir)
    manifest = json.loads((cluster_dir / "manifest.json").read_text())
    notes: list[str] = []
    path = Path(input_path) if input_path is not None else None
    if path is None and manifest.get("input", {}).get("path"):
        path = Path(manifest["input"]["path"])
        if not path.exists():  # moved or deleted since clustering: report the clusters alone
            notes.append(f"The clustered input {path} is gone: no examples, labels or scatter (pass --input).")
            path = None
    array = ids = labels = names = source = None
    rows = item_rows(cluster_dir)  # the clustering saw a subset of the input: map rows to items
    if path is not None:
        array, ids, labels, _ = open_input(path, rows)
        if array.shape[0] != model.n_items_:
            raise ValueError(
                f"input {path}: {array.shape[0]} rows, the clustering in {cluster_dir} has {model.n_items_}"
            )
        if path.is_dir():
            from curate.io.store import load_labels, read_manifest

            store_manifest = read_manifest(path)
            source = store_manifest.get("source") or (store_manifest.get("meta") or {}).get("source")
            if labels is not None:
                labels, names = load_labels(path)
                labels = labels if rows is None else labels[rows]
    elif not notes:
        notes.append("The clustering's manifest names no input: no examples, labels or scatter (pass --input).")
    if sample_dir is not None:
        sample, origin, more = _find_sample(Path(sample_dir))
        sample = to_positions(rows, sample, origin)
        notes.extend(more)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = hierarchical_sample(model.levels_, target, strategy="random", seed=seed).indices
        origin = f"drawn by the report: hierarchical sample, target {target}, random leaf selection, seed {seed}"
    if sample.size and (sample.min() < 0 or sample.max() >= model.n_items_):
        raise ValueError(f"sample ({origin}) holds item ids outside [0, {model.n_items_})")
    item_clusters = []
    current = np.arange(model.n_items_, dtype=np.int64)
    for level in model.levels_:
        current = np.asarray(level.assign, dtype=np.int64)[current]
        item_clusters.append(current)
    return ReportData(
        cluster_dir=cluster_dir,
        manifest=manifest,
        levels=model.levels_,
        input_path=path,
        array=array,
        ids=ids,
        labels=labels,
        label_names=names,
        source=source,
        sample=sample,
        sample_origin=origin,
        random=random_baseline(model.n_items_, len(sample), seed),
        item_clusters=item_clusters,
        notes=notes,
    )


# -- figures ---------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_cluster_sizes(data: ReportData, path: Path) -> Path:
    """Per level, the histogram of cluster sizes in items (log-spaced bins, log counts)."""
    from curate.sampling import cluster_item_counts

    plt = _plt()
    counts = cluster_item_counts(data.levels)
    n = len(counts)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for t, sizes in enumerate(counts):
        ax = axes[t // cols, t % cols]
        sizes = sizes[sizes > 0]
        top = max(int(sizes.max()), 2)
        bins = np.unique(np.round(np.logspace(0, math.log10(top + 1), 30)).astype(np.int64))
        ax.hist(sizes, bins=bins, color="tab:blue", edgecolor="white", lw=0.4)
        _log_axis(ax, "x")
        _log_axis(ax, "y")
        ax.set_title(
            f"level {t + 1}: {len(sizes)} clusters\nitems per cluster min {sizes.min()}, median "
            f"{int(np.median(sizes))}, max {sizes.max()}",
            fontsize=9,
        )
        ax.set_xlabel("items per cluster")
        ax.set_ylabel("clusters")
    for t in range(n, rows * cols):
        axes[t // cols, t % cols].axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path


def _top_counts(data: ReportData) -> dict[str, np.ndarray]:
    top = data.item_clusters[-1]
    k = data.levels[-1].k
    return {
        "pool": np.bincount(top, minlength=k),
        "curated": np.bincount(top[data.sample], minlength=k),
        "random": np.bincount(top[data.random], minlength=k),
    }


def figure_top_shares(data: ReportData, path: Path) -> Path:
    """Share of every top-level cluster in the pool, the curated and the random sample."""
    plt = _plt()
    counts = _top_counts(data)
    pool = counts["pool"] / counts["pool"].sum()
    order = np.argsort(-pool, kind="stable")
    xs = np.arange(1, len(order) + 1)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    if len(order) <= 60:
        w = 0.28
        ax.bar(xs - w, pool[order], w, color=COLORS["pool"], label="pool")
        for shift, name in ((0.0, "random"), (w, "curated")):
            share = counts[name] / max(counts[name].sum(), 1)
            ax.bar(xs + shift, share[order], w, color=COLORS[name], label=f"{name} sample")
    else:
        ax.plot(xs, pool[order], color=COLORS["pool"], lw=2, label="pool")
        for name in ("random", "curated"):
            share = counts[name] / max(counts[name].sum(), 1)
            ax.plot(xs, share[order], color=COLORS[name], lw=1, label=f"{name} sample")
    ax.axhline(1.0 / len(order), color="k", ls=":", lw=0.8, label="uniform")
    _log_axis(ax)
    ax.set_xlabel(f"top-level cluster (level {len(data.levels)}, k = {len(order)}), sorted by pool share")
    ax.set_ylabel("share of the set")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path


def figure_labels(data: ReportData, path: Path) -> Path:
    """Pool / random / curated label shares (sorted by pool share, log scale)."""
    plt = _plt()
    labels = data.labels
    if labels is None:
        raise ValueError(f"{data.input_path}: no labels to plot")
    n_labels = int(labels.max()) + 1
    result = {
        "pool": {"label_counts": np.bincount(labels, minlength=n_labels).tolist(), "rarest_labels": []},
        "runs": [
            {
                name: {"label_counts": np.bincount(labels[idx], minlength=n_labels).tolist(), "n": len(idx)}
                for name, idx in (("random", data.random), ("curated", data.sample))
            }
        ],
    }
    fig, ax = plt.subplots(figsize=(min(3 + 0.3 * n_labels, 14), 4.2))
    plot_label_shares(ax, result, data.label_names, title="label shares: pool / random / curated")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path


def figure_scatter(data: ReportData, path: Path) -> Path:
    """2-D inputs: the pool (grey) with the random and the curated sample."""
    plt = _plt()
    x = np.asarray(data.array[:], dtype=np.float32)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
    for ax, idx, title in ((axes[0], data.random, "uniform random sample"), (axes[1], data.sample, "curated sample")):
        ax.scatter(x[:, 0], x[:, 1], s=1, c="0.85", rasterized=True)
        ax.scatter(x[idx, 0], x[idx, 1], s=3, c=COLORS["curated" if idx is data.sample else "random"])
        ax.set_title(f"{title} ({len(idx)} of {len(x)})", fontsize=10)
        ax.set_aspect("equal")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path


# -- examples ----------------------------------------------------------------------------------
def example_clusters(data: ReportData) -> list[tuple[str, int]]:
    """The largest, median and smallest top-level clusters (by item count): ``[(role, cluster id)]``."""
    pool = _top_counts(data)["pool"]
    nonempty = np.flatnonzero(pool)
    order = nonempty[np.argsort(-pool[nonempty], kind="stable")]
    picks = [("largest", int(order[0])), ("median", int(order[len(order) // 2])), ("smallest", int(order[-1]))]
    seen: set[int] = set()
    return [(role, c) for role, c in picks if not (c in seen or seen.add(c))]


def _members(data: ReportData, cluster: int, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` random items of a top-level cluster (seeded), sorted."""
    items = np.flatnonzero(data.item_clusters[-1] == cluster)
    rng = np.random.default_rng([seed, cluster])
    return np.sort(rng.choice(items, size=min(n, len(items)), replace=False))


def load_images(source: dict[str, Any], ids: Sequence) -> list[Any]:
    """PIL images of store items ``ids`` for the image sources the embed stage knows.

    Args:
        source: the store manifest's ``source`` (``kind`` ``fashion_mnist``, ``image_folder`` or
            ``image_list``).
        ids: the items' store ids (Fashion-MNIST indices, or file paths relative to ``root``).

    Returns:
        One ``PIL.Image`` per id (None where a file cannot be read).
    """
    from PIL import Image

    kind = source.get("kind")
    if kind == "fashion_mnist":
        from curate.datasets.fashion_mnist import load_fashion_mnist

        images, _ = load_fashion_mnist(source.get("split", "train"))
        return [Image.fromarray(images[int(i)], mode="L") for i in ids]
    root = Path(source.get("root") or "/")
    out = []
    for i in ids:
        path = Path(str(i))
        try:
            with Image.open(path if path.is_absolute() else root / path) as image:
                out.append(image.convert("RGB").copy())
        except OSError:
            out.append(None)
    return out


def load_texts(source: dict[str, Any], ids: Sequence) -> list[str | None]:
    """Texts of store items ``ids`` for the text sources the embed stage knows.

    ``wordnet``: the gloss of synset id ``n00001740`` (:func:`curate.datasets.wordnet.load_wordnet`);
    ``text_lines``: the line with that 0-based number; ``jsonl``: the record's text field (ids are
    line numbers or the ``id_field`` value). None where an id is not found.
    """
    kind = source.get("kind")
    if kind == "wordnet":
        from curate.datasets.wordnet import load_wordnet

        wn = load_wordnet(source.get("pos") or None, with_lemmas=bool(source.get("with_lemmas")))
        lookup = dict(zip(wn.ids, wn.texts))
        return [lookup.get(str(i)) for i in ids]
    if kind == "text_lines":
        lines = Path(source["path"]).read_text(encoding="utf-8").splitlines()
        return [lines[int(i)] if 0 <= int(i) < len(lines) else None for i in ids]
    if kind == "jsonl":
        wanted = {str(i) for i in ids}
        found: dict[str, str] = {}
        id_field, text_field = source.get("id_field"), source.get("field", "text")
        with open(source["path"], encoding="utf-8") as f:
            for number, line in enumerate(f):  # one pass over the file, stops once all are found
                if not line.strip():
                    continue
                if id_field is None and str(number) not in wanted:
                    continue
                record = json.loads(line)
                key = str(record.get(id_field)) if id_field is not None else str(number)
                if key in wanted:
                    found[key] = str(record.get(text_field))
                if len(found) == len(wanted):
                    break
        return [found.get(str(i)) for i in ids]
    return [None for _ in ids]


def image_grid(images: list[Any], path: Path, cell: int = 84, cols: int = 8, selected: Sequence[bool] = ()) -> Path:
    """Tile images into a grid PNG (``cell`` px per image); selected items get a blue frame."""
    from PIL import Image, ImageDraw

    cols = max(1, min(cols, len(images)))
    rows = max(1, math.ceil(len(images) / cols))
    pad = 4
    canvas = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, image in enumerate(images):
        x0, y0 = pad + (i % cols) * (cell + pad), pad + (i // cols) * (cell + pad)
        if image is None:
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], outline="red")
            continue
        thumb = image.convert("RGB")
        thumb.thumbnail((cell, cell), Image.Resampling.NEAREST if max(thumb.size) < cell else Image.Resampling.LANCZOS)
        if max(thumb.size) < cell:
            scale = cell / max(thumb.size)
            thumb = thumb.resize((round(thumb.width * scale), round(thumb.height * scale)), Image.Resampling.NEAREST)
        canvas.paste(thumb, (x0 + (cell - thumb.width) // 2, y0 + (cell - thumb.height) // 2))
        if i < len(selected) and selected[i]:
            draw.rectangle([x0 - 2, y0 - 2, x0 + cell + 1, y0 + cell + 1], outline=(31, 119, 180), width=3)
    with atomic_path(path, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG", optimize=True)
    return path


# -- HTML ----------------------------------------------------------------------------------------
_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #666; font-size: 0.9em; } .cur { color: #1f77b4; font-weight: 600; }
ul.ex { margin: 4px 0 12px; padding-left: 20px; } ul.ex li { margin: 2px 0; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if x == 0 or x >= 0.001 else f"{100 * x:.2g}%"


def _img(name: str, alt: str) -> str:
    return f'<p><img src="{html.escape(name)}" alt="{html.escape(alt)}"></p>'


def build_report(
    cluster_dir: str | os.PathLike,
    sample_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    input_path: str | os.PathLike | None = None,
    target: int | float = 0.1,
    seed: int = 0,
    n_examples: int = 16,
) -> Path:
    """Write ``report.html`` and its PNGs; return the path of ``report.html``.

    Args:
        cluster_dir: the clustering folder (``python -m curate.cluster`` output, or a saved
            :class:`curate.hierarchy.HierarchicalKMeans`).
        sample_dir: the sample-stage folder (``indices.npy``), or None to draw a sample here.
        out: output folder (default ``<sample_dir>/report`` or ``<cluster_dir>/report``).
        input_path: the clustered embeddings when the clustering manifest does not name them.
        target: sample size drawn when ``sample_dir`` is None.
        seed: seed of the random baseline (and of a drawn sample, and of the example picks).
        n_examples: example items shown per cluster.
    """
    from curate.sampling import cluster_item_counts, sample_stats

    data = load_report_data(cluster_dir, sample_dir, input_path, target, seed)
    out = Path(out) if out is not None else Path(sample_dir or cluster_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    n, m = data.n_items, len(data.sample)
    config = data.manifest.get("config", {})
    source = data.source or {}
    kind = source.get("kind", "npy" if data.input_path is not None and data.input_path.suffix == ".npy" else "unknown")

    # summary
    rows = [
        ("clustering", str(data.cluster_dir.resolve())),
        ("input", str(data.input_path) if data.input_path is not None else "unknown"),
        ("source", json.dumps(source) if source else kind),
        ("pool items", f"{n:,}"),
        ("dimension", data.manifest.get("dim", "?")),
        ("distance", config.get("distance", "?")),
        ("levels (k)", " / ".join(str(level.k) for level in data.levels)),
        ("curated sample", f"{m:,} items ({_pct(m / n)} of the pool), unique {len(np.unique(data.sample)):,}"),
        ("sample from", data.sample_origin),
        ("random baseline", f"{len(data.random):,} items drawn uniformly without replacement, seed {seed}"),
    ]
    notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in data.notes)
    sections.append(f'<section id="summary"><h2>Summary</h2>{_table(("", "value"), rows, left=2)}{notes}</section>')

    # cluster sizes per level
    figure_cluster_sizes(data, out / "cluster_sizes.png")
    counts = cluster_item_counts(data.levels)
    cur_stats = sample_stats(data.levels, data.sample)["levels"]
    rnd_stats = sample_stats(data.levels, data.random)["levels"]
    level_rows = []
    for t, (level, sizes) in enumerate(zip(data.levels, counts)):
        spec = (config.get("levels") or [{}] * len(data.levels))[t]
        level_rows.append(
            (
                t + 1,
                level.k,
                f"{spec.get('resample_steps', '?')} / {spec.get('sample_size', '?')}",
                int(sizes.min()),
                int(np.median(sizes)),
                int(sizes.max()),
                f"{cur_stats[t]['n_touched']} / {rnd_stats[t]['n_touched']}",
                f"{cur_stats[t]['normalized_entropy']:.3f} / {rnd_stats[t]['normalized_entropy']:.3f}",
            )
        )
    sections.append(
        '<section id="cluster-sizes"><h2>Cluster sizes per level</h2>'
        "<p>How many pool items each cluster holds (log-log histogram). k-means puts most clusters where the "
        "data are dense; the hierarchy's upper levels group them so that sampling can cap dense regions.</p>"
        + _img("cluster_sizes.png", "cluster size histograms")
        + _table(
            (
                "level",
                "k",
                "resampling steps / r",
                "min items",
                "median",
                "max",
                "clusters touched: curated / random",
                "sample entropy / log k: curated / random",
            ),
            level_rows,
        )
        + "</section>"
    )

    # top-level clusters: pool vs curated share
    figure_top_shares(data, out / "top_clusters.png")
    tc = _top_counts(data)
    order = np.argsort(-tc["pool"], kind="stable")
    show = list(order[:10]) + [c for c in order[-10:] if c not in set(order[:10])]
    top_rows = [
        (
            int(c),
            int(tc["pool"][c]),
            _pct(tc["pool"][c] / n),
            int(tc["random"][c]),
            _pct(tc["random"][c] / max(len(data.random), 1)),
            int(tc["curated"][c]),
            _pct(tc["curated"][c] / max(m, 1)),
        )
        for c in show
    ]
    sections.append(
        '<section id="top-clusters"><h2>Top-level clusters: pool share vs curated share</h2>'
        "<p>A uniform random sample keeps every cluster at its pool share; the curated sample caps the large "
        "clusters and takes the small ones (nearly) whole, so its shares move towards uniform (dotted line).</p>"
        + _img("top_clusters.png", "top-level cluster shares")
        + "<p>The 10 largest and 10 smallest top-level clusters:</p>"
        + _table(
            ("cluster", "pool items", "pool share", "random", "random share", "curated", "curated share"), top_rows
        )
        + "</section>"
    )

    # examples
    sections.append(_examples_section(data, out, kind, n_examples, seed))

    # labels
    if data.labels is not None:
        figure_labels(data, out / "labels.png")
        labels = data.labels
        n_labels = int(labels.max()) + 1
        n_rarest = min(3, n_labels)
        bal = {
            name: sample_balance(idx, labels, n_rarest)
            for name, idx in (("pool", np.arange(n)), ("random", data.random), ("curated", data.sample))
        }
        pool_counts = np.asarray(bal["pool"]["label_counts"])
        label_rows = []
        for lab in np.argsort(-pool_counts, kind="stable"):
            name = data.label_names[lab] if data.label_names and lab < len(data.label_names) else str(lab)
            label_rows.append(
                (name,)
                + tuple(
                    f"{bal[s]['label_counts'][lab]} ({_pct(bal[s]['label_counts'][lab] / max(bal[s]['n'], 1))})"
                    for s in ("pool", "random", "curated")
                )
            )
        summary_rows = [
            (
                "label entropy / log(#labels)",
                *(f"{bal[s]['label_normalized_entropy']:.3f}" for s in ("pool", "random", "curated")),
            ),
            (
                f"share of the {n_rarest} rarest labels",
                *(_pct(bal[s]["rarest_share"]) for s in ("pool", "random", "curated")),
            ),
        ]
        sections.append(
            '<section id="labels"><h2>Labels: pool / random / curated</h2>'
            '<p class="note">Labels were never shown to the clustering. The method balances concepts as the '
            "embedding sees them: labels gain balance only where the embedding separates them.</p>"
            + _img("labels.png", "label histograms")
            + _table(("", "pool", "random", "curated"), summary_rows)
            + _table(("label", "pool", "random", "curated"), label_rows)
            + "</section>"
        )

    # 2-D scatter
    if data.array is not None and data.array.shape[1] == 2:
        figure_scatter(data, out / "scatter.png")
        sections.append(
            '<section id="scatter"><h2>Pool vs samples (2-D input)</h2>' + _img("scatter.png", "scatter") + "</section>"
        )

    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Curation report: {html.escape(data.cluster_dir.name)}</title><style>{_CSS}</style></head><body>"
        f'<h1>Curation report</h1><p class="note">{html.escape(str(data.cluster_dir.resolve()))} &middot; '
        f"generated by <code>python -m curate.report</code></p>" + "".join(sections) + "</body></html>\n"
    )
    atomic_write_text(out / "report.html", page)
    return out / "report.html"


def _examples_section(data: ReportData, out: Path, kind: str, n_examples: int, seed: int) -> str:
    """Example items of the largest, median and smallest top-level clusters (images or texts)."""
    head = '<section id="examples"><h2>Example items of a few top-level clusters</h2>'
    if data.ids is None or data.source is None:
        why = "a plain .npy input has no item ids" if kind == "npy" else "the input's source is unknown"
        return head + f'<p class="note">No examples: {why}.</p></section>'
    tc = _top_counts(data)
    in_sample = np.zeros(data.n_items, dtype=bool)
    in_sample[data.sample] = True
    image_kinds = ("fashion_mnist", "image_folder", "image_list")
    text_kinds = ("wordnet", "text_lines", "jsonl")
    parts = [
        head,
        f"<p>{n_examples} random members (seed {seed}) of the largest, median and smallest top-level cluster; "
        '<span class="cur">blue</span> = kept in the curated sample.</p>',
    ]
    picks = example_clusters(data)
    members = {c: _members(data, c, n_examples, seed) for _, c in picks}
    if kind in text_kinds:
        all_ids = [data.ids[int(i)] for c in members for i in members[c]]
        texts = dict(zip(map(str, all_ids), load_texts(data.source, all_ids)))
    for role, c in picks:
        items = members[c]
        title = (
            f"<h3>{role} top-level cluster #{c}: {tc['pool'][c]} item{'s' if tc['pool'][c] != 1 else ''}, "
            f"{tc['curated'][c]} curated "
            f"({_pct(tc['curated'][c] / max(tc['pool'][c], 1))} kept), {tc['random'][c]} in the random sample</h3>"
        )
        if kind in image_kinds:
            images = load_images(data.source, [data.ids[int(i)] for i in items])
            name = f"examples_{role}.png"
            image_grid(images, out / name, selected=in_sample[items].tolist())
            parts.append(title + _img(name, f"{role} cluster examples"))
        elif kind in text_kinds:
            lis = []
            for i in items:
                text = texts.get(str(data.ids[int(i)])) or "(text not found)"
                cls = ' class="cur"' if in_sample[i] else ""
                lis.append(f"<li{cls}><code>{html.escape(str(data.ids[int(i)]))}</code> {html.escape(text)}</li>")
            parts.append(title + '<ul class="ex">' + "".join(lis) + "</ul>")
        else:
            parts.append(
                title
                + f'<p class="note">Source kind {html.escape(kind)!s}: ids only: '
                + html.escape(", ".join(str(data.ids[int(i)]) for i in items))
                + "</p>"
            )
    return "".join(parts) + "</section>"


def main(argv: list[str] | None = None) -> Path:
    """``python -m curate.report --cluster DIR [--sample DIR] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m curate.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", required=True, type=Path, help="clustering folder (manifest.json + level<t>/)")
    parser.add_argument("--sample", type=Path, default=None, help="sample folder (indices.npy); default: draw one")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <sample or cluster>/report)")
    parser.add_argument("--input", type=Path, default=None, help="the clustered embeddings, if the manifest lacks them")
    parser.add_argument("--target", type=float, default=0.1, help="size of the drawn sample (fraction, or count >= 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline and of the examples")
    parser.add_argument("--examples", type=int, default=16, help="example items per cluster")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    target: int | float = int(args.target) if args.target >= 1 else args.target
    from curate.errors import run_guarded

    path = run_guarded(build_report, args.cluster, args.sample, args.out, args.input, target, args.seed, args.examples)
    print(f"report written to {path}")
    return path


if __name__ == "__main__":
    from curate.errors import cli_entry

    cli_entry(main)
