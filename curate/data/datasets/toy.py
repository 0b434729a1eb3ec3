"""Synthetic toys of METHOD.md section 4: the 2-D simulation (Fig. 3), concentric rings, the 1-D mixture (Fig. 1a).

Every generator is a pure function of its ``seed`` (``numpy.random.default_rng(seed)``) and returns
exact component counts. Points are returned shuffled (with the same generator), so that any prefix
or shard of the array mixes all modes; ``labels`` gives the mode of every point.

    >>> x, labels = toy_2d(0)            # (9000, 2) float32, (9000,) int64 in 0..3
    >>> path = write_toy("toy_2d", "outputs/data/toy_2d")   # .../x.npy (+ labels.npy, manifest.json)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from curate.core.atomic import atomic_save_npy, atomic_write_json

__all__ = [
    "MIXTURE_1D",
    "RINGS_2D",
    "TOY_2D",
    "TOYS",
    "mixture_1d",
    "mixture_1d_density",
    "rings_2d",
    "toy_2d",
    "write_toy",
]

# (count, mean, std) of the Gaussian modes of the 2-D simulation; mode 3 is Uniform([-3, 3]^2).
TOY_2D: tuple[tuple[int, tuple[float, float], float], ...] = (
    (7000, (-1.0, -1.0), 0.5),
    (1000, (1.0, -1.0), 0.5),
    (500, (0.0, 1.0), 0.5),
)
TOY_2D_UNIFORM = 500
TOY_2D_BOX = (-3.0, 3.0)

# (count, radius) of the rings; every ring has Gaussian radial noise of std RINGS_WIDTH.
# Linear densities (points per unit of arc length) go from ~6400 down to ~30: about 200:1.
RINGS_2D: tuple[tuple[int, float], ...] = ((20000, 0.5), (7000, 1.2), (2500, 1.9), (500, 2.6))
RINGS_WIDTH = 0.05

# (count, mean, std, lo, hi) of the truncated Gaussian components of the 1-D mixture (Fig. 1a).
MIXTURE_1D: tuple[tuple[int, float, float, float, float], ...] = (
    (60_000, 2.0, 1.0, 0.0, 12.0),
    (30_000, 5.0, 0.8, 0.0, 12.0),
    (40_000, 9.0, 2.0, 0.0, 12.0),
    (90_000, 20.0, 1.0, 17.0, 23.0),
    (30_000, -10.0, 2.0, -14.0, -7.0),
)


def _shuffle(x: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(x))
    return np.ascontiguousarray(x[order]), np.ascontiguousarray(labels[order])


def toy_2d(seed: int = 0, n_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D simulation of the paper (Fig. 3): 9,000 points, a dense mode, two lighter ones and a background.

    Mode 0: 7000 ~ N((-1, -1), 0.5^2 I); mode 1: 1000 ~ N((1, -1), 0.5^2 I); mode 2: 500 ~ N((0, 1), 0.5^2 I);
    mode 3: 500 ~ Uniform([-3, 3]^2). Gaussian points are not truncated (a few fall outside the box).

    Args:
        seed: seed of ``numpy.random.default_rng``.
        n_scale: multiply every mode's count by this (rounded; at least 1 point per mode), for reduced
            test runs; 1.0 is the paper's toy.

    Returns:
        ``x: (9000, 2) float32`` and ``labels: (9000,) int64`` mode ids 0..3, shuffled together.
    """
    if not n_scale > 0:
        raise ValueError(f"n_scale must be positive, got {n_scale}")
    rng = np.random.default_rng(seed)
    counts = [max(1, round(n * n_scale)) for n in [n for n, _, _ in TOY_2D] + [TOY_2D_UNIFORM]]
    parts = [rng.normal(loc=mean, scale=std, size=(n, 2)) for n, (_, mean, std) in zip(counts, TOY_2D)]
    parts.append(rng.uniform(*TOY_2D_BOX, size=(counts[-1], 2)))
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return _shuffle(np.concatenate(parts).astype(np.float32), labels, rng)


def rings_2d(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four concentric rings of very unequal densities (30,000 points, inside [-3, 3]^2).

    Ring ``j`` (radius ``RINGS_2D[j][1]``: 0.5, 1.2, 1.9, 2.6) holds 20000, 7000, 2500 and 500 points;
    the angle is uniform and the radius has N(0, 0.05^2) noise. Per unit of arc length the innermost
    ring is about 200 times denser than the outermost. Sized for the ``rings`` cluster preset (levels
    1000 and 300 clusters, r = 15 and 2: about half the average cluster size per level).

    Args:
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``x: (30000, 2) float32`` and ``labels: (30000,) int64`` ring ids 0..3 (inner to outer), shuffled.
    """
    rng = np.random.default_rng(seed)
    counts = np.array([n for n, _ in RINGS_2D])
    radius = np.repeat([r for _, r in RINGS_2D], counts) + rng.normal(scale=RINGS_WIDTH, size=counts.sum())
    angle = rng.uniform(0.0, 2 * np.pi, size=counts.sum())
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return _shuffle(x, labels, rng)


def _truncated_normal(rng: np.random.Generator, n: int, mean: float, std: float, lo: float, hi: float) -> np.ndarray:
    """Exactly ``n`` draws of N(mean, std^2) kept in ``[lo, hi]``, by rejection (redrawing the rejected)."""
    out = np.empty(0)
    while len(out) < n:
        draw = rng.normal(mean, std, size=2 * (n - len(out)) + 16)
        out = np.concatenate([out, draw[(draw >= lo) & (draw <= hi)]])
    return out[:n]


def mixture_1d(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D mixture of Fig. 1a: 250,000 points from five truncated Gaussians of very different densities.

    N(2, 1) x 60k, N(5, 0.8) x 30k, N(9, 2) x 40k, each kept in [0, 12]; N(20, 1) x 90k kept in [17, 23];
    N(-10, 2) x 30k kept in [-14, -7]. Truncation by rejection: rejected draws are redrawn, so the counts
    are exact and each component follows its Gaussian conditioned on its interval (see
    :func:`mixture_1d_density`).

    Args:
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``x: (250000, 1) float32`` (a 1-column embedding matrix) and ``labels: (250000,) int64``
        component ids 0..4, shuffled.
    """
    rng = np.random.default_rng(seed)
    parts = [_truncated_normal(rng, n, mean, std, lo, hi) for n, mean, std, lo, hi in MIXTURE_1D]
    labels = np.repeat(np.arange(len(MIXTURE_1D), dtype=np.int64), [c[0] for c in MIXTURE_1D])
    return _shuffle(np.concatenate(parts).astype(np.float32)[:, None], labels, rng)


def mixture_1d_density(t: np.ndarray | float) -> np.ndarray:
    """Exact density of :func:`mixture_1d` (integrates to 1 over the real line).

    ``p(t) = sum_c (n_c / N) * phi((t - mu_c) / s_c) / s_c / (Phi((hi_c - mu_c) / s_c) - Phi((lo_c - mu_c) / s_c))``
    on ``[lo_c, hi_c]``, 0 outside, with ``N = 250,000``.

    Args:
        t: positions, any shape.

    Returns:
        ``p(t)``, float64, same shape as ``t``.
    """
    t = np.asarray(t, dtype=np.float64)
    total = sum(c[0] for c in MIXTURE_1D)
    p = np.zeros_like(t)
    for n, mean, std, lo, hi in MIXTURE_1D:  # five components, vectorised over t
        z = (t - mean) / std
        mass = ndtr((hi - mean) / std) - ndtr((lo - mean) / std)
        pdf = np.exp(-0.5 * z**2) / (std * np.sqrt(2 * np.pi) * mass)
        p += (n / total) * np.where((t >= lo) & (t <= hi), pdf, 0.0)
    return p


TOYS: dict[str, Callable[[int], tuple[np.ndarray, np.ndarray]]] = {
    "toy_2d": toy_2d,
    "rings_2d": rings_2d,
    "mixture_1d": mixture_1d,
}


def write_toy(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a toy as ``out_dir/x.npy`` and ``out_dir/labels.npy``, then ``out_dir/manifest.json`` (last).

    All writes are atomic (:mod:`curate.core.atomic`).

    Args:
        name: ``"toy_2d"``, ``"rings_2d"`` or ``"mixture_1d"``.
        out_dir: destination folder (created if missing).
        seed: generator seed.

    Returns:
        The path of ``x.npy`` (what the cluster stage reads as ``input.path``).

    Raises:
        ValueError: unknown ``name``.
    """
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; choose from {sorted(TOYS)}")
    out = Path(out_dir)
    x, labels = TOYS[name](seed)
    atomic_save_npy(out / "x.npy", x)
    atomic_save_npy(out / "labels.npy", labels)
    atomic_write_json(
        out / "manifest.json",
        {
            "toy": name,
            "seed": int(seed),
            "n": int(x.shape[0]),
            "dim": int(x.shape[1]),
            "label_counts": np.bincount(labels).tolist(),
        },
    )
    return out / "x.npy"
