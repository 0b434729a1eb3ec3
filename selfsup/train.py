"""``python -m selfsup.train``: DINOv2-style pre-training (DINO + iBOT + KoLeo) on a (curated) image set.

Outputs in ``out`` (the Hydra run dir)::

    checkpoint.pt   student, teacher, optimizer, centers, iteration, global samples seen (rank 0,
                    atomic, every ``train.checkpoint_every`` iterations and at the end)
    metrics.jsonl   one JSON line every ``train.log_every`` iterations (rank 0, :class:`curate.tracking.Tracker`;
                    wandb too with ``logger.wandb.mode``: group ``logger.wandb.group`` or ``name``, job type
                    ``train``, a run id stable across resumptions)
    train_ids.txt   the ids of the training items (the source's ids, e.g. image paths), in order
    backbone.pt     the teacher backbone for :func:`selfsup.export.load_backbone`
    manifest.json   resolved config, the data (source, selection identity and count), distinct items
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

from curate.dist import (
    all_reduce_sum_,
    barrier,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    setup_logging,
)
from curate.embed.sources import default_num_workers
from curate.io.atomic import atomic_path, atomic_write_json, atomic_write_text
from curate.tracking import Tracker
from selfsup.augment import MultiCrop
from selfsup.config import TrainSchema, config_to_dict, to_train_schema
from selfsup.data import InfiniteBatchSampler, MultiCropDataset, collate_multicrop, mix_seed, open_image_set
from selfsup.export import backbone_payload, save_backbone
from selfsup.meta_arch import SSLMetaArch
from selfsup.schedules import cosine_schedule, warmup_then_constant

log = logging.getLogger(__name__)

# configs/ of this repository as an absolute path: Hydra reads a relative config_path against the
# *package* of the task function when it is not ``__main__``, so ``"../configs"`` would only work
# for ``python -m selfsup.<stage>``, not when a driver imports and calls ``main()``.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")

CHECKPOINT_FORMAT = "selfsup.checkpoint/1"
# Config keys that may change between a run and its resumption without a warning.
_RESUME_FREE_KEYS = (
    "out",
    "logger",
    "train.log_every",
    "train.checkpoint_every",
    "train.num_workers",
    "train.device",
)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the local CUDA device when available, else CPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def total_iterations(cfg: TrainSchema, n_train: int) -> int:
    """``train.iterations``, or ``ceil(epochs * n_train / batch_size)`` when ``train.epochs`` is set."""
    if cfg.train.epochs is None:
        return cfg.train.iterations
    return max(1, math.ceil(cfg.train.epochs * n_train / cfg.train.batch_size))


def build_schedules(cfg: TrainSchema, total: int) -> dict[str, np.ndarray]:
    """Per-iteration ``lr``, ``wd``, ``momentum``, ``teacher_temp``, all ``(total,) float64``."""
    o, t = cfg.optim, cfg.teacher
    lr = o.lr * (cfg.train.batch_size / o.lr_reference_batch if o.lr_reference_batch else 1.0)
    warmup = min(int(round(o.warmup_fraction * total)), total)
    temp_warmup = min(int(round(t.warmup_temp_fraction * total)), total)
    return {
        "lr": cosine_schedule(lr, o.min_lr, total, warmup=warmup),
        "wd": cosine_schedule(o.weight_decay, o.weight_decay_end, total),
        "momentum": cosine_schedule(t.momentum, t.momentum_end, total),
        "teacher_temp": warmup_then_constant(t.warmup_temp, t.temp, total, temp_warmup),
    }


def param_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices; none on biases, norms, tokens and position embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed", "mask_token", "reg_token"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _diff_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    name = prefix.rstrip(".")
    return [] if old == new or name.startswith(_RESUME_FREE_KEYS) else [name]


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


def train(cfg: TrainSchema | DictConfig) -> dict[str, Any]:
    """Run (or resume, or finish exporting) a training run.

    Args:
        cfg: a :class:`TrainSchema` or a Hydra/OmegaConf config with its keys.

    Returns:
        Summary: ``iterations``, ``start_iteration``, ``n_train``, ``last`` (last log record),
        ``out_dir``, ``elapsed_s``.
    """
    cfg = to_train_schema(cfg)
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


def _train(cfg: TrainSchema) -> dict[str, Any]:
    t_start = time.perf_counter()
    rank, world_size = init_distributed()
    if rank != 0:
        setup_logging()  # warnings only on other ranks; rank 0 keeps the app's (Hydra's) logging
    device = resolve_device(cfg.train.device)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_dict = config_to_dict(cfg)

    images = open_image_set(cfg.data, cfg.model.in_chans)
    n_train = len(images)
    data_info = images.source.describe()
    if rank == 0:
        atomic_write_text(out_dir / "train_ids.txt", "".join(f"{i}\n" for i in images.ids()))
    total = total_iterations(cfg, n_train)
    sched = build_schedules(cfg, total)
    freeze_iters = int(round(cfg.optim.freeze_last_layer_fraction * total))
    global_batch = cfg.train.batch_size
    if global_batch % world_size:
        raise ValueError(f"train.batch_size {global_batch} is not divisible by the world size {world_size}")

    torch.manual_seed(cfg.train.seed)
    meta = SSLMetaArch(cfg)
    meta.set_bf16(cfg.train.bf16)
    ckpt_path = out_dir / "checkpoint.pt"
    start, samples_seen, ckpt = 0, 0, None
    seen = torch.zeros(n_train, dtype=torch.bool)  # training items drawn so far (this rank)
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        changed = _diff_keys(ckpt.get("config", {}), config_dict)
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
    meta.to(device)
    meta.train()
    optimizer = torch.optim.AdamW(param_groups(meta.student), lr=float(sched["lr"][0]), betas=tuple(cfg.optim.betas))
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        del ckpt
    if is_distributed():
        meta.wrap_ddp([device.index] if device.type == "cuda" else None)
    last_layers = [
        p
        for head in (meta.student.dino_head, meta.student.ibot_head)
        if head is not None
        for p in head.last_layer.parameters()
    ]

    wb = cfg.logger.wandb
    logger = Tracker(
        out_dir,
        mode=wb.mode,
        config=config_dict,
        name=f"train/{cfg.name}",
        group=wb.group or cfg.name,
        job_type="train",
        project=wb.project,
        entity=wb.entity,
        init_timeout=wb.init_timeout_s,
        fresh=start == 0,
        resume_step=start,
    )
    last_record: dict[str, Any] = {}
    if start < total:
        grid = (cfg.crops.global_size // cfg.model.patch_size,) * 2
        dataset = MultiCropDataset(
            images,
            MultiCrop(cfg.crops, cfg.model.in_chans, cfg.crops.mean, cfg.crops.std),
            grid,
            tuple(cfg.ibot.mask_ratio),
            cfg.ibot.mask_sample_probability if meta.use_ibot else 0.0,
            cfg.ibot.mask_type,
            cfg.train.seed,
        )
        sampler = InfiniteBatchSampler(n_train, global_batch, cfg.train.seed, rank, world_size, start=samples_seen)
        workers = default_num_workers() if cfg.train.num_workers is None else cfg.train.num_workers
        loader = torch.utils.data.DataLoader(  # decoding and augmentation run in the workers
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_multicrop,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
        )
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
            freeze_iters,
            last_layers,
            device,
            logger,
            ckpt_path,
            seen,
        )
    logger.close()
    distinct_seen = int(seen.sum())  # merged over the ranks at the last checkpoint (the final iteration)

    if rank == 0:
        payload = backbone_payload(
            meta.teacher.backbone.vit.state_dict(), meta.export_kwargs(), cfg.crops.mean, cfg.crops.std, total
        )
        save_backbone(out_dir / "backbone.pt", payload)
        if not last_record and (out_dir / "metrics.jsonl").exists():
            lines = (out_dir / "metrics.jsonl").read_text().splitlines()
            last_record = json.loads(lines[-1]) if lines else {}
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
                "samples_seen": total * global_batch,
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


def _train_loop(
    cfg: TrainSchema,
    meta: SSLMetaArch,
    optimizer: torch.optim.Optimizer,
    batches: Any,
    sched: dict[str, np.ndarray],
    start: int,
    total: int,
    freeze_iters: int,
    last_layers: list[torch.nn.Parameter],
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
        for group in optimizer.param_groups:
            group["lr"] = float(sched["lr"][it])
            group["weight_decay"] = float(sched["wd"][it]) if group["apply_wd"] else 0.0
        optimizer.zero_grad(set_to_none=True)
        losses = meta.forward_backward(batch, float(sched["teacher_temp"][it]))
        if not torch.isfinite(losses["loss"]):
            values = {k: v.item() for k, v in losses.items()}
            raise FloatingPointError(f"non-finite loss at iteration {it}: {values}")
        grad_norm = None
        if cfg.optim.clip_grad > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(meta.student.parameters(), cfg.optim.clip_grad)
        if it < freeze_iters:
            for p in last_layers:
                p.grad = None
        optimizer.step()
        meta.update_teacher(float(sched["momentum"][it]))

        for k, v in losses.items():
            window[k] = window.get(k, 0.0) + v.float()
        if grad_norm is not None:
            window["grad_norm"] = window.get("grad_norm", 0.0) + grad_norm.detach().float()
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
                wd=float(sched["wd"][it]),
                momentum=float(sched["momentum"][it]),
                teacher_temp=float(sched["teacher_temp"][it]),
                img_per_s=window_iters * global_batch / max(elapsed, 1e-9),
            )
            logger.log(record, step=done)
            log.info("it %d/%d loss %.4f (%.0f img/s)", done, total, record["loss"], record["img_per_s"])
            window, window_iters, window_t0 = {}, 0, time.perf_counter()
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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: ``python -m selfsup.train [overrides]``.

    Outputs go to Hydra's job folder: ``out`` for a single run, ``out/<overrides>`` for each job
    of a sweep (``-m``), so sweep jobs never share (or resume from) one folder.
    """
    from hydra.core.hydra_config import HydraConfig

    cfg.out = HydraConfig.get().runtime.output_dir
    train(cfg)


if __name__ == "__main__":
    main()
