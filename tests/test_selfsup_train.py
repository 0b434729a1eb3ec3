"""The trainer end to end on tiny runs: learning, kill-and-resume, export, DDP, configs, eval app."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import compose_config
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from curate.data.datasets.fashion_mnist import load_fashion_mnist
from selfsup.augment import MultiCrop
from selfsup.config import TrainConfig, to_eval_config, to_train_config
from selfsup.data import InfiniteBatchSampler, MultiCropDataset, collate_multicrop, open_image_set
from selfsup.export import embed_images, load_backbone
from selfsup.meta_arch import SSLMetaArch
from selfsup.train import build_schedules, param_groups, total_iterations, train

TINY = [
    "model.depth=2",
    "model.embed_dim=64",
    "model.num_heads=2",
    "dino.head.n_prototypes=128",
    "dino.head.hidden_dim=64",
    "dino.head.bottleneck_dim=32",
    "ibot.head.n_prototypes=128",
    "ibot.head.hidden_dim=64",
    "ibot.head.bottleneck_dim=32",
    "crops.local_number=2",
    "train.batch_size=16",
    "train.log_every=2",
]


@pytest.fixture(scope="module")
def fmnist_npy(tmp_path_factory):
    """128 Fashion-MNIST train images (+ labels) as .npy files: the fast source for tiny runs."""
    folder = tmp_path_factory.mktemp("fmnist")
    images, labels = load_fashion_mnist("train")
    np.save(folder / "images.npy", images[:128])
    np.save(folder / "labels.npy", labels[:128])
    return folder


def tiny_cfg(out: Path, data: Path, *overrides: str) -> TrainConfig:
    cfg = OmegaConf.structured(TrainConfig)
    cfg.merge_with_dotlist([f"out={out}", "data.kind=npy", f"data.path={data / 'images.npy'}", *TINY, *overrides])
    return to_train_config(cfg)


class SimulatedKill(BaseException):
    """Like a SIGKILL for the code under test: no ``except Exception`` handler catches it."""


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_loss_decreases_on_a_tiny_fashion_mnist_run(tmp_path):
    cfg = OmegaConf.structured(TrainConfig)
    cfg.merge_with_dotlist(
        [
            f"out={tmp_path / 'run'}",
            "data.kind=fashion_mnist",
            "data.limit=256",  # 256 Fashion-MNIST images
            *TINY,
            "train.batch_size=32",
            "train.iterations=30",
            "train.log_every=3",
            "optim.lr=1e-3",
            "optim.lr_reference_batch=0",
            "optim.warmup_fraction=0",
            "teacher.momentum=0.9",
            "teacher.momentum_end=0.9",
            "teacher.warmup_temp_fraction=0",
            # balanced targets from the first step: no centering transient in the curve
            "dino.centering=sinkhorn_knopp",
            "ibot.centering=sinkhorn_knopp",
        ]
    )
    summary = train(cfg)
    records = _records(tmp_path / "run")
    assert [r["iteration"] for r in records] == list(range(3, 31, 3))
    losses = [r["loss"] for r in records]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.5, losses
    assert summary["n_train"] == 256 and records[-1]["img_per_s"] > 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["iterations"] == 30


def _state_equal(a: dict, b: dict) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_killed_run_resumes_to_the_same_weights(tmp_path, fmnist_npy, monkeypatch):
    args = (
        "train.iterations=8",
        "train.checkpoint_every=3",
        "train.deterministic=true",
        "model.drop_path_rate=0.1",
    )
    full = train(tiny_cfg(tmp_path / "full", fmnist_npy, *args))
    assert full["start_iteration"] == 0

    calls = {"n": 0}
    original = SSLMetaArch.forward_backward

    def dies_at_iteration_8(self, batch, teacher_temp):
        calls["n"] += 1
        if calls["n"] == 8:  # after the checkpoint at 6, before the end
            raise SimulatedKill()
        return original(self, batch, teacher_temp)

    monkeypatch.setattr(SSLMetaArch, "forward_backward", dies_at_iteration_8)
    with pytest.raises(SimulatedKill):
        train(tiny_cfg(tmp_path / "killed", fmnist_npy, *args))
    monkeypatch.setattr(SSLMetaArch, "forward_backward", original)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["iteration"] == 6
    assert not (tmp_path / "killed" / "backbone.pt").exists()

    resumed = train(tiny_cfg(tmp_path / "killed", fmnist_npy, *args))  # same out dir: resumes
    assert resumed["start_iteration"] == 6
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    for key in ("student", "teacher", "dino_loss", "ibot_loss", "optimizer"):
        assert _state_equal(a[key], b[key]), key
    assert a["iteration"] == b["iteration"] == 8 and a["samples_seen"] == b["samples_seen"] == 8 * 16
    # the log holds each iteration once, with the uninterrupted run's values
    strip = [{k: v for k, v in r.items() if k != "img_per_s"} for r in _records(tmp_path / "full")]
    assert strip == [{k: v for k, v in r.items() if k != "img_per_s"} for r in _records(tmp_path / "killed")]
    # a finished run re-run: nothing to train, outputs rewritten identically
    again = train(tiny_cfg(tmp_path / "killed", fmnist_npy, *args))
    assert again["start_iteration"] == 8
    c = torch.load(tmp_path / "killed" / "backbone.pt", weights_only=True)
    assert _state_equal(c["state_dict"], torch.load(tmp_path / "full" / "backbone.pt", weights_only=True)["state_dict"])


def test_export_load_embed_round_trip(tmp_path, fmnist_npy):
    cfg = tiny_cfg(tmp_path / "run", fmnist_npy, "train.iterations=2")
    train(cfg)
    payload = torch.load(tmp_path / "run" / "backbone.pt", weights_only=True)  # a plain dict
    assert payload["embed_dim"] == 64 and payload["img_size"] == 28 and payload["in_chans"] == 1
    assert payload["normalize"] == {"mean": cfg.crops.mean, "std": cfg.crops.std}
    encoder = load_backbone(tmp_path / "run" / "backbone.pt")
    assert (encoder.embed_dim, encoder.image_size, encoder.mean) == (64, 28, cfg.crops.mean)

    images = np.load(fmnist_npy / "images.npy")[:10]
    feats = embed_images(encoder, images, batch_size=4, device="cpu")
    assert feats.shape == (10, 64) and feats.dtype == np.float32

    meta = SSLMetaArch(cfg)  # the teacher, rebuilt from the checkpoint
    meta.teacher.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["teacher"])
    x = (torch.from_numpy(images).float().unsqueeze(1) / 255 - cfg.crops.mean[0]) / cfg.crops.std[0]
    with torch.no_grad():
        expected = meta.teacher.backbone(x)["cls"]
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-4, atol=1e-5)
    # RGB copies of the gray images (what an RGB pipeline feeds) give the same features
    rgb = np.repeat(images[..., None], 3, axis=-1)
    np.testing.assert_allclose(embed_images(encoder, rgb, 10), feats, rtol=1e-4, atol=1e-5)
    x1 = torch.randn(3, 1, 28, 28)
    with torch.no_grad():  # the module itself accepts RGB copies of gray input (embed stage's path)
        torch.testing.assert_close(encoder(x1.expand(-1, 3, -1, -1)), encoder(x1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not a selfsup.backbone"):
        torch.save({"weights": 1}, tmp_path / "other.pt")
        load_backbone(tmp_path / "other.pt")


def test_epochs_schedules_and_param_groups(tmp_path, fmnist_npy):
    cfg = tiny_cfg(tmp_path, fmnist_npy, "train.epochs=2.5", "train.batch_size=32", "optim.lr=1e-3")
    assert total_iterations(cfg, n_train=100) == 8  # ceil(2.5 * 100 / 32)
    assert total_iterations(tiny_cfg(tmp_path, fmnist_npy, "train.iterations=7"), n_train=100) == 7
    sched = build_schedules(cfg, 100)
    assert sched["lr"].max() == pytest.approx(1e-3 * 32 / 256)  # linear scaling to the reference batch
    assert sched["lr"][0] == 0.0 and sched["lr"][-1] == pytest.approx(cfg.optim.min_lr)
    assert sched["momentum"][0] == pytest.approx(cfg.teacher.momentum) and sched["momentum"][-1] == 1.0
    assert sched["teacher_temp"][0] == cfg.teacher.warmup_temp and sched["teacher_temp"][-1] == cfg.teacher.temp
    student = SSLMetaArch(cfg).student
    decay = {id(p) for g in param_groups(student, cfg.optim) if g["wd_multiplier"] > 0 for p in g["params"]}
    names = {n for n, p in student.named_parameters() if id(p) in decay}
    assert "backbone.vit.blocks.0.attn.qkv.weight" in names and "dino_head.last_layer.weight" in names
    # DINOv2 decays the tokens too (optim.decay_tokens); never biases or norms
    assert {"backbone.vit.pos_embed", "backbone.vit.cls_token", "backbone.mask_token"} <= names
    assert not any(n.endswith(".bias") or "norm" in n for n in names)


@pytest.fixture(scope="module")
def synthetic_npy(tmp_path_factory):
    """64 random 28 x 28 grey images as ``images.npy``: no dataset needed (the GPU machine has none)."""
    folder = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    np.save(folder / "images.npy", rng.integers(0, 256, size=(64, 28, 28), dtype=np.uint8))
    return folder


@pytest.mark.gpu
def test_bf16_cuda_run(tmp_path, synthetic_npy):
    summary = train(tiny_cfg(tmp_path / "gpu", synthetic_npy, "train.iterations=4", "train.device=cuda"))
    assert np.isfinite(summary["last"]["loss"])
    encoder = load_backbone(tmp_path / "gpu" / "backbone.pt")
    feats = embed_images(encoder, np.load(synthetic_npy / "images.npy")[:8], 4, device="cuda")
    assert feats.shape == (8, 64) and np.isfinite(feats).all()


def test_embed_stage_reads_the_exported_backbone(tmp_path, fmnist_npy):
    """``curate.embed``'s ``encoder=selfsup`` path (PIL -> RGB -> normalise -> module) gives our features."""
    from PIL import Image

    import curate.encoders as encoders

    train(tiny_cfg(tmp_path / "run", fmnist_npy, "train.iterations=1"))
    enc = encoders.selfsup_encoder(str(tmp_path / "run" / "backbone.pt"), torch.device("cpu"), loader=load_backbone)
    images = np.load(fmnist_npy / "images.npy")[:6]
    with torch.no_grad():
        theirs = enc.encode(torch.stack([enc.transform(Image.fromarray(im)) for im in images])).numpy()
    ours = embed_images(load_backbone(tmp_path / "run" / "backbone.pt"), images, 6)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)


# ---- distributed: 2 gloo ranks == 1 process -------------------------------------------------
def _rank_slice(batch: dict, rank: int, world: int) -> dict:
    """This rank's share of a crop-major global batch (the layout the sampler gives each rank)."""
    out = {}
    for key, value in batch.items():
        if key == "positions":
            b = len(value) // world
            out[key] = value[rank * b : (rank + 1) * b]
            continue
        per_crop = value.shape[0] // len(batch["positions"])
        v = value.view(per_crop, len(batch["positions"]), *value.shape[1:])
        b = v.shape[1] // world
        out[key] = v[:, rank * b : (rank + 1) * b].reshape(-1, *value.shape[1:])
    return out


def _ddp_worker(rank: int, world: int, port: int, folder: str, cfg_dict: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from curate.core.dist import init_distributed

    assert init_distributed(backend="gloo") == (rank, world)
    try:
        cfg = to_train_config(OmegaConf.create(cfg_dict))
        torch.manual_seed(0)
        meta = SSLMetaArch(cfg)
        meta.wrap_ddp()
        batch = _rank_slice(torch.load(Path(folder) / "batch.pt", weights_only=True), rank, world)
        losses = meta.forward_backward(batch, teacher_temp=0.05)
        grads = {n: p.grad for n, p in meta.student.named_parameters() if p.grad is not None}
        mean_losses = {k: v.clone() for k, v in losses.items()}
        for v in mean_losses.values():
            dist.all_reduce(v)
            v /= world
        if rank == 0:
            torch.save(
                {
                    "grads": grads,
                    "losses": mean_losses,
                    "center": meta.dino_loss.center,
                    "ibot_center": meta.ibot_loss.center,
                },
                Path(folder) / "ddp_grads.pt",
            )
        cfg_dict = dict(cfg_dict, out=str(Path(folder) / "ddp_run"))
        train(OmegaConf.create(cfg_dict))  # the whole trainer on 2 ranks
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_ranks_match_one_process(tmp_path, fmnist_npy, free_port):
    # device=cpu: the ranks are gloo ranks on the CPU, also on a machine with GPUs (auto would put
    # rank 1 on cuda:1 through LOCAL_RANK)
    cfg = tiny_cfg(
        tmp_path / "single_run", fmnist_npy, "train.iterations=3", "koleo.loss_weight=0.5", "train.device=cpu"
    )
    images = open_image_set({"kind": "npy", "path": str(fmnist_npy / "images.npy")})
    ds = MultiCropDataset(
        images, MultiCrop(cfg.crops, 1, cfg.crops.mean, cfg.crops.std), (4, 4), (0.1, 0.5), 1.0, "block", 0
    )
    batch = collate_multicrop([ds[key] for key in InfiniteBatchSampler(len(images), 16, seed=0).batch_keys(0)])
    torch.save(batch, tmp_path / "batch.pt")
    cfg_dict = OmegaConf.to_container(OmegaConf.structured(cfg))
    mp.spawn(_ddp_worker, args=(2, free_port, str(tmp_path), cfg_dict), nprocs=2, join=True)

    torch.manual_seed(0)
    meta = SSLMetaArch(cfg)
    losses = meta.forward_backward(batch, teacher_temp=0.05)
    ddp = torch.load(tmp_path / "ddp_grads.pt", weights_only=True)
    for k, v in losses.items():
        torch.testing.assert_close(ddp["losses"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(ddp["center"], meta.dino_loss.center, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ddp["ibot_center"], meta.ibot_loss.center, rtol=1e-5, atol=1e-7)
    grads = {n: p.grad for n, p in meta.student.named_parameters() if p.grad is not None}
    assert grads.keys() == ddp["grads"].keys()
    for name, g in grads.items():
        torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)

    # the trainer on 1 process reaches the 2-rank weights (same global batches, same data stream)
    train(cfg)
    a = torch.load(tmp_path / "single_run" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp_run" / "checkpoint.pt", weights_only=True)
    assert a["samples_seen"] == b["samples_seen"] == 3 * 16 and b["world_size"] == 2
    for name, t in a["teacher"].items():
        torch.testing.assert_close(b["teacher"][name], t, rtol=1e-3, atol=1e-4, msg=name)


# ---- configs ----------------------------------------------------------------------------------
def test_train_and_eval_configs_compose_and_validate():
    schema = to_train_config(compose_config("train", ["train.iterations=5"]))
    assert schema.train.iterations == 5 and schema.out == "runs/selfsup/fmnist_cpu"
    assert (schema.model.depth, schema.model.embed_dim, schema.model.patch_size) == (6, 192, 7)
    assert to_train_config(compose_config("train", ["model=vit_large"])).model.depth == 24
    ev = to_eval_config(compose_config("eval", ["name=abc"]))
    assert ev.backbone == "runs/selfsup/abc/backbone.pt" and ev.eval.knn_k == 20


@pytest.mark.parametrize(
    ("config", "override"),
    [
        ("train", "train.iteratons=5"),
        ("train", "dino.head.n_protoypes=5"),
        ("eval", "eval.knn_kk=5"),
    ],
)
def test_misspelled_keys_fail(config, override):
    with pytest.raises(ConfigCompositionException):
        compose_config(config, [override])


def test_appended_unknown_key_is_refused_by_the_schema():
    """Hydra's ``+key=value`` may append to a struct config; the schema conversion still refuses it."""
    cfg = compose_config("train", ["+optim.momentum=0.9"])
    with pytest.raises(ValueError, match="optim.momentum"):
        to_train_config(cfg)


def test_validate_names_the_bad_field():
    for override, field in [
        ("crops.local_size=15", "crops.local_size"),
        ("model.num_heads=5", "model.num_heads"),
        ("crops.mean=[0.5,0.5,0.5]", "crops.mean"),
        ("data.kind=text_lines", "data.kind"),
        ("+data.rooot=/x", "data"),
    ]:
        with pytest.raises(ValueError, match=field):
            to_train_config(compose_config("train", [override]))
    for override in ("dino.centering=median", "logger.wandb.mode=maybe", "optim.clip_grad_mode=globl"):
        with pytest.raises(ConfigCompositionException, match=override.split("=")[0]):  # choices: Enums
            compose_config("train", [override])
    # a config built in code is checked against the same Enums
    cfg = OmegaConf.structured(TrainConfig)
    with pytest.raises(ValueError, match="ibot.mask_type: Invalid value 'square'"):
        to_train_config(OmegaConf.merge(OmegaConf.to_container(cfg), {"ibot": {"mask_type": "square"}}))
    clip = to_train_config(OmegaConf.create({"optim": {"clip_grad_mode": "global"}})).optim.clip_grad_mode
    assert clip == "global"  # a member named "global" (a keyword) reads back
    with pytest.raises(ValueError, match="eval.val_fraction"):
        to_eval_config(compose_config("eval", ["eval.val_fraction=1.5"]))


# ---- the Hydra apps, in process ---------------------------------------------------------------
def test_train_and_eval_apps(tmp_path, fmnist_npy, monkeypatch):
    """``python -m selfsup.train ...`` then ``python -m selfsup.eval ...`` on tiny npy sets."""

    import selfsup.eval
    import selfsup.train

    def run_app(module: str, args: list[str]) -> None:
        """What ``python -m <module> <args>`` does: the Hydra app reads sys.argv."""
        monkeypatch.setattr(sys, "argv", [module, *args])
        {"selfsup.train": selfsup.train, "selfsup.eval": selfsup.eval}[module].main()

    folder = fmnist_npy
    test_images, test_labels = load_fashion_mnist("test")
    np.save(tmp_path / "test_images.npy", test_images[:60])
    np.save(tmp_path / "test_labels.npy", test_labels[:60])
    pool = np.flatnonzero(np.load(folder / "labels.npy") != 3)[:100]  # class 3 rare: absent from the pool
    pool = np.concatenate([pool, np.flatnonzero(np.load(folder / "labels.npy") == 3)[:1]])
    np.save(tmp_path / "pool.npy", pool.astype(np.int64))
    np.save(tmp_path / "pool_labels.npy", np.load(folder / "labels.npy")[pool])
    out = tmp_path / "run"
    args = [
        f"out={out}",
        "data=npy",
        f"data.path={folder / 'images.npy'}",
        *TINY,
        "train.iterations=2",
    ]
    run_app("selfsup.train", args)
    assert (out / "backbone.pt").exists() and (out / ".hydra" / "config.yaml").exists()
    run_app(
        "selfsup.eval",
        [
            f"backbone={out / 'backbone.pt'}",
            f"out={out / 'eval'}",
            "data@data.train=npy",
            f"data.train.path={folder / 'images.npy'}",
            f"data.train.labels_path={folder / 'labels.npy'}",
            f"data.train.selection={tmp_path / 'pool.npy'}",
            "data@data.test=npy",
            f"data.test.path={tmp_path / 'test_images.npy'}",
            f"data.test.labels_path={tmp_path / 'test_labels.npy'}",
            f"eval.pool_labels={tmp_path / 'pool_labels.npy'}",
            "eval.num_tail_classes=2",
            "eval.knn_k=5",
            "eval.linear_epochs=3",
            "eval.linear_lrs=[0.01,0.1]",
        ],
    )
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert report["n_train"] == 101 and report["n_test"] == 60 and report["num_classes"] == 10
    assert report["tail_source"] == "pool" and 3 in report["tail_classes"] and len(report["tail_classes"]) == 2
    for method in ("knn", "linear"):
        assert 0.0 <= report[method]["top1"] <= 1.0 and len(report[method]["per_class"]) == 10
        tail = [report[method]["per_class"][c] for c in report["tail_classes"]]
        tail = [a for a in tail if a is not None]
        assert report[method]["tail_mean"] == pytest.approx(np.mean(tail))
    assert report["knn"]["top1"] > 0.3  # far above chance (0.1) even for a 2-iteration backbone
    assert report["linear"]["best_lr"] in (0.01, 0.1)


def test_sweep_jobs_get_their_own_folders(tmp_path, fmnist_npy, monkeypatch):
    """``-m`` puts each job in ``out/<its overrides>``; an experiment config (defaults: [train])
    keeps the command line, hence the folder names, short."""
    import selfsup.train

    settings = [f"data.path={fmnist_npy / 'images.npy'}", *TINY, "train.iterations=1"]
    experiment = {"defaults": ["train", {"override /data": "npy"}, "_self_"]}
    experiment.update(OmegaConf.to_container(OmegaConf.from_dotlist(settings)))
    (tmp_path / "conf").mkdir()
    OmegaConf.save(OmegaConf.create(experiment), tmp_path / "conf" / "tiny_sweep.yaml")
    out = tmp_path / "sweep"
    argv = ["selfsup.train", "--config-dir", str(tmp_path / "conf"), "--config-name", "tiny_sweep", "-m"]
    monkeypatch.setattr(sys, "argv", [*argv, f"out={out}", "train.seed=0,1"])
    selfsup.train.main()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("backbone.pt")) == [
        "train.seed=0/backbone.pt",
        "train.seed=1/backbone.pt",
    ]
    assert not (out / "checkpoint.pt").exists()


def test_wandb_is_imported_only_when_enabled(tmp_path, fmnist_npy, monkeypatch):
    """mode=disabled never imports wandb; offline/online go through wandb.init (a stub here) with the
    grouping and the stable id of curate.core.tracking.Tracker; a failing online init falls back to offline."""
    import types

    calls = []

    class Run:
        def log(self, record, step=None):
            calls.append(("log", record["step"]))

        def finish(self):
            calls.append(("finish", None))

    stub = types.ModuleType("wandb")
    stub.Settings = lambda **kw: kw
    stub.setup = lambda settings: calls.append(("setup", settings["mode"]))  # offline: process-wide too
    stub.init = lambda **kw: calls.append(("init", kw["mode"], kw["group"], kw["job_type"], kw["resume"])) or Run()
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing it would fail
    train(tiny_cfg(tmp_path / "a", fmnist_npy, "train.iterations=2"))
    monkeypatch.setitem(sys.modules, "wandb", stub)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    train(tiny_cfg(tmp_path / "b", fmnist_npy, "train.iterations=2", "logger.wandb.mode=offline"))
    assert calls == [
        ("setup", "offline"),
        ("init", "offline", "fmnist_cpu", "train", "allow"),
        ("log", 2),
        ("finish", None),
    ]
    working_init = stub.init

    def broken_init(**kw):
        if kw["mode"] == "online":
            raise RuntimeError("no network")
        return working_init(**kw)

    stub.init = broken_init
    summary = train(tiny_cfg(tmp_path / "c", fmnist_npy, "train.iterations=2", "logger.wandb.mode=online"))
    assert summary["iterations"] == 2 and (tmp_path / "c" / "backbone.pt").exists()
    assert calls[-3][:2] == ("init", "offline")


def test_snapshots_hold_the_teacher_backbone_along_the_run(tmp_path, fmnist_npy):
    cfg = tiny_cfg(tmp_path / "run", fmnist_npy, "train.iterations=4", "train.snapshot_every=2")
    train(cfg)
    snaps = sorted((tmp_path / "run" / "snapshots").iterdir())
    assert [p.name for p in snaps] == ["backbone_2.pt", "backbone_4.pt"]
    first, last = (torch.load(p, weights_only=True) for p in snaps)
    final = torch.load(tmp_path / "run" / "backbone.pt", weights_only=True)
    assert (first["iteration"], last["iteration"]) == (2, 4)
    for key, value in final["state_dict"].items():  # the last snapshot is the exported backbone
        torch.testing.assert_close(last["state_dict"][key], value, rtol=0, atol=0)
    moved = [k for k, v in first["state_dict"].items() if not torch.equal(v, last["state_dict"][k])]
    assert moved, "the teacher did not change between iterations 2 and 4"
    with pytest.raises(ValueError, match="train.snapshot_every"):
        tiny_cfg(tmp_path / "bad", fmnist_npy, "train.snapshot_every=-1")


def test_reference_encoders_random_init_and_pixels(tmp_path, fmnist_npy):
    from timm.models.vision_transformer import VisionTransformer

    cfg = tiny_cfg(tmp_path / "run", fmnist_npy, "train.iterations=2")
    train(cfg)
    path = tmp_path / "run" / "backbone.pt"
    images = np.load(fmnist_npy / "images.npy")[:6]
    pixels = load_backbone(path, reference="pixels")
    expected = ((images.astype(np.float32) / 255 - cfg.crops.mean[0]) / cfg.crops.std[0]).reshape(6, -1)
    np.testing.assert_allclose(embed_images(pixels, images, 4), expected, rtol=1e-6, atol=1e-6)
    assert pixels.embed_dim == 28 * 28 and pixels.mean == cfg.crops.mean

    torch.manual_seed(11)
    trained, fresh = load_backbone(path), load_backbone(path, reference="random_init", seed=3)
    draw = torch.rand(1)
    torch.manual_seed(11)
    assert torch.equal(draw, torch.rand(1))  # loading leaves the caller's random state alone
    payload = torch.load(path, weights_only=True)
    torch.manual_seed(3)  # the same architecture, initialised with the seed
    reference = VisionTransformer(**payload["model_kwargs"]).state_dict()
    for key, value in fresh.vit.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
    assert any(not torch.equal(v, trained.vit.state_dict()[k]) for k, v in fresh.vit.state_dict().items())
    with pytest.raises(ValueError, match="reference must be"):
        load_backbone(path, reference="imagenet")
