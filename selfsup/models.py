"""Networks: a timm ViT that accepts iBOT masks, the DINO projection head, the student/teacher net."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

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
        backbone_kwargs: :func:`vit_kwargs` of the backbone.
        dino_head: DINO head config.
        ibot_head: iBOT head config, or None to share the DINO head (or when iBOT is off).
    """

    def __init__(self, backbone_kwargs: dict[str, Any], dino_head: HeadConfig, ibot_head: HeadConfig | None) -> None:
        super().__init__()
        self.backbone = MaskableViT(backbone_kwargs)
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
