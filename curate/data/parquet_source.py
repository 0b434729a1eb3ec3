"""A parquet table of images as a source: one item per row, read by row groups.

Each row names its image by path (``data.path_column``, relative to the table's folder) or holds
its encoded bytes (``data.image_column``); ids come from ``data.id_column`` (default: the row
number, as text) and labels from an optional integer ``data.label_column``. The small columns
(ids, paths, labels) are read at the start, group by group; the image bytes never are: item ``i``
reads the row group that holds it (:class:`curate.io.parquet.RowGroups`), and the last group read
is kept, so the embed loop, which reads items in order, reads each group once per worker.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from curate.core.errors import InputError
from curate.data.decode import decode_image
from curate.io.parquet import RowGroups, parquet_files, read_ids


class ParquetSource:
    """The rows of a parquet file, or of every ``.parquet`` of a folder (sorted), as image items.

    Implements the ``Source`` interface of :mod:`curate.data.sources`.

    Args:
        path: a parquet file or a folder of them.
        path_column: image paths (relative ones against the file's folder); or
        image_column: encoded image bytes (exactly one of the two).
        id_column: ids (strings or integers, unique); None: the row number as text.
        label_column: integer labels (>= 0, no nulls); None: no labels.
        limit: keep the first ``limit`` rows.

    Raises:
        ValueError: both or neither image column; InputError: a missing column or one of the wrong
            type, duplicate ids, bad labels, an unreadable file (the message names file and key).
    """

    modality = "image"
    ids_format = "txt"
    label_names: list[str] | None = None

    def __init__(
        self,
        path: str | os.PathLike,
        path_column: str | None = None,
        image_column: str | None = None,
        id_column: str | None = None,
        label_column: str | None = None,
        limit: int | None = None,
    ) -> None:
        if (path_column is None) == (image_column is None):
            raise ValueError("data.path_column / data.image_column: set exactly one (image paths or image bytes)")
        self.path = Path(path).expanduser()
        self.table = RowGroups(parquet_files(self.path, "data.path"), "data.path")
        self.n = self.table.n if limit is None else min(self.table.n, int(limit))
        if self.n == 0:
            raise ValueError(f"data.path: the parquet table {self.path} holds no row")
        self.path_column, self.image_column = path_column, image_column
        self._paths: list[str] | None = None
        if path_column is not None:
            kind = self.table.field(path_column, "data.path_column").type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise InputError(f"data.path_column: column {path_column!r} of {self.path} is {kind}, not strings")
            paths = self.table.column(path_column)[: self.n].to_pylist()
            file_of = np.asarray([f for f, _ in self.table.groups])[self.table.group_of(np.arange(self.n))]
            self._paths = [
                None if p is None else str(self.table.files[f].parent / p) for p, f in zip(paths, file_of.tolist())
            ]
        else:
            kind = self.table.field(image_column, "data.image_column").type
            if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
                raise InputError(f"data.image_column: column {image_column!r} of {self.path} is {kind}, not bytes")
        if id_column is None:
            self._ids = [str(i) for i in range(self.n)]
        else:
            self._ids = list(read_ids(self.table, id_column, "data.id_column")[: self.n])
            if len(set(self._ids)) != self.n:
                raise InputError(f"data.id_column: column {id_column!r} of {self.path} holds duplicate ids")
        self._labels = None
        if label_column is not None:
            kind = self.table.field(label_column, "data.label_column").type
            values = self.table.column(label_column)[: self.n]
            if not pa.types.is_integer(kind) or values.null_count:
                raise InputError(
                    f"data.label_column: column {label_column!r} of {self.path} must be integers without nulls, "
                    f"got {kind} with {values.null_count} nulls"
                )
            self._labels = values.to_numpy().astype(np.int64)
            if self._labels.min() < 0:
                raise InputError(f"data.label_column: column {label_column!r} of {self.path} holds negative labels")
        self.config = {
            "kind": "parquet",
            "path": str(self.path.resolve()),
            "files": [{"path": str(f.resolve()), "size": f.stat().st_size} for f in self.table.files],
            "column": path_column or image_column,
            "count": self.n,
        }

    def __len__(self) -> int:
        return self.n

    def image_bytes(self, index: int) -> bytes:
        """The encoded image of row ``index``: the file its path names, or its bytes cell (read
        with the row group that holds it)."""
        if self._paths is not None:
            path = self._paths[index]
            if path is None:
                raise ValueError(f"row {index} of {self.path} has no path in {self.path_column!r}")
            return Path(path).read_bytes()
        g = int(self.table.group_of(np.asarray([index]))[0])
        cell = self.table.read(g, [self.image_column]).column(0)[index - int(self.table.offsets[g])]
        if not cell.is_valid:
            raise ValueError(f"row {index} of {self.path} has no image in {self.image_column!r} (null)")
        return cell.as_py()

    def load(self, index: int) -> Image.Image:
        where = self._paths[index] if self._paths is not None else f"row {index} of {self.path.name}"
        return decode_image(self.image_bytes(index), where)

    def ids(self, indices: np.ndarray) -> list:
        return [self._ids[i] for i in indices]

    def labels(self) -> np.ndarray | None:
        return self._labels

    def describe(self) -> dict:
        return dict(self.config)
