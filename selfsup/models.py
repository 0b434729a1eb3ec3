"""Networks: a timm ViT that accepts iBOT masks, a small ResNet, the DINO projection head, the student/teacher net."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.models.resnet import BasicBlock

from selfsup.config import HeadConfig, ModelConfig


def vit_kwargs(model: ModelConfig, img_size: int, drop_path_rate: float | None = None) -> dict[str, Any]:
    """Constructor kwargs of timm's ``VisionTransformer`` for ``model`` (a plain, saveable dict).

    ``num_classes=0`` and ``global_pool="token"``, so ``vit(x)`` returns the class token
    ``(B, embed_dim)``; ``dynamic_img_size=True`` lets local crops of another size share the
    position embedding (bicubically resampled).

    Args:
        model: the architecture.
        img_size: global crop size in pixels.
        drop_path_rate: overrides ``model.drop_path_rate`` (teachers and exports use 0).
    """
    return {
        "img_size": img_size,
        "patch_size": model.patch_size,
        "in_chans": model.in_chans,
        "num_classes": 0,
        "global_pool": "token",
        "embed_dim": model.embed_dim,
        "depth": model.depth,
        "num_heads": model.num_heads,
        "mlp_ratio": model.mlp_ratio,
        "qkv_bias": model.qkv_bias,
        "init_values": model.layerscale,
        "drop_path_rate": model.drop_path_rate if drop_path_rate is None else drop_path_rate,
        "dynamic_img_size": True,
    }


class MaskableViT(nn.Module):
    """A timm ``VisionTransformer`` plus a learnt mask token for iBOT.

    Args:
        kwargs: constructor kwargs of ``VisionTransformer`` (see :func:`vit_kwargs`).
    """

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.kwargs = dict(kwargs)
        self.vit = VisionTransformer(**kwargs)
        self.embed_dim = int(kwargs["embed_dim"])
        self.mask_token = nn.Parameter(torch.zeros(1, self.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Encode images, replacing masked patch embeddings by the mask token.

        Args:
            x: ``(B, C, H, W)`` float, normalised; ``H, W`` multiples of the patch size.
            masks: ``(B, P) bool`` with ``P = (H / patch) * (W / patch)``, or None.

        Returns:
            ``cls: (B, D)`` class tokens and ``patch: (B, P, D)`` patch tokens after the final norm.
        """
        vit = self.vit
        tokens = vit.patch_embed(x)  # (B, h, w, D) with dynamic_img_size
        if masks is not None:
            b, h, w, d = tokens.shape
            if masks.shape != (b, h * w):
                raise ValueError(f"masks have shape {tuple(masks.shape)}, expected ({b}, {h * w})")
            tokens = torch.where(masks.view(b, h, w, 1), self.mask_token.to(tokens.dtype).view(1, 1, 1, d), tokens)
        tokens = vit._pos_embed(tokens)
        tokens = vit.norm_pre(vit.patch_drop(tokens))
        tokens = vit.norm(vit.blocks(tokens))
        prefix = vit.num_prefix_tokens
        return {"cls": tokens[:, 0], "patch": tokens[:, prefix:]}


def resnet_kwargs(model: ModelConfig, img_size: int) -> dict[str, Any]:
    """Constructor kwargs of :class:`SmallResNet` for ``model`` (a plain, saveable dict)."""
    return {
        "arch": "resnet",
        "in_chans": model.in_chans,
        "channels": list(model.resnet_channels),
        "blocks": list(model.resnet_blocks),
        "stem_width": model.resnet_stem_width,
        "embed_dim": model.resnet_channels[-1],
        "img_size": img_size,
    }


def backbone_kwargs(model: ModelConfig, img_size: int, drop_path_rate: float | None = None) -> dict[str, Any]:
    """:func:`vit_kwargs` or :func:`resnet_kwargs`, by ``model.arch``."""
    if model.arch == "resnet":
        return resnet_kwargs(model, img_size)
    return vit_kwargs(model, img_size, drop_path_rate)


class SmallResNet(nn.Module):
    """A ResNet for small images: 3x3 stride-1 stem (no max-pool), torchvision ``BasicBlock`` stages
    (the first at stride 1, the others at stride 2), BatchNorm, global average pooling.

    Args:
        in_chans: input channels.
        channels: output width of each stage; the last one is the feature dimension.
        blocks: ``BasicBlock`` count of each stage.
        stem_width: width of the stem convolution.
        embed_dim: must equal ``channels[-1]`` (kept so the kwargs describe the features).
        img_size: training image size (informative; any size works).
    """

    def __init__(
        self,
        in_chans: int,
        channels: list[int],
        blocks: list[int],
        stem_width: int,
        embed_dim: int,
        img_size: int,
        arch: str = "resnet",
    ) -> None:
        super().__init__()
        if embed_dim != channels[-1]:
            raise ValueError(f"embed_dim {embed_dim} != last stage width {channels[-1]}")
        self.embed_dim, self.img_size, self.in_chans = embed_dim, img_size, in_chans
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, stem_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        ]
        width = stem_width
        for i, (out, n) in enumerate(zip(channels, blocks)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                down = None
                if stride != 1 or width != out:
                    down = nn.Sequential(nn.Conv2d(width, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
                layers.append(BasicBlock(width, out, stride=stride, downsample=down))
                width = out
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, H, W)`` -> pooled features ``(B, embed_dim)``."""
        return self.features(x).mean(dim=(2, 3))


class ResNetBackbone(nn.Module):
    """:class:`SmallResNet` with the backbone interface of :class:`MaskableViT` (no patch tokens).

    Args:
        kwargs: :func:`resnet_kwargs`.
    """

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.kwargs = dict(kwargs)
        self.net = SmallResNet(**kwargs)
        self.embed_dim = self.net.embed_dim

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``x: (B, C, H, W)`` -> ``cls: (B, D)`` pooled features (iBOT masks are not supported)."""
        if masks is not None:
            raise ValueError("a ResNet backbone has no patch tokens to mask (set ibot.loss_weight=0)")
        return {"cls": self.net(x)}


def build_backbone(kwargs: dict[str, Any]) -> nn.Module:
    """:class:`ResNetBackbone` when ``kwargs["arch"] == "resnet"``, else :class:`MaskableViT`."""
    if kwargs.get("arch") == "resnet":
        return ResNetBackbone(kwargs)
    return MaskableViT(kwargs)


class WeightNormLinear(nn.Module):
    """Bias-free linear layer whose weight rows are unit vectors (weight norm with the gain fixed to 1).

    Args:
        in_dim: input features.
        out_dim: output features (prototypes).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, in_dim)`` -> ``(N, out_dim)``."""
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised prototypes (logits in [-1, 1]).

    Args:
        in_dim: backbone width.
        cfg: prototypes, hidden and bottleneck widths, number of linear layers of the MLP.
    """

    def __init__(self, in_dim: int, cfg: HeadConfig) -> None:
        super().__init__()
        dims = [in_dim] + [cfg.hidden_dim] * (cfg.nlayers - 1) + [cfg.bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(cfg.nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < cfg.nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(cfg.bottleneck_dim, cfg.n_prototypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, in_dim)`` -> logits ``(N, n_prototypes)``."""
        z = F.normalize(self.mlp(x), dim=-1, eps=1e-6)
        return self.last_layer(z)


class SSLNetwork(nn.Module):
    """Backbone + DINO head (+ a separate iBOT head); one instance is the student, one the teacher.

    Args:
        backbone_kwargs: :func:`backbone_kwargs` of the backbone (a ViT or a ResNet).
        dino_head: DINO head config.
        ibot_head: iBOT head config, or None to share the DINO head (or when iBOT is off).
    """

    def __init__(self, backbone_kwargs: dict[str, Any], dino_head: HeadConfig, ibot_head: HeadConfig | None) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone_kwargs)
        self.dino_head = DINOHead(self.backbone.embed_dim, dino_head)
        self.ibot_head = DINOHead(self.backbone.embed_dim, ibot_head) if ibot_head is not None else None

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        mask_inputs: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Run every crop through the backbone and heads.

        Args:
            global_crops: ``(G, C, Sg, Sg)`` (``G = 2B``, crop-major).
            local_crops: ``(L, C, Sl, Sl)`` or None / empty.
            masks: ``(G, P) bool`` patches whose iBOT logits are returned, or None (no iBOT).
            mask_inputs: replace masked patches by the mask token (student) or not (teacher).

        Returns:
            ``cls_global: (G, D)`` class tokens of the global crops; ``dino_logits: (G + L, K)``
            (global crops first); ``ibot_logits: (M, Kp)`` for the ``M = masks.sum()`` masked
            patches in row-major ``(crop, patch)`` order (absent without masks).
        """
        g = self.backbone(global_crops, masks if (masks is not None and mask_inputs) else None)
        cls = [g["cls"]]
        if local_crops is not None and len(local_crops):
            cls.append(self.backbone(local_crops)["cls"])
        out = {"cls_global": g["cls"], "dino_logits": self.dino_head(torch.cat(cls))}
        if masks is not None:
            head = self.ibot_head if self.ibot_head is not None else self.dino_head
            out["ibot_logits"] = head(g["patch"][masks])
        return out
