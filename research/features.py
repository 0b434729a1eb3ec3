"""Features computed for analysis, outside the embed stage's store: raw-pixel PCA of in-memory images."""

from __future__ import annotations

import tempfile
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

    from curate.data.sources import ArrayImagesSource
    from curate.encoders import ItemDataset, PixelsEncoder, encode_source, subset_batches

    fit = len(images) if fit_items is None else fit_items
    enc = PixelsEncoder(torch.device("cpu"), pca_dim=dim, pca_fit_items=fit, seed=seed)
    source = ArrayImagesSource(images)  # the embed stage's path: load, transform, encode
    dataset = ItemDataset(source, enc.transform)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        enc.setup(lambda count, fit_seed: subset_batches(dataset, count, fit_seed, 1024, num_workers=0), folder)
    return encode_source(enc, source, 2048, num_workers=0)
