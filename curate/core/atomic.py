"""Atomic file writes: write to a temporary name in the same folder, then ``os.replace``.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a
half-written file, even if the writer is killed.

Every atomic write is announced (before the file is created) to the listeners registered with
:func:`listen_writes`: :func:`curate.core.guard.recorded_outputs` records with them which files a
stage run wrote. A writer that does not go through :func:`atomic_path` (an append-only log)
announces its file with :func:`note_written`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


_LISTENERS: list[Callable[[Path], None]] = []
_LISTENERS_LOCK = threading.Lock()  # writer threads (prefetching shards) announce too


@contextlib.contextmanager
def listen_writes(listener: Callable[[Path], None]) -> Iterator[None]:
    """Call ``listener(path)`` for every file written in this process during the block (any thread)."""
    with _LISTENERS_LOCK:
        _LISTENERS.append(listener)
    try:
        yield
    finally:
        with _LISTENERS_LOCK:
            _LISTENERS.remove(listener)


def note_written(path: str | os.PathLike) -> None:
    """Announce that ``path`` is about to be written (to the :func:`listen_writes` listeners)."""
    with _LISTENERS_LOCK:
        listeners = list(_LISTENERS)
    for listener in listeners:
        listener(Path(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``.

    ``suffix`` is kept on the temporary name (``np.save`` appends ``.npy`` when it is missing).
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    note_written(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` atomically (never pickled: object arrays are refused)."""
    array = np.asarray(array)
    if array.dtype == object:
        raise ValueError(f"refusing to write an object array to {path}: only numeric arrays are stored")
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; a non-finite number is written as ``null``
    (``NaN`` / ``Infinity`` are not JSON, and strict readers reject them)."""
    text = json.dumps(finite_json(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (also in numpy scalars and arrays) replaced by None."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_json(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(value) for value in obj]
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        return finite_json(obj.tolist())
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
