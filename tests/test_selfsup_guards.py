"""Guards on what the downstream comparison rests on: the evaluation's feature path (pooling,
normalisation) and the augmentation pipeline. A silent change to either moves every row of the
curation_ssl table, so each is pinned here: shapes, the pooling rule against its formula, and
fixed-seed checksums on a tiny model (torch and torchvision are pinned in setup.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.augment import MultiCrop
from selfsup.config import CropsConfig, ModelConfig
from selfsup.export import Encoder, embed_images
from selfsup.models import SmallResNet, resnet_kwargs

MEAN, STD = [0.286], [0.353]


@pytest.fixture
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def tiny_encoder() -> Encoder:
    torch.manual_seed(0)
    net = SmallResNet(**resnet_kwargs(ModelConfig(arch="resnet"), 28))
    return Encoder(net, MEAN, STD).eval()


def images(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def test_eval_features_are_the_global_average_of_the_last_feature_map(one_thread):
    encoder, x = tiny_encoder(), images()
    features = embed_images(encoder, x, batch_size=2)
    assert features.shape == (4, 128) and features.dtype == np.float32
    # the formula: normalise the [0, 1] pixels, run the stages, average over H and W
    pixels = torch.from_numpy(x).float().div(255).unsqueeze(1)
    with torch.no_grad():
        fmap = encoder.vit.features((pixels - MEAN[0]) / STD[0])
    assert fmap.shape == (4, 128, 4, 4)
    np.testing.assert_allclose(features, fmap.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_eval_features_checksum_on_a_fixed_seed_tiny_model(one_thread):
    features = embed_images(tiny_encoder(), images(), batch_size=2)
    assert float(features.sum()) == pytest.approx(9.685383, rel=1e-4)
    np.testing.assert_allclose(features[0, :4], [0.0, 0.0375387, 0.00068626, 0.00650443], rtol=1e-3, atol=1e-6)


def test_multicrop_shapes_and_fixed_seed_checksum(one_thread):
    torch.manual_seed(1)
    views = MultiCrop(CropsConfig(), 1, MEAN, STD)(torch.from_numpy(images(1)[0])[None])
    assert [tuple(t.shape) for t in views.global_crops] == [(1, 28, 28)] * 2
    assert [tuple(t.shape) for t in views.local_crops] == [(1, 14, 14)] * 4
    sums = [float(t.sum()) for t in views.global_crops + views.local_crops]
    np.testing.assert_allclose(sums, [456.2893, 454.2008, 101.4133, 109.2898, 117.9106, 100.7468], rtol=1e-4)


def test_multicrop_views_differ_between_draws(one_thread):
    """The augmentation is random per call (a frozen generator would make the two globals equal)."""
    crop = MultiCrop(CropsConfig(), 1, MEAN, STD)
    image = torch.from_numpy(images(1)[0])[None]
    torch.manual_seed(2)
    first = crop(image)
    assert not torch.equal(first.global_crops[0], first.global_crops[1])
    second = crop(image)
    assert not torch.equal(first.global_crops[0], second.global_crops[0])
