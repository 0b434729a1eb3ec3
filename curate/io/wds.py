"""Webdataset tar shards out: samples (a key and its members) written as ``shard-00000.tar``, ...

A webdataset sample is the run of consecutive tar members that share a key: member
``<key>.<ext>`` holds the sample's ``ext`` entry, and a reader splits a member name at the first
``.`` of its base name (``a/b.c.jpg`` is key ``a/b``, extension ``c.jpg``). So a key must hold no
``.`` in its base name, and two samples must not share a key.

Key rule for items that are files (image folders, image lists), so that keys round-trip:

- the key is the item's id (its path relative to the folder) without its last suffix, with ``%``,
  ``.`` and a leading ``/`` percent-encoded (``%25``, ``%2E``, ``%2F``): ``cats/0.png`` is key
  ``cats/0``, ``a/img.v2.JPG`` is key ``a/img%2Ev2``;
- the file is the member ``<key>.<suffix>`` (the suffix as the file has it: ``cats/0.png``), so a
  folder without ``%`` or extra dots in its names extracts back to the same relative paths;
- the id of a sample read back is ``unquote(key) + "." + <member extension>``
  (:func:`file_id_of_key`).

Shards are written atomically (temporary name, renamed when complete) with fixed tar headers
(mtime 0, uid/gid 0, mode 0644), so the same selection gives byte-identical shards.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from curate.core.atomic import atomic_path
from curate.core.errors import InputError

SHARD_NAME = "shard-{:05d}.tar"
SHARD_GLOB = "shard-[0-9][0-9][0-9][0-9][0-9].tar"
DEFAULT_SHARD_SIZE = 10_000


def shard_name(index: int) -> str:
    """File name of export shard ``index`` (``shard-00003.tar``)."""
    return SHARD_NAME.format(index)


def escape_key(text: str) -> str:
    """``text`` with ``%``, ``.`` and a leading ``/`` percent-encoded: a valid webdataset key."""
    escaped = text.replace("%", "%25").replace(".", "%2E")
    return "%2F" + escaped[1:] if escaped.startswith("/") else escaped


def file_key(item_id: str) -> str:
    """The key of a file item: its id (relative path) without its last suffix, escaped."""
    path = PurePosixPath(item_id)
    stem = item_id[: len(item_id) - len(path.suffix)] if path.suffix else item_id
    return escape_key(stem)


def file_member_ext(item_id: str) -> str:
    """The member extension of a file item: its last suffix without the dot, as written."""
    suffix = PurePosixPath(item_id).suffix
    if not suffix:
        raise InputError(f"{item_id!r} has no file extension: a webdataset member needs one")
    return suffix[1:]


def file_id_of_key(key: str, ext: str) -> str:
    """Inverse of :func:`file_key` and :func:`file_member_ext`: the id of a file item read back."""
    return unquote(key) + "." + ext


def split_member(name: str) -> tuple[str, str]:
    """``(key, extension)`` of a tar member name, split as webdataset readers do (first ``.`` of
    the base name)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        raise ValueError(f"tar member {name!r} is not <key>.<extension>")
    return (f"{folder}/{stem}" if folder else stem), ext


def check_key(key: str) -> str:
    """``key`` when it is a valid webdataset key (non-empty, no ``.`` in its base name, not
    absolute, no ``..``); :class:`InputError` otherwise."""
    base = key.rpartition("/")[2]
    parts = key.split("/")
    if not base or "." in base or key.startswith("/") or ".." in parts or "\x00" in key:
        raise InputError(f"{key!r} is not a webdataset key (no '.' in its base name, not absolute, no '..')")
    return key


class ShardWriter:
    """Write samples into ``folder/shard-XXXXX.tar``, ``shard_size`` samples per shard.

    Use as a context manager; :attr:`shards` lists ``{"file", "count"}`` of every written shard.

    Args:
        folder: where the shards go (created).
        shard_size: samples per shard (the last one may hold fewer).
    """

    def __init__(self, folder: str | os.PathLike, shard_size: int = DEFAULT_SHARD_SIZE) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.folder = Path(folder)
        self.shard_size = int(shard_size)
        self.shards: list[dict[str, Any]] = []
        self._tar: tarfile.TarFile | None = None
        self._atomic: Any = None
        self._count = 0
        self._keys: set[str] = set()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self._close(kind, err, tb)

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        """Add one sample: ``members`` maps each extension to its bytes (written in that order)."""
        check_key(key)
        if key in self._keys:
            raise InputError(f"two exported items share the webdataset key {key!r}")
        if not members:
            raise InputError(f"item {key!r} has no member to export")
        self._keys.add(key)
        if self._tar is None:
            self._open()
        for ext, data in members.items():
            if not ext or "/" in ext:
                raise InputError(f"item {key!r}: {ext!r} is not a member extension")
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        if self._count == self.shard_size:
            self._close(None, None, None)

    def write_all(self, samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> list[dict[str, Any]]:
        """Write every ``(key, members)`` of ``samples``; returns :attr:`shards`."""
        with self:
            for key, members in samples:
                self.write(key, members)
        return self.shards

    def _open(self) -> None:
        name = shard_name(len(self.shards))
        self._atomic = atomic_path(self.folder / name, suffix=".tar")
        tmp = self._atomic.__enter__()
        self._tar = tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT)
        self.shards.append({"file": name, "count": 0})

    def _close(self, kind: Any, err: Any, tb: Any) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self.shards[-1]["count"] = self._count
        atomic, self._tar, self._atomic, self._count = self._atomic, None, None, 0
        atomic.__exit__(kind, err, tb)  # renames the shard into place, or removes it on an error
        if kind is not None:
            self.shards.pop()
