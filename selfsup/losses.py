"""DINO (class token), iBOT (masked patches) and KoLeo losses, with teacher centering or Sinkhorn-Knopp.

All statistics that couple samples (the EMA center, Sinkhorn-Knopp sums, KoLeo's nearest
neighbours) are taken over the *global* batch through collectives, and the per-rank losses are
means over an equal number of local items, so DDP's gradient average equals the single-process
gradient on the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from curate.core.dist import all_reduce_, all_reduce_sum_
from selfsup.distributed import gather_with_grad


def cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Per-row ``-sum_k p_k log softmax(s / T_s)_k``.

    Args:
        student_logits: ``(N, K)``.
        teacher_probs: ``(N, K)`` rows summing to 1.
        student_temp: student temperature.

    Returns:
        ``(N,)`` float32.
    """
    log_q = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(teacher_probs.float() * log_q).sum(dim=-1)


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, n_iterations: int = 3) -> torch.Tensor:
    """Balanced soft assignments of samples to prototypes (Sinkhorn-Knopp), over all ranks.

    DINOv2's formula: ``Q = exp(logits / temp)`` over the global batch of ``N`` samples is divided
    by its total, then ``n_iterations`` times each prototype column is rescaled to mass ``1/K`` and
    each sample row to ``1/N``; the result is returned multiplied by ``N``, so each row is a
    distribution (sums to 1 exactly, the last step normalises rows) and each prototype column sums
    to about ``N / K``. Before ``exp`` the logits are shifted by *one* maximum, taken over the
    whole global batch (all-reduced): a single constant factor, which the first division by the
    total cancels, so the result equals the unshifted formula while ``exp`` cannot overflow. (A
    per-row shift would rescale every row differently and change the result after a finite
    number of iterations.)

    Args:
        logits: ``(n, K)`` this rank's teacher logits (``n`` may be 0 on some ranks).
        temp: teacher temperature.
        n_iterations: number of (prototype, sample) normalisation rounds.

    Returns:
        ``(n, K)`` float32.
    """
    logits = logits.float()
    n, k = logits.shape
    n_total = all_reduce_sum_(torch.tensor([float(n)], device=logits.device)).item()
    if n_total == 0:
        return torch.zeros_like(logits)
    local_max = logits.max() if n else torch.tensor(-torch.inf, device=logits.device)
    shift = all_reduce_(local_max.reshape(1).clone(), "max")
    q = torch.exp((logits - shift) / temp)  # (n, K), the global maximum entry is 1
    total = all_reduce_sum_(q.sum().reshape(1))
    q /= total
    tiny = torch.finfo(q.dtype).tiny
    for _ in range(n_iterations):
        per_prototype = all_reduce_sum_(q.sum(dim=0))
        q /= per_prototype.clamp_min(tiny) * k
        q /= q.sum(dim=1, keepdim=True).clamp_min(tiny) * n_total
    return q * n_total


class _TeacherTargets(nn.Module):
    """Shared teacher-side logic: centering (EMA over global batches) or Sinkhorn-Knopp."""

    def __init__(self, out_dim: int, student_temp: float, center_momentum: float) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """``softmax((t - center) / T_t)``: ``(N, K)`` -> ``(N, K)`` float32."""
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self, teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3
    ) -> torch.Tensor:
        """Sinkhorn-Knopp targets (see :func:`sinkhorn_knopp`): ``(N, K)`` -> ``(N, K)`` float32."""
        return sinkhorn_knopp(teacher_logits, teacher_temp, n_iterations)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA of the global-batch mean of ``teacher_logits (N, K)`` (skipped when empty globally)."""
        count = torch.tensor([float(teacher_logits.shape[0])], device=teacher_logits.device)
        stats = all_reduce_sum_(torch.cat([teacher_logits.float().sum(dim=0), count]))
        count = stats[-1]
        if count == 0:
            return
        mean = (stats[:-1] / count).unsqueeze(0)
        self.center.mul_(self.center_momentum).add_(mean, alpha=1.0 - self.center_momentum)


class DINOLoss(_TeacherTargets):
    """Cross-entropy between teacher and student class-token distributions over crop pairs.

    Args:
        out_dim: number of prototypes ``K``.
        student_temp: student temperature.
        center_momentum: EMA momentum of the teacher center.
    """

    def forward(
        self,
        student_logits: list[torch.Tensor],
        teacher_probs: list[torch.Tensor],
        skip_same_view: bool = True,
    ) -> torch.Tensor:
        """Mean over crop pairs (and samples) of the cross-entropy.

        Args:
            student_logits: per student crop ``(B, K)``; the first ones are the global crops, in
                the same order as ``teacher_probs``.
            teacher_probs: per teacher (global) crop ``(B, K)`` distributions.
            skip_same_view: skip pairs where student crop ``i`` is teacher crop ``i``.

        Returns:
            Scalar loss.
        """
        total, pairs = 0.0, 0
        for i, s in enumerate(student_logits):
            for j, t in enumerate(teacher_probs):
                if skip_same_view and i == j:
                    continue
                total = total + cross_entropy(s, t, self.student_temp).mean()
                pairs += 1
        if pairs == 0:
            raise ValueError("DINOLoss: no (student, teacher) crop pair to compare")
        return total / pairs


class IBOTPatchLoss(_TeacherTargets):
    """Cross-entropy on masked patches: each crop's masked patches weigh 1 in total.

    Args:
        out_dim: number of patch prototypes.
        student_temp: student temperature.
        center_momentum: EMA momentum of the teacher patch center.
    """

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Per crop, the mean cross-entropy over its masked patches; then the mean over *all* crops.

        Crops without masked patches count as 0, so the normaliser is the same on every rank.

        Args:
            student_logits: ``(M, K)`` logits of the masked patches (row-major over ``masks``).
            teacher_probs: ``(M, K)`` teacher distributions of the same patches.
            masks: ``(G, P) bool`` masks of the ``G`` student global crops, ``M = masks.sum()``.

        Returns:
            Scalar loss.
        """
        if student_logits.shape[0] != int(masks.sum()):
            raise ValueError(f"{student_logits.shape[0]} patch logits for {int(masks.sum())} masked patches")
        per_crop = masks.sum(dim=1, keepdim=True).clamp_min(1).float()
        weights = (1.0 / per_crop).expand_as(masks)[masks]  # (M,)
        ce = cross_entropy(student_logits, teacher_probs, self.student_temp)
        return (ce * weights).sum() / masks.shape[0]


class KoLeoLoss(nn.Module):
    """Kozachenko-Leonenko entropy regulariser: ``-mean_i log(d_i)``, ``d_i`` the distance of the
    L2-normalised ``x_i`` to its nearest other sample, over the global batch.

    Args:
        eps: keeps the log and the square root finite for duplicates.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, gather: bool = True) -> torch.Tensor:
        """Loss of ``x: (n, D)`` (gathered over ranks when ``gather``).

        Returns:
            Scalar; 0 (with a gradient path) when fewer than 2 samples exist globally.
        """
        x = x.float()
        if gather:
            x = gather_with_grad(x)
        if x.shape[0] < 2:
            return x.sum() * 0.0
        x = F.normalize(x, dim=-1, eps=self.eps)
        with torch.no_grad():
            sim = x @ x.t()
            sim.fill_diagonal_(-float("inf"))
            nearest = sim.argmax(dim=1)
        dist = ((x - x[nearest]).pow(2).sum(dim=-1) + self.eps).sqrt()
        return -torch.log(dist + self.eps).mean()
