"""Training data: image sources, curated selections, the multi-crop dataset and the infinite sampler.

Reproducibility contract: the global sample stream is a pure function of ``(seed, n)``. Epoch
``e`` is the permutation of the training set drawn with seed ``seed + e``; the stream concatenates
the epochs, and iteration ``t`` consumes stream positions ``[t * B, (t + 1) * B)`` for the global
batch size ``B``. Rank ``r`` of ``W`` takes the ``r``-th contiguous slice of ``B / W`` positions, so
ranks see disjoint parts of every epoch and the *global* batch of an iteration does not depend on
the world size. Augmentations and masks of a sample are seeded by ``(seed, stream position)``.
A run therefore resumes from "global samples seen" alone, on any world size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.augment import MultiCrop
from selfsup.masking import sample_mask


@dataclass
class ImageSet:
    """Images addressed through a row map.

    Attributes:
        images: ``(N, H, W)`` or ``(N, H, W, C)`` uint8 array (possibly memory-mapped).
        rows: ``(n,) int64`` rows of ``images`` forming this set (repeats allowed).
        labels: ``(n,) int64`` labels of the set, or None when the source has none.
    """

    images: np.ndarray
    rows: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, i: int) -> torch.Tensor:
        """Item ``i`` as a uint8 ``(C, H, W)`` tensor."""
        return image_to_chw(np.asarray(self.images[self.rows[i]]))

    def batch(self, start: int, stop: int) -> np.ndarray:
        """Items ``[start, stop)`` as the raw uint8 array ``(m, H, W[, C])``."""
        return np.asarray(self.images[self.rows[start:stop]])


def image_to_chw(image: np.ndarray) -> torch.Tensor:
    """``(H, W)`` or ``(H, W, C)`` uint8 -> ``(C, H, W)`` uint8 tensor."""
    if image.ndim == 2:
        image = image[None]
    elif image.ndim == 3:
        image = np.moveaxis(image, -1, 0)
    else:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    # a writable copy: sources (memmaps, np.frombuffer) may be read-only
    return torch.from_numpy(np.array(image, order="C", copy=True))


def load_index_file(path: str | os.PathLike, n: int, what: str = "index file") -> np.ndarray:
    """Read an ``.npy`` of integer row numbers in ``[0, n)``.

    Returns:
        ``(m,) int64``.

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a 1-D integer array, or indices out of range (the message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        idx = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"cannot read {what} {path} as a .npy array: {err}") from err
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{what} {path} must be a 1-D integer array, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"{what} {path} holds indices outside [0, {n}) (min {idx.min()}, max {idx.max()})")
    return idx


def load_selection(path: str | os.PathLike, n: int, ids_path: str | os.PathLike | None = None) -> np.ndarray:
    """Rows selected by a curated selection file.

    Args:
        path: ``.npy`` int indices into the ``n`` rows, or a text file with one id per line.
        n: number of rows of the (restricted) source.
        ids_path: text file with the ids of the ``n`` rows, one per line; without it a row's id is
            its row number written in decimal.

    Returns:
        ``(m,) int64`` rows, in file order (repeats kept).
    """
    path = Path(path)
    if path.suffix == ".npy":
        return load_index_file(path, n, "selection")
    if not path.exists():
        raise FileNotFoundError(f"selection file not found: {path}")
    wanted = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if ids_path is not None:
        ids = [line.strip() for line in Path(ids_path).read_text().splitlines() if line.strip()]
        if len(ids) != n:
            raise ValueError(f"ids file {ids_path} lists {len(ids)} ids for {n} source rows")
    else:
        ids = [str(i) for i in range(n)]
    lookup = {key: i for i, key in enumerate(ids)}
    missing = [key for key in wanted if key not in lookup]
    if missing:
        raise ValueError(f"selection {path}: {len(missing)} ids are not in the source, e.g. {missing[:3]}")
    return np.fromiter((lookup[key] for key in wanted), dtype=np.int64, count=len(wanted))


def open_image_set(
    source: str = "fashion_mnist",
    split: str = "train",
    path: str | None = None,
    labels_path: str | None = None,
    source_indices: str | None = None,
    ids_path: str | None = None,
    selection: str | None = None,
) -> ImageSet:
    """Open a source and apply ``source_indices`` then ``selection``.

    Args:
        source: ``"fashion_mnist"`` or ``"npy"``.
        split: Fashion-MNIST split (``train``/``test``).
        path: ``.npy`` uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` for ``source="npy"``.
        labels_path: optional ``.npy`` ``(N,)`` integer labels for ``source="npy"``.
        source_indices: optional ``.npy`` int64 rows of the source (e.g. a long-tailed pool).
        ids_path: optional ids of the restricted source (see :func:`load_selection`).
        selection: optional curated selection into the restricted source.

    Returns:
        The :class:`ImageSet`.
    """
    labels: np.ndarray | None
    if source == "fashion_mnist":
        from curate.datasets.fashion_mnist import load_fashion_mnist

        images, labels = load_fashion_mnist(split)
    elif source == "npy":
        if path is None:
            raise ValueError("data.path: an .npy image file is required for source=npy")
        if not Path(path).exists():
            raise FileNotFoundError(f"image file not found: {path}")
        images = np.load(path, mmap_mode="r", allow_pickle=False)
        if (
            images.dtype != np.uint8
            or images.ndim not in (3, 4)
            or (images.ndim == 4 and images.shape[3] not in (1, 3))
        ):
            raise ValueError(f"{path}: expected uint8 (n, H, W) or (n, H, W, C), got {images.dtype} {images.shape}")
        labels = None
        if labels_path is not None:
            labels = np.load(labels_path, allow_pickle=False).astype(np.int64)
            if labels.shape != (len(images),):
                raise ValueError(f"labels {labels_path} have shape {labels.shape}, expected ({len(images)},)")
    else:
        raise ValueError(f"data.source must be fashion_mnist or npy, got {source!r}")
    rows = np.arange(len(images), dtype=np.int64)
    if source_indices is not None:
        rows = rows[load_index_file(source_indices, len(rows), "source_indices")]
    if selection is not None:
        rows = rows[load_selection(selection, len(rows), ids_path)]
    if len(rows) == 0:
        raise ValueError("the training set is empty after applying source_indices/selection")
    return ImageSet(images=images, rows=rows, labels=None if labels is None else labels[rows])


def mix_seed(seed: int, position: int) -> int:
    """A 63-bit seed for stream position ``position`` (splitmix-style mixing)."""
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


class MultiCropDataset(torch.utils.data.Dataset):
    """Map-style dataset keyed by ``(item, stream position)``: multi-crop views plus iBOT masks.

    Args:
        images: the training :class:`ImageSet`.
        transform: the :class:`MultiCrop` callable.
        grid: ``(H, W)`` patch grid of a global crop.
        mask_ratio: ``(min, max)`` share of masked patches.
        mask_probability: chance that a global crop is masked (0 disables masking).
        mask_type: ``"block"`` or ``"random"``.
        seed: base seed; a sample's randomness depends only on ``(seed, position)``.
    """

    def __init__(
        self,
        images: ImageSet,
        transform: MultiCrop,
        grid: tuple[int, int],
        mask_ratio: tuple[float, float],
        mask_probability: float,
        mask_type: str,
        seed: int,
    ) -> None:
        self.images, self.transform, self.grid = images, transform, grid
        self.mask_ratio, self.mask_probability, self.mask_type = mask_ratio, mask_probability, mask_type
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        item, position = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(mix_seed(self.seed, position))
            views = self.transform(self.images.image(item))
            masks = torch.stack(
                [
                    sample_mask(self.grid, self.mask_ratio, self.mask_probability, self.mask_type)
                    for _ in views.global_crops
                ]
            )
        return {
            "global_crops": views.global_crops,
            "local_crops": views.local_crops,
            "masks": masks,
            "position": position,
        }


def collate_multicrop(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack samples crop-major (all first global crops, then all second ones, ...).

    Returns:
        ``global_crops: (2B, C, Sg, Sg)``, ``local_crops: (L*B, C, Sl, Sl)`` (``L`` may be 0),
        ``masks: (2B, P) bool`` aligned with ``global_crops``, ``positions: (B,) int64``.
    """
    n_global = len(samples[0]["global_crops"])
    n_local = len(samples[0]["local_crops"])
    global_crops = torch.cat([torch.stack([s["global_crops"][i] for s in samples]) for i in range(n_global)])
    if n_local:
        local_crops = torch.cat([torch.stack([s["local_crops"][i] for s in samples]) for i in range(n_local)])
    else:
        local_crops = global_crops.new_zeros((0, *global_crops.shape[1:]))
    masks = torch.cat([torch.stack([s["masks"][i] for s in samples]) for i in range(n_global)])
    positions = torch.tensor([s["position"] for s in samples], dtype=torch.int64)
    return {"global_crops": global_crops, "local_crops": local_crops, "masks": masks, "positions": positions}


class InfiniteBatchSampler(torch.utils.data.Sampler):
    """Endless per-rank batches of ``(item, stream position)`` keys (see the module docstring).

    Args:
        n: training set size.
        global_batch_size: samples per iteration over all ranks; divisible by ``world_size``.
        seed: epoch ``e`` uses the permutation drawn with ``seed + e``.
        rank: this rank.
        world_size: number of ranks.
        start: global samples already consumed (a multiple of ``global_batch_size``).
    """

    def __init__(
        self, n: int, global_batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0
    ) -> None:
        if n < 1:
            raise ValueError(f"the training set is empty (n={n})")
        if global_batch_size % world_size:
            raise ValueError(f"train.batch_size {global_batch_size} is not divisible by the world size {world_size}")
        if start % global_batch_size:
            raise ValueError(f"start {start} is not a multiple of the global batch size {global_batch_size}")
        self.n, self.global_batch_size, self.seed = n, global_batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self.local_batch_size = global_batch_size // world_size
        self._perms: dict[int, torch.Tensor] = {}

    def epoch_permutation(self, epoch: int) -> torch.Tensor:
        """``(n,) int64`` order of epoch ``epoch``."""
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def batch_keys(self, step: int) -> list[tuple[int, int]]:
        """This rank's keys of iteration ``step`` (counted from the start of training)."""
        first = step * self.global_batch_size + self.rank * self.local_batch_size
        positions = torch.arange(first, first + self.local_batch_size)
        epochs = positions // self.n
        items = torch.empty_like(positions)
        for epoch in torch.unique(epochs).tolist():  # one or two epochs per batch (more if B > n)
            sel = epochs == epoch
            items[sel] = self.epoch_permutation(epoch)[positions[sel] % self.n]
        return list(zip(items.tolist(), positions.tolist()))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start // self.global_batch_size
        while True:
            yield self.batch_keys(step)
            step += 1
