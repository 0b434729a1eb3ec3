"""The SSL meta-architecture: student, EMA teacher and the three losses in one module."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from selfsup.config import TrainConfig
from selfsup.losses import DINOLoss, IBOTPatchLoss, KoLeoLoss
from selfsup.masking import batch_masks
from selfsup.models import SSLNetwork, backbone_kwargs


class SSLMetaArch(nn.Module):
    """Student and teacher :class:`SSLNetwork` plus DINO, iBOT and KoLeo losses.

    The teacher starts as a copy of the student and its parameters only change through
    :meth:`update_teacher`. It runs in eval mode, except a backbone with BatchNorm (``model.arch=resnet``):
    as in DINO's ResNet recipe its teacher normalises with batch statistics (train mode), and its
    running statistics (used by the export) are its own, not an EMA of the student's. Wrap the
    student for DDP with :meth:`wrap_ddp`; the module's own ``state_dict`` never holds the wrapper, so
    checkpoints do not depend on the world size.

    Args:
        cfg: the training config (model, crops, dino, ibot, koleo, teacher sections are used).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.use_ibot = cfg.ibot.loss_weight > 0
        self.use_koleo = cfg.koleo.loss_weight > 0
        ibot_head = cfg.ibot.head if self.use_ibot and cfg.ibot.separate_head else None
        size = cfg.crops.global_size
        self.student = SSLNetwork(backbone_kwargs(cfg.model, size), cfg.dino.head, ibot_head)
        self.teacher = SSLNetwork(backbone_kwargs(cfg.model, size, 0.0), cfg.dino.head, ibot_head)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.teacher_batch_stats = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.teacher.modules())
        self.teacher.eval()
        if not self.use_ibot and hasattr(self.student.backbone, "mask_token"):
            self.student.backbone.mask_token.requires_grad_(False)  # never used: DDP must not wait for it
        temp = cfg.teacher.student_temp
        self.dino_loss = DINOLoss(cfg.dino.head.n_prototypes, temp, cfg.dino.center_momentum)
        patch_prototypes = (ibot_head or cfg.dino.head).n_prototypes
        self.ibot_loss = IBOTPatchLoss(patch_prototypes, temp, cfg.ibot.center_momentum) if self.use_ibot else None
        self.koleo_loss = KoLeoLoss()
        self.bf16 = False
        self.__dict__["_student_fwd"] = self.student  # not a registered submodule

    def train(self, mode: bool = True) -> SSLMetaArch:
        """Set the student's mode; the teacher stays in eval mode (BatchNorm backbones: see the class)."""
        super().train(mode)
        self.teacher.train(mode and self.teacher_batch_stats)
        return self

    def wrap_ddp(self, device_ids: list[int] | None = None) -> None:
        """Run the student forward through ``DistributedDataParallel`` (call after moving to the device).

        On CUDA, BatchNorm layers of both networks become ``SyncBatchNorm`` (statistics over the global
        batch; the parameter objects are kept, so an optimizer built before stays valid). On CPU
        (gloo) they keep per-rank statistics.
        """
        if self.teacher_batch_stats and device_ids is not None:
            self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
            self.teacher = nn.SyncBatchNorm.convert_sync_batchnorm(self.teacher)
        self.__dict__["_student_fwd"] = nn.parallel.DistributedDataParallel(self.student, device_ids=device_ids)

    def set_bf16(self, enabled: bool) -> None:
        """bf16 autocast for forward passes; only honoured on CUDA."""
        self.bf16 = enabled

    def export_kwargs(self) -> dict[str, Any]:
        """Constructor kwargs of the (teacher) backbone, for :mod:`selfsup.export`."""
        return dict(self.teacher.backbone.kwargs)

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict of the teacher's bare network (timm ``VisionTransformer`` or ``SmallResNet``)."""
        backbone = self.teacher.backbone
        return (backbone.vit if hasattr(backbone, "vit") else backbone.net).state_dict()

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.bf16 and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def _teacher_targets(
        self, global_crops: torch.Tensor, masks: torch.Tensor | None, teacher_temp: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self._autocast(global_crops.device):
            out = self.teacher(global_crops, None, masks, mask_inputs=False)
        cls_logits = out["dino_logits"].float()
        if self.cfg.dino.centering == "sinkhorn_knopp":
            cls_probs = self.dino_loss.sinkhorn_knopp_teacher(
                cls_logits, teacher_temp, self.cfg.dino.sinkhorn_iterations
            )
        else:
            cls_probs = self.dino_loss.softmax_center_teacher(cls_logits, teacher_temp)
            self.dino_loss.update_center(cls_logits)
        if masks is None:
            return cls_probs, None
        patch_logits = out["ibot_logits"].float()
        if self.cfg.ibot.centering == "sinkhorn_knopp":
            patch_probs = self.ibot_loss.sinkhorn_knopp_teacher(
                patch_logits, teacher_temp, self.cfg.ibot.sinkhorn_iterations
            )
        else:
            patch_probs = self.ibot_loss.softmax_center_teacher(patch_logits, teacher_temp)
            self.ibot_loss.update_center(patch_logits)
        return cls_probs, patch_probs

    def ibot_masks(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The student's iBOT masks ``(2B, P) bool``: the batch's own (``ibot.mask_sampling=independent``)
        or DINOv2's plan over the global batch (``batch``, :func:`selfsup.masking.batch_masks`)."""
        ib = self.cfg.ibot
        if ib.mask_sampling == "independent":
            return batch["masks"]
        n_global = batch["global_crops"].shape[0] // len(batch["positions"])
        grid = (self.cfg.crops.global_size // self.cfg.model.patch_size,) * 2
        masks = batch_masks(
            batch["positions"],
            self.cfg.train.batch_size,
            n_global,
            grid,
            tuple(ib.mask_ratio),
            ib.mask_sample_probability,
            ib.mask_type,
            self.cfg.train.seed,
        )
        return masks.to(batch["global_crops"].device)

    def forward_backward(self, batch: dict[str, torch.Tensor], teacher_temp: float) -> dict[str, torch.Tensor]:
        """Compute the losses of one (per-rank) batch and back-propagate their weighted sum.

        Args:
            batch: ``global_crops: (2B, C, Sg, Sg)``, ``local_crops: (L*B, C, Sl, Sl)``,
                ``masks: (2B, P) bool`` (crop-major, see :func:`selfsup.data.collate_multicrop`),
                ``positions: (B,)``, already on the training device.
            teacher_temp: teacher softmax temperature of this iteration.

        Returns:
            Detached scalar tensors: ``loss`` (weighted total), ``dino``, and ``ibot`` / ``koleo``
            when enabled.
        """
        global_crops, local_crops = batch["global_crops"], batch["local_crops"]
        masks = self.ibot_masks(batch) if self.use_ibot else None
        if global_crops.shape[0] % 2:
            raise ValueError(f"global_crops holds {global_crops.shape[0]} crops; expected 2 per image")
        b = global_crops.shape[0] // 2
        cls_probs, patch_probs = self._teacher_targets(global_crops, masks, teacher_temp)
        with self._autocast(global_crops.device):
            out = self._student_fwd(global_crops, local_crops, masks, mask_inputs=True)
        student_cls = list(out["dino_logits"].float().split(b))
        losses: dict[str, torch.Tensor] = {"dino": self.dino_loss(student_cls, list(cls_probs.split(b)))}
        total = self.cfg.dino.loss_weight * losses["dino"]
        if masks is not None:
            losses["ibot"] = self.ibot_loss(out["ibot_logits"].float(), patch_probs, masks)
            total = total + self.cfg.ibot.loss_weight * losses["ibot"]
        if self.use_koleo:
            losses["koleo"] = sum(self.koleo_loss(chunk) for chunk in out["cls_global"].float().split(b))
            total = total + self.cfg.koleo.loss_weight * losses["koleo"]
        total.backward()
        losses["loss"] = total
        return {k: v.detach() for k, v in losses.items()}

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA step ``teacher = m * teacher + (1 - m) * student`` on every parameter."""
        t_params = list(self.teacher.parameters())
        s_params = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(t_params, momentum)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
