"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (gzipped IDX files).

The files are located through ``dpkg -L`` (not a hard-coded path), or through the
``FASHION_MNIST_DIR`` environment variable when set.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_INSTALL_HINT = "install it with `apt-get install -y dataset-fashion-mnist` or set FASHION_MNIST_DIR"


@lru_cache(maxsize=1)
def fashion_mnist_dir() -> Path:
    """The folder holding the four ``*-ubyte.gz`` files."""
    if os.environ.get("FASHION_MNIST_DIR"):
        folder = Path(os.environ["FASHION_MNIST_DIR"])
        if not (folder / _FILES["train"][0]).exists():
            raise FileNotFoundError(f"FASHION_MNIST_DIR={folder} does not hold {_FILES['train'][0]}")
        return folder
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as err:
        raise FileNotFoundError(f"Debian package dataset-fashion-mnist is not installed: {_INSTALL_HINT}") from err
    for line in listing:
        if line.endswith(_FILES["train"][0]):
            return Path(line).parent
    raise FileNotFoundError(f"dataset-fashion-mnist lists no {_FILES['train'][0]}: {_INSTALL_HINT}")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {magic:#x})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)``: ``images (n, 28, 28) uint8``, ``labels (n,) int64``.

    ``split`` is ``"train"`` (60k) or ``"test"`` (10k).
    """
    if split not in _FILES:
        raise ValueError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    folder = fashion_mnist_dir()
    images = _read_idx(folder / _FILES[split][0])
    labels = _read_idx(folder / _FILES[split][1]).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def long_tailed_indices(
    labels: np.ndarray, max_per_class: int = 6000, min_per_class: int = 60, seed: int = 0
) -> np.ndarray:
    """Indices of a long-tailed subset: class sizes decay geometrically from max to min.

    Classes are ranked by a seeded permutation (so which class is rare is fixed by ``seed``);
    class ``r`` of ``C`` keeps ``max * (min/max)^(r/(C-1))`` items drawn at random.

    Returns:
        ``(m,) int64`` sorted indices into ``labels``.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    order = rng.permutation(classes)
    ratio = (min_per_class / max_per_class) ** (1.0 / max(len(classes) - 1, 1))
    keep = []
    for rank, cls in enumerate(order):  # loop over 10 classes, not over clusters or points
        pool = np.flatnonzero(labels == cls)
        size = min(len(pool), round(max_per_class * ratio**rank))
        keep.append(rng.choice(pool, size=size, replace=False))
    return np.sort(np.concatenate(keep)).astype(np.int64)
