"""Shared plumbing of the stage apps: clean errors, output folders, inputs."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from curate import dist
from curate.io.shards import NpyRows

log = logging.getLogger(__name__)


def run_stage(body: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a stage body; bad input ends the program with ``error: <message>`` (exit code 2),
    not a traceback. Other exceptions (bugs) keep their traceback."""
    try:
        return body(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def output_dir() -> Path:
    """The folder Hydra assigned to this run (named from the config, never the clock)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def open_input(
    path: str | Path, subset: str | Path | np.ndarray | None = None
) -> tuple[Any, Sequence | None, np.ndarray | None, dict[str, Any]]:
    """Open embeddings to cluster without reading them.

    Args:
        path: a ``(N, d)`` ``.npy`` file (a ``labels.npy`` beside it is picked up when its length
            matches) or an embedding store folder (``manifest.json`` + shards).
        subset: only these rows: a dedup output folder, a ``.npy`` of row indices, a text file
            of ids (see :func:`curate.io.subset.read_subset`), or the ``(m,)`` rows themselves.

    Returns:
        ``(array, ids or None, labels or None, description)``; ``array`` is memory-mapped (a
        :class:`~curate.io.subset.SubsetRows` view with a subset; its ``rows`` are store rows).
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    description: dict[str, Any]
    if path.is_dir():
        from curate.io.store import load_embeddings, load_labels

        array, ids = load_embeddings(path)
        labels = None
        if (path / "labels.npy").exists():
            labels, _ = load_labels(path)
        description = {"kind": "store", "path": str(path)}
    else:
        array, ids = NpyRows(path), None
        labels_path = path.with_name("labels.npy")
        labels = None
        if labels_path.exists() and labels_path != path:
            candidate = np.load(labels_path, mmap_mode="r")
            labels = np.asarray(candidate) if candidate.shape == (array.shape[0],) else None
        description = {"kind": "npy", "path": str(path)}
    if subset is None:
        return array, ids, labels, description
    from curate.io.subset import SubsetIds, SubsetRows, read_subset

    if isinstance(subset, np.ndarray):
        rows = subset
        if len(rows) and rows[-1] >= array.shape[0]:
            raise ValueError(f"the clustered items name row {rows[-1]} but {path} has {array.shape[0]} rows")
    else:
        rows = read_subset(subset, array.shape[0], ids, store=path)
        description["subset"] = str(Path(subset).expanduser().resolve())
    description["subset_rows"] = int(len(rows))
    return (
        SubsetRows(array, rows),
        None if ids is None else SubsetIds(ids, rows),
        None if labels is None else labels[rows],
        description,
    )


def item_rows(cluster_dir: str | Path) -> np.ndarray | None:
    """The input rows of a clustering's items (``items.npy``, written when it clustered a
    subset), or None when its items are all the input's rows in order."""
    path = Path(cluster_dir) / "items.npy"
    return np.load(path, allow_pickle=False) if path.exists() else None


def open_clustered_input(
    cluster_dir: str | Path, path: str | Path | None = None
) -> tuple[Any, Sequence | None, np.ndarray | None, np.ndarray | None]:
    """The rows a clustering was fitted on: ``(array, ids, labels, rows)`` with ``rows`` the input
    rows of its items (None: all rows). ``path`` overrides the input named in its manifest."""
    manifest = read_json(Path(cluster_dir) / "manifest.json")
    rows = item_rows(cluster_dir)
    array, ids, labels, _ = open_input(path if path is not None else manifest["input"]["path"], rows)
    return array, ids, labels, rows


def to_positions(rows: np.ndarray | None, indices: np.ndarray, where: str) -> np.ndarray:
    """Input rows (as a sample's ``indices.npy`` holds them) -> positions among the clustered
    items; identity without a subset. Raises ``ValueError`` naming ``where`` for a row outside it."""
    if rows is None:
        return indices
    pos = np.searchsorted(rows, indices)
    bad = (pos >= len(rows)) | (rows[np.minimum(pos, len(rows) - 1)] != indices)
    if bad.any():
        raise ValueError(f"{where}: row {indices[bad][0]} is not among the clustered subset's rows")
    return pos.astype(np.int64)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def main_process_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` on rank 0 only (others return None)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs) if dist.is_main_process() else None

    return wrapped
