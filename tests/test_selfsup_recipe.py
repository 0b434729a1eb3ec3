"""DINOv2's recipe, checked against its formulas: Sinkhorn-Knopp, crop pairing, EMA, schedules, param
groups (layer-wise lr decay, patch-embed lr, token weight decay), last-layer freezing, per-module
clipping, batch iBOT masking, and the ResNet backbone option (DINO + KoLeo)."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from selfsup.config import TrainConfig, to_train_config
from selfsup.losses import DINOLoss, sinkhorn_knopp
from selfsup.masking import batch_masks, stratified_mask_ratios
from selfsup.meta_arch import SSLMetaArch
from selfsup.train import (
    apply_schedules,
    build_schedules,
    clip_gradients,
    freeze_last_layer_iterations,
    param_groups,
)

TINY_VIT = [
    "model.depth=2",
    "model.embed_dim=32",
    "model.num_heads=2",
    "dino.head.n_prototypes=64",
    "dino.head.hidden_dim=32",
    "dino.head.bottleneck_dim=16",
    "ibot.head.n_prototypes=64",
    "ibot.head.hidden_dim=32",
    "ibot.head.bottleneck_dim=16",
    "crops.local_number=2",
    "train.batch_size=4",
]


def make_cfg(*overrides: str) -> TrainConfig:
    cfg = OmegaConf.structured(TrainConfig)
    cfg.merge_with_dotlist(["out=unused", *TINY_VIT, *overrides])
    return to_train_config(cfg)


def random_batch(b: int = 4, n_local: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "global_crops": torch.randn(2 * b, 1, 28, 28, generator=g),
        "local_crops": torch.randn(n_local * b, 1, 14, 14, generator=g),
        "masks": torch.zeros(2 * b, 16, dtype=torch.bool),
        "positions": torch.arange(b),
    }


# ---- Sinkhorn-Knopp ---------------------------------------------------------------------------
def published_sinkhorn(logits: torch.Tensor, temp: float, n_iterations: int) -> torch.Tensor:
    """DINOv2's ``sinkhorn_knopp_teacher`` formula (single process), in float64, no shift."""
    q = torch.exp(logits.double() / temp).t()  # (K, B) as in the paper's notation
    k, b = q.shape
    q = q / q.sum()
    for _ in range(n_iterations):
        q = q / q.sum(dim=1, keepdim=True) / k  # every prototype gets 1/K
        q = q / q.sum(dim=0, keepdim=True) / b  # every sample gets 1/B
    return (q * b).t()


def fixed_logits() -> torch.Tensor:
    """(40, 12) head-like logits in [-1, 1], far from uniform: prototypes have different popularity."""
    g = torch.Generator().manual_seed(123)
    x = torch.rand(40, 12, generator=g) * 1.4 - 0.7 + torch.linspace(-0.3, 0.3, 12)
    x[7, 3] = 1.0  # one dominant entry
    return x.clamp(-1, 1)


@pytest.mark.parametrize("temp,n_iter", [(0.04, 3), (0.07, 1), (0.04, 10)])
def test_sinkhorn_knopp_equals_the_published_formula_value_by_value(temp, n_iter):
    logits = fixed_logits()
    ref = published_sinkhorn(logits, temp, n_iter).float()
    torch.testing.assert_close(sinkhorn_knopp(logits, temp, n_iter), ref, rtol=2e-4, atol=1e-7)
    # a per-row shift (the earlier implementation) is a different algorithm after finitely many steps
    per_row = published_sinkhorn(logits - logits.max(dim=1, keepdim=True).values, temp, n_iter).float()
    assert (per_row - ref).abs().max() > 1e-2


def _sinkhorn_worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from curate.core.dist import init_distributed

    init_distributed(backend="gloo")
    try:
        logits = fixed_logits()
        shard = logits[:30] if rank == 0 else logits[30:]  # uneven; the global max (row 7) is on rank 0
        torch.save(sinkhorn_knopp(shard, 0.04, 3), Path(folder) / f"q{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sinkhorn_knopp_on_two_ranks_equals_one_process(tmp_path, free_port):
    mp.spawn(_sinkhorn_worker, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    q = torch.cat([torch.load(tmp_path / f"q{r}.pt", weights_only=True) for r in range(2)])
    torch.testing.assert_close(q, published_sinkhorn(fixed_logits(), 0.04, 3).float(), rtol=2e-4, atol=1e-7)


# ---- crop pairing -----------------------------------------------------------------------------
def _ce(t: np.ndarray, s: np.ndarray, temp: float) -> float:
    z = s / temp
    m = z.max(axis=1, keepdims=True)
    log_q = z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))  # log softmax
    return float(-(t * log_q).sum(axis=1).mean())


def test_dino_loss_pairs_each_student_crop_with_the_teachers_other_global_crops():
    t = [np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1]]), np.array([[0.1, 0.3, 0.6], [0.2, 0.2, 0.6]])]
    s = [
        np.array([[2.0, 0.5, -1.0], [1.0, 0.8, -0.5]]),  # global view 0: agrees with teacher view 0
        np.array([[-1.0, 0.0, 2.0], [-0.5, -0.2, 1.5]]),  # global view 1: agrees with teacher view 1
        np.array([[0.3, -0.2, 0.1], [0.0, 0.4, -0.3]]),  # a local crop
    ]
    temp = 0.1
    got = DINOLoss(3, temp, 0.9)([torch.tensor(x, dtype=torch.float32) for x in s], [torch.tensor(x) for x in t])
    expected = np.mean([_ce(t[1], s[0], temp), _ce(t[0], s[1], temp), _ce(t[0], s[2], temp), _ce(t[1], s[2], temp)])
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # the wrong pairings give other values: the test can tell them apart
    with_same_view = np.mean([_ce(t[j], s[i], temp) for i in range(3) for j in range(2)])
    same_view_only = np.mean([_ce(t[0], s[0], temp), _ce(t[1], s[1], temp)])
    assert abs(with_same_view - expected) > 0.5 and abs(same_view_only - expected) > 0.5


def test_meta_arch_feeds_the_loss_global_student_crops_first_and_teacher_global_crops(monkeypatch):
    torch.manual_seed(0)
    cfg = make_cfg("ibot.loss_weight=0", "koleo.loss_weight=0")
    meta = SSLMetaArch(cfg)
    batch = random_batch()
    seen = {}

    def spy(student_logits, teacher_probs, skip_same_view=True):
        seen.update(student=[x.detach() for x in student_logits], teacher=[x.detach() for x in teacher_probs])
        return sum(x.sum() for x in student_logits) * 0.0

    monkeypatch.setattr(meta.dino_loss, "forward", spy)
    meta.forward_backward(batch, teacher_temp=0.05)
    assert len(seen["student"]) == 2 + 2 and len(seen["teacher"]) == 2
    with torch.no_grad():
        for v in range(2):
            crops = batch["global_crops"][4 * v : 4 * (v + 1)]
            expected = torch.softmax(meta.teacher(crops)["dino_logits"] / 0.05, dim=-1)  # center is 0 at start
            torch.testing.assert_close(seen["teacher"][v], expected, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(seen["student"][v], meta.student(crops)["dino_logits"], rtol=1e-4, atol=1e-5)
        local = meta.student(batch["local_crops"][4:8])["dino_logits"]
        torch.testing.assert_close(seen["student"][3], local, rtol=1e-4, atol=1e-5)


# ---- EMA and schedules --------------------------------------------------------------------------
def test_update_teacher_is_the_ema_of_the_student():
    torch.manual_seed(0)
    meta = SSLMetaArch(make_cfg())
    with torch.no_grad():
        for p in meta.student.parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.clone() for n, p in meta.teacher.named_parameters()}
    student = dict(meta.student.named_parameters())
    meta.update_teacher(0.7)
    for n, p in meta.teacher.named_parameters():
        torch.testing.assert_close(p, 0.7 * before[n] + 0.3 * student[n], rtol=1e-6, atol=1e-6, msg=n)
    meta.update_teacher(1.0)  # momentum 1: frozen
    for n, p in meta.teacher.named_parameters():
        torch.testing.assert_close(p, 0.7 * before[n] + 0.3 * student[n], rtol=1e-6, atol=1e-6, msg=n)


def test_schedules_follow_the_cosine_and_linear_formulas():
    cfg = make_cfg(
        "optim.lr=1e-3",
        "optim.lr_reference_batch=0",
        "optim.min_lr=1e-5",
        "optim.warmup_fraction=0.2",
        "teacher.momentum=0.99",
        "teacher.momentum_end=1.0",
        "teacher.warmup_temp=0.04",
        "teacher.temp=0.07",
        "teacher.warmup_temp_fraction=0.3",
        "optim.weight_decay=0.04",
        "optim.weight_decay_end=0.4",
    )
    total = 50
    sched = build_schedules(cfg, total, freeze_iters=7)
    w, wt = 10, 15
    for i in range(total):
        lr = 1e-3 * i / w if i < w else 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * (i - w) / (total - w - 1)))
        assert sched["lr"][i] == pytest.approx(lr, rel=1e-9, abs=1e-15), i
        assert sched["last_layer_lr"][i] == (0.0 if i < 7 else sched["lr"][i])
        cos = 0.5 * (1 + math.cos(math.pi * i / (total - 1)))
        assert sched["momentum"][i] == pytest.approx(1.0 + (0.99 - 1.0) * cos, rel=1e-12), i
        assert sched["wd"][i] == pytest.approx(0.4 + (0.04 - 0.4) * cos, rel=1e-12), i
        temp = 0.04 + (0.07 - 0.04) * i / wt if i < wt else 0.07
        assert sched["teacher_temp"][i] == pytest.approx(temp, rel=1e-12), i
    one_epoch = make_cfg("train.batch_size=32")
    assert freeze_last_layer_iterations(one_epoch, n_train=100, total=1000) == 4  # ceil(100 / 32)
    assert freeze_last_layer_iterations(one_epoch, n_train=100, total=3) == 3
    assert freeze_last_layer_iterations(make_cfg("optim.freeze_last_layer_epochs=0"), 100, 1000) == 0


# ---- param groups, freezing, clipping ---------------------------------------------------------
def _settings(groups: list[dict], student: torch.nn.Module) -> dict[str, tuple[float, float, bool]]:
    by_id = {id(p): (g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"]) for g in groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in student.named_parameters() if p.requires_grad}


def test_param_groups_follow_dinov2_layer_decay_patch_embed_and_token_decay():
    cfg = make_cfg()  # DINOv2 defaults: layerwise_decay 0.9, patch_embed_lr_mult 0.2, tokens decayed
    assert (cfg.optim.layerwise_decay, cfg.optim.patch_embed_lr_mult, cfg.optim.decay_tokens) == (0.9, 0.2, True)
    student = SSLMetaArch(cfg).student
    got = _settings(param_groups(student, cfg.optim), student)
    d = 0.9
    expected = {  # depth 2: tokens / patch embed are layer 0, block i layer i + 1, final norm layer 3
        "backbone.vit.patch_embed.proj.weight": (d**3 * 0.2, 1.0, False),
        "backbone.vit.patch_embed.proj.bias": (d**3 * 0.2, 0.0, False),
        "backbone.vit.cls_token": (d**3, 1.0, False),
        "backbone.vit.pos_embed": (d**3, 1.0, False),
        "backbone.mask_token": (d**3, 1.0, False),
        "backbone.vit.blocks.0.attn.qkv.weight": (d**2, 1.0, False),
        "backbone.vit.blocks.0.attn.qkv.bias": (d**2, 0.0, False),
        "backbone.vit.blocks.1.norm1.weight": (d, 0.0, False),
        "backbone.vit.blocks.1.mlp.fc2.weight": (d, 1.0, False),
        "backbone.vit.norm.weight": (1.0, 0.0, False),
        "dino_head.mlp.0.weight": (1.0, 1.0, False),
        "dino_head.mlp.0.bias": (1.0, 0.0, False),
        "dino_head.last_layer.weight": (1.0, 1.0, True),
        "ibot_head.last_layer.weight": (1.0, 1.0, True),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name
    no_token_decay = make_cfg("optim.decay_tokens=false")
    got = _settings(param_groups(student, no_token_decay.optim), student)
    assert got["backbone.vit.cls_token"][1] == got["backbone.vit.pos_embed"][1] == got["backbone.mask_token"][1] == 0
    flat = make_cfg("optim.layerwise_decay=1", "optim.patch_embed_lr_mult=1")
    assert {v[0] for v in _settings(param_groups(student, flat.optim), student).values()} == {1.0}


def test_apply_schedules_scales_lr_and_wd_and_freezes_only_the_prototypes():
    cfg = make_cfg()
    student = SSLMetaArch(cfg).student
    opt = torch.optim.AdamW(param_groups(student, cfg.optim))
    sched = {"lr": np.array([0.5]), "last_layer_lr": np.array([0.0]), "wd": np.array([0.1])}
    apply_schedules(opt, sched, 0)
    for g in opt.param_groups:
        assert g["lr"] == (0.0 if g["is_last_layer"] else pytest.approx(0.5 * g["lr_multiplier"]))
        assert g["weight_decay"] == pytest.approx(0.1 * g["wd_multiplier"])


def test_last_layer_is_frozen_by_a_zero_lr_while_its_gradients_still_flow():
    torch.manual_seed(0)
    cfg = make_cfg("optim.lr=1e-2", "optim.lr_reference_batch=0", "optim.warmup_fraction=0", "ibot.loss_weight=0")
    meta = SSLMetaArch(cfg)
    meta.train()
    opt = torch.optim.AdamW(param_groups(meta.student, cfg.optim))
    sched = build_schedules(cfg, total=3, freeze_iters=2)
    last = meta.student.dino_head.last_layer.weight
    other = meta.student.dino_head.mlp[0].weight
    start_last, start_other = last.detach().clone(), other.detach().clone()
    for it in range(3):
        apply_schedules(opt, sched, it)
        opt.zero_grad(set_to_none=True)
        meta.forward_backward(random_batch(seed=it), teacher_temp=0.05)
        assert last.grad is not None and last.grad.abs().sum() > 0  # the gradient is kept
        clip_gradients(meta.student, cfg.optim.clip_grad, cfg.optim.clip_grad_mode)
        opt.step()
        if it < 2:
            assert torch.equal(last, start_last), it  # lr 0: no step and no weight decay
            assert opt.state[last]["exp_avg"].abs().sum() > 0  # but AdamW's moments saw the gradient
    assert not torch.equal(other, start_other)
    assert not torch.equal(last, start_last)  # unfrozen at iteration 2


def test_gradient_clipping_is_per_module_by_default():
    cfg = make_cfg()
    assert cfg.optim.clip_grad_mode == "per_module" and cfg.optim.clip_grad == 3.0
    student = SSLMetaArch(cfg).student
    for name, p in student.named_parameters():
        p.grad = torch.full_like(p, 1.0 if name.startswith("backbone") else 1e-4)
    grads = {n: p.grad.clone() for n, p in student.named_parameters()}

    def norm(prefix: str, source: dict) -> float:
        return float(torch.cat([g.flatten() for n, g in source.items() if n.startswith(prefix)]).norm())

    before = {m: norm(m, grads) for m in ("backbone", "dino_head", "ibot_head")}
    assert before["backbone"] > 3 and before["dino_head"] < 3
    norms = clip_gradients(student, 3.0, "per_module")
    assert set(norms) == {"grad_norm_backbone", "grad_norm_dino_head", "grad_norm_ibot_head"}
    for m in before:
        assert norms[f"grad_norm_{m}"].item() == pytest.approx(before[m], rel=1e-5)
    after = {n: p.grad for n, p in student.named_parameters()}
    assert norm("backbone", after) == pytest.approx(3.0, rel=1e-4)
    for n, g in after.items():
        if not n.startswith("backbone"):
            torch.testing.assert_close(g, grads[n])  # the heads were under the threshold: untouched
    # one global norm instead: every gradient scaled by the same factor, the heads too
    for n, p in student.named_parameters():
        p.grad = grads[n].clone()
    total = math.sqrt(sum(v**2 for v in before.values()))
    assert clip_gradients(student, 3.0, "global")["grad_norm"].item() == pytest.approx(total, rel=1e-5)
    for n, p in student.named_parameters():
        torch.testing.assert_close(p.grad, grads[n] * (3.0 / total), rtol=1e-4, atol=1e-9)
    assert clip_gradients(student, 0.0, "per_module") == {}


# ---- iBOT masking -----------------------------------------------------------------------------
def test_stratified_mask_ratios_mask_exactly_the_share_with_evenly_spread_ratios():
    ratios = stratified_mask_ratios(40, (0.1, 0.5), 0.5, torch.Generator().manual_seed(0))
    masked = ratios[ratios > 0].sort().values
    assert len(masked) == 20
    lo = 0.1 + 0.02 * torch.arange(20, dtype=torch.float64)
    assert bool(((masked >= lo) & (masked <= lo + 0.02)).all())  # one ratio in each of 20 equal slices
    assert (ratios[:20] > 0).sum() not in (0, 20)  # shuffled over the crops
    assert (stratified_mask_ratios(7, (0.1, 0.5), 0.5, torch.Generator()) > 0).sum() == 3  # floor(3.5)


def test_batch_masks_are_the_global_plan_and_do_not_depend_on_the_ranks():
    args = (16, 2, (4, 4), (0.1, 0.5), 0.5, "block", 3)
    full = batch_masks(torch.arange(32, 48), *args)  # iteration 2 of a global batch of 16
    assert full.shape == (32, 16)
    assert int((full.sum(1) > 0).sum()) == 16  # exactly half of the 32 crops (ratio >= 0.1: >= 2 of 16 patches)
    rank1 = batch_masks(torch.arange(40, 48), *args)  # the second half of the samples, both crops
    assert torch.equal(rank1, full[torch.cat([torch.arange(8, 16), torch.arange(24, 32)])])
    assert not torch.equal(batch_masks(torch.arange(48, 64), *args), full)  # the next iteration differs
    with pytest.raises(ValueError, match="more than one global batch"):
        batch_masks(torch.arange(40, 56), *args)


def test_meta_arch_uses_the_batch_plan_by_default():
    cfg = make_cfg()
    assert cfg.ibot.mask_sampling == "batch"
    meta = SSLMetaArch(cfg)
    batch = random_batch()
    masks = meta.ibot_masks(batch)
    assert torch.equal(masks, batch_masks(batch["positions"], 4, 2, (4, 4), (0.1, 0.5), 0.5, "block", 0))
    independent = SSLMetaArch(make_cfg("ibot.mask_sampling=independent"))
    assert independent.ibot_masks(batch) is batch["masks"]


# ---- ResNet backbone (DINO + KoLeo) -----------------------------------------------------------
def test_resnet_backbone_trains_with_dino_and_koleo_and_exports(tmp_path):
    from selfsup.export import embed_images, load_backbone
    from selfsup.train import train

    images = np.random.default_rng(0).integers(0, 256, size=(32, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    resnet = ["model.arch=resnet", "model.resnet_channels=[8,16]", "model.resnet_blocks=[1,1]"]
    with pytest.raises(ValueError, match="ibot.loss_weight"):
        make_cfg(*resnet)  # iBOT needs patch tokens
    cfg = make_cfg(
        *resnet,
        "model.resnet_stem_width=8",
        "ibot.loss_weight=0",
        "data.kind=npy",
        f"data.path={tmp_path / 'images.npy'}",
        f"out={tmp_path / 'run'}",
        "train.iterations=3",
        "train.batch_size=8",
    )
    meta = SSLMetaArch(cfg).train()
    assert meta.teacher.training  # BatchNorm teacher: batch statistics, as in DINO's ResNet recipe
    assert {g["lr_multiplier"] for g in param_groups(meta.student, cfg.optim)} == {1.0}  # no ViT layers
    summary = train(cfg)
    assert np.isfinite(summary["last"]["loss"]) and "koleo" in summary["last"] and "ibot" not in summary["last"]
    payload = torch.load(tmp_path / "run" / "backbone.pt", weights_only=True)
    assert payload["model_kwargs"]["arch"] == "resnet" and payload["embed_dim"] == 16
    assert payload["state_dict"]["features.1.running_mean"].abs().sum() > 0  # the teacher's own BN statistics
    encoder = load_backbone(tmp_path / "run" / "backbone.pt")
    feats = embed_images(encoder, images[:5])
    assert feats.shape == (5, 16) and np.isfinite(feats).all()


def test_resnet_cpu_model_config_composes(compose_config):
    cfg = to_train_config(compose_config("train", ["model=resnet_cpu", "ibot.loss_weight=0"]))
    assert cfg.model.arch == "resnet" and cfg.model.resnet_channels == [16, 32, 64, 128]
    assert SSLMetaArch(cfg).student.backbone.embed_dim == 128
