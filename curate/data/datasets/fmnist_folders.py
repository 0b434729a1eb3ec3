"""Fashion-MNIST written out as image folders: the long-tailed curation experiment's data as a user has it.

    python scripts/make_fmnist_folders.py --out data/fmnist      # pool/, seed/, train/, test/, splits.json

Splits (those of docs/curation_ssl.md, same seeds): from the train split, a balanced *seed set*
(``seed_per_class`` images per class), then the long-tailed *pool* drawn from the remaining images
(:func:`curate.data.datasets.fashion_mnist.long_tailed_indices`: class sizes decaying geometrically from
``lt_max`` to ``lt_min``, about 14.7k images), a balanced labelled *train* subset for the k-NN and the
linear probe (``eval_train_per_class`` per class outside the seed set; it may overlap the pool) and
the *test* split. Every folder has one sub-folder per class, ``<id>_<name>`` (``4_Coat``), so
torchvision's ImageFolder order (sorted names) gives the Fashion-MNIST label ids; files are
``<split>_<row>.png`` (28x28 grey), the row in the Fashion-MNIST split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from curate.core.atomic import atomic_path, atomic_write_json
from curate.data.datasets.fashion_mnist import CLASSES, load_fashion_mnist, long_tailed_indices


def class_folder(label: int) -> str:
    """``"<id>_<name>"`` with ``/`` replaced (``0_T-shirt-top``)."""
    return f"{label}_{CLASSES[label].replace('/', '-')}"


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


def curation_splits(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    seed_per_class: int = 200,
    lt_max: int = 6000,
    lt_min: int = 60,
    lt_seed: int = 0,
    eval_train_per_class: int = 500,
    test_per_class: int | None = None,
    pool_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Rows of the seed set, the long-tailed pool, the labelled train subset (train split) and the
    test set (test split), each ``(m,) int64`` sorted; the seed set and the pool are disjoint.

    ``pool_size`` subsamples the pool and ``test_per_class`` balances a smaller test set (tests)."""
    all_rows = np.arange(len(train_labels), dtype=np.int64)
    seed_set = balanced_subset(train_labels, all_rows, seed_per_class, np.random.default_rng([lt_seed, 1]))
    rest = np.setdiff1d(all_rows, seed_set, assume_unique=True)
    pool = rest[long_tailed_indices(train_labels[rest], lt_max, lt_min, lt_seed)]
    if pool_size is not None and pool_size < len(pool):
        pool = np.random.default_rng([lt_seed, 3]).choice(pool, pool_size, replace=False)
    eval_train = balanced_subset(train_labels, rest, eval_train_per_class, np.random.default_rng([lt_seed, 2]))
    test = np.arange(len(test_labels), dtype=np.int64)
    if test_per_class is not None:
        test = balanced_subset(test_labels, test, test_per_class, np.random.default_rng([lt_seed, 4]))
    return {"seed": seed_set, "pool": np.sort(pool), "train": eval_train, "test": test}


def write_image_folder(images: np.ndarray, labels: np.ndarray, rows: np.ndarray, folder: Path, prefix: str) -> int:
    """``folder/<class>/<prefix>_<row>.png`` for every row (existing files are kept); returns the count."""
    for label in np.unique(labels[rows]):
        (folder / class_folder(int(label))).mkdir(parents=True, exist_ok=True)
    for row in rows.tolist():  # one PNG per image
        path = folder / class_folder(int(labels[row])) / f"{prefix}_{row:05d}.png"
        if not path.exists():
            with atomic_path(path, suffix=".png") as tmp:
                Image.fromarray(images[row], mode="L").save(tmp, format="PNG")
    return len(rows)


def write_fmnist_folders(out: str | Path, **split_args: int | None) -> dict:
    """Write ``pool/``, ``seed/``, ``train/``, ``test/`` image folders and ``splits.json`` under ``out``.

    Args:
        out: the folder to write.
        split_args: :func:`curation_splits` settings.

    Returns:
        The content of ``splits.json`` (settings, counts and class counts per folder).
    """
    out = Path(out)
    train_images, train_labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    splits = curation_splits(train_labels, test_labels, **split_args)
    info: dict = {"settings": split_args, "classes": [class_folder(c) for c in range(len(CLASSES))], "folders": {}}
    for name, rows in splits.items():
        prefix = "test" if name == "test" else "train"
        images, labels = (test_images, test_labels) if name == "test" else (train_images, train_labels)
        write_image_folder(images, labels, rows, out / name, prefix)
        counts = np.bincount(labels[rows], minlength=len(CLASSES)).tolist()
        info["folders"][name] = {"count": int(len(rows)), "class_counts": counts}
    atomic_write_json(out / "splits.json", json.loads(json.dumps(info)))
    return info
