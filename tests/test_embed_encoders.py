"""Encoders: timm from a local checkpoint, the selfsup backbone, random projections, AMP on GPU."""

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from PIL import Image
from torch import nn

import curate.embed.config  # noqa: F401
from curate.embed import run_embed
from curate.encoders import RandomProjectionEncoder, build_encoder, load_state_dict_file, timm_encoder
from curate.io.store import load_embeddings

compose_embed = functools.partial(compose_config, "embed")


@pytest.fixture
def image_dir(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_timm_from_local_checkpoint(tmp_path, image_dir):
    import timm

    trained = timm.create_model("resnet18", pretrained=False, num_classes=7)
    state = {"module." + k: v for k, v in trained.state_dict().items()}  # a DDP checkpoint with a classifier
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "r18.pth")
    assert "fc.weight" in load_state_dict_file(tmp_path / "r18.pth")
    out = tmp_path / "store"
    cfg = compose_embed(
        [
            "data=image_folder",
            f"data.root={image_dir}",
            "encoder=timm",
            "encoder.name=resnet18",
            f"encoder.checkpoint={tmp_path / 'r18.pth'}",
            "encoder.image_size=32",
            f"out={out}",
            "num_workers=0",
            "progress=false",
            "normalize=false",
        ]
    )
    manifest = run_embed(cfg)
    assert manifest["dim"] == 512 and manifest["count"] == 5 and manifest["model"] == "resnet18"
    array, _ = load_embeddings(out)
    # the same numbers as the trained network's pooled features
    encoder = timm_encoder("resnet18", str(tmp_path / "r18.pth"), torch.device("cpu"), image_size=32)
    batch = torch.stack([encoder.transform(Image.open(image_dir / f"{i}.png")) for i in range(5)])
    trained.reset_classifier(0)
    with torch.inference_mode():
        expected = trained.eval()(batch).numpy()
    np.testing.assert_allclose(array[0:5], expected, rtol=1e-4, atol=1e-5)


def test_timm_errors(tmp_path):
    import timm

    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="does not fit timm model resnet34"):
        timm_encoder("resnet34", str(tmp_path / "r18.pth"), torch.device("cpu"))
    with pytest.raises(ValueError, match="no model 'resnet-eighteen'"):
        timm_encoder("resnet-eighteen", None, torch.device("cpu"), random_init=True)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        timm_encoder("resnet18", str(tmp_path / "missing.pth"), torch.device("cpu"))
    encoder = timm_encoder("resnet18", None, torch.device("cpu"), image_size=16, random_init=True)
    assert encoder.describe()["random_init"] is True


class _TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


def test_selfsup_encoder_glue(tmp_path, image_dir, monkeypatch):
    """Our side of the contract with ``selfsup.export.load_backbone`` (named by ``encoder.loader``), on a stand-in."""
    calls = []

    def load_backbone(path):
        calls.append(path)
        return _TinyBackbone(), {"image_size": 16, "mean": [0.5] * 3, "std": [0.2] * 3}

    monkeypatch.setattr("selfsup.export.load_backbone", load_backbone)  # what encoder.loader names
    cfg = compose_embed(
        [
            "data=image_folder",
            f"data.root={image_dir}",
            "encoder=selfsup",
            f"encoder.checkpoint={tmp_path / 'backbone.pt'}",
            f"out={tmp_path / 's'}",
            "num_workers=0",
            "progress=false",
        ]
    )
    manifest = run_embed(cfg)
    assert calls == [str(tmp_path / "backbone.pt")]
    assert manifest["dim"] == 6 and manifest["model"] == "selfsup"
    assert manifest["meta"]["encoder"]["image_size"] == 16


def test_selfsup_encoder_loader_is_config(tmp_path, image_dir, cli):
    """encoder.loader is a Hydra _target_: the library reaches the SSL stage only through config, and a
    wrong target is one error line naming the key."""
    args = ["-m", "curate.embed", "data=image_folder", f"data.root={image_dir}", "encoder=selfsup"]
    args += [f"encoder.checkpoint={tmp_path / 'b.pt'}", f"out={tmp_path / 's'}", "num_workers=0", "progress=false"]
    proc = cli(*args, "encoder.loader._target_=nowhere.load_backbone", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: encoder.loader: nowhere.load_backbone")
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("selfsup") is None or importlib.util.find_spec("selfsup.export") is None,
    reason="selfsup.export (the SSL stage's backbone export) is not in the tree yet",
)
def test_real_selfsup_backbone_round_trip(tmp_path):
    """``backbone.pt`` from the SSL stage -> ``encoder=selfsup`` gives selfsup's own features."""
    from timm.models.vision_transformer import VisionTransformer

    from curate.data.datasets.fashion_mnist import load_fashion_mnist
    from selfsup.export import backbone_payload, embed_images, load_backbone, save_backbone

    kwargs = {
        "img_size": 28,
        "patch_size": 7,
        "in_chans": 1,
        "embed_dim": 24,
        "depth": 1,
        "num_heads": 2,
        "num_classes": 0,
        "global_pool": "token",
    }
    torch.manual_seed(0)
    vit = VisionTransformer(**kwargs)
    save_backbone(tmp_path / "backbone.pt", backbone_payload(vit.state_dict(), kwargs, [0.29], [0.35]))
    cfg = compose_embed(
        [
            "data=fashion_mnist",
            "data.split=test",
            "data.limit=12",
            "encoder=selfsup",
            f"encoder.checkpoint={tmp_path / 'backbone.pt'}",
            f"out={tmp_path / 's'}",
            "num_workers=0",
            "progress=false",
            "normalize=false",
        ]
    )
    manifest = run_embed(cfg)
    assert manifest["dim"] == 24 and manifest["meta"]["encoder"]["in_chans"] == 1
    images, _ = load_fashion_mnist("test")
    expected = embed_images(load_backbone(tmp_path / "backbone.pt"), images[:12])
    np.testing.assert_allclose(load_embeddings(tmp_path / "s")[0][0:12], expected, rtol=1e-4, atol=1e-5)


def test_random_projection_is_seeded():
    device = torch.device("cpu")
    images = torch.rand(4, 3, 32, 32)
    a = RandomProjectionEncoder("image", device, dim=16, seed=1)
    b = RandomProjectionEncoder("image", device, dim=16, seed=1)
    c = RandomProjectionEncoder("image", device, dim=16, seed=2)
    with torch.inference_mode():
        assert torch.equal(a.encode(images), b.encode(images)) and not torch.equal(a.encode(images), c.encode(images))
    text = RandomProjectionEncoder("text", device, dim=16, seed=1, text_buckets=512)
    batch = torch.stack([text.transform(t) for t in ["a cat", "a cat", "stock markets"]])
    out = text.encode(batch)
    assert out.shape == (3, 16) and torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


@pytest.mark.gpu
def test_bf16_autocast_on_gpu(tmp_path, image_dir):
    base = [
        "data=image_folder",
        f"data.root={image_dir}",
        "encoder=timm",
        "encoder.name=resnet18",
        "encoder.random_init=true",
        "encoder.image_size=64",
        "num_workers=0",
        "progress=false",
    ]
    amp = run_embed(compose_embed([*base, f"out={tmp_path / 'amp'}", "device=cuda", "amp=true"]))
    fp32 = run_embed(compose_embed([*base, f"out={tmp_path / 'fp32'}", "device=cpu", "amp=false"]))
    assert amp["dim"] == fp32["dim"] == 512
    x, y = load_embeddings(tmp_path / "amp")[0][0:5], load_embeddings(tmp_path / "fp32")[0][0:5]
    assert np.isfinite(x).all() and (np.sum(x * y, axis=1) > 0.98).all()  # normalised rows agree


def test_build_encoder_refuses_wrong_modality():
    cfg = compose_embed(["encoder=minilm"])
    with pytest.raises(ValueError, match="embeds texts"):
        build_encoder(cfg.encoder, "image", torch.device("cpu"))
