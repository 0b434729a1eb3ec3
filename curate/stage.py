"""Shared plumbing of the stage apps: clean errors, guarded output folders, identified inputs."""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from curate.core import dist
from curate.core.errors import IdentityError, InputError, UnsafeOutputError, check_component, resolve, run_guarded
from curate.core.guard import check_disjoint, output_lock, remove_stray_tmp
from curate.core.settings import check_settings
from curate.io.identity import check_identity, input_identity, verify_files
from curate.io.jsonfile import read_json
from curate.io.shards import NpyRows

log = logging.getLogger(__name__)


def run_stage(body: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a Hydra stage body in :func:`curate.core.errors.run_guarded`: a user-facing failure ends the
    program with one ``error: <message>`` line (exit code 2), a bug keeps its traceback. The
    config's declared keys and bounds are checked first (:func:`curate.core.settings.check_settings`)."""
    run_guarded(check_settings, cfg, hydra=True)
    return run_guarded(body, cfg, hydra=True)


@contextlib.contextmanager
def guarded_output(out: Path, inputs: Mapping[str, Any], out_key: str) -> Iterator[None]:
    """The block owns the output folder ``out``: it overlaps no input (refused otherwise), this
    run holds its lock (another one is refused, naming the holder), and temporary files a killed
    run left there are removed first."""
    check_disjoint(out, inputs, out_key)
    with output_lock(out):
        if dist.is_main_process():
            remove_stray_tmp(out)
        dist.barrier()
        yield


class RunDirCheck(Callback):
    """Hydra callback: a run folder (``hydra.run.dir``, e.g. ``${out_dir}/cluster/${name}``) that
    is, contains or lies inside one of the ``inputs`` (config keys) is refused when the run starts,
    before Hydra creates it and writes ``.hydra/`` into it. The stage checks it again under its
    lock (:func:`guarded_output`), also for each job of a sweep.

    Args:
        inputs: config keys of the stage's input paths (unset ones are skipped).
        out_key: how the message names the run folder.
    """

    def __init__(self, inputs: Sequence[str] = (), out_key: str = "hydra.run.dir") -> None:
        self.inputs, self.out_key = tuple(inputs), out_key

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        paths = {key: OmegaConf.select(config, key) for key in self.inputs}
        # Hydra turns a callback's exception into a warning and goes on: the error line and the exit
        # are ours (run_guarded), and a traceback the user asked for is printed before exiting
        try:
            run_guarded(check_disjoint, config.hydra.run.dir, paths, self.out_key, hydra=True)
        except UnsafeOutputError:
            traceback.print_exc()
            raise SystemExit(1) from None


def stage_name(cfg: DictConfig) -> str:
    """``cfg.name``, which names a folder under ``out_dir``: a single path component."""
    return check_component("name", cfg.name)


def output_dir() -> Path:
    """The folder Hydra assigned to this run (named from the config, never the clock)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def open_input(
    path: str | Path,
    subset: str | Path | np.ndarray | None = None,
    column: str = "embedding",
    id_column: str | None = "id",
) -> tuple[Any, Sequence | None, np.ndarray | None, dict[str, Any]]:
    """Open embeddings to cluster without reading them.

    Args:
        path: a ``(N, d)`` ``.npy`` file (a ``labels.npy`` beside it is picked up when its length
            matches), an embedding store folder (``manifest.json`` + shards) or a ``.parquet``
            table (rows from its ``column``, ids from its ``id_column``; read by row groups).
        subset: only these rows: a dedup output folder, a ``.npy`` of row indices, a text file
            of ids (see :func:`curate.data.selection.read_subset`), or the ``(m,)`` rows themselves.

    Returns:
        ``(array, ids or None, labels or None, description)``; ``array`` is memory-mapped (a
        :class:`~curate.data.selection.SubsetRows` view with a subset; its ``rows`` are store rows).
    """
    path = resolve(path, "input.path")
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    description: dict[str, Any]
    if path.is_dir() and not (path / "manifest.json").exists() and (path / "level1").is_dir():
        raise InputError(f"{path} is a clustering, not embeddings: give the .npy or store it was made from")
    if path.is_dir():
        from curate.io.store import load_embeddings, load_labels

        array, ids = load_embeddings(path)
        labels = None
        if (path / "labels.npy").exists():
            labels, _ = load_labels(path)
        description = {"kind": "store", "path": str(path)}
    elif path.suffix == ".parquet":
        from curate.io.parquet import open_parquet_embeddings

        (array, ids), labels = open_parquet_embeddings(path, column, id_column), None
        description = {"kind": "parquet", "path": str(path), "column": column, "id_column": id_column}
    else:
        array, ids = NpyRows(path), None
        labels_path = path.with_name("labels.npy")
        labels = None
        if labels_path.exists() and labels_path != path:
            candidate = np.load(labels_path, mmap_mode="r", allow_pickle=False)
            labels = np.asarray(candidate) if candidate.shape == (array.shape[0],) else None
            if labels is not None:
                labels = check_labels(labels, labels_path)
        description = {"kind": "npy", "path": str(path)}
    description["identity"] = input_identity(path, array)
    if subset is None:
        return array, ids, labels, description
    from curate.data.selection import SubsetIds, SubsetRows, read_subset

    if isinstance(subset, np.ndarray):
        rows = subset
        if len(rows) and rows[-1] >= array.shape[0]:
            raise ValueError(f"the clustered items name row {rows[-1]} but {path} has {array.shape[0]} rows")
    else:
        rows = read_subset(subset, array.shape[0], ids, store=path)
        description["subset"] = str(resolve(subset, "input.subset"))
        subset_file = Path(description["subset"])
        subset_file = subset_file / "kept_indices.npy" if subset_file.is_dir() else subset_file
        description["subset_identity"] = input_identity(subset_file, rows=False)
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


def read_clustering_manifest(cluster_dir: str | Path) -> dict[str, Any]:
    """A finished clustering's manifest, after checking the files it vouches for.

    Raises:
        FileNotFoundError: no ``manifest.json`` (no finished clustering there).
        InputError: the folder is not a clustering (a store, say), or the manifest is not an object.
        IdentityError: a file it vouches for is missing or changed.
    """
    from curate.hierarchy.model import read_manifest

    cluster_dir = Path(cluster_dir)
    path = cluster_dir / "manifest.json"
    manifest = read_manifest(cluster_dir)
    if "files" in manifest:
        problems = verify_files(cluster_dir, manifest["files"])
        if problems:
            raise IdentityError(
                f"clustering {cluster_dir} is damaged: {'; '.join(problems[:3])}; re-run the cluster stage ({path})"
            )
    return manifest


def open_clustered_input(
    cluster_dir: str | Path, path: str | Path | None = None
) -> tuple[Any, Sequence | None, np.ndarray | None, np.ndarray | None]:
    """The rows a clustering was fitted on: ``(array, ids, labels, rows)`` with ``rows`` the input
    rows of its items (None: all rows). ``path`` overrides the input named in its manifest.

    The input's identity (path, size, modification time, a few rows) must be the one recorded in
    the clustering's manifest: rows of a replaced input are never used.
    """
    manifest = read_clustering_manifest(cluster_dir)
    rows = item_rows(cluster_dir)
    recorded = manifest.get("input") or {}
    if path is None and not recorded.get("path"):
        raise InputError(f"the manifest of {cluster_dir} names no input ({Path(cluster_dir) / 'manifest.json'})")
    columns = {key: recorded[key] for key in ("column", "id_column") if key in recorded}  # a parquet input
    array, ids, labels, source = open_input(path if path is not None else recorded["path"], rows, **columns)
    if "identity" in recorded:
        check_identity(
            recorded["identity"],
            source["identity"],
            f"the clustering {cluster_dir}",
            "re-run the cluster stage on the current input, or restore the original",
        )
    if array.shape[0] != manifest.get("n_items", array.shape[0]):
        raise IdentityError(
            f"input {source['path']} gives {array.shape[0]} items, the clustering {cluster_dir} has "
            f"{manifest.get('n_items')}; re-run the cluster stage on it"
        )
    return array, ids, labels, rows


def check_sample_of(sample: str | Path, cluster_dir: str | Path) -> None:
    """A sample folder whose ``stats.json`` names its clustering (``curate.sample`` records it) must
    name this one, unchanged since (the manifest's hash); samples without the record pass."""
    from curate.io.identity import file_sha256

    stats_path = Path(sample) / "stats.json"
    if not Path(sample).is_dir() or not stats_path.exists():
        return
    record = read_json(stats_path).get("clustering")
    if not isinstance(record, dict):
        return
    same_dir = record.get("path") == str(Path(cluster_dir).resolve())
    if not same_dir or record.get("manifest_sha256") != file_sha256(Path(cluster_dir) / "manifest.json"):
        raise IdentityError(
            f"sample {sample} was drawn from the clustering {record.get('path')}, not from {cluster_dir} as it is "
            f"now; draw the sample again ({stats_path})"
        )


def check_selection(selection: str | Path | None, key: str = "data.selection") -> None:
    """A selection drawn by ``curate.sample`` (its ``stats.json`` names the clustering) must still
    match what it was drawn from: the clustering unchanged since the draw (:func:`check_sample_of`)
    and the clustering's input unchanged since it was clustered (:func:`open_clustered_input`).
    Other selections (a dedup folder, an ids file, an ``.npy`` of positions) pass.

    Raises:
        IdentityError: the clustering or its input changed, or the clustering is gone; names ``key``.
    """
    if selection is None:
        return
    path = Path(selection).expanduser()
    folder = path if path.is_dir() else path.parent
    stats_path = folder / "stats.json"
    if not stats_path.is_file():
        return
    record = read_json(stats_path).get("clustering")
    if not isinstance(record, dict) or not record.get("path"):
        return
    cluster_dir = Path(record["path"])
    try:
        if not (cluster_dir / "manifest.json").is_file():
            raise IdentityError(
                f"the sample was drawn from the clustering {cluster_dir}, which is gone; restore it or draw the "
                f"sample again ({stats_path})"
            )
        check_sample_of(folder, cluster_dir)
        open_clustered_input(cluster_dir)
    except IdentityError as err:
        raise IdentityError(f"{key}={selection}: {err}") from None


def check_labels(labels: np.ndarray, where: Any) -> np.ndarray:
    """``(N,)`` labels as int64: integer, non-negative; float or negative labels are refused."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape} ({where})")
    if labels.size and labels.min() < 0:
        raise InputError(f"labels must be >= 0, got {int(labels.min())} ({where})")
    return labels.astype(np.int64, copy=False)


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
