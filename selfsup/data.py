"""Training data: image sets over the shared sources, the multi-crop dataset and the infinite sampler.

Reproducibility contract: the global sample stream is a pure function of ``(seed, n)``. Epoch
``e`` is the permutation of the training set drawn with seed ``seed + e``; the stream concatenates
the epochs, and iteration ``t`` consumes stream positions ``[t * B, (t + 1) * B)`` for the global
batch size ``B``. Rank ``r`` of ``W`` takes the ``r``-th contiguous slice of ``B / W`` positions, so
ranks see disjoint parts of every epoch and the *global* batch of an iteration does not depend on
the world size. Augmentations and masks of a sample are seeded by ``(seed, stream position)``.
A run therefore resumes from "global samples seen" alone, on any world size.

Mixing (``data.mix``, :class:`MixedBatchSampler`): the training set is the union of the parts'
items, and each global batch is drawn part by part with the parts' weights (``data.homogeneous_fraction``
of the batches from one part only). The same contract holds: the plan of every batch is drawn from
one stream seeded by ``seed``, each part walks its own epoch permutations, and a resumed run replays
the plans' part counts up to "global samples seen" to find where every part's walk stands.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from curate.data.sources import ConcatSource, SelectedSource, Source, build_source, read_selection
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

    def __init__(self, source: Source, channels: int | None = None, mix: Mix | None = None) -> None:
        if source.modality != "image":
            raise ValueError(f"data.kind: {source.describe().get('kind')} is a text source; training needs images")
        self.source = source
        self.channels = channels
        self.labels = source.labels()
        self.mix = mix

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


@dataclass
class Mix:
    """The parts of a ``data.mix`` over a training set of ``n`` items.

    Attributes:
        members: per part ``k``, ``(n_k,) int64`` its items' positions in the training set.
        weights: ``(K,) float64`` the parts' weights, normalised to sum 1.
        homogeneous_fraction: share of the batches drawn from one part only.
        records: per part, what it is (``selection`` identity, ``weight`` as given, ``count``).
    """

    members: list[np.ndarray]
    weights: np.ndarray
    homogeneous_fraction: float
    records: list[dict]


def open_image_set(data: Any, channels: int | None = None, cache_dir: str | os.PathLike | None = None) -> ImageSet:
    """The :class:`ImageSet` of a ``data`` config node (``configs/data/<kind>``, ``data.selection``
    applied by id), built by the registry every stage uses (:func:`curate.data.sources.build_source`;
    ``cache_dir``: the stage's output folder, where a webdataset index is cached). With
    ``data.mix``: the union of the parts' items, with the parts in :attr:`ImageSet.mix`
    (:func:`open_mix`).

    Raises:
        FileNotFoundError, ValueError: a missing input or a bad selection (the message names it).
    """
    from selfsup.config import data_config

    if isinstance(data, dict | DictConfig):
        data = data_config(data, "data")
    if data.mix is not None:
        source, mix = open_mix(data, cache_dir)
        images = ImageSet(source, channels, mix)
    else:
        images = ImageSet(build_source(data, cache_dir=cache_dir), channels)
    if len(images) == 0:
        raise ValueError("the image set is empty")
    return images


def open_mix(data: Any, cache_dir: str | os.PathLike | None = None) -> tuple[Source, Mix]:
    """The training set of a ``data.mix`` and its parts.

    Each part's items are read by the one selection reader (:func:`curate.data.sources.read_selection`,
    as ``data.selection``) from its source: the part's ``data`` node, or the trainer's ``data``.
    Parts of one source share its items: the training set holds each selected item once (the
    union, per source, in source order), sources one after the other.

    Args:
        data: the trainer's data node (the dataclass of its source) with ``mix`` set.
        cache_dir: as for :func:`open_image_set`.

    Returns:
        ``(source, mix)``: the training set's source (``describe()`` holds the parts' records) and
        the :class:`Mix` of the parts' positions in it.

    Raises:
        FileNotFoundError, ValueError: a missing or bad selection, naming ``data.mix[<k>].selection``.
    """
    from selfsup.config import data_config

    own = dataclasses.replace(data, mix=None, homogeneous_fraction=None, selection=None)
    groups: dict[str, tuple[Source, list[int]]] = {}  # a source's node (as JSON) -> (source, its parts)
    selected: list[np.ndarray] = []
    records: list[dict] = []
    for k, part in enumerate(data.mix):
        node = own if part.data is None else part.data
        if isinstance(node, dict | DictConfig):
            node = data_config(node, f"data.mix[{k}].data")
        token = json.dumps(dataclasses.asdict(node), sort_keys=True, default=str)
        if token not in groups:
            groups[token] = (build_source(node, cache_dir=cache_dir), [])
        base, parts = groups[token]
        parts.append(k)
        if part.selection is None:
            rows, identity = np.arange(len(base), dtype=np.int64), None
        else:
            rows, identity = read_selection(part.selection, base, f"data.mix[{k}].selection")
        selected.append(rows)
        kind = base.describe().get("kind")
        records.append({"selection": identity, "kind": kind, "weight": float(part.weight), "count": int(len(rows))})
    members: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(data.mix)
    sources: list[Source] = []
    offset = 0
    for base, parts in groups.values():
        union = np.unique(np.concatenate([selected[k] for k in parts]))
        for k in parts:
            members[k] = offset + np.searchsorted(union, selected[k])
        sources.append(SelectedSource(base, union, {"mix_parts": parts}))
        offset += len(union)
    weights = np.asarray([float(part.weight) for part in data.mix], dtype=np.float64)
    fraction = float(data.homogeneous_fraction or 0.0)
    record = {"kind": "mix", "selection": {"mix": records, "homogeneous_fraction": fraction}}
    mix = Mix(members, weights / weights.sum(), fraction, records)
    return ConcatSource(sources, record), mix


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


class MixedBatchSampler(torch.utils.data.Sampler):
    """Endless per-rank batches of ``(item, stream position)`` keys drawn from weighted parts.

    The plan of global batch ``t`` (which part each of its ``B`` slots draws from) comes from one
    stream seeded by ``seed``, ``B + 2`` uniforms per batch: the first decides whether the batch
    is homogeneous (below ``homogeneous_fraction``), the second picks its part by weight, the other
    ``B`` pick each slot's part by weight (used when it is not). Part ``k`` walks its own epochs:
    its ``c``-th draw overall is position ``c`` of the concatenation of its permutations, epoch
    ``e`` drawn with ``(seed, k, e)``. Stream positions (the augmentations' seeds) and the rank
    slices are those of :class:`InfiniteBatchSampler`, so a batch does not depend on the world size
    and a run resumes from global samples seen alone (the part counts before ``start`` are replayed
    from the stream: 1.8 s for 100,000 batches of 1,024 on one busy CPU core).

    Args:
        members: per part, ``(n_k,) int64`` positions of its items in the training set (``n_k >= 1``).
        weights: ``(K,)`` non-negative weights of the parts (normalised here; their sum > 0).
        homogeneous_fraction: in ``[0, 1]``, the chance that a batch is homogeneous.
        global_batch_size, seed, rank, world_size, start: as for :class:`InfiniteBatchSampler`.
    """

    REPLAY_CHUNK = 1 << 22  # uniforms per replay step

    def __init__(
        self,
        members: list[np.ndarray],
        weights: np.ndarray,
        homogeneous_fraction: float,
        global_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if len(members) != len(weights) or not len(members):
            raise ValueError(f"data.mix: {len(members)} parts but {len(weights)} weights")
        if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and weights.sum() > 0):
            raise ValueError(f"data.mix: weights must be >= 0 with a positive sum, got {weights.tolist()}")
        if any(len(m) == 0 for m in members):
            raise ValueError("data.mix: a part without items")
        if not 0.0 <= homogeneous_fraction <= 1.0:
            raise ValueError(f"data.homogeneous_fraction: must be in [0, 1], got {homogeneous_fraction}")
        if global_batch_size % world_size:
            raise ValueError(f"train.batch_size {global_batch_size} is not divisible by the world size {world_size}")
        if start % global_batch_size:
            raise ValueError(f"start {start} is not a multiple of the global batch size {global_batch_size}")
        self.members = [np.asarray(m, dtype=np.int64) for m in members]
        self.cdf = np.cumsum(weights / weights.sum())
        self.cdf[-1] = 1.0  # a uniform in [0, 1) always finds a part; a zero-weight part is never picked
        self.homogeneous_fraction = float(homogeneous_fraction)
        self.global_batch_size, self.seed = global_batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self.local_batch_size = global_batch_size // world_size
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _stream(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0x6D6978])  # "mix": apart from every other stream

    def plans(self, rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``steps`` batches of the plan stream ``rng``: ``(steps, B) int64`` each slot's
        part and ``(steps,) bool`` whether the batch is homogeneous."""
        u = rng.random((steps, self.global_batch_size + 2))
        homogeneous = u[:, 0] < self.homogeneous_fraction
        parts = np.searchsorted(self.cdf, u[:, 2:], side="right")
        parts[homogeneous] = np.searchsorted(self.cdf, u[homogeneous, 1], side="right")[:, None]
        return parts.astype(np.int64), homogeneous

    def drawn(self, steps: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """``(K,) int64`` items drawn from each part by the first ``steps`` batches (the stream
        ``rng`` is advanced past them when given)."""
        rng = self._stream() if rng is None else rng
        counts = np.zeros(len(self.members), dtype=np.int64)
        chunk = max(1, self.REPLAY_CHUNK // (self.global_batch_size + 2))
        for first in range(0, steps, chunk):
            parts, _ = self.plans(rng, min(chunk, steps - first))
            counts += np.bincount(parts.ravel(), minlength=len(self.members))
        return counts

    def part_order(self, part: int, epoch: int) -> np.ndarray:
        """``(n_k,) int64`` the order of part ``part``'s members in its epoch ``epoch``."""
        key = (part, epoch)
        if key not in self._perms:
            if len(self._perms) > 4 * len(self.members):
                self._perms.clear()
            rng = np.random.default_rng([self.seed, 1 + part, epoch])
            self._perms[key] = self.members[part][rng.permutation(len(self.members[part]))]
        return self._perms[key]

    def global_keys(self, step: int, parts: np.ndarray, cursors: np.ndarray) -> list[tuple[int, int]]:
        """The ``B`` keys of global batch ``step`` whose slots draw from ``parts: (B,)``, part ``k``
        having made ``cursors[k]`` draws before it."""
        items = np.empty(len(parts), dtype=np.int64)
        for k in np.unique(parts).tolist():
            slots = np.flatnonzero(parts == k)
            n_k = len(self.members[k])
            walk = cursors[k] + np.arange(len(slots))
            for epoch in np.unique(walk // n_k).tolist():
                sel = walk // n_k == epoch
                items[slots[sel]] = self.part_order(k, epoch)[walk[sel] % n_k]
        positions = step * self.global_batch_size + np.arange(len(parts))
        return list(zip(items.tolist(), positions.tolist()))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = self._stream()
        step = self.start // self.global_batch_size
        cursors = self.drawn(step, rng)
        lo = self.rank * self.local_batch_size
        while True:
            parts, _ = self.plans(rng, 1)
            yield self.global_keys(step, parts[0], cursors)[lo : lo + self.local_batch_size]
            cursors += np.bincount(parts[0], minlength=len(self.members))
            step += 1
