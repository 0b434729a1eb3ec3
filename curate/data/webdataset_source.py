"""Webdataset tar shards as a source: one item per sample, read by offset through a cached index.

A webdataset shard is a plain tar whose members are grouped into samples by their key: the name up
to the first dot of its last path component (``a/000123.jpg`` and ``a/000123.cls`` are one sample
``a/000123``). An item here is one sample, its id the key; its image is the first member whose
extension (the last dot-part of the member's suffix) is jpg, jpeg, png or webp; a ``cls`` member
(an integer as text) is its label.

Random access follows the ``wids`` approach: every shard is scanned once with :mod:`tarfile`
(headers only) into an index of member offsets, so item ``i`` is then read with one seek. The
index of each shard is cached as JSON, keyed by the shard's identity (resolved path, size,
modification time), in ``<cache_dir>/webdataset-index/``: a stage passes its output folder
(``data.index_dir`` overrides it), a re-run reuses it, and a changed shard is indexed again.

Keys are split and patterns expanded by the ``webdataset`` package itself
(``tariterators.base_plus_ext``, ``shardlists.expand_urls``), so a key or a brace pattern means
what it means to webdataset's own loaders; ``wids`` is not part of webdataset 1.0.2, and the index
is small enough to write here on :mod:`tarfile`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext

from curate.core import dist
from curate.core.atomic import atomic_write_json
from curate.core.errors import InputError
from curate.data.decode import decode_image

log = logging.getLogger(__name__)

#: member extensions that hold a sample's image, as the issue names them
WDS_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
INDEX_FOLDER = "webdataset-index"
INDEX_VERSION = 1
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's own metadata members (skipped, as its loaders do)
_BLOCK = tarfile.BLOCKSIZE


def list_shards(path: str | os.PathLike) -> list[Path]:
    """The tar shards ``data.path`` names: every ``*.tar`` of a folder (sorted), or the files of a
    brace pattern (``shards/{000000..000099}.tar``; ``::`` separates several), in pattern order.

    Raises:
        FileNotFoundError: no shard, or a shard of the pattern is missing (named).
    """
    folder = Path(path).expanduser()
    if folder.is_dir():
        shards = sorted(p for p in folder.glob("*.tar") if p.is_file())
        if not shards:
            raise FileNotFoundError(f"data.path: no .tar shard in {folder}")
        return shards
    shards = [Path(name).expanduser() for name in expand_urls(str(path))]
    missing = [p for p in shards if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"data.path: shard {missing[0]} not found ({len(missing)} of {len(shards)} missing)")
    return shards


def shard_identity(path: Path) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns"}`` of a shard: what its cached index is keyed by."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def index_shard(path: Path) -> dict[str, Any]:
    """Scan one tar shard (headers, and the small ``cls`` members) into its index.

    Returns:
        ``{"version", "shard" (identity), "keys", "start", "stop", "image", "image_size",
        "image_member", "cls"}``: per sample its key, the byte range ``[start, stop)`` of its members
        (headers included, so the range is itself a valid run of tar members), the data offset,
        size and suffix of its image member (-1, -1, null without one) and its label (null
        without ``cls``). Lists, in member order.

    Raises:
        InputError: not a readable (uncompressed) tar, a repeated member within a sample, a
            ``cls`` that is not an integer (the message names the shard and the key).
    """
    identity = shard_identity(path)
    file_size = identity["size"]
    out: dict[str, Any] = {"version": INDEX_VERSION, "shard": identity}
    for column in ("keys", "start", "stop", "image", "image_size", "image_member", "cls"):
        out[column] = []
    suffixes: set[str] = set()
    try:
        with tarfile.open(path, mode="r:") as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()  # the index keeps what it needs; tarfile would keep every header
                if not info.isreg() or _META.match(info.name):
                    continue
                key, suffix = base_plus_ext(info.name)
                if key is None:
                    continue
                suffix = suffix.lower()
                if not out["keys"] or out["keys"][-1] != key:
                    out["keys"].append(key)
                    out["start"].append(info.offset)
                    out["stop"].append(info.offset)
                    out["image"].append(-1)
                    out["image_size"].append(-1)
                    out["image_member"].append(None)
                    out["cls"].append(None)
                    suffixes = set()
                if suffix in suffixes:
                    raise InputError(f"data.path: {path}: sample {key!r} holds two {suffix!r} members")
                suffixes.add(suffix)
                out["stop"][-1] = info.offset_data + _padded(info.size)
                if out["image"][-1] < 0 and suffix.rsplit(".", 1)[-1] in WDS_IMAGE_EXTENSIONS:
                    out["image"][-1], out["image_size"][-1], out["image_member"][-1] = (
                        info.offset_data,
                        info.size,
                        suffix,
                    )
                if suffix == "cls" and info.offset_data + info.size <= file_size:
                    out["cls"][-1] = _parse_cls(tar.extractfile(info).read(), path, key)
    except tarfile.TarError as err:
        raise InputError(f"data.path: {path} is not a readable uncompressed tar shard ({err})") from None
    return out


def _parse_cls(raw: bytes, path: Path, key: str) -> int:
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"data.path: {path}: sample {key!r}: cls {text[:40]!r} is not an integer") from None
    if value < 0:
        raise InputError(f"data.path: {path}: sample {key!r}: cls {value} is negative (labels are >= 0)")
    return value


def _cache_file(cache_dir: Path, identity: dict[str, Any]) -> Path:
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / INDEX_FOLDER / f"{Path(identity['path']).stem}-{digest}.json"


def _cached(file: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The cached index in ``file`` when it is one of this shard as it is now, else None."""
    if not file.is_file():
        return None
    try:
        index = json.loads(file.read_text())
    except (OSError, ValueError):
        log.warning("webdataset index %s is unreadable: indexing its shard again", file)
        return None
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION or index.get("shard") != identity:
        return None
    return index


def load_indexes(shards: list[Path], cache_dir: Path | None) -> tuple[list[dict[str, Any]], int]:
    """The index of every shard, from the cache where it holds one of the shard as it is now.

    With a cache and several ranks, the ranks index the missing shards between them (shard ``j``
    by rank ``j % world``), write them to the cache and wait for each other; every rank must call
    this. Without a cache the indexes are built in memory.

    Returns:
        ``(indexes in shard order, how many came from the cache)``.
    """
    identities = [shard_identity(p) for p in shards]
    if cache_dir is None:
        return [index_shard(p) for p in shards], 0
    files = [_cache_file(cache_dir, identity) for identity in identities]
    rank, world = dist.get_rank(), dist.get_world_size()
    dist.barrier()  # every rank sees the cache as it was before any of them writes to it
    found = [_cached(f, identity) for f, identity in zip(files, identities)]
    reused = sum(index is not None for index in found)
    todo = [j for j, index in enumerate(found) if index is None]
    for j in todo[rank::world]:
        found[j] = index_shard(shards[j])
        atomic_write_json(files[j], found[j])
    if world > 1:
        dist.barrier()
        for j in todo:
            found[j] = found[j] or _cached(files[j], identities[j])
            if found[j] is None:
                raise InputError(f"data.index_dir: the index of {shards[j]} was not written to {files[j]}")
    return found, reused


class WebdatasetSource:
    """The samples of webdataset tar shards, in shard order then member order.

    Implements the ``Source`` interface of :mod:`curate.data.sources`; ``groups()`` tells the embed
    loop where each shard begins, so a rank reads whole shards.

    Args:
        path: a folder of ``.tar`` shards or a brace pattern (see :func:`list_shards`).
        cache_dir: where the index is cached (``<cache_dir>/webdataset-index/``); None: in memory.
        limit: keep the first ``limit`` samples.
    """

    modality = "image"
    ids_format = "txt"
    label_names: list[str] | None = None

    def __init__(self, path: str, cache_dir: str | os.PathLike | None = None, limit: int | None = None) -> None:
        self.path = str(path)
        self.shards = list_shards(path)
        indexes, reused = load_indexes(self.shards, None if cache_dir is None else Path(cache_dir))
        counts = np.asarray([len(index["keys"]) for index in indexes], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n = int(offsets[-1]) if limit is None else min(int(offsets[-1]), int(limit))
        if n == 0:
            raise ValueError(f"data.path: the {len(self.shards)} shard(s) of {path} hold no sample")
        self._offsets = np.minimum(offsets, n)
        self.keys: list[str] = [key for index in indexes for key in index["keys"]][:n]

        def column(name: str) -> np.ndarray:
            return np.asarray([v for index in indexes for v in index[name]][:n], dtype=np.int64)

        self._shard_of = np.repeat(np.arange(len(self.shards)), np.diff(self._offsets))
        self._start, self._stop = column("start"), column("stop")
        self._image, self._image_size = column("image"), column("image_size")
        self._image_member = [v for index in indexes for v in index["image_member"]][:n]
        labels = [v for index in indexes for v in index["cls"]][:n]
        self._check_unique()
        with_cls = sum(v is not None for v in labels)
        self._labels = np.asarray(labels, dtype=np.int64) if with_cls == n else None
        if 0 < with_cls < n:
            log.warning("%d of %d samples have no cls member: the source has no labels", n - with_cls, n)
        if cache_dir is not None:
            where = Path(cache_dir) / INDEX_FOLDER
            log.info("webdataset index: %d shards (%d reused from %s), %d samples", len(self.shards), reused, where, n)
        identities = json.dumps([index["shard"] for index in indexes], sort_keys=True)
        self.config = {
            "kind": "webdataset",
            "path": self.path,
            "shards": len(self.shards),
            "shards_sha1": hashlib.sha1(identities.encode()).hexdigest(),
            "count": n,
        }

    def _check_unique(self) -> None:
        if len(set(self.keys)) == len(self.keys):
            return
        seen: dict[str, int] = {}
        for i, key in enumerate(self.keys):
            if key in seen:
                first, second = self.shards[self._shard_of[seen[key]]], self.shards[self._shard_of[i]]
                raise InputError(f"data.path: sample key {key!r} appears twice ({first} and {second})")
            seen[key] = i

    def __len__(self) -> int:
        return len(self.keys)

    def groups(self) -> np.ndarray:
        """``(shards + 1,) int64`` item offsets where each shard begins (the last is ``len(self)``)."""
        return self._offsets.copy()

    def shard_of(self, index: int) -> Path:
        """The tar shard that holds item ``index``."""
        return self.shards[int(self._shard_of[index])]

    def _read(self, index: int, offset: int, size: int) -> bytes:
        path = self.shard_of(index)
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError(f"{path}: member of sample {self.keys[index]!r} is truncated ({len(data)} of {size} bytes)")
        return data

    def image_bytes(self, index: int) -> bytes:
        """The encoded bytes of item ``index``'s image member, read with one seek.

        Raises:
            ValueError: the sample has no image member; OSError: the member is truncated.
        """
        if self._image[index] < 0:
            exts = "/".join(WDS_IMAGE_EXTENSIONS)
            raise ValueError(f"sample {self.keys[index]!r} of {self.shard_of(index)} has no {exts} member")
        return self._read(index, int(self._image[index]), int(self._image_size[index]))

    def sample_bytes(self, index: int) -> bytes:
        """Item ``index``'s members as they lie in its shard (headers included), one read: a
        valid run of tar members, to copy into another shard or open with :mod:`tarfile`."""
        start = int(self._start[index])
        return self._read(index, start, int(self._stop[index]) - start)

    def members(self, index: int) -> dict[str, bytes]:
        """Item ``index``'s members, ``{suffix: bytes}`` (suffixes lower-cased, as webdataset's)."""
        import io

        out = {}
        with tarfile.open(fileobj=io.BytesIO(self.sample_bytes(index)), mode="r:") as tar:
            for info in tar:
                if info.isreg():
                    out[base_plus_ext(info.name)[1].lower()] = tar.extractfile(info).read()
        return out

    def load(self, index: int) -> Image.Image:
        member = f"member {self.keys[index]}.{self._image_member[index]} of {self.shard_of(index).name}"
        return decode_image(self.image_bytes(index), member)

    def ids(self, indices: np.ndarray) -> list:
        return [self.keys[i] for i in indices]

    def labels(self) -> np.ndarray | None:
        return self._labels

    def describe(self) -> dict:
        return dict(self.config)
