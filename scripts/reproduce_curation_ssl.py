"""Does curating a long-tailed pool help SSL? (issue #5, section 3; METHOD.md section 3).

    python scripts/reproduce_curation_ssl.py --out outputs/curation_ssl            # full run, 25-55 min, 2 shared cores
    python scripts/reproduce_curation_ssl.py --quick --out /tmp/curation_ssl_quick  # smoke check, 1-2 min
    python scripts/reproduce_curation_ssl.py --investigate --out outputs/curation_ssl  # follow-up of a finished run
    python scripts/reproduce_curation_ssl.py --device cuda --out outputs/curation_ssl_gpu  # larger settings
    python scripts/reproduce_curation_ssl.py --set budget=3000 --set "seeds=[0,1]" ...      # any field of Settings

Pipeline (every step is a function of this module, the tests run them on a tiny configuration):

1. **Splits** (:func:`make_splits`). Fashion-MNIST train: a balanced *seed set* (``seed_per_class`` images
   per class), then the long-tailed *pool* drawn from the remaining images with
   :func:`curate.datasets.fashion_mnist.long_tailed_indices` (class sizes decaying geometrically from
   ``lt_max`` to ``lt_min``; the head class holds ``6000 - seed_per_class`` images because the seed set
   took its share: 5,800, 3,597, 2,156, ..., 60; about 14.7k images). The pool is disjoint from the seed
   set. A balanced labelled *eval-train* subset (``eval_train_per_class`` per class, train images outside
   the seed set; it may overlap the pool, as ImageNet's train set does for k-NN on ImageNet features)
   gives the k-NN neighbours and the linear probe's training data; the balanced Fashion-MNIST *test* set
   (1,000 per class) is where accuracy is measured.
2. **Base embeddings** (:func:`train_ssl`, :func:`embed_rows`). The same SSL recipe trained on the seed set
   for ``base_iterations``; its teacher backbone embeds the pool (the paper: a ViT trained with SSL on
   ImageNet-1k embeds the web pool).
3. **Curation** (:func:`curate_pool`). Per seed ``s``: :class:`curate.hierarchy.HierarchicalKMeans` with
   ``levels`` (default 3 levels, k = 1500 / 300 / 50 with 10 resampling steps and r = 5 / 3 / 3, i.e. about
   half the average cluster size of each level, spherical k-means on L2-normalised features), then
   hierarchical balanced sampling of ``budget`` items (``random`` leaf selection, the paper's best). The
   uniform random baseline draws ``budget`` items of the pool with the same seed; the full pool is the
   third training set.
4. **SSL training** (:func:`train_ssl`). The three sets, same recipe and number of iterations, one run
   per seed (the seed drives the clustering, the random subset and the SSL run).
5. **Frozen evaluation** (:func:`evaluate_backbone`): weighted k-NN (k=20, T=0.07, DINO protocol) and a
   linear probe, both on the class token, trained on eval-train, measured on the test set; top-1 overall
   and mean per-class top-1 over the ``num_tail_classes`` rarest classes of the pool.
6. **Balance** (:func:`balance_stats`) of every training set: class histogram, normalised label entropy,
   share of the tail classes and its gain over the pool's share, and the normalised entropy over a
   reference k-means (``ref_clusters`` clusters, its own seed) of the base embeddings. Plus diagnostics of
   the embedding (:func:`embedding_diagnostics`): base-model and raw-pixel k-NN accuracy, label purity of
   the clusters of each level.

7. **Investigation** (``--investigate``, :func:`investigate`): label balance of curated samples for three
   embeddings, 1..T levels and three budgets, and two control trainings (``oracle_balanced``: the budget
   water-filled over the labels; ``no_tail``: no tail image at all) that show whether the SSL runs are
   sensitive to the composition of their training set at all. Results and findings: docs/curation_ssl.md.

Writes ``OUT/results.json``, ``OUT/results.md`` (also printed) and ``OUT/results.png``. Intermediate
files (``splits/``, ``base/``, ``curation/``, ``runs/<set>_seed<s>/``) make a re-run with the same
``--out`` resume: finished trainings and evaluations are reused, an interrupted training resumes from
its checkpoint. A different configuration in an existing ``--out`` is refused.

CPU runs use one torch thread (``--threads``): on a shared 2-core machine two threads are far slower.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/reproduce_curation_ssl.py` from a checkout
    sys.path.insert(0, str(REPO))

from curate.datasets.fashion_mnist import CLASSES, load_fashion_mnist, long_tailed_indices  # noqa: E402
from curate.io.atomic import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text  # noqa: E402

log = logging.getLogger("curation_ssl")

SETS = ("curated", "random", "full")
METRICS = ("knn_top1", "knn_tail", "linear_top1", "linear_tail")
METRIC_LABELS = {
    "knn_top1": "k-NN top-1",
    "knn_tail": "k-NN tail",
    "linear_top1": "linear top-1",
    "linear_tail": "linear tail",
}
NUM_CLASSES = len(CLASSES)


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------
@dataclass
class Settings:
    """Every knob of the experiment (``--set name=value`` overrides any of them).

    Levels are ``[k, resample_steps, sample_size]`` per level, finest first.
    """

    # data
    lt_max: int = 6000
    lt_min: int = 60
    lt_seed: int = 0
    seed_per_class: int = 200
    pool_size: int | None = None  # subsample the long-tailed pool (tests); None keeps all of it
    eval_train_per_class: int = 500
    eval_test_per_class: int | None = None  # None: the full balanced test set (1000 per class)
    num_tail_classes: int = 3
    # curation
    budget: int = 4000
    levels: list[list[int]] = field(default_factory=lambda: [[1500, 10, 5], [300, 10, 3], [50, 10, 3]])
    distance: str = "cosine"
    kmeans_iter: int = 50
    leaf_strategy: str = "random"
    ref_clusters: int = 100
    ref_seed: int = 1000
    # SSL recipe (selfsup.train) -- the same for the base model and the three training sets
    depth: int = 4
    embed_dim: int = 128
    num_heads: int = 4
    patch_size: int = 7
    n_prototypes: int = 1024
    head_hidden_dim: int = 512
    head_bottleneck_dim: int = 128
    local_crops: int = 2
    batch_size: int = 64
    lr: float = 5e-4  # for a batch of 256 (linear scaling, the trainer's convention)
    base_iterations: int = 200
    iterations: int = 200
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    device: str = "cpu"  # cpu | cuda | auto
    num_workers: int = 0  # data-loader processes of the trainer (augmentation runs on the CPU)
    # frozen evaluation
    knn_k: int = 20
    knn_temperature: float = 0.07
    linear_epochs: int = 50
    linear_lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1])
    embed_batch_size: int = 512


PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "quick": {
        "depth": 2,
        "embed_dim": 64,
        "num_heads": 2,
        "n_prototypes": 256,
        "head_hidden_dim": 256,
        "head_bottleneck_dim": 64,
        "base_iterations": 120,
        "iterations": 80,
        "seeds": [0],
        "levels": [[1500, 3, 5], [300, 3, 3], [50, 3, 3]],
        "kmeans_iter": 20,
        "eval_train_per_class": 200,
        "linear_epochs": 30,
    },
    # Larger settings for one GPU (not timed on a GPU by the author of this script; see docs/curation_ssl.md).
    "gpu": {
        "depth": 6,
        "embed_dim": 192,
        "num_heads": 3,
        "n_prototypes": 2048,
        "head_hidden_dim": 1024,
        "head_bottleneck_dim": 256,
        "local_crops": 4,
        "batch_size": 256,
        "base_iterations": 1500,
        "iterations": 1500,
        "device": "cuda",
        "num_workers": 8,
        "eval_train_per_class": 1000,
        "embed_batch_size": 2048,
    },
}


def make_settings(preset: str = "full", overrides: dict[str, Any] | None = None) -> Settings:
    """A :class:`Settings` from a preset (``full``, ``quick``, ``gpu``) plus overrides.

    Raises:
        ValueError: unknown preset or field, or a setting out of range (the message names it).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    values = {**PRESETS[preset], **(overrides or {})}
    names = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(names)}")
    settings = Settings(**values)
    validate_settings(settings)
    return settings


def validate_settings(s: Settings) -> None:
    """Cross-field checks; raise ``ValueError`` naming the setting."""
    checks = [
        (s.seed_per_class >= 1, "seed_per_class", "must be >= 1"),
        (s.eval_train_per_class >= 2, "eval_train_per_class", "must be >= 2"),
        (s.budget >= 1, "budget", "must be >= 1"),
        (len(s.levels) >= 1 and all(len(lv) == 3 for lv in s.levels), "levels", "a list of [k, steps, r]"),
        (s.distance in ("l2", "cosine"), "distance", "l2 or cosine"),
        (s.leaf_strategy in ("random", "closest", "farthest"), "leaf_strategy", "random, closest or farthest"),
        (len(s.seeds) >= 1 and len(set(s.seeds)) == len(s.seeds), "seeds", "distinct values, at least one"),
        (s.iterations >= 1 and s.base_iterations >= 1, "iterations", "must be >= 1"),
        (1 <= s.num_tail_classes < NUM_CLASSES, "num_tail_classes", f"in [1, {NUM_CLASSES})"),
        (s.device in ("cpu", "cuda", "auto"), "device", "cpu, cuda or auto"),
        (s.num_workers >= 0, "num_workers", "must be >= 0"),
        (s.embed_dim % s.num_heads == 0, "num_heads", "must divide embed_dim"),
        (28 % s.patch_size == 0 and 14 % s.patch_size == 0, "patch_size", "must divide 28 and 14 (crop sizes)"),
    ]
    for ok, name, msg in checks:
        if not ok:
            raise ValueError(f"{name}: {msg} (got {getattr(s, name)!r})")


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available")
    return name


# ----------------------------------------------------------------------------------------------
# Data splits
# ----------------------------------------------------------------------------------------------
def balanced_subset(labels: np.ndarray, candidates: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` random rows of every class among ``candidates`` (all of a class when it has fewer).

    Returns:
        ``(m,) int64`` sorted row numbers.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    keys = rng.random(len(candidates))
    order = np.lexsort((keys, labels[candidates]))  # class-major, random inside a class
    sorted_labels = labels[candidates][order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.arange(len(order)) - starts
    return np.sort(candidates[order[rank < per_class]])


def make_splits(s: Settings, train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, np.ndarray]:
    """Seed set, long-tailed pool, eval-train and test rows (see the module docstring).

    Returns:
        ``seed_set``, ``pool``, ``eval_train`` (rows of the train split) and ``test`` (rows of the test
        split), each ``(m,) int64`` sorted. ``seed_set`` and ``pool`` are disjoint.
    """
    all_rows = np.arange(len(train_labels), dtype=np.int64)
    seed_set = balanced_subset(train_labels, all_rows, s.seed_per_class, np.random.default_rng([s.lt_seed, 1]))
    rest = np.setdiff1d(all_rows, seed_set, assume_unique=True)
    pool = rest[long_tailed_indices(train_labels[rest], s.lt_max, s.lt_min, s.lt_seed)]
    if s.pool_size is not None and s.pool_size < len(pool):
        pool = np.sort(np.random.default_rng([s.lt_seed, 3]).choice(pool, s.pool_size, replace=False))
    eval_train = balanced_subset(train_labels, rest, s.eval_train_per_class, np.random.default_rng([s.lt_seed, 2]))
    test_rows = np.arange(len(test_labels), dtype=np.int64)
    if s.eval_test_per_class is not None:
        test_rows = balanced_subset(
            test_labels, test_rows, s.eval_test_per_class, np.random.default_rng([s.lt_seed, 4])
        )
    return {"seed_set": seed_set, "pool": np.sort(pool), "eval_train": eval_train, "test": test_rows}


# ----------------------------------------------------------------------------------------------
# Balance of a training set
# ----------------------------------------------------------------------------------------------
def balance_stats(
    labels: np.ndarray,
    pool_labels: np.ndarray,
    tail_classes: list[int],
    num_classes: int = NUM_CLASSES,
    ref_assign: np.ndarray | None = None,
    ref_k: int | None = None,
) -> dict[str, Any]:
    """How balanced a training set is over labels (and over reference clusters).

    Args:
        labels: ``(n,)`` int labels of the set's items (repeats count).
        pool_labels: ``(N,)`` int labels of the pool (for the tail gain).
        tail_classes: the tail class ids.
        num_classes: number of classes.
        ref_assign: ``(n,)`` int reference-cluster id of the set's items, or None.
        ref_k: number of reference clusters (required with ``ref_assign``).

    Returns:
        ``n``, ``class_counts`` (list), ``class_shares``, ``entropy`` (nats), ``normalized_entropy``
        (``entropy / log num_classes``), ``tail_share`` (share of the set in the tail classes),
        ``tail_gain`` (``tail_share`` over the pool's tail share), ``tail_counts`` and, with
        ``ref_assign``, ``ref_normalized_entropy`` (over the ``ref_k`` clusters) and ``ref_touched``.
    """
    from curate.metrics import cluster_balance, label_entropy, label_shares

    labels = np.asarray(labels, dtype=np.int64)
    tail = np.asarray(tail_classes, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    tail_share = float(np.isin(labels, tail).mean()) if len(labels) else 0.0
    pool_tail = float(np.isin(np.asarray(pool_labels), tail).mean())
    out: dict[str, Any] = {
        "n": int(len(labels)),
        "class_counts": counts.tolist(),
        "class_shares": label_shares(labels, num_classes).tolist(),
        "entropy": label_entropy(labels, num_classes),
        "normalized_entropy": label_entropy(labels, num_classes, normalize=True),
        "tail_share": tail_share,
        "tail_gain": tail_share / pool_tail if pool_tail > 0 else math.nan,
        "tail_counts": counts[tail].tolist(),
    }
    if ref_assign is not None:
        if ref_k is None:
            raise ValueError("ref_k is required with ref_assign")
        cb = cluster_balance(np.asarray(ref_assign, dtype=np.int64), ref_k)
        out["ref_normalized_entropy"] = cb["normalized_entropy"]
        out["ref_touched"] = cb["n_touched"]
    return out


def cluster_purity(assign: np.ndarray, labels: np.ndarray, k: int, num_classes: int = NUM_CLASSES) -> float:
    """Share of items whose cluster's majority label is their own label (1.0: clusters never mix labels)."""
    table = np.zeros((k, num_classes), dtype=np.int64)
    np.add.at(table, (np.asarray(assign, dtype=np.int64), np.asarray(labels, dtype=np.int64)), 1)
    return float(table.max(axis=1).sum() / max(len(labels), 1))


def item_cluster_ids(levels: list[Any]) -> list[np.ndarray]:
    """``(N,)`` cluster id of every item at every level (composition of the levels' ``assign``)."""
    ids = np.arange(len(levels[0].assign), dtype=np.int64)
    out = []
    for level in levels:
        ids = np.asarray(level.assign, dtype=np.int64)[ids]
        out.append(ids)
    return out


# ----------------------------------------------------------------------------------------------
# SSL training and embedding
# ----------------------------------------------------------------------------------------------
def train_config(s: Settings, out: Path, rows_path: Path, seed: int, iterations: int, device: str) -> Any:
    """The :class:`selfsup.config.TrainConfig` of one run (Fashion-MNIST train restricted to ``rows_path``)."""
    from omegaconf import OmegaConf

    from selfsup.config import TrainConfig, to_train_config

    cfg = OmegaConf.structured(TrainConfig)
    head = [
        f"n_prototypes={s.n_prototypes}",
        f"hidden_dim={s.head_hidden_dim}",
        f"bottleneck_dim={s.head_bottleneck_dim}",
    ]
    cfg.merge_with_dotlist(
        [
            f"name={out.name}",
            f"out={out}",
            "data.source=fashion_mnist",
            "data.split=train",
            f"data.source_indices={rows_path}",
            f"model.depth={s.depth}",
            f"model.embed_dim={s.embed_dim}",
            f"model.num_heads={s.num_heads}",
            f"model.patch_size={s.patch_size}",
            *[f"dino.head.{h}" for h in head],
            *[f"ibot.head.{h}" for h in head],
            f"crops.local_number={s.local_crops}",
            f"optim.lr={s.lr}",
            f"train.batch_size={s.batch_size}",
            f"train.iterations={iterations}",
            f"train.seed={seed}",
            f"train.device={device}",
            f"data.num_workers={s.num_workers}",
            f"train.log_every={max(1, iterations // 10)}",
            f"train.checkpoint_every={max(1, iterations // 4)}",
        ]
    )
    return to_train_config(cfg)


def train_ssl(
    s: Settings, out: Path, train_rows: np.ndarray, seed: int, iterations: int, device: str
) -> dict[str, Any]:
    """Train (or resume, or reuse) one SSL run on Fashion-MNIST train rows ``train_rows``.

    Returns:
        ``n_train``, ``iterations``, ``seconds`` (this call), ``img_per_s`` (last logged window) and
        ``backbone`` (path of ``backbone.pt``).
    """
    from selfsup.train import train

    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "train_rows.npy"
    train_rows = np.asarray(train_rows, dtype=np.int64)
    if rows_path.exists() and not np.array_equal(np.load(rows_path, allow_pickle=False), train_rows):
        raise ValueError(f"{rows_path} holds another training set than this run's; use another --out")
    atomic_save_npy(rows_path, train_rows)
    manifest = out / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("status") == "complete":
        m = json.loads(manifest.read_text())
        if m.get("iterations") == iterations and m.get("n_train") == len(train_rows):
            return {
                "n_train": m["n_train"],
                "iterations": iterations,
                "seconds": m.get("elapsed_s", math.nan),
                "img_per_s": m.get("last", {}).get("img_per_s", math.nan),
                "backbone": str(out / "backbone.pt"),
                "reused": True,
            }
    t0 = time.perf_counter()
    summary = train(train_config(s, out, rows_path, seed, iterations, device))
    seconds = time.perf_counter() - t0
    if summary["start_iteration"] == 0:  # keep the wall time of a run trained in one go
        m = json.loads(manifest.read_text())
        m["elapsed_s"] = seconds
        atomic_write_json(manifest, m)
    return {
        "n_train": summary["n_train"],
        "iterations": summary["iterations"],
        "seconds": seconds,
        "img_per_s": summary["last"].get("img_per_s", math.nan),
        "backbone": str(out / "backbone.pt"),
        "reused": False,
    }


def embed_rows(backbone_path: str | Path, images: np.ndarray, batch_size: int, device: str) -> np.ndarray:
    """``(n, D) float32`` class-token features of uint8 images ``(n, 28, 28)`` with an exported backbone."""
    from selfsup.export import embed_images, load_backbone

    return embed_images(load_backbone(backbone_path), images, batch_size, device)


# ----------------------------------------------------------------------------------------------
# Curation
# ----------------------------------------------------------------------------------------------
def curate_pool(
    s: Settings, feats: np.ndarray, seed: int, device: str, folder: Path | None = None
) -> tuple[np.ndarray, list[Any], dict[str, Any]]:
    """Hierarchical k-means on the pool features, then a balanced sample of ``s.budget`` items.

    Args:
        s: settings (``levels``, ``kmeans_iter``, ``distance``, ``budget``, ``leaf_strategy``).
        feats: ``(N, D)`` float32 pool features.
        seed: clustering and sampling seed.
        device: k-means device.
        folder: where the hierarchy is saved; a finished one found there is loaded instead of refitted.

    Returns:
        ``(B,) int64`` sorted pool positions, the levels of the hierarchy and a stats dict
        (``seconds``, per-level ``k`` / sizes / empty clusters, the sample's cluster balance).
    """
    import warnings

    from curate.hierarchy import HierarchicalKMeans
    from curate.sampling import hierarchical_sample

    levels = [{"k": int(k), "resample_steps": int(m), "sample_size": int(r)} for k, m, r in s.levels]
    t0 = time.perf_counter()
    if folder is not None and (folder / "manifest.json").exists():
        hkm = HierarchicalKMeans.load(folder, device=device)
        if hkm.n_items_ != len(feats) or hkm.config()["levels"] != HierarchicalKMeans(levels).config()["levels"]:
            raise ValueError(f"{folder} holds another clustering; use another --out")
    else:
        hkm = HierarchicalKMeans(levels, n_iter=s.kmeans_iter, seed=seed, device=device, distance=s.distance)
        hkm.fit(feats)
        if folder is not None:
            hkm.save(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = hierarchical_sample(hkm.levels_, s.budget, strategy=s.leaf_strategy, seed=seed)
    stats = {
        "seconds": time.perf_counter() - t0,
        "levels": [
            {
                "k": lv.k,
                "size_min": lv.stats.get("size_min"),
                "size_median": lv.stats.get("size_median"),
                "size_max": lv.stats.get("size_max"),
                "empty_dropped": lv.stats.get("empty_dropped"),
                "empty_reseeded": lv.stats.get("empty_reseeded"),
            }
            for lv in hkm.levels_
        ],
        "sample": {k: v for k, v in result.stats.items() if k != "levels"},
        "sample_levels": [
            {key: lv[key] for key in ("level", "n_touched", "normalized_entropy", "min_count", "max_count")}
            for lv in result.stats["levels"]
        ],
        "warnings": [str(w.message) for w in caught],
    }
    return result.indices, hkm.levels_, stats


def random_subset(pool_size: int, budget: int, seed: int) -> np.ndarray:
    """``(min(budget, N),) int64`` sorted uniform random pool positions, without replacement."""
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(pool_size, size=min(budget, pool_size), replace=False)).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Frozen evaluation
# ----------------------------------------------------------------------------------------------
def knn_linear_report(
    s: Settings,
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    tail_classes: list[int],
    device: str,
    linear: bool = True,
) -> dict[str, Any]:
    """k-NN (and linear-probe) top-1 overall, over the tail classes and per class."""
    from selfsup.eval import accuracy_report, knn_classify, linear_probe

    knn = knn_classify(train_feats, train_labels, test_feats, s.knn_k, s.knn_temperature, NUM_CLASSES, device=device)
    report: dict[str, Any] = {"knn": accuracy_report(knn, test_labels, NUM_CLASSES, tail_classes)}
    if linear:
        probe = linear_probe(
            train_feats, train_labels, test_feats, NUM_CLASSES, s.linear_lrs, s.linear_epochs, seed=0, device=device
        )
        report["linear"] = {
            "best_lr": probe.best_lr,
            **accuracy_report(probe.predictions, test_labels, NUM_CLASSES, tail_classes),
        }
    return report


def evaluate_backbone(
    s: Settings,
    backbone: str | Path,
    eval_images: tuple[np.ndarray, np.ndarray],
    eval_labels: tuple[np.ndarray, np.ndarray],
    tail_classes: list[int],
    device: str,
) -> dict[str, Any]:
    """Embed eval-train and test with ``backbone`` and run :func:`knn_linear_report`."""
    t0 = time.perf_counter()
    train_feats = embed_rows(backbone, eval_images[0], s.embed_batch_size, device)
    test_feats = embed_rows(backbone, eval_images[1], s.embed_batch_size, device)
    report = knn_linear_report(s, train_feats, eval_labels[0], test_feats, eval_labels[1], tail_classes, device)
    report["seconds"] = time.perf_counter() - t0
    return report


def knn_label_agreement(feats: np.ndarray, labels: np.ndarray, k: int = 20) -> dict[str, Any]:
    """Leave-one-out label agreement of the ``k`` cosine nearest neighbours inside a set.

    How often an item's neighbours in the embedding share its label: a label-aware measure of how
    well the embedding separates the classes (1.0: neighbourhoods are pure).

    Args:
        feats: ``(n, D)`` float32.
        labels: ``(n,)`` int.
        k: neighbours (capped at ``n - 1``).

    Returns:
        ``k``, ``mean`` (over items) and ``per_class`` (mean over the items of each class; None if absent).
    """
    x = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)), dim=1)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    k = min(k, len(x) - 1)
    agree = []
    for start in range(0, len(x), 2048):
        sim = x[start : start + 2048] @ x.t()
        sim[torch.arange(sim.shape[0]), torch.arange(start, start + sim.shape[0])] = -math.inf  # not itself
        idx = sim.topk(k, dim=1).indices
        agree.append((y[idx] == y[start : start + 2048, None]).float().mean(dim=1))
    agree_t = torch.cat(agree).numpy()
    labels = np.asarray(labels)
    per_class = [float(agree_t[labels == c].mean()) if (labels == c).any() else None for c in range(NUM_CLASSES)]
    return {"k": k, "mean": float(agree_t.mean()), "per_class": per_class}


def embedding_diagnostics(
    s: Settings,
    pool_feats: np.ndarray,
    pool_labels: np.ndarray,
    hierarchy_levels: list[Any],
    eval_images: tuple[np.ndarray, np.ndarray],
    eval_labels: tuple[np.ndarray, np.ndarray],
    tail_classes: list[int],
) -> dict[str, Any]:
    """How well the curation embedding separates the labels.

    Returns:
        ``pixels`` (k-NN on raw pixels, a reference), ``cluster_purity`` (label purity of every
        level's clusters, first curation seed) and ``pool_knn_agreement`` (see
        :func:`knn_label_agreement`).
    """

    flat = [im.reshape(len(im), -1).astype(np.float32) for im in eval_images]
    pixels = knn_linear_report(s, flat[0], eval_labels[0], flat[1], eval_labels[1], tail_classes, "cpu", linear=False)
    purity = [
        {"level": t + 1, "k": int(len(lv.offsets) - 1), "purity": cluster_purity(ids, pool_labels, len(lv.offsets) - 1)}
        for t, (lv, ids) in enumerate(zip(hierarchy_levels, item_cluster_ids(hierarchy_levels)))
    ]
    agreement = knn_label_agreement(pool_feats, pool_labels)
    return {
        "pixels": pixels,
        "cluster_purity": purity,
        "pool_knn_agreement": agreement,
    }


# ----------------------------------------------------------------------------------------------
# Summaries, table, figure
# ----------------------------------------------------------------------------------------------
def mean_std(values: list[float]) -> dict[str, Any]:
    """``{mean, std (ddof=1; 0 for one value), values}``."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "values": list(values)}
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "values": [None if v is None else float(v) for v in values],
    }


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per training set: mean/std over seeds of every metric and of the per-class accuracies."""
    out: dict[str, dict[str, Any]] = {}
    for name in SETS:
        rows = [r for r in runs if r["set"] == name]
        if not rows:
            continue
        entry: dict[str, Any] = {"n_train": rows[0]["n_train"], "seeds": [r["seed"] for r in rows]}
        for metric in METRICS:
            probe, kind = metric.split("_")
            key = "top1" if kind == "top1" else "tail_mean"
            entry[metric] = mean_std([r["eval"][probe][key] for r in rows])
        for probe in ("knn", "linear"):
            per_class = np.array([[np.nan if a is None else a for a in r["eval"][probe]["per_class"]] for r in rows])
            entry[f"{probe}_per_class"] = np.nanmean(per_class, axis=0).tolist()
        entry["train_seconds"] = mean_std([r["train"]["seconds"] for r in rows])
        out[name] = entry
    return out


def summarise_balance(balance: dict[str, Any]) -> dict[str, Any]:
    """Mean over seeds of the balance numbers of each set (``per_seed`` lists kept as they are)."""
    out: dict[str, Any] = {"pool": balance["pool"]}
    for name in SETS:
        per_seed = balance.get(name, [])
        if not per_seed:
            continue
        keys = ("normalized_entropy", "tail_share", "tail_gain", "ref_normalized_entropy", "top_normalized_entropy")
        entry = {key: mean_std([b.get(key) for b in per_seed]) for key in keys if key in per_seed[0]}
        entry["class_counts_mean"] = np.mean([b["class_counts"] for b in per_seed], axis=0).tolist()
        entry["n"] = per_seed[0]["n"]
        out[name] = {"mean": entry, "per_seed": per_seed}
    return out


def _fmt(entry: dict[str, Any] | None, pct: bool = True) -> str:
    if entry is None or entry.get("mean") is None:
        return "-"
    scale = 100.0 if pct else 1.0
    if len([v for v in entry["values"] if v is not None]) > 1:
        return f"{scale * entry['mean']:.1f} ± {scale * entry['std']:.1f}"
    return f"{scale * entry['mean']:.1f}"


def markdown_table(results: dict[str, Any]) -> str:
    """The results tables (accuracy and balance, class histograms, diagnostics) as markdown."""
    summary, balance = results["summary"], results["balance"]
    tail_names = ", ".join(CLASSES[c] for c in results["tail_classes"])
    n_seeds = len(results["settings"]["seeds"])
    lines = [
        f"Frozen features on the balanced Fashion-MNIST test set ({results['splits']['n_test']} images); "
        f"k-NN (k={results['settings']['knn_k']}, T={results['settings']['knn_temperature']}) and linear probe "
        f"trained on a balanced labelled train subset ({results['splits']['n_eval_train']} images). "
        f"Top-1 in %, mean ± std over {n_seeds} seed(s). Tail = mean per-class top-1 over the "
        f"{len(results['tail_classes'])} rarest pool classes ({tail_names}).",
        "",
        "| training set | images | tail share | label entropy | k-NN top-1 | k-NN tail | linear top-1 | linear tail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SETS:
        if name not in summary:
            continue
        b = balance[name]["mean"]
        row = [
            name,
            str(summary[name]["n_train"]),
            f"{100 * b['tail_share']['mean']:.1f}% ({b['tail_gain']['mean']:.2f}x)",
            f"{b['normalized_entropy']['mean']:.3f}",
            *[_fmt(summary[name][m]) for m in METRICS],
        ]
        lines.append("| " + " | ".join(row) + " |")
    base = results["base"]
    lines.append(
        "| (base model, seed set) | "
        f"{results['splits']['n_seed_set']} | - | 1.000 | {100 * base['eval']['knn']['top1']:.1f} | "
        f"{100 * base['eval']['knn']['tail_mean']:.1f} | {100 * base['eval']['linear']['top1']:.1f} | "
        f"{100 * base['eval']['linear']['tail_mean']:.1f} |"
    )
    px = base["diagnostics"]["pixels"]["knn"]
    lines.append(
        f"| (raw pixels, no training) | - | - | - | {100 * px['top1']:.1f} | {100 * px['tail_mean']:.1f} | - | - |"
    )
    lines += [
        "",
        "Tail share: share of the training set in the tail classes (gain over the pool's share). Label entropy: "
        "entropy of the class histogram / log 10 (1 = balanced).",
        "",
        "Class histogram of the training sets (curated and random: mean over seeds), classes by pool size:",
        "",
        "| class | pool | random | curated | seed set | k-NN random | k-NN curated | k-NN full |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pool_counts = np.asarray(balance["pool"]["class_counts"])
    for c in np.argsort(-pool_counts, kind="stable"):
        acc = [
            f"{100 * summary[n]['knn_per_class'][c]:.1f}" if n in summary else "-"
            for n in ("random", "curated", "full")
        ]
        lines.append(
            f"| {c} {CLASSES[c]}{' (tail)' if c in results['tail_classes'] else ''} | {pool_counts[c]} | "
            f"{balance['random']['mean']['class_counts_mean'][c]:.0f} | "
            f"{balance['curated']['mean']['class_counts_mean'][c]:.0f} | "
            f"{results['splits']['seed_set_class_counts'][c]} | " + " | ".join(acc) + " |"
        )
    diag = base["diagnostics"]
    purity = ", ".join(f"level {p['level']} (k={p['k']}) {p['purity']:.3f}" for p in diag["cluster_purity"])
    ref = balance["curated"]["mean"].get("ref_normalized_entropy")
    ref_r = balance["random"]["mean"].get("ref_normalized_entropy")
    lines += [
        "",
        f"Base embedding: pool 20-NN label agreement {diag['pool_knn_agreement']['mean']:.3f}; "
        f"cluster label purity {purity}.",
    ]
    if ref is not None and ref_r is not None:
        top = {n: balance[n]["mean"]["top_normalized_entropy"]["mean"] for n in ("curated", "random", "full")}
        lines.append(
            f"Normalised entropy over the {results['settings']['levels'][-1][0]} top-level clusters of the curation "
            f"hierarchy: curated {top['curated']:.3f}, random {top['random']:.3f}, pool {top['full']:.3f}; over "
            f"{results['settings']['ref_clusters']} clusters of a separate flat k-means of the base embedding "
            f"(equal-mass cells by construction, so the pool is near 1 and a density-flattening sample scores lower): "
            f"curated {ref['mean']:.3f}, random {ref_r['mean']:.3f}, pool "
            f"{balance['pool'].get('ref_normalized_entropy', float('nan')):.3f}."
        )
    return "\n".join(lines) + "\n"


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Bar chart of the four metrics per training set (std error bars) and the class shares of each set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, balance = results["summary"], results["balance"]
    names = [n for n in SETS if n in summary]
    colors = {"curated": "#1b9e77", "random": "#d95f02", "full": "#7570b3", "pool": "#999999"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(names)
    x = np.arange(len(METRICS))
    for i, name in enumerate(names):
        means = [100 * (summary[name][m]["mean"] or 0.0) for m in METRICS]
        stds = [100 * (summary[name][m]["std"] or 0.0) for m in METRICS]
        axes[0].bar(x + (i - (len(names) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=name,
                    color=colors[name])  # fmt: skip
    axes[0].set_xticks(x, [METRIC_LABELS[m] for m in METRICS])
    axes[0].set_ylabel("top-1 (%)")
    axes[0].set_title(f"frozen features, {len(results['settings']['seeds'])} seed(s)")
    axes[0].legend()
    pool_counts = np.asarray(balance["pool"]["class_counts"], dtype=np.float64)
    order = np.argsort(-pool_counts, kind="stable")
    shares = {"pool": pool_counts / pool_counts.sum()}
    for name in ("random", "curated"):
        counts = np.asarray(balance[name]["mean"]["class_counts_mean"])
        shares[name] = counts / counts.sum()
    xs = np.arange(NUM_CLASSES)
    w = 0.27
    for i, name in enumerate(("pool", "random", "curated")):
        axes[1].bar(xs + (i - 1) * w, shares[name][order], w, label=name, color=colors[name])
    axes[1].set_yscale("log")
    axes[1].set_xticks(xs, [CLASSES[c] + ("*" if c in results["tail_classes"] else "") for c in order], rotation=45,
                       ha="right")  # fmt: skip
    axes[1].set_ylabel("share of the training set")
    axes[1].set_title(f"class shares (* = tail), budget {results['settings']['budget']}")
    axes[1].legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# The whole pipeline
# ----------------------------------------------------------------------------------------------
def _hardware(device: str) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "torch": torch.__version__,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _check_out_dir(out: Path, settings: Settings) -> None:
    """Refuse to resume into a folder made with other settings."""
    path = out / "settings.json"
    current = json.loads(json.dumps(asdict(settings)))
    if path.exists():
        found = json.loads(path.read_text())
        changed = sorted(
            k
            for k in set(found) | set(current)
            if found.get(k) != current.get(k) and k not in ("device", "num_workers")
        )
        if changed:
            raise ValueError(f"{out} holds a run with other settings ({', '.join(changed)}); use another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, current)


def run_experiment(settings: Settings, out: str | Path) -> dict[str, Any]:
    """Run (or resume) the whole pipeline and write ``results.json``, ``results.md``, ``results.png``.

    Returns:
        The results dict written to ``results.json``.
    """
    t_start = time.perf_counter()
    s = settings
    validate_settings(s)
    device = resolve_device(s.device)
    out = Path(out)
    _check_out_dir(out, s)
    timings: dict[str, float] = {}
    load_start = _load_average()

    # 1. splits
    train_images, train_labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    splits = make_splits(s, train_labels, test_labels)
    for name, rows in splits.items():
        atomic_save_npy(out / "splits" / f"{name}.npy", rows)
    pool = splits["pool"]
    pool_labels = train_labels[pool]
    from selfsup.eval import rarest_classes

    tail = rarest_classes(pool_labels, NUM_CLASSES, s.num_tail_classes)
    eval_images = (train_images[splits["eval_train"]], test_images[splits["test"]])
    eval_labels = (train_labels[splits["eval_train"]], test_labels[splits["test"]])
    log.info(
        "pool %d images, class counts %s, tail classes %s; seed set %d; eval-train %d; test %d",
        len(pool),
        np.bincount(pool_labels, minlength=NUM_CLASSES).tolist(),
        tail,
        len(splits["seed_set"]),
        len(eval_images[0]),
        len(eval_images[1]),
    )

    # 2. base model on the seed set, pool embeddings
    t0 = time.perf_counter()
    base_train = train_ssl(s, out / "base", splits["seed_set"], seed=0, iterations=s.base_iterations, device=device)
    feats_path = out / "base" / "pool_feats.npy"
    if feats_path.exists() and np.load(feats_path, mmap_mode="r", allow_pickle=False).shape[0] == len(pool):
        pool_feats = np.load(feats_path, allow_pickle=False)
    else:
        pool_feats = embed_rows(base_train["backbone"], train_images[pool], s.embed_batch_size, device)
        atomic_save_npy(feats_path, pool_feats)
    timings["base_train_and_embed_s"] = time.perf_counter() - t0
    per_run = base_train["seconds"] / s.base_iterations * s.iterations
    log.info(
        "base model: %.0fs (%.1f img/s); estimated training time of the %d runs: %.0f min",
        base_train["seconds"],
        base_train["img_per_s"],
        3 * len(s.seeds),
        per_run * 3 * len(s.seeds) / 60,
    )

    # 3. curation per seed, random subsets, balance
    from curate.kmeans import KMeans
    from curate.metrics import cluster_balance

    t0 = time.perf_counter()
    ref_k = min(s.ref_clusters, len(pool))
    ref = KMeans(k=ref_k, n_iter=s.kmeans_iter, seed=s.ref_seed, distance=s.distance, device=device).fit(pool_feats)
    ref_assign = ref.labels_.numpy()
    selections: dict[tuple[str, int], np.ndarray] = {}
    top_ids: dict[int, tuple[np.ndarray, int]] = {}  # seed -> (top-level cluster of every pool item, k)
    curation_stats = []
    first_levels = None
    for seed in s.seeds:
        cur_path, rnd_path = out / "curation" / f"curated_seed{seed}.npy", out / "curation" / f"random_seed{seed}.npy"
        idx, levels, stats = curate_pool(s, pool_feats, seed, device, out / "curation" / f"hierarchy_seed{seed}")
        if first_levels is None:
            first_levels = levels
        top_ids[seed] = (item_cluster_ids(levels)[-1], int(len(levels[-1].offsets) - 1))
        atomic_save_npy(cur_path, idx)
        atomic_save_npy(rnd_path, random_subset(len(pool), s.budget, seed))
        selections[("curated", seed)] = idx
        selections[("random", seed)] = np.load(rnd_path, allow_pickle=False)
        selections[("full", seed)] = np.arange(len(pool), dtype=np.int64)
        curation_stats.append({"seed": seed, **stats})
        log.info("curation seed %d: %.1fs, %d items", seed, stats["seconds"], len(idx))
    timings["curation_s"] = time.perf_counter() - t0

    balance: dict[str, Any] = {
        "pool": balance_stats(pool_labels, pool_labels, tail, NUM_CLASSES, ref_assign, ref_k),
        "seed_set": balance_stats(train_labels[splits["seed_set"]], pool_labels, tail),
    }
    for name in SETS:
        balance[name] = [
            {
                "seed": seed,
                **balance_stats(pool_labels[sel], pool_labels, tail, NUM_CLASSES, ref_assign[sel], ref_k),
                "top_normalized_entropy": cluster_balance(top_ids[seed][0][sel], top_ids[seed][1])[
                    "normalized_entropy"
                ],
            }
            for (set_name, seed), sel in selections.items()
            if set_name == name
        ]
    balance_summary = summarise_balance(balance)
    balance_summary["seed_set"] = balance["seed_set"]
    for name in ("random", "curated"):
        m = balance_summary[name]["mean"]
        log.info(
            "%s: tail share %.3f (gain %.2fx), label entropy %.3f, class counts %s",
            name,
            m["tail_share"]["mean"],
            m["tail_gain"]["mean"],
            m["normalized_entropy"]["mean"],
            [round(c) for c in m["class_counts_mean"]],
        )

    # base model evaluation and embedding diagnostics
    t0 = time.perf_counter()
    base_eval = evaluate_backbone(s, base_train["backbone"], eval_images, eval_labels, tail, device)
    diagnostics = embedding_diagnostics(s, pool_feats, pool_labels, first_levels, eval_images, eval_labels, tail)
    timings["base_eval_s"] = time.perf_counter() - t0

    # 4-5. SSL training on the three sets and frozen evaluation
    runs = []
    for seed in s.seeds:
        for name in SETS:
            run_dir = out / "runs" / f"{name}_seed{seed}"
            sel = selections[(name, seed)]
            rows = pool[sel]
            t0 = time.perf_counter()
            info = train_ssl(s, run_dir, rows, seed=seed, iterations=s.iterations, device=device)
            eval_path = run_dir / "eval.json"
            if eval_path.exists() and info["reused"]:
                report = json.loads(eval_path.read_text())
            else:
                report = evaluate_backbone(s, info["backbone"], eval_images, eval_labels, tail, device)
                atomic_write_json(eval_path, report)
            runs.append({"set": name, "seed": seed, "n_train": int(len(rows)), "train": info, "eval": report})
            log.info(
                "%s seed %d: %d images, train %.0fs (%.1f img/s), k-NN %.3f (tail %.3f), linear %.3f (tail %.3f); "
                "%.0fs since start",
                name,
                seed,
                len(rows),
                info["seconds"],
                info["img_per_s"],
                report["knn"]["top1"],
                report["knn"]["tail_mean"],
                report["linear"]["top1"],
                report["linear"]["tail_mean"],
                time.perf_counter() - t_start,
            )
    timings["ssl_runs_s"] = sum(r["train"]["seconds"] + r["eval"].get("seconds", 0.0) for r in runs)

    hardware = {**_hardware(device), "load_average_start": load_start, "load_average_end": _load_average()}
    results = {
        "settings": asdict(s),
        "hardware": hardware,
        "command": " ".join(sys.argv),
        "classes": list(CLASSES),
        "tail_classes": tail,
        "splits": {
            "n_seed_set": int(len(splits["seed_set"])),
            "n_pool": int(len(pool)),
            "n_eval_train": int(len(splits["eval_train"])),
            "n_test": int(len(splits["test"])),
            "seed_set_class_counts": np.bincount(train_labels[splits["seed_set"]], minlength=NUM_CLASSES).tolist(),
            "pool_class_counts": np.bincount(pool_labels, minlength=NUM_CLASSES).tolist(),
            "seed_pool_disjoint": bool(np.intersect1d(splits["seed_set"], pool).size == 0),
        },
        "base": {"train": base_train, "eval": base_eval, "diagnostics": diagnostics},
        "curation": curation_stats,
        "balance": balance_summary,
        "runs": runs,
        "summary": summarise_runs(runs),
        "timings": timings,
    }
    results["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_json(out / "results.json", results)
    table = markdown_table(results)
    atomic_write_text(out / "results.md", table)
    plot_results(results, out / "results.png")
    return results


# ----------------------------------------------------------------------------------------------
# Investigation (--investigate): what limits the effect of curation here
# ----------------------------------------------------------------------------------------------
def label_balanced_subset(labels: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Oracle balance: water-fill ``budget`` over the *labels* (small classes whole), random items per class.

    Returns:
        ``(min(budget, n),) int64`` sorted positions into ``labels``.
    """
    from curate.sampling import water_fill

    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([seed, 11])
    quotas = water_fill(np.bincount(labels, minlength=NUM_CLASSES), min(budget, len(labels)), rng)
    order = np.lexsort((rng.random(len(labels)), labels))  # class-major, random inside a class
    sorted_labels = labels[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return np.sort(order[rank < quotas[sorted_labels]]).astype(np.int64)


def pca_features(images: np.ndarray, dim: int) -> np.ndarray:
    """``(n, dim) float32`` PCA of raw pixels (scaled to [0, 1], centred)."""
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    x = x - x.mean(dim=0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:dim].t()).numpy()


def balance_study(
    s: Settings,
    embeddings: dict[str, np.ndarray],
    pool_labels: np.ndarray,
    tail: list[int],
    budgets: list[int],
    device: str,
) -> dict[str, Any]:
    """Label balance of curated samples for several embeddings, hierarchy depths and budgets (no training).

    One hierarchy (``s.levels``) is fitted per embedding and seed; its first ``t`` levels are the
    ``t``-level hierarchy (levels are built bottom-up), so 1, 2, ... levels come from the same fit.

    Returns:
        ``embeddings`` (per embedding: pool k-NN label agreement, cluster purity per level) and ``rows``:
        ``{embedding, n_levels, budget, tail_gain, normalized_entropy, tail_counts}`` as mean/std over
        ``s.seeds`` (``embedding = "random"`` for the uniform baseline).
    """
    from curate.hierarchy import HierarchicalKMeans
    from curate.sampling import hierarchical_sample

    levels = [{"k": int(k), "resample_steps": int(m), "sample_size": int(r)} for k, m, r in s.levels]
    raw: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    info: dict[str, Any] = {}
    for name, feats in embeddings.items():
        purity = []
        for seed in s.seeds:
            t0 = time.perf_counter()
            hkm = HierarchicalKMeans(levels, n_iter=s.kmeans_iter, seed=seed, device=device, distance=s.distance)
            hkm.fit(feats)
            ids = item_cluster_ids(hkm.levels_)
            purity.append([cluster_purity(i, pool_labels, len(lv.offsets) - 1) for i, lv in zip(ids, hkm.levels_)])
            for t in range(1, len(levels) + 1):
                for budget in budgets:
                    idx = hierarchical_sample(hkm.levels_[:t], budget, strategy=s.leaf_strategy, seed=seed).indices
                    raw.setdefault((name, t, budget), []).append(balance_stats(pool_labels[idx], pool_labels, tail))
            log.info("balance study: %s seed %d, %.0fs", name, seed, time.perf_counter() - t0)
        info[name] = {
            "pool_knn_agreement": knn_label_agreement(feats, pool_labels)["mean"],
            "cluster_purity": np.mean(purity, axis=0).tolist(),
        }
    for budget in budgets:
        for seed in s.seeds:
            idx = random_subset(len(pool_labels), budget, seed)
            raw.setdefault(("random", 0, budget), []).append(balance_stats(pool_labels[idx], pool_labels, tail))
    rows = [
        {
            "embedding": name,
            "n_levels": t,
            "budget": budget,
            "tail_gain": mean_std([b["tail_gain"] for b in stats]),
            "normalized_entropy": mean_std([b["normalized_entropy"] for b in stats]),
            "tail_counts": np.mean([b["tail_counts"] for b in stats], axis=0).tolist(),
        }
        for (name, t, budget), stats in raw.items()
    ]
    return {"embeddings": info, "rows": rows}


def investigate(out: str | Path) -> dict[str, Any]:
    """Follow-up of a finished run in ``out``: a balance study and two control trainings.

    1. :func:`balance_study` with three embeddings of the pool: the base SSL model (the run's
       curation embedding), the SSL model trained on the full pool (seed of the first run, a longer
       and larger training set), and PCA-128 of raw pixels; budgets ``B/2, B, 2B``; 1..T levels.
    2. Control trainings (first seed, same recipe and iterations): ``oracle_balanced`` (``B`` items
       water-filled over the *labels*: the best label balance a budget allows) and ``no_tail``
       (``B`` random items of the pool outside the tail classes: a training set without any tail
       image). If ``no_tail`` scores like ``random`` on the tail classes, the SSL runs are too short
       or too small for the training set's composition to show in frozen features.

    Writes ``OUT/investigation.json`` and ``OUT/investigation.md`` (also printed).
    """
    t_start = time.perf_counter()
    out = Path(out)
    if not (out / "results.json").exists():
        raise FileNotFoundError(f"{out / 'results.json'} not found: run the experiment into {out} first")
    results = json.loads((out / "results.json").read_text())
    s = make_settings("full", results["settings"])
    device = resolve_device(s.device)
    tail = results["tail_classes"]
    train_images, train_labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    pool = np.load(out / "splits" / "pool.npy", allow_pickle=False)
    eval_train, test_rows = (
        np.load(out / "splits" / "eval_train.npy", allow_pickle=False),
        np.load(out / "splits" / "test.npy", allow_pickle=False),
    )
    eval_images = (train_images[eval_train], test_images[test_rows])
    eval_labels = (train_labels[eval_train], test_labels[test_rows])
    pool_labels = train_labels[pool]
    seed = s.seeds[0]

    embeddings = {
        "base SSL (seed set)": np.load(out / "base" / "pool_feats.npy", allow_pickle=False),
        f"SSL on full pool (seed {seed})": embed_rows(
            out / "runs" / f"full_seed{seed}" / "backbone.pt", train_images[pool], s.embed_batch_size, device
        ),
        "PCA-128 of pixels": pca_features(train_images[pool], 128),
    }
    budgets = sorted({max(1, s.budget // 2), s.budget, min(2 * s.budget, len(pool) - 1)})
    study = balance_study(s, embeddings, pool_labels, tail, budgets, device)

    controls = []
    rng = np.random.default_rng([seed, 13])
    non_tail = np.flatnonzero(~np.isin(pool_labels, tail))
    sets = {
        "oracle_balanced": label_balanced_subset(pool_labels, s.budget, seed),
        "no_tail": np.sort(rng.choice(non_tail, size=min(s.budget, len(non_tail)), replace=False)),
    }
    for name, sel in sets.items():
        run_dir = out / "investigation" / f"{name}_seed{seed}"
        info = train_ssl(s, run_dir, pool[sel], seed=seed, iterations=s.iterations, device=device)
        eval_path = run_dir / "eval.json"
        if eval_path.exists() and info["reused"]:
            report = json.loads(eval_path.read_text())
        else:
            report = evaluate_backbone(s, info["backbone"], eval_images, eval_labels, tail, device)
            atomic_write_json(eval_path, report)
        controls.append(
            {
                "set": name,
                "seed": seed,
                "n_train": int(len(sel)),
                "balance": balance_stats(pool_labels[sel], pool_labels, tail),
                "train": info,
                "eval": report,
            }
        )
    inv = {
        "settings": asdict(s),
        "tail_classes": tail,
        "budgets": budgets,
        "balance_study": study,
        "controls": controls,
        "main_runs_seed": [
            {**r, "balance": next(b for b in results["balance"][r["set"]]["per_seed"] if b["seed"] == seed)}
            for r in results["runs"]
            if r["seed"] == seed
        ],
        "wall_seconds": time.perf_counter() - t_start,
    }
    atomic_write_json(out / "investigation.json", inv)
    atomic_write_text(out / "investigation.md", investigation_markdown(inv))
    return inv


def investigation_markdown(inv: dict[str, Any]) -> str:
    """The investigation's tables as markdown."""
    seeds = len(inv["settings"]["seeds"])
    lines = [
        f"Label balance of curated samples (no training), mean ± std over {seeds} clustering seed(s): tail gain "
        "(share of the tail classes over their pool share) / normalised label entropy.",
        "",
        "| embedding | pool 20-NN label agreement | purity per level | levels | "
        + " | ".join(f"B={b}" for b in inv["budgets"])
        + " |",
        "|---|---|---|---|" + "---|" * len(inv["budgets"]),
    ]
    rows = inv["balance_study"]["rows"]
    info = inv["balance_study"]["embeddings"]
    for name in [*info, "random"]:
        depths = sorted({r["n_levels"] for r in rows if r["embedding"] == name})
        for t in depths:
            cells = []
            for b in inv["budgets"]:
                r = next(r for r in rows if r["embedding"] == name and r["n_levels"] == t and r["budget"] == b)
                gain, ent = r["tail_gain"], r["normalized_entropy"]["mean"]
                cells.append(f"{gain['mean']:.2f}x ± {gain['std']:.2f} / {ent:.3f}")
            agree = f"{info[name]['pool_knn_agreement']:.3f}" if name in info else "-"
            purity = ", ".join(f"{p:.2f}" for p in info[name]["cluster_purity"]) if name in info else "-"
            lines.append(f"| {name} | {agree} | {purity} | {t if t else '-'} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Control trainings (seed {inv['main_runs_seed'][0]['seed'] if inv['main_runs_seed'] else '-'}, same recipe): "
        "top-1 in %.",
        "",
        "| training set | images | tail share | label entropy | k-NN top-1 | k-NN tail | linear top-1 | linear tail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    main = {id(r) for r in inv["main_runs_seed"]}
    for r in inv["main_runs_seed"] + inv["controls"]:
        b, e = r["balance"], r["eval"]
        share, ent = f"{100 * b['tail_share']:.1f}%", f"{b['normalized_entropy']:.3f}"
        lines.append(
            f"| {r['set']}{' (main run)' if id(r) in main else ''} | {r['n_train']} | {share} | {ent} | "
            f"{100 * e['knn']['top1']:.1f} | "
            f"{100 * e['knn']['tail_mean']:.1f} | {100 * e['linear']['top1']:.1f} | "
            f"{100 * e['linear']['tail_mean']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects name=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            overrides[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value  # a bare string such as cosine
    return overrides


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/curation_ssl", help="output folder (resumable)")
    parser.add_argument("--quick", action="store_true", help="smoke check: 1 seed, tiny ViT, few iterations")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None,
                        help="cuda selects the larger 'gpu' preset (unless --quick)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared CPU)")
    parser.add_argument("--investigate", action="store_true",
                        help="after a finished run in --out: balance study and control trainings")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a setting")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    preset = "quick" if args.quick else ("gpu" if args.device == "cuda" else "full")
    overrides = _parse_overrides(args.set)
    if args.device is not None:
        overrides.setdefault("device", args.device)
    if args.investigate:
        inv = investigate(args.out)
        print(investigation_markdown(inv))
        print(f"wall time {inv['wall_seconds'] / 60:.1f} min; {args.out}/investigation.json")
        return inv
    settings = make_settings(preset, overrides)
    results = run_experiment(settings, args.out)
    print(markdown_table(results))
    print(f"wall time {results['wall_seconds'] / 60:.1f} min; results in {args.out}")
    return results


if __name__ == "__main__":
    from curate.errors import cli_entry

    cli_entry(main)
