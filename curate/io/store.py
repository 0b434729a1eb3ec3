"""Embedding stores: sharded, memory-mapped ``.npy`` embeddings with ids, labels and a manifest.

On-disk format (one directory per store)::

    <store>/
      emb-00000.npy       (rows_0, d) float32 or float16 embeddings of shard 0
      emb-00001.npy       ...
      ids-00000.txt       one id per line (rows_0 lines), or ids-00000.npy (rows_0,) int64
      labels.npy          optional (N,) int64 labels; kept apart, never read by curation
      label_names.json    optional list of label names (label i is label_names[i])
      skipped.txt         optional: inputs that could not be read, "<id>\\t<reason>" per line
      manifest.json       written last, atomically: its presence means the store is complete

``manifest.json`` holds ``format`` ("ssl-curate-embeddings"), ``version`` (1), ``model``,
``dim``, ``count`` (N), ``dtype``, ``normalised``, ``source`` (a description of the input),
``ids_format`` ("txt" or "npy"), ``labels``/``label_names`` (file names or null), ``skipped``
(count), ``meta`` (writer settings) and ``shards``: a list of
``{"index", "emb", "ids", "rows", "items": [start, stop]}`` in row order. ``items`` is the range of
*input* items the shard covers; ``rows`` can be smaller when inputs were skipped. Shards with no
row at all are listed with ``"emb": null``. Rows are concatenated in shard order.

Writing is resumable: :class:`StoreWriter` writes each shard's files atomically and then a small
record ``.parts/shard-XXXXX.json``; a shard counts as done only when its record exists.
Several processes (ranks) may write different shards of the same store at once. When all shards
are done, :func:`finalize_store` (one process) merges the records into ``manifest.json`` and
removes ``.parts/``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.core.atomic import atomic_save_npy, atomic_write_json, atomic_write_text
from curate.core.errors import InputError
from curate.io.jsonfile import read_json
from curate.io.shards import open_npy

FORMAT = "ssl-curate-embeddings"
VERSION = 1
MANIFEST = "manifest.json"
PARTS = ".parts"
_DTYPES = ("float32", "float16")
_IDS_FORMATS = ("txt", "npy")


def emb_name(index: int) -> str:
    """File name of shard ``index``'s embeddings, e.g. ``emb-00003.npy``."""
    return f"emb-{index:05d}.npy"


def ids_name(index: int, ids_format: str) -> str:
    """File name of shard ``index``'s ids, e.g. ``ids-00003.txt``."""
    return f"ids-{index:05d}.{ids_format}"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class ConcatenatedRows:
    """A read-only ``(N, d)`` view over several memory-mapped ``(n_i, d)`` shards.

    Nothing is read until indexed. ``a[i]`` returns one ``(d,)`` row, ``a[i:j]`` (any step), an
    integer index array ``a[idx]`` or a boolean mask return a new ``(m, d)`` ``np.ndarray`` that
    may span shard boundaries; only the shards touched are read. ``a[rows, cols]`` applies the row
    index first. ``np.asarray(a)`` loads everything (explicitly asked for).

    Args:
        arrays: the shards, each ``(n_i, d)`` with one shared ``d`` and dtype.
        names: how error messages name each shard (file names).
    """

    def __init__(self, arrays: Sequence[np.ndarray], names: Sequence[str] | None = None) -> None:
        if not arrays:
            raise ValueError("ConcatenatedRows needs at least one shard")
        names = list(names) if names is not None else [f"shard {i}" for i in range(len(arrays))]
        d, dtype = arrays[0].shape[1], arrays[0].dtype
        for array, name in zip(arrays, names):
            if array.ndim != 2 or array.shape[1] != d:
                raise ValueError(f"{name}: shape {array.shape} does not match ({'n'}, {d}) of {names[0]}")
            if array.dtype != dtype:
                raise ValueError(f"{name}: dtype {array.dtype} does not match {dtype} of {names[0]}")
        self.arrays = list(arrays)
        self.names = names
        self.offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        self._shape = (int(self.offsets[-1]), int(d))
        self._dtype = dtype

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return f"ConcatenatedRows(shape={self.shape}, dtype={self.dtype}, shards={len(self.arrays)})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[0 : len(self)]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        for array in self.arrays:
            yield from array

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            if len(key) == 0:
                return self[0 : len(self)]
            if len(key) > 2:
                raise IndexError(f"too many indices for a 2-D array: {len(key)}")
            rows = self[key[0]]
            return rows[..., key[1]] if len(key) == 2 else rows
        if isinstance(key, int | np.integer):
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"row {i} is out of range for {len(self)} rows")
            i %= max(len(self), 1)
            shard = int(np.searchsorted(self.offsets, i, side="right")) - 1
            return np.array(self.arrays[shard][i - self.offsets[shard]])
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._read_range(start, max(start, stop))
            return self._take(np.arange(start, stop, step, dtype=np.int64))
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean index of shape {idx.shape} does not match {len(self)} rows")
            return self._take(np.flatnonzero(idx))
        if idx.dtype.kind not in "iu":
            raise IndexError(f"rows must be indexed by int, slice, int array or bool mask, not {idx.dtype}")
        return self._take(idx)

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self._shape[1]), dtype=self._dtype)
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pos = start
        shard = max(first, 0)
        while pos < stop:  # loop over the shards touched, not over rows
            lo = pos - self.offsets[shard]
            hi = min(stop, self.offsets[shard + 1]) - self.offsets[shard]
            out[pos - start : pos - start + hi - lo] = self.arrays[shard][lo:hi]
            pos += hi - lo
            shard += 1
        return out

    def _take(self, idx: np.ndarray) -> np.ndarray:
        shape = idx.shape
        flat = idx.reshape(-1).astype(np.int64)
        n = len(self)
        if flat.size and (flat.min() < -n or flat.max() >= n):
            bad = flat[(flat < -n) | (flat >= n)][0]
            raise IndexError(f"row {bad} is out of range for {n} rows")
        flat = np.where(flat < 0, flat + n, flat)
        out = np.empty((flat.size, self._shape[1]), dtype=self._dtype)
        shard_of = np.searchsorted(self.offsets, flat, side="right") - 1
        order = np.argsort(flat, kind="stable")  # sorted reads per shard are memmap friendly
        bounds = np.searchsorted(shard_of[order], np.arange(len(self.arrays) + 1))
        for shard in np.flatnonzero(np.diff(bounds)):  # loop over shards, not rows
            sel = order[bounds[shard] : bounds[shard + 1]]
            out[sel] = self.arrays[shard][flat[sel] - self.offsets[shard]]
        return out.reshape(*shape, self._shape[1])


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"embedding store not found: {path}")
    if not path.is_dir():
        raise ValueError(f"{path} is neither a store directory nor a .npy file")
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        hint = ""
        if (path / PARTS).exists():
            hint = " (shards are there but the store was never finalised: the embed run is unfinished)"
        raise FileNotFoundError(f"no {MANIFEST} in {path}{hint}")
    manifest = read_json(manifest_path)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def read_manifest(path: str | os.PathLike) -> dict:
    """The parsed ``manifest.json`` of the store at ``path`` (FileNotFoundError when missing)."""
    return _read_manifest(Path(path))


def shard_files(path: str | os.PathLike, manifest: dict | None = None) -> list[tuple[dict, Path, Path]]:
    """``(shard record, embeddings file, ids file)`` of every shard holding rows, in row order.

    The one walk over a manifest's shard list: the file names are checked to be plain names
    inside the store (a manifest never points out of it).

    Args:
        path: the store folder.
        manifest: its manifest when already read (read from ``path`` otherwise).
    """
    path = Path(path)
    manifest = _read_manifest(path) if manifest is None else manifest
    return [
        (
            shard,
            path / _plain_name(shard["emb"], path, "shards[].emb"),
            path / _plain_name(shard["ids"], path, "shards[].ids"),
        )
        for shard in manifest.get("shards", [])
        if shard.get("rows", 0) > 0 and shard.get("emb")
    ]


def _read_ids(path: Path, ids_format: str) -> Sequence:
    if not path.exists():
        raise FileNotFoundError(f"ids file missing: {path}")
    if ids_format == "npy":
        ids = np.load(path, mmap_mode="r", allow_pickle=False)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(f"{path}: ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        return ids
    text = path.read_text()
    return text.split("\n")[:-1] if text else []


class _ChainedIds(Sequence):
    """Read-only concatenation of per-shard id sequences (lists of str or int arrays)."""

    def __init__(self, parts: Sequence[Sequence]) -> None:
        self.parts = list(parts)
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"id {i} is out of range for {len(self)} ids")
        shard = int(np.searchsorted(self.offsets, i, side="right")) - 1
        value = self.parts[shard][i - self.offsets[shard]]
        return int(value) if isinstance(value, np.integer) else value

    def __iter__(self) -> Iterator:
        for part in self.parts:
            for value in part:
                yield int(value) if isinstance(value, np.integer) else value


def load_embeddings(path: str | os.PathLike, check: bool = False) -> tuple[Any, Sequence]:
    """Open an embedding store (or a plain ``.npy``) memory-mapped.

    Args:
        path: a store directory (with ``manifest.json``) or a 2-D ``.npy`` file.
        check: also stream through every row and fail on NaN/Inf (:func:`check_finite`).

    Returns:
        ``(array, ids)``: ``array`` is ``(N, d)``: the ``np.memmap`` itself for one shard or a
        ``.npy`` file, a :class:`ConcatenatedRows` for several shards; ``ids`` is a sequence of N
        ids (``str`` for ``.txt`` ids, ``int`` for ``.npy`` ids, ``range(N)`` for a ``.npy`` file).

    Raises:
        FileNotFoundError: missing path, manifest or shard file.
        ValueError: empty store, a shard whose shape/dtype/row count disagrees with the manifest,
            ids count != rows, non-finite values (with ``check``). Messages name the shard.
    """
    path = Path(path)
    if path.suffix == ".npy" and not path.is_dir():
        array = open_npy(path)
        if array.shape[0] == 0:
            raise ValueError(f"embedding file {path} is empty (0 rows)")
        if check:
            check_finite(path)
        return array, range(array.shape[0])
    manifest = _read_manifest(path)
    files = shard_files(path, manifest)
    if not files or manifest.get("count", 0) == 0:
        raise ValueError(f"embedding store {path} is empty (0 rows)")
    dim, dtype = manifest["dim"], np.dtype(manifest["dtype"])
    arrays, id_parts = [], []
    for shard, emb_path, ids_path in files:
        array = open_npy(emb_path)
        if array.shape[1] != dim:
            raise ValueError(f"shard {emb_path}: dimension {array.shape[1]} != {dim} (manifest dim)")
        if array.dtype != dtype:
            raise ValueError(f"shard {emb_path}: dtype {array.dtype} != {dtype} (manifest dtype)")
        if array.shape[0] != shard["rows"]:
            raise ValueError(f"shard {emb_path}: {array.shape[0]} rows, manifest says {shard['rows']}")
        ids = _read_ids(ids_path, manifest["ids_format"])
        if len(ids) != array.shape[0]:
            raise ValueError(f"ids file {ids_path}: {len(ids)} ids for {array.shape[0]} rows")
        arrays.append(array)
        id_parts.append(ids)
    total = sum(a.shape[0] for a in arrays)
    if total != manifest["count"]:
        raise ValueError(f"{path}: shards hold {total} rows, manifest count is {manifest['count']}")
    if check:
        check_finite(path)
    if len(arrays) == 1:
        return arrays[0], _ChainedIds(id_parts)
    return ConcatenatedRows(arrays, [emb.name for _, emb, _ in files]), _ChainedIds(id_parts)


def check_finite(path: str | os.PathLike, chunk_rows: int = 65536) -> int:
    """Stream through a store (or ``.npy``) and fail on the first row holding NaN or Inf.

    Reads ``chunk_rows`` rows at a time, so memory stays bounded for any store size.

    Returns:
        The number of rows checked.

    Raises:
        ValueError: naming the shard file, the row inside it and the global row.
    """
    path = Path(path)
    if path.suffix == ".npy" and not path.is_dir():
        files = [(path, open_npy(path))]
    else:
        files = [(emb, open_npy(emb)) for _, emb, _ in shard_files(path)]
    offset = 0
    for file, array in files:
        for start in range(0, array.shape[0], chunk_rows):
            block = np.asarray(array[start : start + chunk_rows])
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                row = start + int(np.argmax(bad))
                kind = "NaN" if np.isnan(block[row - start]).any() else "Inf"
                raise ValueError(f"shard {file}: row {row} (global row {offset + row}) holds {kind}")
        offset += array.shape[0]
    return offset


def load_labels(path: str | os.PathLike) -> tuple[np.ndarray, list[str] | None]:
    """The labels kept beside a store: ``(labels (N,) int64, names or None)``.

    Raises:
        FileNotFoundError: the store has no ``labels.npy``.
        ValueError: the labels count differs from the store's row count.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    if not manifest.get("labels"):
        raise FileNotFoundError(f"store {path} has no labels (its source had none)")
    labels_path = path / _plain_name(manifest["labels"], path, "labels")
    labels = np.load(labels_path, allow_pickle=False)
    if labels.shape != (manifest["count"],):
        raise ValueError(f"{labels_path}: shape {labels.shape} != ({manifest['count']},)")
    if labels.dtype.kind not in "iu":
        raise InputError(f"labels must be integers, got {labels.dtype} ({labels_path})")
    if labels.size and labels.min() < 0:
        raise InputError(f"labels must be >= 0, got {int(labels.min())} ({labels_path})")
    names = None
    if manifest.get("label_names"):
        names_path = path / _plain_name(manifest["label_names"], path, "label_names")
        try:
            names = json.loads(names_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{names_path} is not a JSON list of names: {err}") from None
        if not isinstance(names, list):
            raise InputError(f"{names_path} must hold a JSON list of names, got a {type(names).__name__}")
        if labels.size and len(names) <= int(labels.max()):
            raise InputError(f"{len(names)} label names for labels up to {int(labels.max())} ({names_path})")
    return labels.astype(np.int64, copy=False), names


def _plain_name(name: Any, store: Path, key: str) -> str:
    """A file name a manifest gives: a plain name inside the store, never a path out of it."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise InputError(f"{store / MANIFEST}: {key} {name!r} is not a plain file name inside the store ({key})")
    return name


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class StoreWriter:
    """Writes the shards of one store; several writers (one per rank) may share a directory.

    Args:
        path: the store directory (created).
        meta: settings that define the store's content (model, source, normalisation...). Saved
            in ``.parts/meta.json`` by the first writer; a later writer (a resumed run, another
            rank) with different ``meta`` raises ``ValueError`` instead of mixing two stores.
            ``meta["model"]``, ``meta["normalised"]`` and ``meta["source"]`` reach the manifest.
        dtype: ``"float32"`` or ``"float16"`` on disk.
        ids_format: ``"txt"`` (str ids) or ``"npy"`` (int64 ids).
        label_names: optional names of the labels, written as ``label_names.json`` at the end.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        meta: dict | None = None,
        dtype: str = "float32",
        ids_format: str = "txt",
        label_names: Sequence[str] | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        if ids_format not in _IDS_FORMATS:
            raise ValueError(f"ids_format must be one of {_IDS_FORMATS}, got {ids_format!r}")
        self.path = Path(path)
        self.parts = self.path / PARTS
        self.dtype = dtype
        self.ids_format = ids_format
        self.meta = {
            "meta": self.normalise_meta(meta),
            "dtype": dtype,
            "ids_format": ids_format,
            "label_names": list(label_names) if label_names is not None else None,
        }
        self.parts.mkdir(parents=True, exist_ok=True)
        meta_path = self.parts / "meta.json"
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            if old != self.meta:
                diff = _first_difference(old, self.meta)
                raise ValueError(
                    f"{self.path} holds a partial store written with other settings ({diff}); "
                    "use another output directory or remove it"
                )
        else:
            atomic_write_json(meta_path, self.meta)

    @staticmethod
    def normalise_meta(meta: dict | None) -> dict:
        """``meta`` as it reads back from JSON (what the manifest's ``meta`` holds)."""
        return json.loads(json.dumps(meta or {}, default=str))

    def record_path(self, index: int) -> Path:
        return self.parts / f"shard-{index:05d}.json"

    def done(self, index: int) -> bool:
        """True when shard ``index`` was completely written (its record exists)."""
        return self.record_path(index).exists()

    def write_shard(
        self,
        index: int,
        emb: np.ndarray,
        ids: Sequence,
        items: tuple[int, int] | None = None,
        labels: np.ndarray | None = None,
        skipped: Sequence[tuple[str, str]] = (),
    ) -> dict:
        """Write shard ``index`` atomically: embeddings, ids, labels, then its record.

        Args:
            index: shard number (``emb-{index:05d}.npy``); rows are ordered by shard number.
            emb: ``(rows, d)`` floating-point embeddings; must be finite.
            ids: ``rows`` ids (str without newlines for ``"txt"``, int for ``"npy"``).
            items: the ``[start, stop)`` input items this shard covers (default ``[0, rows)``).
            labels: optional ``(rows,)`` integer labels.
            skipped: ``(id, reason)`` of inputs of this shard that could not be read.

        Returns:
            The shard's record.
        """
        emb = np.asarray(emb)
        if emb.ndim != 2:
            raise ValueError(f"shard {index}: embeddings must be (rows, d), got shape {emb.shape}")
        if emb.dtype.kind != "f":
            raise ValueError(f"shard {index}: embeddings must be floating point, got {emb.dtype}")
        rows = emb.shape[0]
        if len(ids) != rows:
            raise ValueError(f"shard {index}: {len(ids)} ids for {rows} embedding rows")
        if rows and not np.isfinite(emb).all():
            row = int(np.argmax(~np.isfinite(emb).all(axis=1)))
            raise ValueError(f"shard {index}: row {row} (id {ids[row]!r}) holds NaN or Inf")
        record: dict[str, Any] = {
            "index": int(index),
            "emb": None,
            "ids": None,
            "rows": int(rows),
            "dim": int(emb.shape[1]),
            "items": [int(v) for v in (items if items is not None else (0, rows))],
            "labels": None,
            "skipped": [[str(a), str(b)] for a, b in skipped],
        }
        if rows:
            record["emb"] = emb_name(index)
            record["ids"] = ids_name(index, self.ids_format)
            atomic_save_npy(self.path / record["emb"], emb.astype(self.dtype, copy=False))
            if self.ids_format == "npy":
                atomic_save_npy(self.path / record["ids"], np.asarray(ids, dtype=np.int64))
            else:
                text_ids = [str(i) for i in ids]
                bad = [i for i in text_ids if "\n" in i or "\r" in i]
                if bad:
                    raise ValueError(f"shard {index}: id {bad[0]!r} holds a newline; ids.txt needs one per line")
                atomic_write_text(self.path / record["ids"], "".join(i + "\n" for i in text_ids))
            if labels is not None:
                labels = np.asarray(labels)
                if labels.shape != (rows,) or labels.dtype.kind not in "iu":
                    raise ValueError(
                        f"shard {index}: labels must be ({rows},) integers, got {labels.dtype} {labels.shape}"
                    )
                record["labels"] = f"labels-{index:05d}.npy"
                atomic_save_npy(self.parts / record["labels"], labels.astype(np.int64))
        atomic_write_json(self.record_path(index), record)
        return record


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    return f"{where or 'value'}: {a!r} then {b!r}"


def finalize_store(path: str | os.PathLike, expected_shards: int | None = None) -> dict:
    """Merge the shard records of ``path`` into ``manifest.json`` (written last) and clean up.

    Call it from one process once every rank has written its shards. Idempotent: on a finalised
    store it returns the manifest unchanged.

    Args:
        path: the store directory.
        expected_shards: the number of shards the store must have (``0 .. expected_shards-1``);
            default: every shard up to the highest index written.

    Returns:
        The manifest.

    Raises:
        ValueError: missing shards, shards of different dimensions (naming them), empty store.
    """
    path = Path(path)
    parts = path / PARTS
    if not parts.exists():
        manifest = _read_manifest(path)
        _remove_tree(path / f"{PARTS}.trash")
        return manifest
    meta = json.loads((parts / "meta.json").read_text())
    records = sorted((json.loads(p.read_text()) for p in parts.glob("shard-*.json")), key=lambda r: r["index"])
    present = {r["index"] for r in records}
    n_shards = expected_shards if expected_shards is not None else (max(present) + 1 if present else 0)
    missing = sorted(set(range(n_shards)) - present)
    if missing:
        raise ValueError(f"store {path} is incomplete: shards {missing[:10]} of {n_shards} were never written")
    records = [r for r in records if r["index"] < n_shards]
    filled = [r for r in records if r["rows"] > 0]
    if not filled:
        raise ValueError(f"store {path} is empty: no shard holds a row")
    dim = filled[0]["dim"]
    for r in filled:
        if r["dim"] != dim:
            raise ValueError(f"shard {r['emb']} of {path}: dimension {r['dim']} != {dim} of {filled[0]['emb']}")
    has_labels = [r["labels"] is not None for r in filled]
    if any(has_labels) and not all(has_labels):
        raise ValueError(f"store {path}: some shards have labels and others do not")
    label_file = None
    if all(has_labels):
        labels = np.concatenate([np.load(parts / r["labels"], allow_pickle=False) for r in filled])
        label_file = "labels.npy"
        atomic_save_npy(path / label_file, labels.astype(np.int64))
    names_file = None
    if meta["label_names"] is not None and label_file is not None:
        names_file = "label_names.json"
        atomic_write_json(path / names_file, meta["label_names"])
    skipped = [row for r in records for row in r["skipped"]]
    atomic_write_text(path / "skipped.txt", "".join(f"{a}\t{b}\n" for a, b in skipped))
    user = meta["meta"]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": user.get("model"),
        "dim": int(dim),
        "count": int(sum(r["rows"] for r in records)),
        "dtype": meta["dtype"],
        "normalised": bool(user.get("normalised", False)),
        "source": user.get("source"),
        "ids_format": meta["ids_format"],
        "labels": label_file,
        "label_names": names_file,
        "skipped": len(skipped),
        "meta": user,
        "shards": [
            {"index": r["index"], "emb": r["emb"], "ids": r["ids"], "rows": r["rows"], "items": r["items"]}
            for r in records
        ],
    }
    atomic_write_json(path / MANIFEST, manifest)
    trash = path / f"{PARTS}.trash"
    _remove_tree(trash)
    os.replace(parts, trash)  # one atomic step, then the slow removal
    _remove_tree(trash)
    return manifest


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def write_store(
    path: str | os.PathLike,
    emb: np.ndarray,
    ids: Sequence | None = None,
    labels: np.ndarray | None = None,
    label_names: Sequence[str] | None = None,
    shard_size: int | None = None,
    model: str | None = None,
    normalised: bool = False,
    source: Any = None,
    dtype: str = "float32",
) -> dict:
    """Write an in-memory (or memory-mapped) array as a complete store, streaming by shard.

    Args:
        path: the store directory; must not hold a store already.
        emb: ``(N, d)`` floating-point embeddings (anything sliceable by rows).
        ids: N ids; ``str`` ids go to ``.txt``, integer ids (default ``range(N)``) to ``.npy``.
        labels: optional ``(N,)`` integer labels.
        label_names: optional label names.
        shard_size: rows per shard (default: one shard).
        model, normalised, source: recorded in the manifest.
        dtype: ``"float32"`` or ``"float16"``.

    Returns:
        The manifest.
    """
    path = Path(path)
    if (path / MANIFEST).exists():
        raise ValueError(f"{path} already holds a store; remove it first")
    n = int(emb.shape[0])
    ids = range(n) if ids is None else ids
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} rows")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} rows")
    int_ids = (
        isinstance(ids, range)
        or (isinstance(ids, np.ndarray) and ids.dtype.kind in "iu")
        or all(isinstance(i, int | np.integer) for i in ids)
    )
    writer = StoreWriter(
        path,
        meta={"model": model, "normalised": normalised, "source": source},
        dtype=dtype,
        ids_format="npy" if int_ids else "txt",
        label_names=label_names,
    )
    shard_size = shard_size or max(n, 1)
    n_shards = max(1, math.ceil(n / shard_size))
    for k in range(n_shards):
        lo, hi = k * shard_size, min(n, (k + 1) * shard_size)
        writer.write_shard(
            k,
            np.asarray(emb[lo:hi]),
            [ids[i] for i in range(lo, hi)] if not isinstance(ids, np.ndarray) else ids[lo:hi],
            items=(lo, hi),
            labels=None if labels is None else np.asarray(labels[lo:hi]),
        )
    return finalize_store(path, expected_shards=n_shards)
