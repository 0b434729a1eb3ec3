"""Structured config schemas of the SSL stage, registered in Hydra's ConfigStore.

``train_schema`` (:class:`TrainConfig`) backs ``configs/train.yaml`` and ``eval_schema``
(:class:`EvalConfig`) backs ``configs/eval.yaml``. Both primary configs start with
``defaults: [<stage>_schema, ...]``, so struct mode is on and a misspelled key is an error. The
defaults live here only (the YAML files set what differs); choices are :class:`~enum.StrEnum`
fields, refused at composition and listed by ``--help``. Cross-field rules live in
:func:`validate_train` and :func:`validate_eval`, which raise ``ValueError`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from curate.conf import LoggerConfig, choices, register_help
from curate.core.protocol import RUN_ONLY
from curate.data.sources import source_kinds

# Fashion-MNIST pixel statistics (train split, pixels scaled to [0, 1]).
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530


# choices: members named by their values, so overrides and saved configs read back (see curate.conf.choices)
Arch = choices("Arch", ("vit", "resnet"), __name__)
Centering = choices("Centering", ("center", "sinkhorn_knopp"), __name__)
MaskType = choices("MaskType", ("block", "random"), __name__)
MaskSampling = choices("MaskSampling", ("batch", "independent"), __name__)
ClipGradMode = choices("ClipGradMode", ("per_module", "global"), __name__)
Reference = choices("Reference", ("none", "random_init", "pixels"), __name__)
Device = choices("Device", ("auto", "cpu", "cuda"), __name__)


@dataclass
class ModelConfig:
    """The backbone. Image size is ``crops.global_size``.

    ``arch``: ``vit`` (timm ``VisionTransformer``: the fields up to ``drop_path_rate``) or ``resnet``
    (timm ``ResNet`` of ``BasicBlock`` stages, BatchNorm, global average pooling: ``resnet_*``
    fields and ``in_chans``; DINO + KoLeo only, iBOT needs patch tokens: set ``ibot.loss_weight=0``).
    """

    arch: Arch = Arch.vit
    depth: int = 6
    embed_dim: int = 192
    num_heads: int = 3
    mlp_ratio: float = 4.0
    patch_size: int = 7
    in_chans: int = 1
    qkv_bias: bool = True
    layerscale: float | None = None  # timm ``init_values``; None disables LayerScale
    drop_path_rate: float = 0.0  # student only; the teacher and the export use 0
    resnet_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # per stage
    resnet_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])  # BasicBlocks per stage
    resnet_stem_width: int = 16  # one 3x3 stride-1 conv stem, no max-pool (small images)


@dataclass
class CropsConfig:
    """Multi-crop augmentation (2 global + ``local_number`` local crops). Sizes in pixels."""

    global_size: int = 28
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_number: int = 4
    local_size: int = 14
    local_scale: list[float] = field(default_factory=lambda: [0.1, 0.4])
    flip_p: float = 0.5
    color_jitter_p: float = 0.8  # 3-channel input only
    grayscale_p: float = 0.2  # 3-channel input only
    blur_p: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.5])  # global 1, global 2, local
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 1.0])
    blur_kernel: int = 3
    solarize_p: float = 0.2  # second global crop only
    # normalisation after augmentation, one value per model.in_chans (Fashion-MNIST statistics)
    mean: list[float] = field(default_factory=lambda: [FMNIST_MEAN])
    std: list[float] = field(default_factory=lambda: [FMNIST_STD])


@dataclass
class HeadConfig:
    """DINO projection head: MLP -> L2-normalised bottleneck -> weight-normalised prototypes."""

    n_prototypes: int = 2048
    hidden_dim: int = 512
    bottleneck_dim: int = 128
    nlayers: int = 3


@dataclass
class DinoConfig:
    loss_weight: float = 1.0
    head: HeadConfig = field(default_factory=HeadConfig)
    centering: Centering = Centering.center
    center_momentum: float = 0.9
    sinkhorn_iterations: int = 3


@dataclass
class IbotConfig:
    loss_weight: float = 1.0  # 0 disables masking and the patch loss
    separate_head: bool = True
    head: HeadConfig = field(default_factory=HeadConfig)
    centering: Centering = Centering.center
    center_momentum: float = 0.9
    sinkhorn_iterations: int = 3
    mask_type: MaskType = MaskType.block
    mask_ratio: list[float] = field(default_factory=lambda: [0.1, 0.5])
    mask_sample_probability: float = 0.5
    # batch (DINOv2): exactly int(probability * global crops of the global batch) crops are masked,
    # their ratios spread evenly over mask_ratio; independent: each crop masked with the probability
    mask_sampling: MaskSampling = MaskSampling.batch


@dataclass
class KoleoConfig:
    loss_weight: float = 0.1


@dataclass
class TeacherConfig:
    momentum: float = 0.992  # cosine schedule from this to momentum_end
    momentum_end: float = 1.0
    temp: float = 0.07
    warmup_temp: float = 0.04
    warmup_temp_fraction: float = 0.3  # share of training with a linear temperature warm-up
    student_temp: float = 0.1


@dataclass
class OptimConfig:
    """AdamW; ``lr`` is for a global batch of ``lr_reference_batch`` (linear scaling)."""

    lr: float = 5e-4
    lr_reference_batch: int = 256  # 0 disables scaling
    min_lr: float = 1e-6
    warmup_fraction: float = 0.1
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 3.0  # 0 disables clipping
    # per_module (DINOv2): backbone, DINO head and iBOT head each clipped to clip_grad; global: one norm
    clip_grad_mode: ClipGradMode = ClipGradMode.per_module
    # the prototypes' lr is 0 for this many epochs (ceil(epochs * n_train / batch) iterations); the
    # gradients still flow and AdamW's moments still see them (DINOv2: 1)
    freeze_last_layer_epochs: float = 1.0
    layerwise_decay: float = 0.9  # ViT block i of L: lr x decay^(L - i); tokens, patch embed: decay^(L + 1)
    patch_embed_lr_mult: float = 0.2  # on top of the layer-wise factor (DINOv2)
    # DINOv2 decays cls/pos/mask/register tokens (no decay only on biases, norms, LayerScale gammas);
    # false: no decay on the tokens either
    decay_tokens: bool = True


@dataclass
class TrainLoopConfig:
    batch_size: int = 64  # global batch (all ranks together)
    iterations: int = 1000
    epochs: float | None = None  # when set, overrides iterations: ceil(epochs * n / batch_size)
    seed: int = 0
    device: Device = field(default=Device.auto, metadata=RUN_ONLY)
    bf16: bool = True  # autocast, used on CUDA only
    deterministic: bool = False
    log_every: int = field(default=10, metadata=RUN_ONLY)
    checkpoint_every: int = field(default=100, metadata=RUN_ONLY)
    # > 0: the teacher backbone also every this many iterations, as snapshots/backbone_<iteration>.pt
    # (for selfsup.eval backbone=<file>: how the features change over a run); 0: none
    snapshot_every: int = field(default=0, metadata=RUN_ONLY)
    num_workers: int | None = field(
        default=None, metadata=RUN_ONLY
    )  # DataLoader workers (decoding + augmentation); None: from the job's CPUs


@dataclass
class TrainConfig:
    name: str = "fmnist_cpu"
    out: str = field(
        default="runs/selfsup/${name}", metadata=RUN_ONLY
    )  # Hydra's run dir too: named by the experiment, never by the clock
    model: ModelConfig = field(default_factory=ModelConfig)
    # the items to train on: a configs/data/<kind> node (curate.embed.config schemas: image_folder,
    # image_list, fashion_mnist, npy), with data.selection for a curated subset; None: Fashion-MNIST
    data: Any = None
    crops: CropsConfig = field(default_factory=CropsConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    ibot: IbotConfig = field(default_factory=IbotConfig)
    koleo: KoleoConfig = field(default_factory=KoleoConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata=RUN_ONLY)


@dataclass
class EvalSplitsConfig:
    """Labelled image sets: ``configs/data/<kind>`` nodes whose source has labels (an
    ``image_folder`` with ``labels_from_dirs``, ``fashion_mnist``, ``npy`` with ``labels_path``)."""

    train: Any = None
    test: Any = None


@dataclass
class EvalOptionsConfig:
    knn_k: int = 20
    knn_temperature: float = 0.07
    linear_lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1])
    linear_epochs: int = 50
    linear_batch_size: int = 512
    linear_weight_decay: float = 0.0
    val_fraction: float = 0.1
    tail_classes: list[int] | None = None
    pool_labels: str | None = None  # (N,) int labels of the training pool (.npy): its rarest classes are the tail
    num_tail_classes: int = 3
    batch_size: int = field(default=256, metadata=RUN_ONLY)  # embedding batch size
    num_workers: int | None = field(
        default=None, metadata=RUN_ONLY
    )  # image decoding workers; None: from the job's CPUs
    device: Device = field(default=Device.auto, metadata=RUN_ONLY)
    seed: int = 0
    # a reference to score instead of the trained backbone, on the same images and probes: random_init
    # (its architecture, freshly initialised with ``seed``) or pixels (the normalised images, flattened)
    reference: Reference = Reference.none


@dataclass
class EvalConfig:
    name: str = "fmnist_cpu"
    backbone: str = "runs/selfsup/${name}/backbone.pt"
    out: str = field(default="runs/selfsup/${name}/eval", metadata=RUN_ONLY)
    data: EvalSplitsConfig = field(default_factory=EvalSplitsConfig)
    eval: EvalOptionsConfig = field(default_factory=EvalOptionsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata=RUN_ONLY)


def register_configs() -> None:
    """Register ``train_schema`` and ``eval_schema`` (and the ``data`` group's source schemas) in
    Hydra's ConfigStore (idempotent)."""
    from curate.embed.config import register_configs as register_sources

    register_sources()
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    register_help()


register_configs()


def _reject_unknown_keys(given: Any, reference: Any, prefix: str = "") -> None:
    """Struct mode stops typos, but Hydra's ``+key=value`` may still append keys; refuse them here.
    Data nodes are checked against their source's schema (``curate.embed.config.SOURCES``)."""
    if prefix in DATA_NODES and isinstance(given, dict):
        from curate.embed.config import SOURCES

        schema = SOURCES.get(given.get("kind")) if given.get("kind") in IMAGE_SOURCES else None
        reference = OmegaConf.to_container(OmegaConf.structured(schema)) if schema is not None else None
    if not isinstance(given, dict) or not isinstance(reference, dict):
        return
    for key, value in given.items():
        if key not in reference:
            raise ValueError(f"unknown config key {prefix}{key} (not in the schema)")
        _reject_unknown_keys(value, reference[key], f"{prefix}{key}.")


def _to_schema(cfg: Any, schema: type) -> Any:
    """``cfg`` (a dict, DictConfig or ``schema`` object) typed by ``schema``: every value checked
    against its field's type, so a choice outside its Enum is refused here too."""
    if isinstance(cfg, DictConfig | dict):
        reference = OmegaConf.to_container(OmegaConf.structured(schema))
        given = OmegaConf.to_container(cfg) if isinstance(cfg, DictConfig) else cfg
        _reject_unknown_keys(given, reference)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))
    except OmegaConfBaseException as err:
        raise ValueError(f"{err.full_key}: {err.msg}") from None


DATA_NODES = ("data.", "data.train.", "data.test.")
IMAGE_SOURCES = source_kinds("image")  # the registry's image kinds


def data_config(node: Any, name: str, default: dict | None = None) -> Any:
    """A data node as the dataclass of its source (``curate.embed.config.SOURCES``): typed, with
    the source's defaults, unknown keys refused.

    Raises:
        ValueError: no or an unknown ``kind``, a source that is not an image source, a misspelled key.
    """
    from omegaconf.errors import OmegaConfBaseException

    from curate.embed.config import SOURCES

    if node is None:
        node = default
    if node is None:
        raise ValueError(f"{name}: a data source is required (data=<image_folder|image_list|fashion_mnist|npy>)")
    if not isinstance(node, DictConfig | dict):
        node = OmegaConf.structured(node)
    kind = node.get("kind")
    _check(kind in IMAGE_SOURCES, f"{name}.kind", f"an image source {IMAGE_SOURCES}, got {kind!r}")
    try:
        data = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SOURCES[kind]), node))
    except OmegaConfBaseException as err:
        raise ValueError(f"{name}: {str(err).splitlines()[0]}") from None
    if data.mix is not None or data.homogeneous_fraction is not None:
        _check_mix(data, name)
    return data


def _check_mix(data: Any, name: str) -> None:
    """The rules of ``data.mix`` / ``data.homogeneous_fraction`` (their folders are read when the
    run starts); each part's own ``data`` node typed by its source. Raises ``ValueError`` naming the key."""
    import math

    h = data.homogeneous_fraction
    _check(data.mix is not None, f"{name}.homogeneous_fraction", "needs data.mix (the parts a batch is drawn from)")
    _check(h is None or 0.0 <= h <= 1.0, f"{name}.homogeneous_fraction", f"must be in [0, 1], got {h}")
    _check(len(data.mix) >= 1, f"{name}.mix", "give at least one part: [{selection: <dir>, weight: w}, ...]")
    _check(data.selection is None, f"{name}.selection", f"set it as a part of {name}.mix, not beside it")
    for k, part in enumerate(data.mix):
        key = f"{name}.mix[{k}]"
        w = part.weight
        _check(math.isfinite(w) and w >= 0, f"{key}.weight", f"must be a finite number >= 0, got {w}")
        if part.data is not None:
            part.data = data_config(part.data, f"{key}.data")
            for inner in ("selection", "mix", "homogeneous_fraction"):
                _check(
                    getattr(part.data, inner) is None, f"{key}.data.{inner}", f"set the part's own as {key}.selection"
                )
    _check(sum(part.weight for part in data.mix) > 0, f"{name}.mix", "the weights sum to 0: no part to draw from")


def to_train_config(cfg: DictConfig | TrainConfig) -> TrainConfig:
    """Resolve a (Hydra) config into a validated :class:`TrainConfig` object.

    Raises:
        ValueError: an unknown key, or a cross-field rule broken (the message names the field).
    """
    cfg = _to_schema(cfg, TrainConfig)
    validate_train(cfg)
    return cfg


def to_eval_config(cfg: DictConfig | EvalConfig) -> EvalConfig:
    """Resolve a (Hydra) config into a validated :class:`EvalConfig` object.

    Raises:
        ValueError: an unknown key, or a cross-field rule broken (the message names the field).
    """
    cfg = _to_schema(cfg, EvalConfig)
    validate_eval(cfg)
    return cfg


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {msg}")


def _check_range(values: list[float], name: str, low: float, high: float) -> None:
    _check(len(values) == 2, name, f"expected [min, max], got {values}")
    _check(low <= values[0] <= values[1] <= high, name, f"expected {low} <= min <= max <= {high}, got {values}")


def validate_train(cfg: TrainConfig) -> None:
    """Check cross-field rules of a training config.

    Raises:
        ValueError: naming the offending field.
    """
    m, c, t, o = cfg.model, cfg.crops, cfg.train, cfg.optim
    if m.arch == "resnet":
        _check(
            len(m.resnet_channels) == len(m.resnet_blocks) >= 1,
            "model.resnet_channels/resnet_blocks",
            "one channel width and one block count per stage",
        )
        _check(
            min(*m.resnet_channels, *m.resnet_blocks, m.resnet_stem_width) >= 1,
            "model.resnet_channels/resnet_blocks",
            "must be positive",
        )
        _check(cfg.ibot.loss_weight == 0, "ibot.loss_weight", "must be 0 with model.arch=resnet (no patch tokens)")
    _check(m.depth >= 1 and m.embed_dim >= 1, "model.depth/embed_dim", "must be positive")
    _check(m.embed_dim % m.num_heads == 0, "model.num_heads", f"must divide embed_dim {m.embed_dim}")
    _check(m.in_chans in (1, 3), "model.in_chans", f"1 or 3, got {m.in_chans}")
    _check(0.0 <= m.drop_path_rate < 1.0, "model.drop_path_rate", "must be in [0, 1)")
    cfg.data = data_config(cfg.data, "data", {"kind": "fashion_mnist"})
    _check(
        len(c.mean) == m.in_chans and len(c.std) == m.in_chans,
        "crops.mean/std",
        f"need {m.in_chans} values (model.in_chans), got {c.mean} / {c.std}",
    )
    _check(all(s > 0 for s in c.std), "crops.std", "must be positive")
    _check(t.num_workers is None or t.num_workers >= 0, "train.num_workers", "must be >= 0")
    for size_name in ("global_size", "local_size"):
        size = getattr(c, size_name)
        _check(
            size > 0 and (m.arch != "vit" or size % m.patch_size == 0),
            f"crops.{size_name}",
            f"{size} is not a positive multiple of model.patch_size {m.patch_size}",
        )
    _check_range(c.global_scale, "crops.global_scale", 1e-3, 1.0)
    _check_range(c.local_scale, "crops.local_scale", 1e-3, 1.0)
    _check(c.local_number >= 0, "crops.local_number", "must be >= 0")
    _check(len(c.blur_p) == 3, "crops.blur_p", "three probabilities: global 1, global 2, local")
    _check_range(c.blur_sigma, "crops.blur_sigma", 1e-6, 1e3)
    _check(c.blur_kernel % 2 == 1, "crops.blur_kernel", "must be odd")
    for head_name, head in (("dino", cfg.dino), ("ibot", cfg.ibot)):
        _check(0.0 <= head.center_momentum <= 1.0, f"{head_name}.center_momentum", "must be in [0, 1]")
        _check(head.sinkhorn_iterations >= 1, f"{head_name}.sinkhorn_iterations", "must be >= 1")
        _check(head.head.nlayers >= 1, f"{head_name}.head.nlayers", "must be >= 1")
        _check(head.head.n_prototypes >= 2, f"{head_name}.head.n_prototypes", "must be >= 2")
        _check(head.loss_weight >= 0, f"{head_name}.loss_weight", "must be >= 0")
    _check(cfg.dino.loss_weight > 0, "dino.loss_weight", "the DINO loss is the stage's core; must be > 0")
    _check_range(cfg.ibot.mask_ratio, "ibot.mask_ratio", 0.0, 1.0)
    _check(0.0 <= cfg.ibot.mask_sample_probability <= 1.0, "ibot.mask_sample_probability", "must be in [0, 1]")
    _check(cfg.koleo.loss_weight >= 0, "koleo.loss_weight", "must be >= 0")
    tc = cfg.teacher
    _check(
        0.0 <= tc.momentum <= tc.momentum_end <= 1.0,
        "teacher.momentum",
        "need 0 <= momentum <= momentum_end <= 1",
    )
    _check(tc.temp > 0 and tc.warmup_temp > 0 and tc.student_temp > 0, "teacher.temp", "temperatures must be > 0")
    _check(0.0 <= tc.warmup_temp_fraction <= 1.0, "teacher.warmup_temp_fraction", "must be in [0, 1]")
    _check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _check(o.min_lr >= 0, "optim.min_lr", f"must be >= 0, got {o.min_lr}")
    _check(o.lr_reference_batch >= 0, "optim.lr_reference_batch", "must be >= 0")
    _check(0.0 <= o.warmup_fraction < 1.0, "optim.warmup_fraction", "must be in [0, 1)")
    _check(o.weight_decay >= 0 and o.weight_decay_end >= 0, "optim.weight_decay", "must be >= 0")
    _check(
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
        "optim.betas",
        f"two values in [0,1), got {o.betas}",
    )
    _check(o.clip_grad >= 0, "optim.clip_grad", "must be >= 0 (0 disables)")
    _check(o.freeze_last_layer_epochs >= 0, "optim.freeze_last_layer_epochs", "must be >= 0")
    _check(0.0 < o.layerwise_decay <= 1.0, "optim.layerwise_decay", f"must be in (0, 1], got {o.layerwise_decay}")
    _check(o.patch_embed_lr_mult >= 0, "optim.patch_embed_lr_mult", "must be >= 0")
    _check(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    _check(t.iterations >= 1, "train.iterations", "must be >= 1")
    _check(t.epochs is None or t.epochs > 0, "train.epochs", "must be > 0 when set")
    _check(t.log_every >= 1, "train.log_every", "must be >= 1")
    _check(t.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    _check(t.snapshot_every >= 0, "train.snapshot_every", "must be >= 0 (0: no snapshots)")
    _check(bool(cfg.out), "out", "must be set")


def validate_eval(cfg: EvalConfig) -> None:
    """Check cross-field rules of an evaluation config.

    Raises:
        ValueError: naming the offending field.
    """
    defaults = {"train": {"kind": "fashion_mnist"}, "test": {"kind": "fashion_mnist", "split": "test"}}
    for split in ("train", "test"):
        setattr(cfg.data, split, data_config(getattr(cfg.data, split), f"data.{split}", defaults[split]))
        _check(getattr(cfg.data, split).mix is None, f"data.{split}.mix", "only the trainer mixes selections")
    e = cfg.eval
    _check(e.num_workers is None or e.num_workers >= 0, "eval.num_workers", "must be >= 0")
    _check(e.knn_k >= 1, "eval.knn_k", "must be >= 1")
    _check(e.knn_temperature > 0, "eval.knn_temperature", "must be > 0")
    _check(len(e.linear_lrs) >= 1 and all(lr > 0 for lr in e.linear_lrs), "eval.linear_lrs", "positive values")
    _check(e.linear_epochs >= 1, "eval.linear_epochs", "must be >= 1")
    _check(e.linear_batch_size >= 1, "eval.linear_batch_size", "must be >= 1")
    _check(0.0 < e.val_fraction < 1.0, "eval.val_fraction", "must be in (0, 1)")
    _check(e.num_tail_classes >= 1, "eval.num_tail_classes", "must be >= 1")
    _check(e.batch_size >= 1, "eval.batch_size", "must be >= 1")
    _check(bool(cfg.backbone), "backbone", "path to a backbone.pt is required")


def config_to_dict(cfg: Any) -> dict:
    """A plain, JSON-able dict of a dataclass or DictConfig config."""
    node = OmegaConf.structured(cfg) if not isinstance(cfg, DictConfig) else cfg
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
