"""Synthetic benchmark inputs: clustered points written to disk chunk by chunk, and a pool with
near-duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["near_duplicate_pool", "write_clustered_npy"]


def write_clustered_npy(path: Path, n: int, d: int, k: int, seed: int = 0, chunk_rows: int = 1 << 16) -> Path:
    """Write an ``(n, d)`` float32 ``.npy`` of clustered points chunk by chunk (never whole in RAM).

    ``k`` Gaussian components with Zipf-like weights (a long tail, as in web embeddings), unit
    variance around centres drawn from N(0, 4 I). The rows depend on ``seed`` and ``chunk_rows``.

    Returns:
        ``path``.
    """
    rng = np.random.default_rng(seed)
    centers = (2.0 * rng.standard_normal((k, d))).astype(np.float32)
    weights = 1.0 / np.arange(1, k + 1) ** 0.8
    weights /= weights.sum()
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        for i, start in enumerate(range(0, n, chunk_rows)):
            m = min(chunk_rows, n - start)
            r = np.random.default_rng([seed, i])
            z = r.choice(k, size=m, p=weights)
            block = centers[z] + r.standard_normal((m, d), dtype=np.float32)
            f.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
    return path


def near_duplicate_pool(n: int, d: int, dup_frac: float, seed: int = 0) -> np.ndarray:
    """``(n, d)`` float32: distinct random directions (cosines ~ 0 +- 1/sqrt(d)) and, for a
    ``dup_frac`` share of the rows, noisy rescaled copies of earlier ones (cosine > 0.99), shuffled."""
    rng = np.random.default_rng(seed)
    n_dup = int(n * dup_frac)
    base = rng.standard_normal((n - n_dup, d)).astype(np.float32)
    src = rng.integers(0, len(base), size=n_dup)
    copies = base[src] + 0.02 * rng.standard_normal((n_dup, d)).astype(np.float32)
    x = np.concatenate([base, copies * rng.uniform(0.5, 2.0, size=(n_dup, 1)).astype(np.float32)])
    return x[rng.permutation(n)]
