"""Inputs of the embed stage: a fixed, ordered list of items (images or texts) with ids.

A :class:`Source` is deterministic (sorted listings, seeded subsets), so every rank and every
resumed run sees the same items in the same order. ``load(i)`` returns a PIL image or a string;
it may raise for an unreadable image, which the embed loop records in ``skipped.txt``.

The same sources feed every stage that reads items (``curate.embed``, ``selfsup.train``,
``selfsup.eval``), built from the same ``data`` config node by :func:`build_source`, so an item id
names the same image everywhere. ``data.selection`` (a sample or dedup folder, an ``ids.txt`` or an
``indices.npy``) restricts a source to the selected items, matched by id (:func:`read_selection`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curate.core.errors import InputError
from curate.data.selection import read_rows
from curate.io.wds import escape_key, file_key, file_member_ext

IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"]


class Source:
    """An ordered collection of ``len(self)`` items.

    Attributes:
        modality: ``"image"`` (``load`` returns a ``PIL.Image``) or ``"text"`` (a ``str``).
        ids_format: ``"txt"`` (str ids) or ``"npy"`` (int ids).
        label_names: names of the labels, when the source has named labels.
    """

    modality: str = "image"
    ids_format: str = "npy"
    label_names: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Any:
        """Item ``index``: a ``PIL.Image.Image`` or a ``str``."""
        raise NotImplementedError

    def ids(self, indices: np.ndarray) -> list:
        """Ids of the items at ``indices: (m,) int64``."""
        raise NotImplementedError

    def labels(self) -> np.ndarray | None:
        """``(len(self),) int64`` labels, or None when the source has none."""
        return None

    def describe(self) -> dict:
        """What the source is, for the manifest."""
        raise NotImplementedError

    # -- export (``curate.sample export=webdataset``, :mod:`curate.export`) --------------------
    def item_path(self, index: int) -> Path | None:
        """The file item ``index`` was read from, or None when it is no file of its own."""
        return None

    def raw_key(self, index: int) -> str:
        """The webdataset key item ``index`` is exported under (rules: :mod:`curate.io.wds`): a
        file item's id without its suffix, escaped; another item's id, escaped."""
        item_id = str(self.ids(np.asarray([index], dtype=np.int64))[0])
        return file_key(item_id) if self.item_path(index) is not None else escape_key(item_id)

    def raw_members(self, index: int) -> dict[str, bytes]:
        """Item ``index``'s original members, ``{extension: bytes}`` in member order; by default
        the bytes of its file under the file's extension."""
        path = self.item_path(index)
        if path is None:
            kind = self.describe().get("kind")
            raise InputError(f"items of a {kind!r} source are no files: export needs files or webdataset shards")
        return {file_member_ext(path.name): path.read_bytes()}


def _limit(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, int(limit))


def _open_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()  # decode now: a truncated or corrupt file fails here, inside the try
        return image.copy()


class ImageFolderSource(Source):
    """Every image file under ``root`` (recursive, sorted by relative path)."""

    modality = "image"
    ids_format = "txt"

    def __init__(
        self,
        root: str | os.PathLike,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        labels_from_dirs: bool = False,
        limit: int | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
        found = []
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            rel = Path(folder).relative_to(self.root)
            found.extend((rel / f).as_posix() for f in files if Path(f).suffix.lower() in exts)
        found.sort()
        self.paths = found[: _limit(len(found), limit)]
        if not self.paths:
            raise ValueError(f"no image with extension {sorted(exts)} under {self.root}")
        self._labels = None
        if labels_from_dirs:
            top = [p.split("/", 1) for p in self.paths]
            loose = [p for p, parts in zip(self.paths, top) if len(parts) == 1]
            if loose:
                raise ValueError(f"labels_from_dirs: {self.root / loose[0]} is not inside a class sub-folder")
            self.label_names = sorted({parts[0] for parts in top})
            lookup = {name: i for i, name in enumerate(self.label_names)}
            self._labels = np.asarray([lookup[parts[0]] for parts in top], dtype=np.int64)
        self.config = {"kind": "image_folder", "root": str(self.root.resolve()), "count": len(self.paths)}

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return _open_image(self.root / self.paths[index])

    def item_path(self, index: int) -> Path:
        return self.root / self.paths[index]

    def ids(self, indices: np.ndarray) -> list:
        return [self.paths[i] for i in indices]

    def labels(self) -> np.ndarray | None:
        return self._labels

    def describe(self) -> dict:
        return dict(self.config)


class ImageListSource(Source):
    """Images listed in a text file, one path per line; relative paths are resolved against
    ``root`` (default: the list file's folder)."""

    modality = "image"
    ids_format = "txt"

    def __init__(self, path: str | os.PathLike, root: str | None = None, limit: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"image list not found: {self.path}")
        self.root = Path(root) if root is not None else self.path.parent
        lines = [line.strip() for line in self.path.read_text().split("\n")]
        entries = [line for line in lines if line and not line.startswith("#")]
        self.entries = entries[: _limit(len(entries), limit)]
        if not self.entries:
            raise ValueError(f"image list {self.path} lists no image")

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> Image.Image:
        return _open_image(self.root / self.entries[index])

    def item_path(self, index: int) -> Path:
        return self.root / self.entries[index]

    def ids(self, indices: np.ndarray) -> list:
        return [self.entries[i] for i in indices]

    def describe(self) -> dict:
        return {
            "kind": "image_list",
            "path": str(self.path.resolve()),
            "root": str(self.root.resolve()),
            "count": len(self.entries),
        }


class FashionMnistSource(Source):
    """Fashion-MNIST images (28x28 grey) with their class labels; ids are indices in the split."""

    modality = "image"
    ids_format = "npy"

    def __init__(
        self,
        split: str = "train",
        long_tailed: bool = False,
        lt_max_per_class: int = 6000,
        lt_min_per_class: int = 60,
        lt_seed: int = 0,
        limit: int | None = None,
    ) -> None:
        from curate.data.datasets.fashion_mnist import CLASSES, load_fashion_mnist, long_tailed_indices

        images, labels = load_fashion_mnist(split)
        index = np.arange(len(labels), dtype=np.int64)
        if long_tailed:
            index = long_tailed_indices(labels, lt_max_per_class, lt_min_per_class, lt_seed)
        self.index = index[: _limit(len(index), limit)]
        self.images = images
        self._labels = labels[self.index]
        self.label_names = list(CLASSES)
        self.config = {
            "kind": "fashion_mnist",
            "split": split,
            "long_tailed": long_tailed,
            "count": len(self.index),
        }
        if long_tailed:
            self.config.update(lt_max_per_class=lt_max_per_class, lt_min_per_class=lt_min_per_class, lt_seed=lt_seed)

    def __len__(self) -> int:
        return len(self.index)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[self.index[index]], mode="L")

    def ids(self, indices: np.ndarray) -> list:
        return self.index[indices].tolist()

    def labels(self) -> np.ndarray | None:
        return self._labels

    def describe(self) -> dict:
        return dict(self.config)


def _check_images(images: np.ndarray, where: str) -> None:
    """uint8 ``(n, H, W)`` or ``(n, H, W, C)`` with ``C`` in {1, 3}, else a ``ValueError`` naming ``where``."""
    shape_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[3] in (1, 3))
    if images.dtype != np.uint8 or not shape_ok:
        raise ValueError(f"{where}: expected uint8 (n, H, W[, C]), got {images.dtype} {images.shape}")


class ArrayImagesSource(Source):
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` (``C`` in {1, 3}) held in an array (a memmap
    is read item by item); ids are row numbers; optional ``(N,)`` integer labels. Not a ``data``
    kind: images already in memory (``selfsup.export.embed_images``) go through it."""

    modality = "image"
    ids_format = "npy"

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, where: str = "images") -> None:
        images = images if isinstance(images, np.ndarray) else np.asarray(images)
        _check_images(images, where)
        self.images = images
        self._labels = labels
        self.config: dict[str, Any] = {"kind": "array", "count": len(images)}

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Image.Image:
        image = np.asarray(self.images[index])
        return Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)

    def ids(self, indices: np.ndarray) -> list:
        return np.asarray(indices, dtype=np.int64).tolist()

    def labels(self) -> np.ndarray | None:
        return self._labels

    def describe(self) -> dict:
        return dict(self.config)


class NpyImagesSource(ArrayImagesSource):
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` in one ``.npy`` (memory-mapped); ids are row
    numbers; optional ``(N,)`` integer labels from ``labels_path``."""

    def __init__(self, path: str | os.PathLike, labels_path: str | None = None, limit: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"image array not found: {self.path}")
        try:
            images = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"cannot read {self.path} as a .npy array: {err}") from None
        _check_images(images, str(self.path))
        labels = None
        if labels_path is not None:
            labels = np.load(labels_path, allow_pickle=False)
            if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
                got = f"{labels.dtype} {labels.shape}"
                raise ValueError(f"labels {labels_path}: expected ({len(images)},) integers, got {got}")
        n = _limit(len(images), limit)
        super().__init__(images[:n], None if labels is None else labels[:n].astype(np.int64), str(self.path))
        self.config = {"kind": "npy", "path": str(self.path.resolve()), "count": len(self.images)}


class SelectedSource(Source):
    """The items ``positions`` of ``base``, in that order, keeping their ids and labels.

    Args:
        base: the full source.
        positions: ``(m,) int64`` positions in ``base`` (repeats allowed).
        selection: what selected them (recorded in :meth:`describe`).
    """

    def __init__(self, base: Source, positions: np.ndarray, selection: dict) -> None:
        self.base = base
        self.positions = np.asarray(positions, dtype=np.int64)
        self.selection = selection
        self.modality, self.ids_format, self.label_names = base.modality, base.ids_format, base.label_names

    def __len__(self) -> int:
        return len(self.positions)

    def load(self, index: int) -> Any:
        return self.base.load(int(self.positions[index]))

    def ids(self, indices: np.ndarray) -> list:
        return self.base.ids(self.positions[np.asarray(indices, dtype=np.int64)])

    def item_path(self, index: int) -> Path | None:
        return self.base.item_path(int(self.positions[index]))

    def raw_key(self, index: int) -> str:
        return self.base.raw_key(int(self.positions[index]))

    def raw_members(self, index: int) -> dict[str, bytes]:
        return self.base.raw_members(int(self.positions[index]))

    def labels(self) -> np.ndarray | None:
        labels = self.base.labels()
        return None if labels is None else labels[self.positions]

    def describe(self) -> dict:
        return {**self.base.describe(), "count": len(self.positions), "selection": dict(self.selection)}


class ConcatSource(Source):
    """The items of several sources of one modality, one source after the other (item ``i`` of
    ``parts[1]`` is item ``len(parts[0]) + i``); ids as each part has them, labels when every part
    has them.

    Args:
        parts: the sources, in order.
        record: what made them (recorded in :meth:`describe`).
    """

    def __init__(self, parts: Sequence[Source], record: dict) -> None:
        self.parts, self.record = list(parts), record
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])  # (P + 1,) first item of each part, then n
        self.modality = self.parts[0].modality
        self.ids_format = "txt" if len({p.ids_format for p in self.parts}) > 1 else self.parts[0].ids_format
        names = {tuple(p.label_names) if p.label_names is not None else None for p in self.parts}
        self.label_names = self.parts[0].label_names if len(names) == 1 else None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: int) -> tuple[Source, int]:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part], int(index - self.offsets[part])

    def load(self, index: int) -> Any:
        source, i = self._locate(index)
        return source.load(i)

    def ids(self, indices: np.ndarray) -> list:
        indices = np.asarray(indices, dtype=np.int64)
        part = np.searchsorted(self.offsets, indices, side="right") - 1
        out: list = [None] * len(indices)
        for p in np.unique(part).tolist():
            at = np.flatnonzero(part == p)
            for j, value in zip(at.tolist(), self.parts[p].ids(indices[at] - self.offsets[p])):
                out[j] = value
        return out

    def labels(self) -> np.ndarray | None:
        labels = [p.labels() for p in self.parts]
        return None if any(x is None for x in labels) else np.concatenate(labels).astype(np.int64)

    def item_path(self, index: int) -> Path | None:
        source, i = self._locate(index)
        return source.item_path(i)

    def raw_key(self, index: int) -> str:
        source, i = self._locate(index)
        return source.raw_key(i)

    def raw_members(self, index: int) -> dict[str, bytes]:
        source, i = self._locate(index)
        return source.raw_members(i)

    def describe(self) -> dict:
        return {**self.record, "count": len(self), "parts": [p.describe() for p in self.parts]}


#: files of a selection folder, by preference: ids first (they survive skipped items), rows second
SELECTION_FILES = ("ids.txt", "kept_ids.txt", "selected.parquet", "indices.npy", "kept_indices.npy")


def read_selection(path: str | os.PathLike, source: Source, key: str = "data.selection") -> tuple[np.ndarray, dict]:
    """Positions in ``source`` of the items a selection names (:func:`curate.data.selection.read_rows`).

    Args:
        path: a folder holding one of :data:`SELECTION_FILES` (a ``curate.sample``, ``curate.retrieve``
            or ``curate.dedup`` output), a text file with one id per line, a ``selected.parquet``
            (its ``id`` column) or an ``.npy`` of int positions in the source.
        source: the full source.
        key: the setting that named ``path``, in messages (``data.mix[1].selection``).

    Returns:
        ``(positions (m,) int64 in file order, identity)``; ``identity`` holds ``path``, ``file``,
        ``count`` and ``sha1`` (of the selected ids, one per line, in order).

    Raises:
        FileNotFoundError: nothing to read at ``path``.
        ValueError: an id that is not in the source (the message names the file), positions out of range.
    """
    import hashlib

    n = len(source)
    positions, path, wanted = read_rows(path, n, lambda: source.ids(np.arange(n)), key, "source", SELECTION_FILES)
    if wanted is None:
        wanted = [str(i) for i in source.ids(positions)]
    digest = hashlib.sha1("".join(f"{key}\n" for key in wanted).encode()).hexdigest()
    identity = {"path": str(path.resolve()), "file": path.name, "count": int(len(positions)), "sha1": digest}
    return positions, identity


def default_num_workers(limit: int = 8) -> int:
    """DataLoader workers for this job: the CPUs it may run on (``sched_getaffinity``, i.e. the
    SLURM / cgroup allocation) minus one for the main process, at most ``limit``; 0 on one CPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(limit, cpus - 1))


class TextListSource(Source):
    """Texts held in memory with ids (the base of the text sources)."""

    modality = "text"

    def __init__(
        self,
        texts: list[str],
        ids: Sequence,
        labels: np.ndarray | None = None,
        label_names: list[str] | None = None,
        config: dict | None = None,
    ) -> None:
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if not texts:
            raise ValueError(f"text source {config} holds no item")
        self.texts = texts
        self._ids = list(ids)
        self.ids_format = "npy" if all(isinstance(i, int) for i in self._ids) else "txt"
        self._labels = labels
        self.label_names = label_names
        self.config = dict(config or {}, count=len(texts))

    def __len__(self) -> int:
        return len(self.texts)

    def load(self, index: int) -> str:
        return self.texts[index]

    def ids(self, indices: np.ndarray) -> list:
        return [self._ids[i] for i in indices]

    def labels(self) -> np.ndarray | None:
        return self._labels

    def describe(self) -> dict:
        return dict(self.config)


def read_lines(path: Path) -> list[str]:
    """The ``\\n``-separated lines of a UTF-8 text file (without the separators; a trailing
    ``\\r`` is dropped, a last line without ``\\n`` counts)."""
    try:
        text = path.read_bytes().decode("utf-8")  # no universal newlines: a lone \r stays in its line
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def text_lines_source(path: str | os.PathLike, skip_empty: bool = True, limit: int | None = None) -> TextListSource:
    """One item per line of a UTF-8 text file; ids are the 0-based line numbers.

    Lines are ``\\n``-separated records (a ``\\r`` before it is dropped): a form feed or U+2028
    inside a line stays in it (``str.splitlines`` would split there and shift every later id).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    lines = read_lines(path)
    keep = [i for i, line in enumerate(lines) if line.strip() or not skip_empty]
    keep = keep[: _limit(len(keep), limit)]
    if not keep:
        raise ValueError(f"text file {path} holds no non-empty line")
    config = {"kind": "text_lines", "path": str(path.resolve()), "skip_empty": skip_empty}
    return TextListSource([lines[i] for i in keep], keep, config=config)


def jsonl_source(
    path: str | os.PathLike,
    field: str = "text",
    id_field: str | None = None,
    label_field: str | None = None,
    limit: int | None = None,
) -> TextListSource:
    """One JSON object per line, text from ``record[field]``; ids are line numbers (0-based) or
    ``str(record[id_field])``; optional labels from ``record[label_field]``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file not found: {path}")
    texts, ids, raw_labels = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f):  # parsing the input file
            if limit is not None and len(texts) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number + 1}: not valid JSON: {err}") from err
            for key in (field, id_field, label_field):
                if key is not None and (not isinstance(record, dict) or key not in record):
                    raise ValueError(f"{path}:{number + 1}: no field {key!r}")
            if not isinstance(record[field], str):
                raise ValueError(f"{path}:{number + 1}: field {field!r} is not a string")
            texts.append(record[field])
            ids.append(str(record[id_field]) if id_field is not None else number)
            if label_field is not None:
                raw_labels.append(record[label_field])
    labels, names = None, None
    if label_field is not None:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in raw_labels):
            labels = np.asarray(raw_labels, dtype=np.int64)
        else:
            names = sorted({str(v) for v in raw_labels})
            lookup = {name: i for i, name in enumerate(names)}
            labels = np.asarray([lookup[str(v)] for v in raw_labels], dtype=np.int64)
    if id_field is not None and len(set(ids)) != len(ids):
        raise ValueError(f"{path}: field {id_field!r} holds duplicate ids")
    config = {
        "kind": "jsonl",
        "path": str(path.resolve()),
        "field": field,
        "id_field": id_field,
        "label_field": label_field,
    }
    return TextListSource(texts, ids, labels, names, config)


def wordnet_source(pos: Sequence[str] = (), with_lemmas: bool = False, limit: int | None = None) -> TextListSource:
    """WordNet glosses with ids ``n00001740`` and lexicographer-file labels (0..44)."""
    from curate.data.datasets.wordnet import load_wordnet

    wn = load_wordnet(list(pos) or None, with_lemmas=with_lemmas)
    n = _limit(len(wn), limit)
    config = {"kind": "wordnet", "pos": list(pos), "with_lemmas": with_lemmas}
    return TextListSource(wn.texts[:n], wn.ids[:n], wn.labels[:n], wn.label_names, config)


def build_source(cfg: Any, cache_dir: str | os.PathLike | None = None) -> Source:
    """The :class:`Source` described by a ``data`` config node (see ``curate.embed.config``),
    restricted to ``cfg.selection`` when it is set. ``cache_dir``: the stage's output folder, where
    a source keeps what it builds once (the webdataset index; ``data.index_dir`` overrides it).

    Raises:
        ValueError: ``data.mix`` / ``data.homogeneous_fraction`` set (only the trainer mixes
            selections: ``selfsup.data.open_image_set``), an unknown kind, a bad selection.
    """
    for key in ("mix", "homogeneous_fraction"):
        if getattr(cfg, key, None) is not None:
            raise ValueError(f"data.{key}: only selfsup.train mixes selections; this stage reads one source")
    source = _build_full_source(cfg, cache_dir)
    selection = getattr(cfg, "selection", None)
    if selection is None:
        return source
    positions, identity = read_selection(selection, source)
    return SelectedSource(source, positions, identity)


def _build_full_source(cfg: Any, cache_dir: str | os.PathLike | None = None) -> Source:
    kind = SOURCE_KINDS.get(cfg.kind)
    if kind is None:
        raise ValueError(f"data.kind: unknown source {cfg.kind!r}")
    return kind.build(cfg, cache_dir)


@dataclass(frozen=True)
class SourceKind:
    """One kind of the ``data`` node: what its items are and how its config builds the source."""

    modality: str  # "image" or "text"
    build: Callable[[Any, str | os.PathLike | None], Source]  # (the data node, the stage's cache folder)


# The source kinds, the one list of them: the schemas (curate.embed.config.SOURCES, one per kind),
# build_source and the image-only stages (selfsup.config) read it.
SOURCE_KINDS: dict[str, SourceKind] = {
    "image_folder": SourceKind(
        "image", lambda c, _: ImageFolderSource(c.root, list(c.extensions), c.labels_from_dirs, c.limit)
    ),
    "image_list": SourceKind("image", lambda c, _: ImageListSource(c.path, c.root, c.limit)),
    "fashion_mnist": SourceKind(
        "image",
        lambda c, _: FashionMnistSource(
            c.split, c.long_tailed, c.lt_max_per_class, c.lt_min_per_class, c.lt_seed, c.limit
        ),
    ),
    "npy": SourceKind("image", lambda c, _: NpyImagesSource(c.path, c.labels_path, c.limit)),
    "text_lines": SourceKind("text", lambda c, _: text_lines_source(c.path, c.skip_empty, c.limit)),
    "jsonl": SourceKind("text", lambda c, _: jsonl_source(c.path, c.field, c.id_field, c.label_field, c.limit)),
    "wordnet": SourceKind("text", lambda c, _: wordnet_source(list(c.pos), c.with_lemmas, c.limit)),
    "webdataset": SourceKind("image", lambda c, cache: _webdataset(c, cache)),
    "parquet": SourceKind("image", lambda c, _: _parquet(c)),
}


def _webdataset(cfg: Any, cache_dir: str | os.PathLike | None) -> Source:
    from curate.data.webdataset_source import WebdatasetSource  # only for its kind: it imports webdataset

    return WebdatasetSource(cfg.path, cfg.index_dir or cache_dir, cfg.limit)


def _parquet(cfg: Any) -> Source:
    from curate.data.parquet_source import ParquetSource  # only for its kind: it imports pyarrow

    return ParquetSource(cfg.path, cfg.path_column, cfg.image_column, cfg.id_column, cfg.label_column, cfg.limit)


def source_kinds(modality: str | None = None) -> tuple[str, ...]:
    """The source kinds (of one ``modality``, ``"image"`` or ``"text"``), in registry order."""
    return tuple(k for k, v in SOURCE_KINDS.items() if modality is None or v.modality == modality)
