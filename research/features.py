"""Features computed for analysis, outside the embed stage's store: raw-pixel PCA of in-memory images."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["pixel_pca"]


def pixel_pca(
    images: np.ndarray, dim: int, out: Path | None = None, fit_items: int | None = 10000, seed: int = 0
) -> np.ndarray:
    """The embed stage's ``pixels`` encoder with a PCA, applied to images held in memory.

    The same encoder (:class:`curate.encoders.PixelsEncoder`) as ``python -m curate.embed
    encoder=pixels encoder.pca_dim=<dim>``: pixels scaled to ``[0, 1]``, centred, projected on the
    ``dim`` principal axes fitted on ``fit_items`` images drawn with ``seed``.

    Args:
        images: ``(n, H, W)`` uint8 grey images.
        dim: PCA dimension.
        out: folder keeping the fitted PCA (``pca-mean.npy``, ``pca-components.npy``; reused when
            present); None: a temporary folder.
        fit_items: images the PCA is fitted on (None: all of them).
        seed: seed of the fitting subset.

    Returns:
        ``(n, dim)`` float32 features.
    """
    import torch

    from curate.encoders import PixelsEncoder

    fit = len(images) if fit_items is None else fit_items
    enc = PixelsEncoder(torch.device("cpu"), pca_dim=dim, pca_fit_items=fit, seed=seed)

    def batches(rows: np.ndarray, size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(rows), size):
            yield torch.from_numpy(images[rows[start : start + size]]).float().div(255.0).unsqueeze(1)

    def fit_batches(count: int, fit_seed: int) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng(fit_seed)
        yield from batches(np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False)), 1024)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        enc.setup(fit_batches, folder)
    feats = [enc.encode(batch).numpy() for batch in batches(np.arange(len(images)), 2048)]
    return np.concatenate(feats).astype(np.float32)
