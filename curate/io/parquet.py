"""Parquet tables read by row groups, never whole: the row-group layout of one or more files, and
an ``(n, d)`` row reader of an embedding column that k-means streams like a ``.npy``.

A parquet file is a sequence of row groups, each of which can be read alone (one column of it,
even). :class:`RowGroups` maps a global row number to its group through the groups' row offsets
(from the footers: nothing is read to build it), so row ``i`` costs one group read; the last group
read is kept, so a pass in row order reads every group once. :class:`ParquetRows` gives the
interface of :class:`curate.io.shards.NpyRows` (``shape``, ``dtype``, row slices and index
arrays) over a column of float lists: its peak memory is one decoded row group plus the rows asked
for, whatever the table's size (``scripts/bench_parquet.py`` measures it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.errors import InputError


def parquet_files(path: str | os.PathLike, key: str) -> list[Path]:
    """``path`` itself (a parquet file) or every ``*.parquet`` of a folder, sorted.

    Raises:
        FileNotFoundError: nothing there, or a folder without a ``.parquet`` file (names ``key``).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if p.is_file())
        if not files:
            raise FileNotFoundError(f"{key}: no .parquet file in {path}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"{key}: parquet table not found: {path}")
    return [path]


def open_parquet(path: Path, key: str) -> pq.ParquetFile:
    """A parquet file opened for reading (its footer read, no data).

    Raises:
        InputError: not a parquet file (a truncated or corrupt one); names the file and ``key``.
    """
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{key}: {path} is not a readable parquet file ({str(err).splitlines()[0]})") from None


class RowGroups:
    """The row groups of one or more parquet files as one table of ``n`` rows.

    Args:
        files: the files, in table order (their schemas must hold the columns asked for).
        key: the config key that named them (in error messages).
    """

    def __init__(self, files: Sequence[Path], key: str) -> None:
        self.files, self.key = list(files), key
        self._pid, self._handles = os.getpid(), {}
        self.groups: list[tuple[int, int]] = []
        rows = [0]
        for f in range(len(self.files)):
            meta = self._handle(f).metadata
            for g in range(meta.num_row_groups):
                self.groups.append((f, g))
                rows.append(rows[-1] + meta.row_group(g).num_rows)
        self.offsets = np.asarray(rows, dtype=np.int64)  # (G + 1,) first row of each group, then n
        self.n = int(self.offsets[-1])
        self._last: tuple[tuple[int, tuple[str, ...]], pa.Table] | None = None

    def _handle(self, f: int) -> pq.ParquetFile:
        if self._pid != os.getpid():  # a forked DataLoader worker opens its own handles
            self._pid, self._handles, self._last = os.getpid(), {}, None
        if f not in self._handles:
            self._handles[f] = open_parquet(self.files[f], self.key)
        return self._handles[f]

    def __getstate__(self) -> dict[str, Any]:  # spawned workers (and pickling) reopen the files
        return {**self.__dict__, "_handles": {}, "_last": None}

    def field(self, name: str, key: str) -> pa.Field:
        """The schema field ``name``, the same in every file.

        Raises:
            InputError: a file without the column, or with another type (names the file and ``key``).
        """
        found = None
        for f, path in enumerate(self.files):
            schema = self._handle(f).schema_arrow
            if name not in schema.names:
                raise InputError(f"{key}: {path} has no column {name!r} (columns: {', '.join(schema.names[:8])})")
            current = schema.field(name)
            if found is not None and current.type != found.type:
                first = self.files[0]
                raise InputError(f"{key}: column {name!r} is {current.type} in {path} but {found.type} in {first}")
            found = current
        return found

    def group_of(self, rows: np.ndarray) -> np.ndarray:
        """``(m,) int64`` group of each global row of ``rows: (m,) int``."""
        return np.searchsorted(self.offsets, rows, side="right") - 1

    def read(self, g: int, columns: Sequence[str]) -> pa.Table:
        """The ``columns`` of row group ``g`` (the last group read is kept: a pass in row order
        reads each group once)."""
        token = (g, tuple(columns))
        if self._last is not None and self._last[0] == token and self._pid == os.getpid():
            return self._last[1]
        f, local = self.groups[g]
        handle = self._handle(f)
        try:
            table = handle.read_row_group(local, columns=list(columns), use_threads=False)
        except (pa.ArrowException, OSError) as err:
            raise InputError(
                f"{self.key}: row group {local} of {self.files[f]} cannot be read ({str(err).splitlines()[0]})"
            ) from None
        # the decoder's scratch memory (pages, levels, builders: 3-4x the group for a list column)
        # stays with the allocator otherwise: 380 instead of 310 MB RSS after one 10 MB group
        pa.default_memory_pool().release_unused()
        self._last = (token, table)
        return table

    def column(self, name: str) -> pa.Array:
        """The whole column ``name``, read group by group (for ids, paths, labels: one small column)."""
        chunks = [self.read(g, [name]).column(0) for g in range(len(self.groups))]
        self._last = None
        if not chunks:
            return pa.array([])
        return pa.chunked_array([c for chunk in chunks for c in chunk.chunks], type=chunks[0].type).combine_chunks()


class ParquetIds(Sequence):
    """The ids of a table's rows as text, held as one Arrow array (compact: no Python string per row
    until one is asked for)."""

    def __init__(self, values: pa.Array) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [str(v) for v in self.values[i].to_pylist()]
        return str(self.values[int(i)].as_py())

    def __iter__(self) -> Iterator[str]:
        step = 1 << 16
        for start in range(0, len(self.values), step):
            yield from (str(v) for v in self.values[start : start + step].to_pylist())


def read_ids(groups: RowGroups, name: str, key: str) -> ParquetIds:
    """The column ``name`` as ids (strings or integers, no nulls), checked.

    Raises:
        InputError: a missing column, another type, or a null id (names the file and ``key``).
    """
    field = groups.field(name, key)
    if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type) or pa.types.is_integer(field.type)):
        raise InputError(f"{key}: column {name!r} of {groups.files[0]} is {field.type}, not strings or integers")
    values = groups.column(name)
    if values.null_count:
        raise InputError(f"{key}: column {name!r} of {groups.files[0]} holds {values.null_count} null ids")
    return ParquetIds(values)


def _float_list(field: pa.Field) -> bool:
    kinds = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    return any(kind(field.type) for kind in kinds) and pa.types.is_floating(field.type.value_type)


class ParquetRows:
    """``(n, d)`` rows of a parquet column of float lists (``list<float>``, ``large_list`` or
    ``fixed_size_list``), read by row groups; the interface of :class:`curate.io.shards.NpyRows`.

    Args:
        path: a parquet file.
        column: the embedding column.
        key: the config key of ``column`` (in error messages).

    Raises:
        InputError: no such column, a column that is not a list of floats, rows of different lengths
            or with nulls (found when their group is read), an unreadable file.
    """

    def __init__(self, path: str | os.PathLike, column: str = "embedding", key: str = "input.column") -> None:
        self.path = Path(path)
        self.column, self.key = column, key
        self.groups = RowGroups(parquet_files(self.path, "input.path"), "input.path")
        field = self.groups.field(column, key)
        if not _float_list(field):
            raise InputError(f"{key}: column {column!r} of {self.path} is {field.type}, not a list of floats")
        self.dtype = np.dtype(np.float64 if pa.types.is_float64(field.type.value_type) else np.float32)
        if pa.types.is_fixed_size_list(field.type):
            d = field.type.list_size
        elif self.groups.n:
            g = int(self.groups.group_of(np.zeros(1, dtype=np.int64))[0])  # the first group with a row
            first = self.groups.read(g, [column]).column(0)[0]
            d = len(first.values) if first.is_valid else 0
        else:
            d = 0
        if self.groups.n == 0 or d == 0:
            shape = f"{self.groups.n}x{d}"
            raise InputError(f"{key}: column {column!r} of {self.path} holds no row or empty rows ({shape})")
        self.shape = (self.groups.n, int(d))
        self.ndim = 2
        self._decoded: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _group(self, g: int) -> np.ndarray:
        """Row group ``g`` as a ``(rows, d)`` array (the last one decoded is kept)."""
        if self._decoded is not None and self._decoded[0] == g:
            return self._decoded[1]
        self._decoded = None  # the previous group is freed before this one is decoded
        values = self.groups.read(g, [self.column]).column(0).combine_chunks()
        first = int(self.groups.offsets[g])
        if values.null_count:
            bad = first + int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{self.key}: row {bad} of {self.path} has no {self.column!r} (null)")
        if not pa.types.is_fixed_size_list(values.type):
            lengths = values.value_lengths().to_numpy(zero_copy_only=False)
            if np.any(lengths != self.shape[1]):
                bad = int(np.flatnonzero(lengths != self.shape[1])[0])
                raise InputError(
                    f"{self.key}: row {first + bad} of {self.path} has {lengths[bad]} values in {self.column!r}, "
                    f"row 0 has {self.shape[1]}"
                )
        flat = values.flatten()
        if flat.null_count:
            raise InputError(f"{self.key}: column {self.column!r} of {self.path} holds null values in row group {g}")
        rows = flat.to_numpy(zero_copy_only=False).astype(self.dtype, copy=False).reshape(-1, self.shape[1])
        self._decoded = (g, rows)
        return rows

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step == 1:
                return self._read(start, max(start, stop))
            return self._gather(np.arange(start, stop, step))
        index = np.asarray(index)
        if index.ndim == 0:
            return self._gather(index.reshape(1))[0]
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return self._gather(index.astype(np.int64).reshape(-1)).reshape(*index.shape, self.shape[1])

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.shape[1]), dtype=self.dtype)
        if stop == start:
            return out
        offsets = self.groups.offsets
        for g in range(int(self.groups.group_of(np.asarray([start]))[0]), len(offsets) - 1):
            lo, hi = max(start, int(offsets[g])), min(stop, int(offsets[g + 1]))
            if lo >= stop:
                break
            if lo < hi:
                out[lo - start : hi - start] = self._group(g)[lo - offsets[g] : hi - offsets[g]]
        return out

    def _gather(self, index: np.ndarray) -> np.ndarray:
        """Scattered rows: each group that holds one is decoded once, in group order."""
        index = np.where(index < 0, index + self.shape[0], index)
        if len(index) and (index.min() < 0 or index.max() >= self.shape[0]):
            raise IndexError(f"{self.path}: row index out of range for {self.shape[0]} rows")
        out = np.empty((len(index), self.shape[1]), dtype=self.dtype)
        group = self.groups.group_of(index)
        for g in np.unique(group).tolist():
            pick = np.flatnonzero(group == g)
            out[pick] = self._group(g)[index[pick] - self.groups.offsets[g]]
        return out


def open_parquet_embeddings(
    path: str | os.PathLike, column: str = "embedding", id_column: str | None = "id"
) -> tuple[ParquetRows, ParquetIds | None]:
    """The embedding rows and ids of a parquet table (``curate.cluster input.path=<file.parquet>``).

    Args:
        path: a parquet file.
        column: ``input.column``, a list of floats per row.
        id_column: ``input.id_column`` (strings or integers); None: no ids (rows are numbered).
    """
    rows = ParquetRows(path, column, "input.column")
    ids = None if id_column is None else read_ids(rows.groups, id_column, "input.id_column")
    return rows, ids
