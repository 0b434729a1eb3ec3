"""``python -m selfsup.train``: DINOv2-style pre-training (DINO + iBOT + KoLeo) on a (curated) image set.

Outputs in ``out`` (the Hydra run dir)::

    checkpoint.pt   student, teacher, optimizer, centers, iteration, global samples seen (rank 0,
                    atomic, every ``train.checkpoint_every`` iterations and at the end)
    metrics.jsonl   one JSON line every ``train.log_every`` iterations (rank 0, :class:`curate.core.tracking.Tracker`;
                    wandb too with ``logger.wandb.mode``: group ``logger.wandb.group`` or ``name``, job type
                    ``train``, a run id stable across resumptions)
    train_ids.txt   the ids of the training items (the source's ids, e.g. image paths), in order
    backbone.pt     the teacher backbone for :func:`selfsup.export.load_backbone`
    snapshots/backbone_<iteration>.pt   the same, every ``train.snapshot_every`` iterations (if > 0)
    manifest.json   resolved config, the data (source, selection identity and count; with
                    ``data.mix`` each part's selection, weight, count and items drawn), distinct items
                    seen, sizes, versions, final losses; written last

Re-running with the same ``out`` resumes from ``checkpoint.pt`` (on any world size: the
checkpoint holds unwrapped state dicts and the data position as global samples seen; random
numbers are re-derived from ``(seed, rank, iteration)`` at every iteration).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import timm
import torch
import torchvision
from omegaconf import DictConfig

from curate import CONFIG_DIR
from curate.core.atomic import atomic_path, atomic_write_json
from curate.core.dist import (
    all_reduce_sum_,
    barrier,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    resolve_device,
    setup_logging,
)
from curate.core.entry import hydra_entry
from curate.core.errors import IdentityError, run_guarded
from curate.core.protocol import Stage, changed_keys, content, run_only_keys
from curate.core.tracking import Tracker, stage_tracker
from curate.data.sources import default_num_workers
from curate.io.idlist import write_ids
from curate.stage import check_selection, guarded_output
from selfsup.augment import MultiCrop
from selfsup.config import OptimConfig, TrainConfig, config_to_dict, register_configs, to_train_config
from selfsup.data import (
    InfiniteBatchSampler,
    MixedBatchSampler,
    MultiCropDataset,
    collate_multicrop,
    mix_seed,
    open_image_set,
)
from selfsup.export import backbone_payload, save_backbone
from selfsup.meta_arch import SSLMetaArch
from selfsup.schedules import cosine_schedule, warmup_then_constant

log = logging.getLogger(__name__)

# cuBLAS reads this once, when the process creates its first handle: set it on import, before any
# CUDA work, so train.deterministic=true holds on a GPU (set inside train() it can come too late).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

CHECKPOINT_FORMAT = "selfsup.checkpoint/1"


def total_iterations(cfg: TrainConfig, n_train: int) -> int:
    """``train.iterations``, or ``ceil(epochs * n_train / batch_size)`` when ``train.epochs`` is set."""
    if cfg.train.epochs is None:
        return cfg.train.iterations
    return max(1, math.ceil(cfg.train.epochs * n_train / cfg.train.batch_size))


def freeze_last_layer_iterations(cfg: TrainConfig, n_train: int, total: int) -> int:
    """Iterations with the prototypes' lr at 0: ``ceil(freeze_last_layer_epochs * n_train / batch_size)``
    (at most ``total``)."""
    epochs = cfg.optim.freeze_last_layer_epochs
    return min(total, math.ceil(epochs * n_train / cfg.train.batch_size - 1e-9)) if epochs > 0 else 0


def build_schedules(cfg: TrainConfig, total: int, freeze_iters: int = 0) -> dict[str, np.ndarray]:
    """Per-iteration ``lr``, ``last_layer_lr`` (``lr`` with its first ``freeze_iters`` entries 0), ``wd``,
    ``momentum`` and ``teacher_temp``, all ``(total,) float64``."""
    o, t = cfg.optim, cfg.teacher
    lr = o.lr * (cfg.train.batch_size / o.lr_reference_batch if o.lr_reference_batch else 1.0)
    warmup = min(int(round(o.warmup_fraction * total)), total)
    temp_warmup = min(int(round(t.warmup_temp_fraction * total)), total)
    lr_schedule = cosine_schedule(lr, o.min_lr, total, warmup=warmup)
    last_layer_lr = lr_schedule.copy()
    last_layer_lr[:freeze_iters] = 0.0
    return {
        "lr": lr_schedule,
        "last_layer_lr": last_layer_lr,
        "wd": cosine_schedule(o.weight_decay, o.weight_decay_end, total),
        "momentum": cosine_schedule(t.momentum, t.momentum_end, total),
        "teacher_temp": warmup_then_constant(t.warmup_temp, t.temp, total, temp_warmup),
    }


_TOKENS = ("cls_token", "pos_embed", "mask_token", "reg_token")


def vit_lr_multiplier(name: str, n_blocks: int, decay: float) -> float:
    """Layer-wise lr decay of a ViT parameter (``name`` relative to the timm ``VisionTransformer``).

    Tokens and the patch embedding are layer 0, block ``i`` is layer ``i + 1``, the rest (final norm)
    layer ``n_blocks + 1``; the factor is ``decay ** (n_blocks + 1 - layer)``.
    """
    if name.startswith("patch_embed") or name.endswith(_TOKENS):
        layer = 0
    elif name.startswith("blocks."):
        layer = int(name.split(".")[1]) + 1
    else:
        layer = n_blocks + 1
    return decay ** (n_blocks + 1 - layer)


def param_groups(student: torch.nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """AdamW groups of the student (backbone, DINO head, iBOT head), DINOv2's recipe.

    Each group carries ``lr_multiplier`` (ViT backbone: :func:`vit_lr_multiplier` with
    ``optim.layerwise_decay``, times ``optim.patch_embed_lr_mult`` on the patch embedding; heads and
    CNN backbones: 1), ``wd_multiplier`` (0 on biases, norms, LayerScale gammas and other 1-D
    parameters, and on the tokens unless ``optim.decay_tokens``; else 1) and ``is_last_layer`` (the
    prototypes, whose lr follows ``last_layer_lr``). Parameters with equal settings share a group.
    """
    groups: dict[tuple[float, float, bool], list[torch.nn.Parameter]] = {}
    for module_name, module in student.named_children():
        vit = getattr(module, "vit", None) if module_name == "backbone" else None
        n_blocks = len(vit.blocks) if vit is not None else 0
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            inner = name.removeprefix("vit.")
            lr_mult = 1.0
            if vit is not None:
                lr_mult = vit_lr_multiplier(inner, n_blocks, optim.layerwise_decay)
                if inner.startswith("patch_embed"):
                    lr_mult *= optim.patch_embed_lr_mult
            token = inner.endswith(_TOKENS)
            no_wd = name.endswith(".bias") or "norm" in name or "gamma" in name or (p.ndim <= 1 and not token)
            no_wd = no_wd or (token and not optim.decay_tokens)
            key = (lr_mult, 0.0 if no_wd else 1.0, "last_layer" in name)
            groups.setdefault(key, []).append(p)
    return [
        {"params": params, "lr_multiplier": lr, "wd_multiplier": wd, "is_last_layer": last}
        for (lr, wd, last), params in groups.items()
    ]


def apply_schedules(optimizer: torch.optim.Optimizer, sched: dict[str, np.ndarray], it: int) -> None:
    """Set every group's lr and weight decay for iteration ``it`` (groups from :func:`param_groups`)."""
    for group in optimizer.param_groups:
        lr = sched["last_layer_lr"][it] if group["is_last_layer"] else sched["lr"][it]
        group["lr"] = float(lr) * group["lr_multiplier"]
        group["weight_decay"] = float(sched["wd"][it]) * group["wd_multiplier"]


def clip_gradients(student: torch.nn.Module, max_norm: float, mode: str) -> dict[str, torch.Tensor]:
    """Clip the student's gradients in place; returns the norms before clipping.

    Args:
        student: the student network (children ``backbone``, ``dino_head``, ``ibot_head``).
        max_norm: the clipping threshold; 0 disables clipping.
        mode: ``per_module`` (DINOv2: each child on its own, keys ``grad_norm_<child>``) or ``global``
            (one norm over all parameters, key ``grad_norm``).
    """
    if max_norm <= 0:
        return {}
    if mode == "global":
        return {"grad_norm": torch.nn.utils.clip_grad_norm_(student.parameters(), max_norm)}
    norms = {}
    for name, module in student.named_children():
        params = [p for p in module.parameters() if p.grad is not None]
        if params:
            norms[f"grad_norm_{name}"] = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norms


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The content settings (:func:`curate.core.protocol.content`: all but the run-only ones of
    :class:`TrainConfig`, e.g. ``train.snapshot_every``) that differ between two config dicts."""
    run_only = run_only_keys(TrainConfig)
    return changed_keys(content(old, run_only), content(new, run_only))


def save_checkpoint(path: Path, meta: SSLMetaArch, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Write ``checkpoint.pt`` atomically (world-size independent: unwrapped state dicts only)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "student": meta.student.state_dict(),
        "teacher": meta.teacher.state_dict(),
        "dino_loss": meta.dino_loss.state_dict(),
        "ibot_loss": meta.ibot_loss.state_dict() if meta.ibot_loss is not None else {},
        "optimizer": optimizer.state_dict(),
        **state,
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint (tensors on CPU, ``weights_only``)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return payload


def _batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train(cfg: TrainConfig | DictConfig) -> dict[str, Any]:
    """Run (or resume, or finish exporting) a training run.

    Args:
        cfg: a :class:`TrainConfig` or a Hydra/OmegaConf config with its keys.

    Returns:
        Summary: ``iterations``, ``start_iteration``, ``n_train``, ``last`` (last log record),
        ``out_dir``, ``elapsed_s``.
    """
    cfg = to_train_config(cfg)
    if not cfg.train.deterministic:
        return _train(cfg)
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(cfg)
    finally:  # a process-wide switch: give it back as found
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _resume(
    ckpt_path: Path, meta: SSLMetaArch, config_dict: dict[str, Any], n_train: int
) -> tuple[int, int, torch.Tensor, dict[str, Any] | None]:
    """Load ``ckpt_path`` into ``meta`` when it exists (a changed model is refused up front).

    Returns ``(start iteration, samples seen, seen: (n_train,) bool, checkpoint or None)``; the
    checkpoint still holds the optimizer state for the caller."""
    start, samples_seen, ckpt = 0, 0, None
    seen = torch.zeros(n_train, dtype=torch.bool)  # training items drawn so far (this rank)
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        changed = changed_settings(ckpt.get("config", {}), config_dict)
        arch = [key for key in changed if key.startswith("model.")]
        if arch:  # the weights would not fit the model: refuse before load_state_dict fails on them
            raise IdentityError(
                f"{ckpt_path} was written with another model ({', '.join(arch)} changed); resume with the same "
                f"model settings, or start afresh in another out= (or delete the checkpoint) ({arch[0]})"
            )
        if changed:
            log.warning("resuming %s with a changed config: %s", ckpt_path, ", ".join(changed))
        meta.student.load_state_dict(ckpt["student"])
        meta.teacher.load_state_dict(ckpt["teacher"])
        meta.dino_loss.load_state_dict(ckpt["dino_loss"])
        if meta.ibot_loss is not None:
            meta.ibot_loss.load_state_dict(ckpt["ibot_loss"])
        start, samples_seen = int(ckpt["iteration"]), int(ckpt["samples_seen"])
        if "seen" in ckpt and len(ckpt["seen"]) == n_train:
            seen = ckpt["seen"].clone()
        log.info("resuming from %s at iteration %d (%d samples seen)", ckpt_path, start, samples_seen)
    return start, samples_seen, seen, ckpt


def _tracker(cfg: TrainConfig, out_dir: Path, config_dict: dict[str, Any], start: int) -> Tracker:
    """The run's metrics tracker: ``metrics.jsonl`` in ``out_dir`` and optionally wandb, grouped by
    experiment, resuming its run (and dropping records after the checkpoint) at ``start``."""
    return stage_tracker(
        cfg, out_dir, "train", fresh=start == 0, config=config_dict, name=f"train/{cfg.name}", resume_step=start
    )


def _loader(
    cfg: TrainConfig, images: Any, use_ibot: bool, rank: int, world_size: int, samples_seen: int, device: torch.device
) -> torch.utils.data.DataLoader:
    """Multi-crop batches of this rank's share of the global batch, continuing after
    ``samples_seen`` draws; decoding and augmentation run in the DataLoader workers."""
    grid = (cfg.crops.global_size // cfg.model.patch_size,) * 2
    dataset = MultiCropDataset(
        images,
        MultiCrop(cfg.crops, cfg.model.in_chans, cfg.crops.mean, cfg.crops.std),
        grid,
        tuple(cfg.ibot.mask_ratio),
        cfg.ibot.mask_sample_probability if use_ibot else 0.0,
        cfg.ibot.mask_type,
        cfg.train.seed,
    )
    sampler = _sampler(cfg, images, rank, world_size, samples_seen)
    workers = default_num_workers() if cfg.train.num_workers is None else cfg.train.num_workers
    return torch.utils.data.DataLoader(  # decoding and augmentation run in the workers
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_multicrop,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


def _sampler(
    cfg: TrainConfig, images: Any, rank: int, world_size: int, samples_seen: int
) -> InfiniteBatchSampler | MixedBatchSampler:
    """The batch sampler of a run: the parts of ``data.mix`` drawn by weight
    (:class:`MixedBatchSampler`), else epochs of the whole training set."""
    b, seed = cfg.train.batch_size, cfg.train.seed
    if images.mix is None:
        return InfiniteBatchSampler(len(images), b, seed, rank, world_size, start=samples_seen)
    mix = images.mix
    return MixedBatchSampler(
        mix.members, mix.weights, mix.homogeneous_fraction, b, seed, rank, world_size, samples_seen
    )


def _write_manifest(
    cfg: TrainConfig,
    out_dir: Path,
    config_dict: dict[str, Any],
    data_info: dict[str, Any],
    n_train: int,
    distinct_seen: int,
    total: int,
    world_size: int,
    last_record: dict[str, Any],
) -> None:
    """``manifest.json`` of a finished run, written last: the config, the data and selection it
    trained on, the distinct items drawn, the versions."""
    atomic_write_json(
        out_dir / "manifest.json",
        {
            "stage": "selfsup.train",
            "status": "complete",
            "name": cfg.name,
            "config": config_dict,
            "n_train": n_train,
            "data": data_info,
            "selection": data_info.get("selection"),
            "distinct_items_seen": distinct_seen,
            "iterations": total,
            "samples_seen": total * cfg.train.batch_size,
            "world_size": world_size,
            "embed_dim": cfg.model.embed_dim,
            "last": last_record,
            "versions": {
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "timm": timm.__version__,
            },
        },
    )


def _train(cfg: TrainConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    rank, world_size = init_distributed(device=cfg.train.device)
    if rank != 0:
        setup_logging()  # warnings only on other ranks; rank 0 keeps the app's (Hydra's) logging
    device = resolve_device(cfg.train.device, key="train.device")
    check_selection(cfg.data.selection)  # a sample whose clustering or input changed is refused
    for k, part in enumerate(cfg.data.mix or []):
        check_selection(part.selection, f"data.mix[{k}].selection")
    out_dir = Path(cfg.out)
    with guarded_output(out_dir, {}, "out"):  # one run per folder; a killed run's temporaries removed
        return _train_locked(cfg, out_dir, rank, world_size, device, t_start)


def _train_locked(
    cfg: TrainConfig, out_dir: Path, rank: int, world_size: int, device: torch.device, t_start: float
) -> dict[str, Any]:
    config_dict = config_to_dict(cfg)

    images = open_image_set(cfg.data, cfg.model.in_chans, cache_dir=out_dir)
    n_train = len(images)
    data_info = images.source.describe()
    if rank == 0:
        write_ids(out_dir / "train_ids.txt", images.ids())
    total = total_iterations(cfg, n_train)
    freeze_iters = freeze_last_layer_iterations(cfg, n_train, total)
    sched = build_schedules(cfg, total, freeze_iters)
    global_batch = cfg.train.batch_size
    if global_batch % world_size:
        raise ValueError(f"train.batch_size {global_batch} is not divisible by the world size {world_size}")

    torch.manual_seed(cfg.train.seed)
    meta = SSLMetaArch(cfg)
    meta.set_bf16(cfg.train.bf16)
    ckpt_path = out_dir / "checkpoint.pt"
    start, samples_seen, seen, ckpt = _resume(ckpt_path, meta, config_dict, n_train)
    meta.to(device)
    meta.train()
    optimizer = torch.optim.AdamW(
        param_groups(meta.student, cfg.optim), lr=float(sched["lr"][0]), betas=tuple(cfg.optim.betas)
    )
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        del ckpt
    if is_distributed():
        meta.wrap_ddp([device.index] if device.type == "cuda" else None)

    logger = _tracker(cfg, out_dir, config_dict, start)
    last_record: dict[str, Any] = {}
    if start < total:
        loader = _loader(cfg, images, meta.use_ibot, rank, world_size, samples_seen, device)
        log.info(
            "training %d images for %d iterations (global batch %d, %d ranks)",
            n_train,
            total,
            global_batch,
            world_size,
        )
        last_record = _train_loop(
            cfg,
            meta,
            optimizer,
            iter(loader),
            sched,
            start,
            total,
            device,
            logger,
            ckpt_path,
            seen,
        )
    logger.close()
    distinct_seen = int(seen.sum())  # merged over the ranks at the last checkpoint (the final iteration)

    if rank == 0:
        if images.mix is not None:  # what each part gave: replayed from the plan stream
            drawn = _sampler(cfg, images, 0, 1, 0).drawn(total)
            for record, count in zip(data_info["selection"]["mix"], drawn.tolist()):
                record["drawn"] = count
        _save_snapshot(cfg, meta, out_dir / "backbone.pt", total)
        if not last_record and (out_dir / "metrics.jsonl").exists():
            lines = (out_dir / "metrics.jsonl").read_text().splitlines()
            last_record = json.loads(lines[-1]) if lines else {}
        _write_manifest(cfg, out_dir, config_dict, data_info, n_train, distinct_seen, total, world_size, last_record)
    barrier()
    return {
        "iterations": total,
        "start_iteration": start,
        "n_train": n_train,
        "distinct_items_seen": distinct_seen,
        "last": last_record,
        "out_dir": str(out_dir),
        "elapsed_s": time.perf_counter() - t_start,
    }


def _save_snapshot(cfg: TrainConfig, meta: SSLMetaArch, path: Path, iteration: int) -> None:
    """The teacher backbone at ``iteration`` as a :func:`selfsup.export.load_backbone` file (atomic)."""
    payload = backbone_payload(meta.export_state_dict(), meta.export_kwargs(), cfg.crops.mean, cfg.crops.std, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_backbone(path, payload)


def _train_loop(
    cfg: TrainConfig,
    meta: SSLMetaArch,
    optimizer: torch.optim.Optimizer,
    batches: Any,
    sched: dict[str, np.ndarray],
    start: int,
    total: int,
    device: torch.device,
    logger: Tracker,
    ckpt_path: Path,
    seen: torch.Tensor,
) -> dict[str, Any]:
    rank, world_size = get_rank(), get_world_size()
    global_batch = cfg.train.batch_size
    window: dict[str, torch.Tensor] = {}
    window_iters, window_t0 = 0, time.perf_counter()
    record: dict[str, Any] = {}
    for it in range(start, total):
        torch.manual_seed(mix_seed(cfg.train.seed + 7919 * (rank + 1), it))  # drop-path etc.
        batch = next(batches)
        seen[batch.pop("items")] = True
        batch = _batch_to(batch, device)
        apply_schedules(optimizer, sched, it)  # the prototypes' lr is 0 while frozen; their grads still flow
        optimizer.zero_grad(set_to_none=True)
        losses = meta.forward_backward(batch, float(sched["teacher_temp"][it]))
        if not torch.isfinite(losses["loss"]):
            values = {k: v.item() for k, v in losses.items()}
            raise FloatingPointError(f"non-finite loss at iteration {it}: {values}")
        grad_norms = clip_gradients(meta.student, cfg.optim.clip_grad, cfg.optim.clip_grad_mode)
        optimizer.step()
        meta.update_teacher(float(sched["momentum"][it]))

        for k, v in losses.items():
            window[k] = window.get(k, 0.0) + v.float()
        for k, v in grad_norms.items():
            window[k] = window.get(k, 0.0) + v.detach().float()
        window_iters += 1
        done = it + 1
        if done % cfg.train.log_every == 0 or done == total:
            keys = sorted(window)
            stats = all_reduce_sum_(torch.stack([window[k] for k in keys]).to(device)) / (window_iters * world_size)
            elapsed = time.perf_counter() - window_t0
            record = {k: float(v) for k, v in zip(keys, stats.tolist())}
            record.update(
                iteration=done,
                lr=float(sched["lr"][it]),
                last_layer_lr=float(sched["last_layer_lr"][it]),
                wd=float(sched["wd"][it]),
                momentum=float(sched["momentum"][it]),
                teacher_temp=float(sched["teacher_temp"][it]),
                img_per_s=window_iters * global_batch / max(elapsed, 1e-9),
            )
            logger.log(record, step=done)
            log.info("it %d/%d loss %.4f (%.0f img/s)", done, total, record["loss"], record["img_per_s"])
            window, window_iters, window_t0 = {}, 0, time.perf_counter()
        if rank == 0 and cfg.train.snapshot_every and done % cfg.train.snapshot_every == 0:
            _save_snapshot(cfg, meta, ckpt_path.parent / "snapshots" / f"backbone_{done}.pt", done)
        if done % cfg.train.checkpoint_every == 0 or done == total:
            # every rank's drawn items, so a resumption on any world size counts them all
            seen.copy_(all_reduce_sum_(seen.to(device=device, dtype=torch.int32)).cpu() > 0)
            if rank == 0:
                state = {
                    "iteration": done,
                    "samples_seen": done * global_batch,
                    "global_batch_size": global_batch,
                    "seed": cfg.train.seed,
                    "world_size": world_size,
                    "config": config_to_dict(cfg),
                    "seen": seen,
                }
                save_checkpoint(ckpt_path, meta, optimizer, state)
            barrier()
    return record


#: the train stage's declaration (curate.core.protocol); the pipeline reaches it through
#: ``stage_modules.train``; its resume check reads the same run-only declaration (:func:`changed_settings`)
STAGE = Stage(
    name="train",
    config="train",
    schema=TrainConfig,
    run=train,
    inputs=("data.root", "data.path", "data.selection"),
    outputs=("checkpoint.pt", "backbone.pt", "train_ids.txt", "metrics.jsonl", "snapshots"),
    record="manifest.json",
    check=to_train_config,
    register=register_configs,
)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: ``python -m selfsup.train [overrides]``.

    Outputs go to Hydra's job folder: ``out`` for a single run, ``out/<overrides>`` for each job
    of a sweep (``-m``), so sweep jobs never share (or resume from) one folder.
    """
    from hydra.core.hydra_config import HydraConfig

    cfg.out = HydraConfig.get().runtime.output_dir
    run_guarded(train, cfg, hydra=True)


if __name__ == "__main__":
    hydra_entry(main)
