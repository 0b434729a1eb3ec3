"""Inputs of the embed stage: a fixed, ordered list of items (images or texts) with ids.

A :class:`Source` is deterministic (sorted listings, seeded subsets), so every rank and every
resumed run sees the same items in the same order. ``load(i)`` returns a PIL image or a string;
it may raise for an unreadable image, which the embed loop records in ``skipped.txt``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curate.embed.config import IMAGE_EXTENSIONS


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
        lines = [line.strip() for line in self.path.read_text().splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        self.entries = entries[: _limit(len(entries), limit)]
        if not self.entries:
            raise ValueError(f"image list {self.path} lists no image")

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> Image.Image:
        return _open_image(self.root / self.entries[index])

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
        from curate.datasets.fashion_mnist import CLASSES, load_fashion_mnist, long_tailed_indices

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
    from curate.datasets.wordnet import load_wordnet

    wn = load_wordnet(list(pos) or None, with_lemmas=with_lemmas)
    n = _limit(len(wn), limit)
    config = {"kind": "wordnet", "pos": list(pos), "with_lemmas": with_lemmas}
    return TextListSource(wn.texts[:n], wn.ids[:n], wn.labels[:n], wn.label_names, config)


def build_source(cfg: Any) -> Source:
    """The :class:`Source` described by a ``data`` config node (see ``curate.embed.config``)."""
    kind = cfg.kind
    if kind == "image_folder":
        return ImageFolderSource(cfg.root, list(cfg.extensions), cfg.labels_from_dirs, cfg.limit)
    if kind == "image_list":
        return ImageListSource(cfg.path, cfg.root, cfg.limit)
    if kind == "fashion_mnist":
        return FashionMnistSource(
            cfg.split, cfg.long_tailed, cfg.lt_max_per_class, cfg.lt_min_per_class, cfg.lt_seed, cfg.limit
        )
    if kind == "text_lines":
        return text_lines_source(cfg.path, cfg.skip_empty, cfg.limit)
    if kind == "jsonl":
        return jsonl_source(cfg.path, cfg.field, cfg.id_field, cfg.label_field, cfg.limit)
    if kind == "wordnet":
        return wordnet_source(list(cfg.pos), cfg.with_lemmas, cfg.limit)
    raise ValueError(f"data.kind: unknown source {kind!r}")
