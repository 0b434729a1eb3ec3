"""iBOT patch masks for the student's global crops.

A mask is a ``(H * W,) bool`` vector over the patch grid (row-major), ``True`` = masked (replaced
by the mask token in the student, predicted from the teacher's view of the same crop). Both
generators mask *exactly* ``n_masked`` patches; they draw from the global torch RNG so the caller
controls reproducibility (see :class:`selfsup.data.MultiCropDataset`). Which crops are masked, and
how much: :func:`batch_masks` (DINOv2: exactly a share of the batch's crops, ratios spread evenly)
or :func:`sample_mask` (each crop on its own).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def random_patch_mask(grid: tuple[int, int], n_masked: int) -> torch.Tensor:
    """``n_masked`` patches drawn uniformly without replacement.

    Args:
        grid: ``(H, W)`` patch grid.
        n_masked: number of masked patches, ``0 <= n_masked <= H * W``.

    Returns:
        ``(H * W,) bool``.
    """
    n = grid[0] * grid[1]
    if not 0 <= n_masked <= n:
        raise ValueError(f"n_masked must be in [0, {n}], got {n_masked}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n)[:n_masked]] = True
    return mask


def block_mask(
    grid: tuple[int, int],
    n_masked: int,
    min_block: int = 2,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    max_tries: int = 10,
) -> torch.Tensor:
    """Union of random rectangles covering ``n_masked`` patches (BEiT-style block masking).

    Rectangles with a random area in ``[min_block, remaining]`` and a log-uniform aspect ratio are
    placed at random; a rectangle is kept when it adds between 1 and ``remaining`` new patches.
    When no rectangle fits after ``max_tries`` attempts (small grids, nearly full masks), the rest
    is topped up with random single patches, so the count is always exact.

    Args:
        grid: ``(H, W)`` patch grid.
        n_masked: number of masked patches, ``0 <= n_masked <= H * W``.
        min_block: smallest rectangle area in patches.
        aspect: range of height/width ratios.
        max_tries: rectangle attempts before topping up.

    Returns:
        ``(H * W,) bool`` with exactly ``n_masked`` ``True`` entries.
    """
    h, w = grid
    if not 0 <= n_masked <= h * w:
        raise ValueError(f"n_masked must be in [0, {h * w}], got {n_masked}")
    mask = torch.zeros(h, w, dtype=torch.bool)
    count = 0
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    while count < n_masked:
        remaining = n_masked - count
        added = 0
        for _ in range(max_tries):
            lo = min(min_block, remaining)
            area = lo + (remaining - lo) * torch.rand(()).item()
            ratio = math.exp(log_lo + (log_hi - log_lo) * torch.rand(()).item())
            bh = max(1, round(math.sqrt(area * ratio)))
            bw = max(1, round(math.sqrt(area / ratio)))
            if bh > h or bw > w:
                continue
            top = int(torch.randint(0, h - bh + 1, ()).item())
            left = int(torch.randint(0, w - bw + 1, ()).item())
            window = mask[top : top + bh, left : left + bw]
            new = bh * bw - int(window.sum())
            if 0 < new <= remaining:
                window.fill_(True)
                added = new
                break
        if added == 0:
            break
        count += added
    flat = mask.flatten()
    if count < n_masked:
        free = torch.nonzero(~flat).squeeze(1)
        flat[free[torch.randperm(len(free))[: n_masked - count]]] = True
    return flat


def mask_with_ratio(grid: tuple[int, int], ratio: float, mask_type: str) -> torch.Tensor:
    """A mask of ``round(ratio * H * W)`` patches (``ratio = 0``: nothing masked).

    Args:
        grid: ``(H, W)`` patch grid.
        ratio: share of masked patches in ``[0, 1]``.
        mask_type: ``"block"`` or ``"random"``.

    Returns:
        ``(H * W,) bool``.
    """
    n = grid[0] * grid[1]
    n_masked = min(n, round(ratio * n))
    if mask_type == "block":
        return block_mask(grid, n_masked)
    if mask_type == "random":
        return random_patch_mask(grid, n_masked)
    raise ValueError(f"mask_type must be 'block' or 'random', got {mask_type!r}")


def sample_mask(
    grid: tuple[int, int], ratio_range: tuple[float, float], probability: float, mask_type: str
) -> torch.Tensor:
    """One crop's mask, independently of the others: with ``probability``, a ratio drawn uniformly in
    ``ratio_range``.

    Args:
        grid: ``(H, W)`` patch grid.
        ratio_range: ``(min, max)`` share of masked patches.
        probability: chance that this crop is masked at all.
        mask_type: ``"block"`` or ``"random"``.

    Returns:
        ``(H * W,) bool``; all ``False`` for an unmasked crop.
    """
    n = grid[0] * grid[1]
    if torch.rand(()).item() >= probability:
        return torch.zeros(n, dtype=torch.bool)
    ratio = ratio_range[0] + (ratio_range[1] - ratio_range[0]) * torch.rand(()).item()
    return mask_with_ratio(grid, ratio, mask_type)


def stratified_mask_ratios(
    n_crops: int, ratio_range: tuple[float, float], probability: float, generator: torch.Generator
) -> torch.Tensor:
    """DINOv2's batch masking plan: which crops are masked, and how much.

    Exactly ``m = floor(n_crops * probability)`` crops are masked; the ``i``-th of them draws its
    ratio uniformly in the ``i``-th of ``m`` equal sub-intervals of ``ratio_range`` (so the ratios
    are spread evenly over the range), and the ``m`` ratios go to a random set of crops.

    Args:
        n_crops: number of global crops in the batch.
        ratio_range: ``(min, max)`` share of masked patches.
        probability: share of the crops that are masked.
        generator: the random source.

    Returns:
        ``(n_crops,) float64``: the ratio of each crop, 0 for an unmasked crop.
    """
    m = math.floor(n_crops * probability + 1e-9)
    edges = torch.linspace(ratio_range[0], ratio_range[1], m + 1, dtype=torch.float64)
    u = torch.rand(m, generator=generator, dtype=torch.float64)
    ratios = torch.zeros(n_crops, dtype=torch.float64)
    ratios[torch.randperm(n_crops, generator=generator)[:m]] = edges[:-1] + (edges[1:] - edges[:-1]) * u
    return ratios


def _seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0] >> 1)


def batch_masks(
    positions: torch.Tensor,
    global_batch: int,
    n_global_crops: int,
    grid: tuple[int, int],
    ratio_range: tuple[float, float],
    probability: float,
    mask_type: str,
    seed: int,
) -> torch.Tensor:
    """This rank's masks under the :func:`stratified_mask_ratios` plan of the *global* batch.

    The plan is drawn from ``(seed, step)`` over the ``n_global_crops * global_batch`` crops of the
    global batch of iteration ``step = positions // global_batch``, and each crop's pattern from
    ``(seed, position, crop)``, so the masks of a sample do not depend on the number of ranks.

    Args:
        positions: ``(b,)`` stream positions of this rank's samples (all in one iteration; sample
            ``j`` of the global batch of iteration ``s`` has position ``s * global_batch + j``).
        global_batch: samples per iteration over all ranks.
        n_global_crops: global crops per sample.
        grid: ``(H, W)`` patch grid.
        ratio_range: ``(min, max)`` share of masked patches.
        probability: share of the global batch's crops that are masked.
        mask_type: ``"block"`` or ``"random"``.
        seed: base seed.

    Returns:
        ``(n_global_crops * b, H * W) bool``, crop-major (all first crops, then all second ones).
    """
    positions = positions.to("cpu", torch.int64)
    step = int(positions[0]) // global_batch
    slots = positions - step * global_batch
    if bool(((slots < 0) | (slots >= global_batch)).any()):
        raise ValueError(f"positions {positions.tolist()} span more than one global batch of {global_batch}")
    gen = torch.Generator().manual_seed(_seed(seed, step, 0x1B07))
    ratios = stratified_mask_ratios(n_global_crops * global_batch, ratio_range, probability, gen)
    masks = []
    for c in range(n_global_crops):
        for slot, pos in zip(slots.tolist(), positions.tolist()):
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(_seed(seed, pos, c, 0x1B07))
                masks.append(mask_with_ratio(grid, float(ratios[c * global_batch + slot]), mask_type))
    return torch.stack(masks)
