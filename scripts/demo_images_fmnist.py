"""Real-data demo (images): curate a long-tailed Fashion-MNIST pool, SSL vs raw-pixel embeddings.

    python scripts/demo_images_fmnist.py --out outputs/demo_fmnist
    python scripts/demo_images_fmnist.py --out /tmp/fmnist_quick --seeds 0 --base-iterations 60   # faster

Data (the curation_ssl experiment's splits, ``curate.data.datasets.fmnist_folders.curation_splits``): a
balanced *seed set* of 200 Fashion-MNIST train images per class, then the long-tailed *pool* drawn from
the other train images, class sizes decaying geometrically from 6,000 to 60 (the head class keeps 5,800
because the seed set took its share): about 14.7k images. The pool is disjoint from the seed set. Labels are kept apart,
never shown to the encoders or the clustering; which class is rare is fixed by ``lt_seed`` 0.

Encoders (each writes an embedding store ``OUT/<encoder>/store`` whose ids are Fashion-MNIST train
indices, so ``curate.report`` shows the images):

- ``ssl``: a small ViT trained with our DINOv2-style trainer (``selfsup.train``: DINO + iBOT + KoLeo,
  multi-crop) on the seed set only, for ``--base-iterations`` (200: ~3 min on one shared CPU core);
  its teacher's class token embeds the pool.
- ``pixels``: raw pixels in [0, 1] projected on their top 64 principal axes (the embed stage's
  ``pixels`` encoder with ``pca_dim=64``, PCA fitted on the pool): the weak-embedding baseline.

Per encoder and clustering seed (default 0, 1, 2): 3-level hierarchical k-means with resampling
(1500 / 300 / 50 clusters, r = 5 / 3 / 3, 10 steps, 50 Lloyd iterations, spherical k-means), a
hierarchical balanced sample of ``--budget`` (3000) images and a uniform random sample of the same
size, measured over the 10 classes (entropy, share of the 3 rarest) and over a reference k-means of
the same embedding (k = 100, its own seed). Also: how well each embedding separates the classes
(leave-one-out 20-NN label agreement in the pool, label purity of the top-level clusters): the
method balances concepts *as the embedding sees them*, so that bounds what the labels can show.

Writes ``OUT/results.json``, ``OUT/results.md``, ``OUT/fmnist_classes.png`` and per encoder the
hierarchies and samples (``OUT/<encoder>/cluster_seed<s>/``, ``OUT/<encoder>/sample_seed<s>/``). A re-run
with the same ``--out`` reuses the trained base model, the stores, hierarchies and reference clustering.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from curate.analysis import top_level_purity  # noqa: E402
from curate.core.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from curate.data.datasets.fashion_mnist import CLASSES, load_fashion_mnist  # noqa: E402
from research.compare import CurationSettings  # noqa: E402
from research.features import pixel_pca  # noqa: E402
from research.machine import machine_info  # noqa: E402
from research.study import label_count_table, label_study, plot_studies  # noqa: E402

log = logging.getLogger("demo_fmnist")

DEFAULT_LEVELS = [
    {"k": 1500, "resample_steps": 10, "sample_size": 5},
    {"k": 300, "resample_steps": 10, "sample_size": 3},
    {"k": 50, "resample_steps": 10, "sample_size": 3},
]
ENCODERS = ("ssl", "pixels")


# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------
def ssl_features(
    images: np.ndarray, train_rows: np.ndarray, out: Path, iterations: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train (or resume, or reuse) the SSL base model on ``train_rows`` of Fashion-MNIST train, embed ``images``.

    The recipe is the curation_ssl experiment's (``configs/experiment/curation_ssl.yaml``, ``train`` node).

    Returns:
        ``((n, D) float32 features, training info)``.
    """
    from omegaconf import OmegaConf

    from curate.core.atomic import atomic_save_npy
    from curate.pipeline import CONFIG_DIR, compose_stage
    from selfsup.export import embed_images, load_backbone
    from selfsup.train import train

    recipe = OmegaConf.load(Path(CONFIG_DIR) / "experiment" / "curation_ssl.yaml").train
    atomic_save_npy(out / "train_rows.npy", np.asarray(train_rows, dtype=np.int64))
    cfg = compose_stage("train", [], {"out": str(out), "name": "base", "train.seed": 0})
    cfg = OmegaConf.merge(cfg, recipe)
    cfg.train.iterations, cfg.train.device = iterations, "cpu"
    data = {"kind": "fashion_mnist", "split": "train", "selection": str(out / "train_rows.npy")}
    OmegaConf.update(cfg, "data", data, merge=False)
    t0 = time.perf_counter()
    summary = train(cfg)
    info = {"n_train": summary["n_train"], "iterations": summary["iterations"], "seconds": time.perf_counter() - t0}
    info["backbone"] = str(out / "backbone.pt")
    t0 = time.perf_counter()
    feats = embed_images(load_backbone(info["backbone"]), images, 512, "cpu")
    info["embed_seconds"] = time.perf_counter() - t0
    info["model"] = {k: cfg.model[k] for k in ("depth", "embed_dim", "num_heads", "patch_size")}
    info["model"]["batch_size"] = cfg.train.batch_size
    return feats, info


def write_pool_store(folder: Path, feats: np.ndarray, rows: np.ndarray, labels: np.ndarray, model: str) -> Path:
    """The pool's embeddings as a store (ids = Fashion-MNIST train indices) unless an identical one exists."""
    from curate.io.store import load_embeddings, write_store

    if (folder / "manifest.json").exists():
        array, ids = load_embeddings(folder)
        if array.shape == feats.shape and np.array_equal(np.asarray(list(ids)), rows):
            return folder
        raise ValueError(f"{folder} holds another store; use another --out")
    source = {"kind": "fashion_mnist", "split": "train", "long_tailed": True, "count": len(rows), "pool": "demo"}
    write_store(folder, feats, ids=rows, labels=labels, label_names=list(CLASSES), model=model, source=source)
    return folder


# ----------------------------------------------------------------------------------------------
# The demo
# ----------------------------------------------------------------------------------------------
def run_encoder(
    name: str,
    feats: np.ndarray,
    labels: np.ndarray,
    settings: CurationSettings,
    budget: int,
    seeds: list[int],
    out: Path,
    store: Path | None = None,
    n_rarest: int = 3,
) -> dict[str, Any]:
    """:func:`research.study.label_study` of one embedding (k-NN diagnostics on every image),
    plus the label purity of its first seed's top-level clusters."""
    from curate.hierarchy import HierarchicalKMeans

    desc = {"kind": "store", "path": str(store.resolve())} if store is not None else None
    result = label_study(
        feats, labels, list(CLASSES), settings, budget, seeds, n_rarest, out, desc, rare_label="classes", n_queries=None
    )
    result["encoder"] = name
    first = HierarchicalKMeans.load(out / f"cluster_seed{seeds[0]}").levels_
    result["diagnostics"]["top_level_purity"] = top_level_purity(first, labels)
    return result


def markdown(out: dict[str, Any]) -> str:
    """``results.md``: settings, one table per encoder, class counts, diagnostics, timings."""
    parts = [
        "# Long-tailed Fashion-MNIST curation demo\n",
        f"Pool {out['pool_size']} images (seed set {out['seed_set_size']} disjoint), budget {out['budget']}, "
        f"seeds {out['seeds']}.\n",
    ]
    for name, res in out["encoders"].items():
        d = res["diagnostics"]
        parts.append(f"## encoder `{name}` ({res['model']})\n\n{res['table']}\n")
        radius = ", ".join(
            f"{CLASSES[c]} {p:.2f}" for c, p in sorted(enumerate(d["radius_percentile"]), key=lambda cp: -cp[1])
        )
        parts.append(
            f"Embedding: leave-one-out 20-NN label agreement {d['knn20_agreement']:.3f} (rarest classes "
            f"{d['knn20_agreement_rare']:.3f}); top-level cluster purity {d['top_level_purity']:.3f}. Median "
            f"percentile of the class's 10-NN radius in the pool (high = sparse region, favoured by curation): "
            f"{radius}.\n"
        )
    parts.append("## Mean class counts (over seeds)\n\n" + label_count_table(out["encoders"], list(CLASSES)) + "\n")
    reused = [f"{n} seed {r['seed']}" for n, res in out["encoders"].items() for r in res["runs"] if r["reused"]]
    clustering = "; ".join(
        f"{n} seed {r['seed']} {r['cluster_seconds']:.0f}s" for n, res in out["encoders"].items() for r in res["runs"]
    )
    parts.append(
        "## Wall times (this invocation)\n\n"
        + "\n".join(f"- {k}: {v:.0f}s" for k, v in out["timings"].items())
        + f"\n- hierarchy fits: {clustering}"
        + (f"\n- reused from an earlier run with the same --out: {', '.join(reused)}" if reused else "")
        + f"\n- load average at the end: {out['hardware']['load_avg']}\n"
    )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--budget", type=int, default=3000, help="sample size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="clustering / sampling seeds")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument("--base-iterations", type=int, default=200, help="SSL training iterations on the seed set")
    parser.add_argument("--pca-dim", type=int, default=64, help="PCA dimension of the pixels encoder")
    parser.add_argument("--n-iter", type=int, default=50, help="Lloyd iterations of every k-means")
    parser.add_argument("--ref-k", type=int, default=100, help="clusters of the reference k-means")
    parser.add_argument("--ref-seed", type=int, default=1000, help="seed of the reference k-means")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    from curate.data.datasets.fmnist_folders import curation_splits

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    images, train_labels = load_fashion_mnist("train")
    _, test_labels = load_fashion_mnist("test")
    splits = curation_splits(train_labels, test_labels)
    pool, seed_set = splits["pool"], splits["seed"]
    labels = train_labels[pool]
    log.info("pool %d images, class counts %s", len(pool), np.bincount(labels, minlength=len(CLASSES)).tolist())
    settings = CurationSettings(levels=DEFAULT_LEVELS, n_iter=args.n_iter, ref_k=args.ref_k, ref_seed=args.ref_seed)
    results: dict[str, dict[str, Any]] = {}
    for name in args.encoders:
        folder = args.out / name
        t0 = time.perf_counter()
        if name == "ssl":
            feats, info = ssl_features(images[pool], seed_set, folder / "base", args.base_iterations)
            model = (
                f"selfsup ViT depth {info['model']['depth']}, dim {info['model']['embed_dim']}, patch "
                f"{info['model']['patch_size']}, {args.base_iterations} it. on the {len(seed_set)}-image seed set"
            )
            timings["ssl_train_s"] = info["seconds"]
            timings["ssl_embed_s"] = info["embed_seconds"]
        else:
            feats = pixel_pca(images[pool], args.pca_dim, folder / "pca")
            model = f"pixels PCA-{args.pca_dim} (fitted on the pool)"
            timings["pixels_embed_s"] = time.perf_counter() - t0
        store = write_pool_store(folder / "store", feats, pool, labels, model)
        t0 = time.perf_counter()
        results[name] = run_encoder(name, feats, labels, settings, args.budget, args.seeds, folder, store)
        results[name]["model"] = model
        timings[f"{name}_curation_s"] = time.perf_counter() - t0
    figure = plot_studies(results, list(CLASSES), args.out / "fmnist_classes.png", "images", "classes")
    timings["total_s"] = time.perf_counter() - t_start
    out = {
        "pool_size": int(len(pool)),
        "seed_set_size": int(len(seed_set)),
        "pool_class_counts": np.bincount(labels, minlength=len(CLASSES)).tolist(),
        "classes": list(CLASSES),
        "budget": args.budget,
        "seeds": args.seeds,
        "encoders": results,
        "figure": str(figure),
        "timings": timings,
        "hardware": machine_info(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    atomic_write_json(args.out / "results.json", out)
    atomic_write_text(args.out / "results.md", markdown(out))
    print(markdown(out))
    return out


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
