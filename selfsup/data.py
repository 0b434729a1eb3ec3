"""Training data: image sets over the shared sources, the multi-crop dataset and the infinite sampler.

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
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from curate.data.sources import Source, build_source
from selfsup.augment import MultiCrop
from selfsup.masking import sample_mask


class ImageSet:
    """The images of a source (:mod:`curate.data.sources`), decoded on demand.

    Decoding happens where :meth:`image` / :meth:`array` are called: in DataLoader workers for
    training and evaluation.

    Args:
        source: an image source (possibly restricted by ``data.selection``).
        channels: 1 (grey) or 3 (RGB): decoded images are converted to it; None keeps grey images
            grey and makes every other mode RGB.
    """

    def __init__(self, source: Source, channels: int | None = None) -> None:
        if source.modality != "image":
            raise ValueError(f"data.kind: {source.describe().get('kind')} is a text source; training needs images")
        self.source = source
        self.channels = channels
        self.labels = source.labels()

    def __len__(self) -> int:
        return len(self.source)

    def ids(self) -> list:
        """Ids of the items, in order."""
        return self.source.ids(np.arange(len(self.source)))

    def array(self, i: int) -> np.ndarray:
        """Item ``i`` as uint8 ``(H, W)`` (grey) or ``(H, W, 3)`` (resizing for features is the
        embed stage's: ``curate.encoders.encode_source``)."""
        image = self.source.load(i)
        mode = {1: "L", 3: "RGB"}.get(self.channels or 0, "L" if image.mode in ("L", "LA", "1") else "RGB")
        if image.mode != mode:
            image = image.convert(mode)
        return np.asarray(image, dtype=np.uint8)

    def image(self, i: int) -> torch.Tensor:
        """Item ``i`` as a uint8 ``(C, H, W)`` tensor."""
        return image_to_chw(self.array(i))


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


def open_image_set(data: Any, channels: int | None = None, cache_dir: str | os.PathLike | None = None) -> ImageSet:
    """The :class:`ImageSet` of a ``data`` config node (``configs/data/<kind>``, ``data.selection``
    applied by id), built by the registry every stage uses (:func:`curate.data.sources.build_source`;
    ``cache_dir``: the stage's output folder, where a webdataset index is cached).

    Raises:
        FileNotFoundError, ValueError: a missing input or a bad selection (the message names it).
    """
    from selfsup.config import data_config

    if isinstance(data, dict | DictConfig):
        data = data_config(data, "data")
    images = ImageSet(build_source(data, cache_dir=cache_dir), channels)
    if len(images) == 0:
        raise ValueError("the image set is empty")
    return images


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
            "item": item,
        }


def collate_multicrop(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack samples crop-major (all first global crops, then all second ones, ...).

    Returns:
        ``global_crops: (2B, C, Sg, Sg)``, ``local_crops: (L*B, C, Sl, Sl)`` (``L`` may be 0),
        ``masks: (2B, P) bool`` aligned with ``global_crops``, ``positions: (B,) int64``, ``items:
        (B,) int64`` (positions in the training set).
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
    items = torch.tensor([s["item"] for s in samples], dtype=torch.int64)
    return {
        "global_crops": global_crops,
        "local_crops": local_crops,
        "masks": masks,
        "positions": positions,
        "items": items,
    }


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
