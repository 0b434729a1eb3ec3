"""Multi-crop augmentation with ``torchvision.transforms.v2`` (DINO recipe, grayscale-aware).

Two global crops (the second with solarisation, blur probabilities per crop as in DINO) and
``local_number`` small local crops. Colour jitter and random grayscale only apply to 3-channel
images: on 1-channel input they would be meaningless or fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from selfsup.config import CropsConfig


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert a ``(C, H, W)`` image to ``channels`` (1 <-> 3) by averaging or repeating.

    Args:
        image: ``(C, H, W)`` uint8 or float, ``C`` in {1, 3}.
        channels: 1 or 3.

    Returns:
        ``(channels, H, W)`` of the same dtype.
    """
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1 and channels == 3:
        return image.expand(3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        gray = (0.299 * image[0].float() + 0.587 * image[1].float() + 0.114 * image[2].float()).unsqueeze(0)
        return gray.round().clamp(0, 255).to(image.dtype) if image.dtype == torch.uint8 else gray.to(image.dtype)
    raise ValueError(f"cannot convert a {c}-channel image to {channels} channels")


def normalize_transform(mean: list[float], std: list[float]) -> v2.Transform:
    """uint8 ``(C, H, W)`` -> float32 scaled to [0, 1], then per-channel ``(x - mean) / std``."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))])


@dataclass
class MultiCropOutput:
    """The views of one image.

    Attributes:
        global_crops: 2 tensors ``(C, Sg, Sg)`` float32, normalised.
        local_crops: ``local_number`` tensors ``(C, Sl, Sl)`` float32, normalised.
    """

    global_crops: list[torch.Tensor]
    local_crops: list[torch.Tensor]


class MultiCrop:
    """Callable producing the DINO views of one uint8 ``(C, H, W)`` image.

    Args:
        cfg: crop sizes, scales and augmentation probabilities.
        channels: channels the model expects (1 or 3); the input is converted first.
        mean: per-channel normalisation mean (length ``channels``).
        std: per-channel normalisation std (length ``channels``).
    """

    def __init__(self, cfg: CropsConfig, channels: int, mean: list[float], std: list[float]) -> None:
        self.channels = channels
        self.local_number = cfg.local_number
        blur = v2.GaussianBlur(kernel_size=cfg.blur_kernel, sigma=tuple(cfg.blur_sigma))
        photometric: list[v2.Transform] = []
        if channels == 3:
            photometric = [
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=cfg.color_jitter_p),
                v2.RandomGrayscale(p=cfg.grayscale_p),
            ]
        flip = v2.RandomHorizontalFlip(p=cfg.flip_p)
        norm = normalize_transform(mean, std)

        def crop(size: int, scale: list[float]) -> v2.Transform:
            return v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True)

        self.global1 = v2.Compose(
            [
                crop(cfg.global_size, cfg.global_scale),
                flip,
                *photometric,
                v2.RandomApply([blur], p=cfg.blur_p[0]),
                norm,
            ]
        )
        self.global2 = v2.Compose(
            [
                crop(cfg.global_size, cfg.global_scale),
                flip,
                *photometric,
                v2.RandomApply([blur], p=cfg.blur_p[1]),
                v2.RandomSolarize(threshold=128, p=cfg.solarize_p),
                norm,
            ]
        )
        self.local = v2.Compose(
            [
                crop(cfg.local_size, cfg.local_scale),
                flip,
                *photometric,
                v2.RandomApply([blur], p=cfg.blur_p[2]),
                norm,
            ]
        )

    def __call__(self, image: torch.Tensor) -> MultiCropOutput:
        """Views of ``image``: uint8 ``(C, H, W)`` with C in {1, 3}."""
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise ValueError(f"expected a uint8 (C, H, W) image, got {image.dtype} {tuple(image.shape)}")
        image = to_channels(image, self.channels)
        return MultiCropOutput(
            global_crops=[self.global1(image), self.global2(image)],
            local_crops=[self.local(image) for _ in range(self.local_number)],
        )
