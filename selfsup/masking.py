"""iBOT patch masks for the student's global crops.

A mask is a ``(H * W,) bool`` vector over the patch grid (row-major), ``True`` = masked (replaced
by the mask token in the student, predicted from the teacher's view of the same crop). Both
generators mask *exactly* ``n_masked`` patches; they draw from the global torch RNG so the caller
controls reproducibility (see :class:`selfsup.data.MultiCropDataset`).
"""

from __future__ import annotations

import math

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


def sample_mask(
    grid: tuple[int, int], ratio_range: tuple[float, float], probability: float, mask_type: str
) -> torch.Tensor:
    """One crop's mask: with ``probability``, a ratio drawn uniformly in ``ratio_range``.

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
    n_masked = min(n, round(ratio * n))
    if mask_type == "block":
        return block_mask(grid, n_masked)
    if mask_type == "random":
        return random_patch_mask(grid, n_masked)
    raise ValueError(f"mask_type must be 'block' or 'random', got {mask_type!r}")
