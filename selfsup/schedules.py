"""Per-iteration schedules, precomputed as arrays (a schedule is a pure function of the config)."""

from __future__ import annotations

import numpy as np


def cosine_schedule(base: float, final: float, total: int, warmup: int = 0, warmup_start: float = 0.0) -> np.ndarray:
    """Linear warm-up from ``warmup_start`` to ``base``, then a half cosine from ``base`` to ``final``.

    Args:
        base: value at the end of the warm-up (start of the cosine).
        final: value at the last iteration.
        total: number of iterations (length of the schedule).
        warmup: warm-up iterations (``0 <= warmup <= total``).
        warmup_start: value at iteration 0 when ``warmup > 0``.

    Returns:
        ``(total,) float64``: entry ``i`` is the value used at iteration ``i``. Entry ``warmup`` is
        ``base`` and the last entry is ``final`` (when at least two iterations follow the warm-up).
    """
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    if not 0 <= warmup <= total:
        raise ValueError(f"warmup must be in [0, total={total}], got {warmup}")
    ramp = np.linspace(warmup_start, base, warmup, endpoint=False) if warmup else np.empty(0)
    n = total - warmup
    if n == 0:
        return ramp
    steps = np.arange(n) / max(n - 1, 1)
    cosine = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * steps))
    return np.concatenate([ramp, cosine])


def warmup_then_constant(start: float, value: float, total: int, warmup: int) -> np.ndarray:
    """Linear ramp from ``start`` to ``value`` over ``warmup`` iterations, then ``value``.

    Returns:
        ``(total,) float64``; entry ``warmup`` (and later) equals ``value``.
    """
    if not 0 <= warmup <= total:
        raise ValueError(f"warmup must be in [0, total={total}], got {warmup}")
    out = np.full(total, value, dtype=np.float64)
    out[:warmup] = np.linspace(start, value, warmup, endpoint=False)
    return out
