"""Selected items out as webdataset shards, with their original members and bytes.

``curate.sample ... export=webdataset`` calls this for each selection. The chain from a selection
back to the bytes: the clustering's manifest names its input (an embedding store), the store's
manifest records the ``data`` config it was embedded from (``meta.data_config``), and that config
rebuilds the same :class:`~curate.data.sources.Source` (:func:`~curate.data.sources.build_source`).
A store row is mapped to its source item through the store's shard records (shard ``k`` covers
items ``items = [start, stop)``; inputs that could not be read are missing from its rows), and
every mapped item's id is checked against the store's id: a source that changed since it was
embedded is refused, never exported wrongly.

Each source says how its items go out: :meth:`Source.raw_key` (the webdataset key) and
:meth:`Source.raw_members` (``{extension: bytes}``); file items (image folders, image lists) give
their file under its extension, keys by the rule of :mod:`curate.io.wds`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from curate.core.errors import IdentityError, InputError
from curate.io.store import load_embeddings, read_manifest
from curate.io.wds import SHARD_GLOB, ShardWriter

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("webdataset",)


class SelectionExporter:
    """The source behind a clustering's embedding store, ready to export rows of that store.

    Args:
        cluster_dir: a finished clustering whose input is a store written by ``curate.embed``.

    Raises:
        InputError: the clustering's input is a bare ``.npy``, or its store records no source.
        IdentityError: the source no longer is what the store was embedded from.
    """

    def __init__(self, cluster_dir: str | Path) -> None:
        from curate.data.sources import build_source
        from curate.stage import read_clustering_manifest

        recorded = read_clustering_manifest(cluster_dir).get("input") or {}
        where = f"export=webdataset ({Path(cluster_dir) / 'manifest.json'})"
        if recorded.get("kind") != "store":
            raise InputError(
                f"the clustering's input {recorded.get('path')} is a bare .npy: export needs an embedding store "
                f"made by curate.embed, which names the files it embedded ({where})"
            )
        self.store = Path(recorded["path"])
        self.manifest = read_manifest(self.store)
        data = (self.manifest.get("meta") or {}).get("data_config")
        if not isinstance(data, dict):
            raise InputError(
                f"the store {self.store} records no source it was embedded from (meta.data_config): export needs "
                f"a store written by curate.embed ({self.store / 'manifest.json'})"
            )
        self.source = build_source(OmegaConf.create(data))
        now = json.loads(json.dumps(self.source.describe(), default=str))
        if now != self.manifest.get("source"):
            raise IdentityError(
                f"the source {data.get('kind')} is no longer what the store {self.store} was embedded from "
                f"(then {self.manifest.get('source')}, now {now}); embed it again"
            )
        _, self.ids = load_embeddings(self.store)
        shards = self.manifest.get("shards", [])
        self.shards = shards
        self.offsets = np.concatenate([[0], np.cumsum([s.get("rows", 0) for s in shards])]).astype(np.int64)

    def items(self, rows: np.ndarray) -> np.ndarray:
        """Source positions of the store rows ``rows: (m,) int64`` (each checked by its id)."""
        rows = np.asarray(rows, dtype=np.int64)
        positions = np.empty(len(rows), dtype=np.int64)
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for k in np.unique(shard_of):  # loop over the shards touched, not over rows
            sel = np.flatnonzero(shard_of == k)
            shard = self.shards[int(k)]
            start, stop = (int(v) for v in shard["items"])
            local = rows[sel] - self.offsets[k]
            if shard["rows"] == stop - start:
                positions[sel] = start + local
            else:  # some inputs of the shard were skipped: match by id within the shard's items
                lookup = {str(v): start + i for i, v in enumerate(self.source.ids(np.arange(start, stop)))}
                positions[sel] = [lookup.get(str(self.ids[int(r)]), -1) for r in rows[sel]]
        self._check(rows, positions)
        return positions

    def _check(self, rows: np.ndarray, positions: np.ndarray) -> None:
        n = len(self.source)
        inside = (positions >= 0) & (positions < n)
        found = [str(v) for v in self.source.ids(np.where(inside, positions, 0))]
        for i, row in enumerate(rows.tolist()):
            stored = str(self.ids[row])
            if not inside[i] or found[i] != stored:
                raise IdentityError(
                    f"store {self.store} row {row} is item {stored!r}, but the source now has "
                    f"{found[i] if inside[i] else None!r} there: it changed since it was embedded; embed it again"
                )

    def write(self, rows: np.ndarray, folder: str | Path, shard_size: int) -> dict[str, Any]:
        """Write the distinct store rows ``rows`` (in increasing order) as webdataset shards in
        ``folder`` (``shard-00000.tar``, ...; shards an earlier export left there are removed first).

        Returns:
            ``{"format", "items", "repeats_dropped", "shard_size", "shards": [{"file", "count"}]}``.
        """
        folder = Path(folder)
        unique = np.unique(np.asarray(rows, dtype=np.int64))
        positions = self.items(unique)
        remove_shards(folder)
        source = self.source
        shards = ShardWriter(folder, shard_size).write_all(
            (source.raw_key(int(p)), source.raw_members(int(p))) for p in positions
        )
        log.info("exported %d items as %d webdataset shards to %s", len(unique), len(shards), folder)
        return {
            "format": "webdataset",
            "items": int(len(unique)),
            "repeats_dropped": int(len(rows) - len(unique)),
            "shard_size": int(shard_size),
            "shards": shards,
        }


def remove_shards(folder: str | Path) -> None:
    """Remove the export shards (``shard-XXXXX.tar``) an earlier run left in ``folder``."""
    for stale in Path(folder).glob(SHARD_GLOB):
        stale.unlink()


def exporter_for(export: str | None, cluster_dir: str | Path) -> SelectionExporter | None:
    """The exporter ``export`` asks for (``webdataset``), or None (no export)."""
    if export is None:
        return None
    if str(export) not in EXPORT_FORMATS:
        raise InputError(f"export={export!r}: must be one of {', '.join(EXPORT_FORMATS)} (export)")
    return SelectionExporter(cluster_dir)


def export_selection(
    exporter: SelectionExporter | None, rows: np.ndarray, folder: str | Path, shard_size: int
) -> dict[str, Any] | None:
    """Export the store rows ``rows`` into ``folder`` (:meth:`SelectionExporter.write`); without an
    exporter, remove the shards of an earlier export there instead. Returns the export's record."""
    if exporter is None:
        remove_shards(folder)
        return None
    return exporter.write(rows, folder, shard_size)
