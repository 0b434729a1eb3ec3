"""``python -m selfsup.eval``: frozen-feature evaluation of an exported backbone.

Weighted k-NN (the DINO protocol: cosine similarity of L2-normalised features, the ``k`` nearest
training points vote with weight ``exp(sim / T)``) and a linear probe (multinomial logistic
regression on standardised frozen features; the learning rate is chosen on a validation split of
the training features, then the probe is retrained on all of them). Reports top-1 overall, per
class and averaged over "tail" classes, in ``<out>/eval.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from curate import CONFIG_DIR
from curate.analysis.metrics import rarest_classes
from curate.core.atomic import atomic_write_json
from curate.core.dist import resolve_device
from curate.core.entry import hydra_entry
from curate.core.errors import run_guarded
from curate.core.protocol import Stage
from curate.core.tracking import stage_tracker
from curate.encoders import backbone_encoder, encode_source
from curate.stage import check_selection, guarded_output
from selfsup.config import EvalConfig, config_to_dict, register_configs, to_eval_config
from selfsup.data import ImageSet, open_image_set
from selfsup.export import Encoder, load_backbone

log = logging.getLogger(__name__)


_KNN_MEMORY_BYTES = 256 * 2**20  # similarity block budget of knn_classify


def _as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(device=device, dtype=dtype)


def _num_classes(*labels: np.ndarray | torch.Tensor) -> int:
    return int(max(int(torch.as_tensor(np.asarray(lab)).max()) for lab in labels if len(lab))) + 1


@torch.no_grad()
def knn_classify(
    train_feats: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_feats: np.ndarray | torch.Tensor,
    k: int = 20,
    T: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Weighted k-NN predictions on cosine similarity (DINO's protocol).

    Test points are processed in blocks (one matmul and one ``topk`` per block, no loop over
    points). Votes are ``exp(sim / T)``; they are computed as ``exp((sim - sim_max) / T)`` per test
    point, which rescales a point's votes without changing its argmax.

    Args:
        train_feats: ``(n, D)`` features.
        train_labels: ``(n,)`` integer labels in ``[0, num_classes)``.
        test_feats: ``(m, D)`` features.
        k: neighbours (capped at ``n``).
        T: temperature.
        num_classes: number of classes (default: ``max(train_labels) + 1``).
        chunk_size: test points per block (default: from a 256 MiB budget).
        device: where to compute.

    Returns:
        ``(m,) int64`` predicted labels.
    """
    device = torch.device(device)
    x = F.normalize(_as_tensor(train_feats, torch.float32, device), dim=1)
    q = F.normalize(_as_tensor(test_feats, torch.float32, device), dim=1)
    y = _as_tensor(train_labels, torch.int64, device)
    if x.ndim != 2 or q.ndim != 2 or x.shape[1] != q.shape[1]:
        raise ValueError(f"features must be (n, D) and (m, D), got {tuple(x.shape)} and {tuple(q.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"train_labels has shape {tuple(y.shape)}, expected ({x.shape[0]},)")
    if x.shape[0] == 0:
        raise ValueError("knn_classify needs at least one training point")
    if k < 1 or T <= 0:
        raise ValueError(f"need k >= 1 and T > 0, got k={k}, T={T}")
    c = num_classes if num_classes is not None else _num_classes(y)
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"train_labels must lie in [0, {c})")
    k = min(k, x.shape[0])
    chunk = chunk_size or max(1, _KNN_MEMORY_BYTES // (4 * x.shape[0]))
    preds = torch.empty(q.shape[0], dtype=torch.int64, device=device)
    for start in range(0, q.shape[0], chunk):
        sim = q[start : start + chunk] @ x.t()  # (b, n)
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = torch.exp((top_sim - top_sim[:, :1]) / T)
        votes = torch.zeros(sim.shape[0], c, device=device).scatter_add_(1, y[top_idx], weights)
        preds[start : start + chunk] = votes.argmax(dim=1)
    return preds.cpu().numpy()


@dataclass
class LinearProbeResult:
    """Output of :func:`linear_probe`.

    Attributes:
        predictions: ``(m,) int64`` test predictions of the probe retrained with ``best_lr``.
        best_lr: learning rate with the best validation accuracy (ties: the first in the list).
        val_accuracy: validation top-1 per learning rate.
    """

    predictions: np.ndarray
    best_lr: float
    val_accuracy: dict[float, float]


def _fit_probes(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    lrs: list[float],
    epochs: int,
    batch_size: int,
    weight_decay: float,
    seed: int,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Train one logistic regression per learning rate, together (AdamW, cosine decay)."""
    gen = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    weights = [torch.zeros(d, num_classes, device=x.device, requires_grad=True) for _ in lrs]
    biases = [torch.zeros(num_classes, device=x.device, requires_grad=True) for _ in lrs]
    groups = [{"params": [w, b], "lr": lr, "base_lr": lr} for w, b, lr in zip(weights, biases, lrs)]
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(x.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x[idx], y[idx]
            scale = 0.5 * (1.0 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale
            loss = sum(F.cross_entropy(xb @ w + b, yb) for w, b in zip(weights, biases))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return [(w.detach(), b.detach()) for w, b in zip(weights, biases)]


def linear_probe(
    train_feats: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_feats: np.ndarray | torch.Tensor,
    num_classes: int | None = None,
    lrs: list[float] | tuple[float, ...] = (1e-3, 1e-2, 1e-1),
    epochs: int = 50,
    batch_size: int = 512,
    weight_decay: float = 0.0,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LinearProbeResult:
    """Logistic-regression probe on frozen features with the learning rate picked on a validation split.

    Features are standardised with the statistics of the data each probe is trained on. All
    learning rates train together (one AdamW with a group per rate, cosine decay); the best one
    on the held-out ``val_fraction`` of the training features is retrained on all of them and
    applied to the test features.

    Args:
        train_feats: ``(n, D)`` features.
        train_labels: ``(n,)`` integer labels.
        test_feats: ``(m, D)`` features.
        num_classes: number of classes (default: ``max(train_labels) + 1``).
        lrs: candidate learning rates.
        epochs: passes over the training features.
        batch_size: minibatch size.
        weight_decay: AdamW weight decay.
        val_fraction: share of the training features held out to choose the learning rate.
        seed: split and shuffling seed.
        device: where to compute.

    Returns:
        :class:`LinearProbeResult`.
    """
    device = torch.device(device)
    x = _as_tensor(train_feats, torch.float32, device)
    y = _as_tensor(train_labels, torch.int64, device)
    q = _as_tensor(test_feats, torch.float32, device)
    if x.ndim != 2 or q.ndim != 2 or x.shape[1] != q.shape[1] or y.shape != (x.shape[0],):
        raise ValueError(f"bad shapes: train {tuple(x.shape)}, labels {tuple(y.shape)}, test {tuple(q.shape)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    lrs = [float(lr) for lr in lrs]
    if not lrs:
        raise ValueError("lrs must hold at least one learning rate")
    c = num_classes if num_classes is not None else _num_classes(y)
    n = x.shape[0]
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    if n_val < 1:
        raise ValueError(f"linear_probe needs at least 2 training points, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)
    fit_idx, val_idx = perm[n_val:], perm[:n_val]

    def standardise(ref: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
        mean, std = ref.mean(dim=0), ref.std(dim=0, unbiased=False).clamp_min(1e-6)
        return [(t - mean) / std for t in (ref, *others)]

    x_fit, x_val = standardise(x[fit_idx], x[val_idx])
    probes = _fit_probes(x_fit, y[fit_idx], c, lrs, epochs, batch_size, weight_decay, seed)
    val_acc = {lr: float(((x_val @ w + b).argmax(1) == y[val_idx]).float().mean()) for lr, (w, b) in zip(lrs, probes)}
    best_lr = max(lrs, key=lambda lr: (val_acc[lr], -lrs.index(lr)))
    x_all, q_std = standardise(x, q)
    ((w, b),) = _fit_probes(x_all, y, c, [best_lr], epochs, batch_size, weight_decay, seed)
    preds = (q_std @ w + b).argmax(dim=1)
    return LinearProbeResult(predictions=preds.cpu().numpy(), best_lr=best_lr, val_accuracy=val_acc)


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes,) float64`` accuracy of each class (NaN for a class absent from ``labels``)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    total = np.bincount(labels, minlength=num_classes).astype(np.float64)
    correct = np.bincount(labels[predictions == labels], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.maximum(total, 1), np.nan)


def accuracy_report(
    predictions: np.ndarray, labels: np.ndarray, num_classes: int, tail_classes: list[int] | None
) -> dict[str, Any]:
    """``top1``, ``per_class`` (None for absent classes), ``tail_mean`` (mean over present tail classes)."""
    per_class = per_class_accuracy(predictions, labels, num_classes)
    tail_mean = None
    if tail_classes:
        values = per_class[np.asarray(tail_classes, dtype=np.int64)]
        values = values[~np.isnan(values)]
        tail_mean = float(values.mean()) if len(values) else None
    return {
        "top1": float(np.mean(np.asarray(predictions) == np.asarray(labels))),
        "per_class": [None if np.isnan(a) else float(a) for a in per_class],
        "tail_mean": tail_mean,
    }


def _open_labelled(spec: Any, what: str, channels: int) -> ImageSet:
    images = open_image_set(spec, channels)
    if images.labels is None:
        hint = "labels_from_dirs=true" if spec.kind == "image_folder" else "labels_path"
        raise ValueError(f"data.{what}: the image set has no labels (set data.{what}.{hint})")
    return images


def embed_image_set(
    encoder: Encoder, images: ImageSet, batch_size: int, device: torch.device, num_workers: int | None = None
) -> np.ndarray:
    """``(n, D) float32`` features of an :class:`ImageSet`, by the embed stage's path
    (:func:`curate.encoders.encode_source`): images decoded, converted to the backbone's channels,
    shorter side resized to its ``image_size`` and centre-cropped in DataLoader workers
    (``num_workers`` None: from the job's CPUs), normalised and encoded in batches of ``batch_size``."""
    if len(images) == 0:
        return np.empty((0, encoder.embed_dim), np.float32)
    return encode_source(backbone_encoder(encoder, device), images.source, batch_size, num_workers)


def _read_labels(path: str) -> np.ndarray:
    if not Path(path).is_file():
        raise FileNotFoundError(f"eval.pool_labels: {path} not found")
    labels = np.load(path, allow_pickle=False)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
        got = f"{labels.dtype} {labels.shape}"
        raise ValueError(f"eval.pool_labels: {path} must be a 1-D array of labels >= 0, got {got}")
    return labels.astype(np.int64)


@dataclass
class ClassSpace:
    """The class ids the probes and the report use, shared by the train and the test set.

    Attributes:
        names: class id -> name: the train set's classes in its order, then the test set's other
            classes (so the train folder's ids, which the pipeline's tail classes use, are kept).
        matched_by: ``name`` when both sets name their labels (image folders, Fashion-MNIST), else
            ``id`` (e.g. ``.npy`` labels: the same integer is the same class).
        train_labels: ``(n,) int64`` train labels in these ids.
        test_labels: ``(m,) int64`` test labels in these ids.
    """

    names: list[str]
    matched_by: str
    train_labels: np.ndarray
    test_labels: np.ndarray

    def present(self, labels: np.ndarray) -> list[str]:
        """Names of the classes ``labels`` holds, in class-id order."""
        return [self.names[c] for c in np.unique(labels)]


def class_space(train: ImageSet, test: ImageSet) -> ClassSpace:
    """Match the labels of ``train`` and ``test`` by class name (a folder lacking a class numbers
    its classes differently), or by id when one of them has no names."""
    train_names, test_names = train.source.label_names, test.source.label_names
    if train_names is None or test_names is None:
        num = _num_classes(train.labels, test.labels)
        return ClassSpace([str(c) for c in range(num)], "id", train.labels, test.labels)
    names = list(train_names) + [n for n in test_names if n not in set(train_names)]
    lookup = {name: i for i, name in enumerate(names)}

    def remap(own: list[str], labels: np.ndarray) -> np.ndarray:
        return np.asarray([lookup[n] for n in own], dtype=np.int64)[labels]

    return ClassSpace(names, "name", remap(train_names, train.labels), remap(test_names, test.labels))


def _pool_tail(path: str, classes: ClassSpace, count: int) -> list[int]:
    """The ``count`` rarest classes of the pool labels at ``path``, in ``classes``' ids: by name when
    a ``label_names.json`` (an embedding store's) lies beside them and the classes are named."""
    pool_labels = _read_labels(path)
    names_file = Path(path).with_name("label_names.json")
    if classes.matched_by == "name" and names_file.is_file():
        try:
            pool_names = json.loads(names_file.read_text())
        except ValueError as err:  # bad JSON or not UTF-8
            raise ValueError(f"eval.pool_labels: {names_file} is not a JSON list of names: {err}") from None
        if not isinstance(pool_names, list) or (len(pool_labels) and pool_labels.max() >= len(pool_names)):
            raise ValueError(f"eval.pool_labels: {names_file} does not name every label of {path}")
        sizes = dict(zip(pool_names, np.bincount(pool_labels, minlength=len(pool_names)).tolist()))
        pool_labels = np.repeat(np.arange(len(classes.names)), [sizes.get(n, 0) for n in classes.names])
    elif len(pool_labels) and pool_labels.max() >= len(classes.names):
        raise ValueError(f"eval.pool_labels: {path} holds labels >= {len(classes.names)} (the test set's)")
    return rarest_classes(pool_labels, len(classes.names), count)


def evaluate(cfg: EvalConfig | DictConfig) -> dict[str, Any]:
    """Embed the train/test sets with the backbone, run k-NN and the linear probe, write ``eval.json``.

    Returns:
        The report written to ``<out>/eval.json``.
    """
    t0 = time.perf_counter()
    cfg = to_eval_config(cfg)
    for part in ("train", "test"):  # a sample whose clustering or input changed is refused
        check_selection(getattr(cfg.data, part).selection, f"data.{part}.selection")
    # one run per folder, outside its inputs; a killed run's temporaries removed
    with guarded_output(Path(cfg.out), input_paths(cfg), "out"):
        return _evaluate(cfg, t0)


# the config keys of what the evaluation reads; its output folder may overlap none of them
INPUT_KEYS = tuple(
    ["backbone"] + [f"data.{part}.{key}" for part in ("train", "test") for key in ("root", "path", "labels_path")]
)


def input_paths(cfg: EvalConfig | DictConfig) -> dict[str, Any]:
    """``{key: path}`` of the inputs in :data:`INPUT_KEYS` that ``cfg`` sets."""
    node = OmegaConf.structured(cfg) if not isinstance(cfg, DictConfig) else cfg
    return {key: value for key in INPUT_KEYS if (value := OmegaConf.select(node, key)) is not None}


def _evaluate(cfg: EvalConfig, t0: float) -> dict[str, Any]:
    e = cfg.eval
    device = resolve_device(e.device, key="eval.device")
    encoder = load_backbone(cfg.backbone, reference=str(e.reference), seed=e.seed)
    channels = encoder.in_chans
    train_set = _open_labelled(cfg.data.train, "train", channels)
    test_set = _open_labelled(cfg.data.test, "test", channels)
    classes = class_space(train_set, test_set)
    num_classes = len(classes.names)
    train_labels, test_labels = classes.train_labels, classes.test_labels
    unseen = sorted(set(classes.present(test_labels)) - set(classes.present(train_labels)))
    if unseen:
        log.warning("test classes without a train image (always scored wrong): %s", ", ".join(unseen))
    tail, tail_source = e.tail_classes, "config" if e.tail_classes else None
    if not tail and e.pool_labels is not None:
        tail, tail_source = _pool_tail(e.pool_labels, classes, e.num_tail_classes), "pool"
    if tail and (min(tail) < 0 or max(tail) >= num_classes):
        raise ValueError(f"eval.tail_classes {tail} outside [0, {num_classes})")

    t_embed = time.perf_counter()
    train_feats = embed_image_set(encoder, train_set, e.batch_size, device, e.num_workers)
    test_feats = embed_image_set(encoder, test_set, e.batch_size, device, e.num_workers)
    t_embed = time.perf_counter() - t_embed
    log.info("embedded %d train and %d test images in %.1fs", len(train_feats), len(test_feats), t_embed)

    knn = knn_classify(train_feats, train_labels, test_feats, e.knn_k, e.knn_temperature, num_classes, device=device)
    probe = linear_probe(
        train_feats,
        train_labels,
        test_feats,
        num_classes,
        e.linear_lrs,
        e.linear_epochs,
        e.linear_batch_size,
        e.linear_weight_decay,
        e.val_fraction,
        e.seed,
        device,
    )
    report = {
        "stage": "selfsup.eval",
        "backbone": str(cfg.backbone),
        "reference": str(e.reference),  # none: the backbone itself; random_init / pixels: a baseline
        "embed_dim": encoder.embed_dim,
        "n_train": len(train_set),
        "n_test": len(test_set),
        "num_classes": num_classes,
        "classes": classes.names,  # class id -> name: the ids of per_class, tail_classes, train_class_counts
        "classes_matched_by": classes.matched_by,
        "train_classes": classes.present(train_labels),
        "test_classes": classes.present(test_labels),
        "train_class_counts": np.bincount(train_labels, minlength=num_classes).tolist(),
        "tail_classes": list(tail) if tail else None,
        "tail_source": tail_source,
        "knn": {
            "k": e.knn_k,
            "temperature": e.knn_temperature,
            **accuracy_report(knn, test_labels, num_classes, tail),
        },
        "linear": {
            "best_lr": probe.best_lr,
            "val_top1": {str(lr): acc for lr, acc in probe.val_accuracy.items()},
            **accuracy_report(probe.predictions, test_labels, num_classes, tail),
        },
        "embed_seconds": t_embed,
        "elapsed_seconds": time.perf_counter() - t0,
        "config": config_to_dict(cfg),
    }
    atomic_write_json(Path(cfg.out) / "eval.json", report)
    with stage_tracker(
        cfg, Path(cfg.out), "eval", fresh=True, config=report["config"], name=f"eval/{cfg.name}"
    ) as tracker:
        scores = {f"{m}_{k}": report[m][k] for m in ("knn", "linear") for k in ("top1", "tail_mean")}
        tracker.log({"n_train": report["n_train"], "n_test": report["n_test"], **scores}, step=0)
        tracker.summary(scores)
    log.info("k-NN top-1 %.4f, linear top-1 %.4f", report["knn"]["top1"], report["linear"]["top1"])
    return report


#: the eval stage's declaration (curate.core.protocol), reached through ``stage_modules.eval``
STAGE = Stage(
    name="eval",
    config="eval",
    schema=EvalConfig,
    run=evaluate,
    inputs=("backbone", "data.train", "data.test"),
    outputs=("eval.json",),
    record="eval.json",
    check=to_eval_config,
    register=register_configs,
)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: ``python -m selfsup.eval [overrides]``.

    Outputs go to Hydra's job folder: ``out`` for a single run, ``out/<overrides>`` for each job
    of a sweep (``-m``), so sweep jobs never share (or resume from) one folder.
    """
    from hydra.core.hydra_config import HydraConfig

    cfg.out = HydraConfig.get().runtime.output_dir
    run_guarded(evaluate, cfg, hydra=True)


if __name__ == "__main__":
    hydra_entry(main)
