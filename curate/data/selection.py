"""A selection of rows: the one reader (:func:`read_rows`) of a dedup or sample folder, an ``.npy``
of rows or a list of ids, behind the cluster stage's ``input.subset`` (:func:`read_subset`: a set
of store rows) and every ``data.selection`` (``curate.data.sources.read_selection``: items in
file order, with the selection's identity).

``python -m curate.cluster input.path=<store> input.subset=<dedup out>`` clusters only those
rows; the hierarchy's items are then the subset's rows in store order, and the sample stage maps
them back to store rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.io.idlist import read_ids


def read_rows(
    path: str | os.PathLike,
    n_rows: int,
    ids_of: Callable[[], Sequence | None],
    what: str,
    where: str,
    folder_files: Sequence[str],
) -> tuple[np.ndarray, Path, list[str] | None]:
    """The one reader of a selection: the rows that a folder, an ``.npy`` or an ids file names.

    Args:
        path: a folder holding one of ``folder_files`` (the first found is read), a 1-D integer
            ``.npy`` of rows, a ``.parquet`` table with an ``id`` column (a ``selected.parquet``),
            or a text file of ids, one per line.
        n_rows: rows of what is selected from.
        ids_of: gives the ids of those rows (strings or ints; None: it has none), called for an ids file.
        what: the name of the setting, in messages (``subset``, ``data.selection``).
        where: what is selected from, in messages (``store``, ``source``).
        folder_files: the files a folder may hold, in order of preference.

    Returns:
        ``(rows (m,) int64 in file order, the file read, its ids (None for an .npy))``.

    Raises:
        FileNotFoundError: nothing to read at ``path``.
        ValueError: an empty selection, out-of-range rows, unknown ids, a wrong dtype or shape; the
            message names the file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / name for name in folder_files if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{what}: {path} holds none of {', '.join(folder_files)}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    wanted = None
    if path.suffix == ".parquet":  # a selected.parquet: the ids of its ``id`` column, in row order
        from curate.io.parquet import RowGroups
        from curate.io.parquet import read_ids as read_id_column

        wanted = list(read_id_column(RowGroups([path], what), "id", what))
        rows = _rows_of_ids(path, wanted, ids_of(), what, where)
    elif path.suffix == ".npy":
        try:
            rows = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as err:
            raise ValueError(f"{what} {path}: cannot read it as a .npy array: {err}") from None
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise ValueError(f"{what} {path}: expected a 1-D integer array of rows, got {rows.dtype} {rows.shape}")
        rows = rows.astype(np.int64)
    else:
        wanted = read_ids(path)
        rows = _rows_of_ids(path, wanted, ids_of(), what, where)
    if rows.size == 0:
        raise ValueError(f"{what} {path} is empty")
    if rows.min() < 0 or rows.max() >= n_rows:
        bad = rows[(rows < 0) | (rows >= n_rows)][0]
        raise ValueError(f"{what} {path}: row {bad} is outside the {where}'s {n_rows} rows")
    return rows, path, wanted


def read_subset(
    path: str | os.PathLike, n_rows: int, ids: Sequence | None = None, store: str | os.PathLike | None = None
) -> np.ndarray:
    """The store rows a subset names (``input.subset`` of the cluster stage), increasing.

    Args:
        path: a dedup output folder (its ``kept_indices.npy``), a 1-D integer ``.npy`` of row
            indices, or a text file of ids, one per line (matched against the store's ``ids``).
        n_rows: rows in the store.
        ids: the store's ids (needed for a text file; strings or ints).
        store: the store's path; a dedup folder must have been computed on it (its
            ``dedup.json`` names its input and row count).

    Returns:
        ``(m,) int64`` sorted, unique row indices in ``[0, n_rows)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: as :func:`read_rows`, and a row listed twice.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        _check_dedup_input(path, n_rows, store)
    rows, path, _ = read_rows(path, n_rows, lambda: ids, "subset", "store", ("kept_indices.npy",))
    rows = np.sort(rows)
    repeated = rows[1:][rows[1:] == rows[:-1]]
    if repeated.size:
        raise ValueError(f"subset {path}: row {repeated[0]} is listed more than once")
    return rows


def _check_dedup_input(folder: Path, n_rows: int, store: str | os.PathLike | None) -> None:
    """A dedup folder's ``dedup.json`` must describe this store: same path and row count."""
    summary_path = folder / "dedup.json"
    if not summary_path.exists():
        return  # a hand-made folder holding kept_indices.npy: nothing to compare
    summary = json.loads(summary_path.read_text())
    if summary.get("count") != n_rows or (
        store is not None and summary.get("input") != str(Path(store).expanduser().resolve())
    ):
        raise ValueError(
            f"subset {folder} is a dedup of {summary.get('input')} ({summary.get('count')} rows), "
            f"not of {store} ({n_rows} rows)"
        )


def _rows_of_ids(path: Path, wanted: list[str], ids: Sequence | None, what: str, where: str) -> np.ndarray:
    if ids is None:
        raise ValueError(f"{what} {path}: a list of ids needs a {where} with ids (a .npy has none); pass row indices")
    row_of = {str(value): row for row, value in enumerate(ids)}
    missing = [value for value in wanted if value not in row_of]
    if missing:
        raise ValueError(
            f"{what} {path}: {len(missing)} id(s) are not in the {where}, e.g. {missing[:3]} (ids are compared as text)"
        )
    return np.fromiter((row_of[value] for value in wanted), dtype=np.int64, count=len(wanted))


class SubsetRows:
    """A lazy ``(m, d)`` view of the rows ``rows`` of an ``(n, d)`` array (any row-indexable input).

    ``view[i:j]`` reads the covering block of the base and drops the rows left out when that block
    is at most ``4x`` the rows asked for (dedup subsets keep most rows), and gathers the rows one
    by one otherwise; index arrays are mapped and gathered.

    Args:
        base: ``(n, d)`` rows: ``np.ndarray``, memmap, :class:`~curate.io.shards.NpyRows`,
            :class:`~curate.io.store.ConcatenatedRows`.
        rows: ``(m,)`` increasing unique row indices of ``base``.
    """

    def __init__(self, base: Any, rows: np.ndarray) -> None:
        self.base = base
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *base.shape[1:])
        self.dtype = base.dtype
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[0 : len(self)]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, tuple):
            return self[index[0]][(slice(None), *index[1:])]
        if isinstance(index, int | np.integer):
            return np.asarray(self.base[self.rows[index] : self.rows[index] + 1])[0]
        if isinstance(index, slice):
            wanted = self.rows[index]
            if index.step in (None, 1) and len(wanted):
                lo, hi = int(wanted[0]), int(wanted[-1]) + 1
                if hi - lo <= 4 * len(wanted):
                    return np.asarray(self.base[lo:hi])[wanted - lo]
            return self._gather(wanted)
        return self._gather(self.rows[np.asarray(index)])  # int array or bool mask

    def _gather(self, wanted: np.ndarray) -> np.ndarray:
        if wanted.size == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        return np.asarray(self.base[wanted])


class SubsetIds(Sequence):
    """The ids of a subset's rows, without copying the store's ids."""

    def __init__(self, ids: Sequence, rows: np.ndarray) -> None:
        self.ids, self.rows = ids, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self.ids[int(r)] for r in self.rows[i]]
        return self.ids[int(self.rows[i])]

    def __iter__(self) -> Iterator:
        return (self.ids[int(r)] for r in self.rows)
