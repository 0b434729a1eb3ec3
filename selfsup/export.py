"""The exported backbone: ``backbone.pt`` and the encoder the embed and eval stages use.

``backbone.pt`` is a plain dict (``torch.load(path, weights_only=True)`` reads it)::

    {"format": "selfsup.backbone/1",
     "state_dict": teacher backbone state dict (timm VisionTransformer keys, or
                   selfsup.models.SmallResNet keys when model_kwargs["arch"] == "resnet"),
     "model_kwargs": VisionTransformer (or SmallResNet) constructor kwargs,
     "normalize": {"mean": [...], "std": [...]},   # applied to pixels scaled to [0, 1]
     "embed_dim": int, "img_size": int, "in_chans": int, "iteration": int}

Features are the class token after the final norm (ViT) or the pooled features (ResNet), ``(n, embed_dim)``.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from curate.core.atomic import atomic_path
from curate.core.errors import InputError
from curate.data.sources import ArrayImagesSource
from curate.encoders import backbone_encoder, encode_source

FORMAT = "selfsup.backbone/1"
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 luminance weights, as torchvision's grayscale


def backbone_payload(
    state_dict: dict[str, torch.Tensor],
    model_kwargs: dict[str, Any],
    mean: list[float],
    std: list[float],
    iteration: int = 0,
) -> dict[str, Any]:
    """The dict stored in ``backbone.pt`` (see the module docstring)."""
    kwargs = dict(model_kwargs)
    if kwargs.get("arch") != "resnet":
        kwargs["drop_path_rate"] = 0.0
    return {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "model_kwargs": kwargs,
        "normalize": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        "embed_dim": int(kwargs["embed_dim"]),
        "img_size": int(kwargs["img_size"]),
        "in_chans": int(kwargs["in_chans"]),
        "iteration": int(iteration),
    }


def save_backbone(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write a :func:`backbone_payload` dict atomically."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


class Encoder(nn.Module):
    """A frozen backbone taking *normalised* images and returning features (like any timm model).

    The normalisation is carried as plain attributes (``mean``, ``std``, ``image_size``), which is
    what :func:`embed_images` and the embed stage's ``encoder=selfsup`` read. A 3-channel input to
    a 1-channel backbone is reduced by luminance weights (exact for gray images stored as RGB,
    since the weights sum to 1 and the normalisation is the same on every channel); a 1-channel
    input to a 3-channel backbone is repeated.

    Args:
        vit: timm ``VisionTransformer`` with ``num_classes=0`` and token pooling, or a
            :class:`selfsup.models.SmallResNet`.
        mean: per-channel normalisation mean (of pixels scaled to [0, 1]).
        std: per-channel normalisation std.

    Attributes:
        embed_dim: feature dimension ``D``.
        image_size: input size the backbone was trained at.
        in_chans: input channels of the backbone.
        mean, std: lists of floats.
    """

    def __init__(self, vit: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.vit = vit
        self.embed_dim = int(vit.embed_dim)
        if isinstance(vit, VisionTransformer):
            self.image_size = int(vit.patch_embed.img_size[0])
            self.in_chans = int(vit.patch_embed.proj.in_channels)
        else:
            self.image_size, self.in_chans = int(vit.img_size), int(vit.in_chans)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, H, W)`` normalised, ``C`` in {1, 3} -> class tokens ``(B, D)`` float32."""
        c = x.shape[1]
        if c == 3 and self.in_chans == 1:
            x = (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        elif c == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        elif c != self.in_chans:
            raise ValueError(f"cannot feed {c}-channel images to a {self.in_chans}-channel backbone")
        return self.vit(x).float()


class Pixels(nn.Module):
    """The reference "no features": ``(B, C, H, W)`` normalised images -> ``(B, C*H*W)``."""

    def __init__(self, img_size: int, in_chans: int) -> None:
        super().__init__()
        self.img_size, self.in_chans, self.embed_dim = img_size, in_chans, img_size * img_size * in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def load_backbone(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", reference: str = "none", seed: int = 0
) -> Encoder:
    """Rebuild the exported backbone as an eval-mode :class:`Encoder`.

    ``reference`` replaces it by a baseline with the same input (size, channels, normalisation):
    ``random_init``, the same architecture freshly initialised with ``seed`` (what training added), or
    ``pixels``, the normalised images flattened (:class:`Pixels`: what any features should beat).

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a ``backbone.pt`` written by this stage (empty, truncated, or holding
            pickled objects rather than tensors and plain values); the message names the file.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"backbone file not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (EOFError, pickle.UnpicklingError, RuntimeError) as err:  # empty, pickled code, not a torch file
        if os.path.getsize(path) == 0:
            why = "it is empty"
        elif "Weights only load failed" in str(err):
            why = "it holds pickled Python objects, which are never loaded (only tensors and plain values)"
        else:
            why = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise InputError(f"{path} is not a {FORMAT} file: {why} (export it with selfsup.train)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (export it with selfsup.train)")
    if reference not in ("none", "random_init", "pixels"):
        raise ValueError(f"reference must be none, random_init or pixels, got {reference!r}")
    kwargs = payload["model_kwargs"]
    if reference == "pixels":
        vit: nn.Module = Pixels(int(payload["img_size"]), int(payload["in_chans"]))
    else:
        with torch.random.fork_rng(devices=[]):  # a random_init's weights from `seed`; the caller's RNG untouched
            torch.manual_seed(seed)
            if kwargs.get("arch") == "resnet":
                from selfsup.models import SmallResNet

                vit = SmallResNet(**kwargs)
            else:
                vit = VisionTransformer(**kwargs)
    if reference == "none":
        vit.load_state_dict(payload["state_dict"])
    norm = payload["normalize"]
    return Encoder(vit, norm["mean"], norm["std"]).eval()


@torch.no_grad()
def embed_images(
    backbone: Encoder, images: np.ndarray, batch_size: int = 256, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Class-token features of uint8 images held in memory, by the one items -> features path (the
    embed stage's and the evaluation's: :func:`curate.encoders.encode_source` with
    :func:`curate.encoders.backbone_encoder`): converted to the backbone's channels, shorter side
    resized (bilinear) to its ``image_size`` and centre-cropped, normalised with ``backbone.mean/std``.

    Args:
        backbone: an :class:`Encoder` (from :func:`load_backbone`).
        images: ``(n, H, W)`` or ``(n, H, W, C)`` uint8 (a memmap is read image by image).
        batch_size: images per forward pass.
        device: where to run the backbone.

    Returns:
        ``(n, D)`` float32.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    source = ArrayImagesSource(images)
    if len(source) == 0:
        return np.empty((0, backbone.embed_dim), dtype=np.float32)
    return encode_source(backbone_encoder(backbone, torch.device(device)), source, batch_size, num_workers=0)
