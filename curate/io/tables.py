"""Tables a user can join on item ids: a clustering's ``labels.parquet`` and a selection's
``selected.parquet``, written with pyarrow in row batches (bounded memory for any N), atomically.

``labels.parquet`` (one row per clustered item, in input order)::

    id       string   the item's id (the store's id; for a bare ``.npy`` input the row number as text)
    level_1  int64    the item's level-1 cluster
    level_t  int64    the level-t cluster of its level-(t-1) cluster (t = 2..L)

``selected.parquet`` (one row per selected item, in the order of ``indices.npy``)::

    id       string   the item's id, as above
    index    int64    the item's row in the clustered input (the store), as ``indices.npy`` holds it

The files this adds to the stages' output folders are listed in :data:`OUTPUT_FILES`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.core.atomic import atomic_path
from curate.io.wds import SHARD_GLOB

LABELS_FILE = "labels.parquet"
SELECTED_FILE = "selected.parquet"
#: the files (and glob patterns) these tables, the webdataset export and the retrieve stage add to
#: a stage's output folder: a sample's are per selection folder, its shards only with export=webdataset
OUTPUT_FILES = {
    "cluster": (LABELS_FILE,),
    "sample": (SELECTED_FILE, SHARD_GLOB),
    "retrieve": (SELECTED_FILE, "indices.npy", "ids.txt", "neighbours.npy", "similarities.npy", "retrieve.json"),
}
BATCH_ROWS = 1 << 16


def id_texts(ids: Sequence | None, positions: np.ndarray, rows: np.ndarray | None = None) -> list[str]:
    """The ids of items ``positions`` as text.

    Args:
        ids: the items' ids (str or int), or None when they have none (a bare ``.npy``).
        positions: ``(m,) int64`` positions in ``ids``.
        rows: with ``ids`` None, the input rows of the positions (a subset's rows); None: the
            positions are the rows.

    Returns:
        ``m`` strings: ``str(ids[p])``, or the input row number as text.
    """
    if ids is None:
        numbers = positions if rows is None else rows[positions]
        return [str(int(r)) for r in numbers]
    return [str(ids[int(p)]) for p in positions]


def _write_batches(path: str | os.PathLike, schema: Any, n: int, batch: Any, batch_rows: int) -> None:
    """Write ``n`` rows as the batches ``batch(lo, hi) -> {column: values}`` to a parquet file
    at ``path`` atomically (a temporary file in the same folder, renamed when complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path, suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for lo in range(0, n, batch_rows):
                hi = min(n, lo + batch_rows)
                writer.write_table(pa.table(batch(lo, hi), schema=schema))
            if n == 0:
                writer.write_table(schema.empty_table())


def write_labels(
    path: str | os.PathLike,
    assigns: Sequence[np.ndarray],
    ids: Sequence | None,
    rows: np.ndarray | None = None,
    batch_rows: int = BATCH_ROWS,
) -> int:
    """Write ``labels.parquet``: each item's cluster at every level of a hierarchy.

    Args:
        path: the file to write.
        assigns: per level, finest first, ``(n_t,) int`` assignments of the level's inputs:
            level 1 assigns the ``n`` items, level ``t > 1`` the ``k_{t-1}`` level-(t-1) clusters.
        ids: the ``n`` items' ids, or None (see :func:`id_texts`).
        rows: ``(n,) int64`` input rows of the items (a clustered subset), used for ids when
            ``ids`` is None.
        batch_rows: rows per written batch (and per composition step).

    Returns:
        The number of rows written (``n``).
    """
    import pyarrow as pa

    n = int(len(assigns[0]))
    schema = pa.schema([("id", pa.string())] + [(f"level_{t}", pa.int64()) for t in range(1, len(assigns) + 1)])

    def batch(lo: int, hi: int) -> dict[str, Any]:
        columns: dict[str, Any] = {"id": id_texts(ids, np.arange(lo, hi), rows)}
        labels = np.asarray(assigns[0][lo:hi], dtype=np.int64)
        for t, assign in enumerate(assigns, start=1):
            if t > 1:
                labels = np.asarray(assign, dtype=np.int64)[labels]
            columns[f"level_{t}"] = labels
        return columns

    _write_batches(path, schema, n, batch, batch_rows)
    return n


def write_selected(
    path: str | os.PathLike,
    index: np.ndarray,
    ids: Sequence | None,
    positions: np.ndarray | None = None,
    batch_rows: int = BATCH_ROWS,
) -> int:
    """Write ``selected.parquet``: the id and input row of every selected item.

    Args:
        path: the file to write.
        index: ``(m,) int64`` input rows of the selected items (as ``indices.npy`` holds them).
        ids: ids indexed by ``positions`` (by ``index`` when ``positions`` is None), or None: the
            row number as text.
        positions: ``(m,) int64`` positions of the items in ``ids`` (a clustered subset's
            positions); None: ``index``.
        batch_rows: rows per written batch.

    Returns:
        The number of rows written (``m``).
    """
    import pyarrow as pa

    index = np.asarray(index, dtype=np.int64)
    positions = index if positions is None else np.asarray(positions, dtype=np.int64)
    schema = pa.schema([("id", pa.string()), ("index", pa.int64())])

    def batch(lo: int, hi: int) -> dict[str, Any]:
        texts = id_texts(None, index[lo:hi]) if ids is None else id_texts(ids, positions[lo:hi])
        return {"id": texts, "index": index[lo:hi]}

    _write_batches(path, schema, len(index), batch, batch_rows)
    return len(index)
