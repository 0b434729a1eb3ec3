"""One image -> features path: the embed stage (``curate.embed``), the evaluation (``selfsup.eval``)
and the in-memory helper (``selfsup.export.embed_images``) give the same features for the same images."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from PIL import Image

import curate.embed.config  # noqa: F401
from curate.embed import run_embed
from curate.io.store import load_embeddings

compose_embed = functools.partial(compose_config, "embed")

# non-square images of several sizes: resizing and centre-cropping (odd margins) are exercised
SHAPES = [(21, 30), (33, 17), (16, 16), (25, 40), (19, 19), (40, 23)]


@pytest.fixture
def backbone(tmp_path: Path) -> Path:
    """A tiny ViT ``backbone.pt`` (16 x 16 RGB input) as the SSL stage exports it."""
    from timm.models.vision_transformer import VisionTransformer

    from selfsup.export import backbone_payload, save_backbone

    kwargs = {"img_size": 16, "patch_size": 8, "in_chans": 3, "embed_dim": 16, "depth": 1, "num_heads": 2}
    kwargs.update(num_classes=0, global_pool="token")
    torch.manual_seed(0)
    vit = VisionTransformer(**kwargs)
    path = tmp_path / "backbone.pt"
    save_backbone(path, backbone_payload(vit.state_dict(), kwargs, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]))
    return path


def _embed_stage(data: list[str], backbone: Path, out: Path) -> np.ndarray:
    cfg = compose_embed(
        [*data, "encoder=selfsup", f"encoder.checkpoint={backbone}", f"out={out}", "num_workers=0"]
        + ["progress=false", "normalize=false", "batch_size=4"]
    )
    run_embed(cfg)
    return np.asarray(load_embeddings(out)[0][:], dtype=np.float32)


def test_embed_stage_and_eval_give_the_same_features(tmp_path: Path, backbone: Path) -> None:
    from selfsup.data import open_image_set
    from selfsup.eval import embed_image_set
    from selfsup.export import load_backbone

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for i, (h, w) in enumerate(SHAPES):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(root / f"c{i % 2}" / f"{i}.png")
    stage = _embed_stage(["data=image_folder", f"data.root={root}"], backbone, tmp_path / "store")
    encoder = load_backbone(backbone)
    images = open_image_set({"kind": "image_folder", "root": str(root)}, encoder.in_chans)
    evaluated = embed_image_set(encoder, images, 4, torch.device("cpu"), num_workers=0)
    assert stage.shape == evaluated.shape == (len(SHAPES), 16)
    np.testing.assert_allclose(evaluated, stage, rtol=1e-5, atol=1e-6)


def test_embed_stage_and_in_memory_images_give_the_same_features(tmp_path: Path, backbone: Path) -> None:
    from selfsup.export import embed_images, load_backbone

    images = np.random.default_rng(1).integers(0, 256, size=(5, 21, 30, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    stage = _embed_stage(["data=npy", f"data.path={tmp_path / 'images.npy'}"], backbone, tmp_path / "store")
    in_memory = embed_images(load_backbone(backbone), images, batch_size=4)
    np.testing.assert_allclose(in_memory, stage, rtol=1e-5, atol=1e-6)
