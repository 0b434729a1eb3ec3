"""What a curation produced, loaded once: hierarchy, input, labels, sample, baseline, item contents.

The report and ``curate.inspect`` read clusterings and samples through these loaders; stores are
opened through :mod:`curate.io.store` and :func:`curate.stage.open_input`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.sampling import random_rows

__all__ = [
    "ReportData",
    "load_images",
    "load_report_data",
    "load_texts",
    "read_label_file",
    "read_sample_indices",
]


@dataclass
class ReportData:
    """What a curation produced, loaded once (the report and ``curate.inspect`` show it).

    Attributes:
        cluster_dir: the clustering folder.
        manifest: its ``manifest.json``.
        levels: the hierarchy's levels (finest first).
        input_path: the clustered embeddings (store folder or ``.npy``), or None when unknown.
        array: ``(N, d)`` embeddings (memory-mapped) or None.
        ids: item ids (store) or None.
        labels: ``(N,)`` labels or None; ``label_names`` their names.
        source: the store's source description (``{"kind": "wordnet", ...}``) or None.
        sample: ``(m,)`` curated item ids (None: no sample); ``sample_origin`` says where they come from.
        random: ``(m,)`` uniform random item ids of the same size (the baseline), or None.
        item_clusters: per level, ``(N,)`` cluster id of every item.
    """

    cluster_dir: Path
    manifest: dict[str, Any]
    levels: list[Any]
    input_path: Path | None
    array: Any
    ids: Sequence | None
    labels: np.ndarray | None
    label_names: list[str] | None
    source: dict[str, Any] | None
    sample: np.ndarray | None
    sample_origin: str
    random: np.ndarray | None
    item_clusters: list[np.ndarray] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return int(len(self.levels[0].assign))


def read_sample_indices(path: str | os.PathLike) -> tuple[np.ndarray, str, list[str]]:
    """The sampled item ids in a sample-stage folder, or in an ``indices.npy`` file.

    A folder holds ``indices.npy`` (one budget) or one ``n<size>/indices.npy`` per budget (the first
    is taken; a note says so).

    Returns:
        ``((m,) int64 ids as written (input rows), the file read, notes)``.

    Raises:
        FileNotFoundError: no ``indices.npy`` there.
        ValueError: not a 1-D integer array.
    """
    path = Path(path)
    notes: list[str] = []
    file = path / "indices.npy" if path.is_dir() else path
    if path.is_dir() and not file.exists():
        subs = sorted(path.glob("*/indices.npy"))
        if subs:
            file = subs[0]
            if len(subs) > 1:
                notes.append(f"{path} holds {len(subs)} budgets; shown: {file.parent.name}.")
    if not file.exists():
        raise FileNotFoundError(f"no indices.npy in {path} nor in its sub-folders (sample= takes a sample folder)")
    indices = np.load(file, allow_pickle=False)
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise ValueError(f"{file}: indices must be a 1-D integer array, got {indices.dtype} {indices.shape}")
    return indices.astype(np.int64), str(file), notes


def read_label_file(path: str | os.PathLike, n_rows: int | None = None) -> tuple[np.ndarray, list[str] | None]:
    """``(N,)`` int64 labels of an input: a ``.npy`` file, or a store folder's labels.

    Args:
        path: a ``(N,)`` integer ``.npy`` (e.g. the toy's true modes) or an embedding store.
        n_rows: the input's row count to check against (None: not checked).

    Returns:
        ``(labels, label names or None)``.

    Raises:
        FileNotFoundError: missing file, or a store without labels.
        ValueError: wrong length, not integer, or negative labels.
    """
    path = Path(path)
    if path.is_dir():
        from curate.io.store import load_labels

        labels, names = load_labels(path)
    elif not path.exists():
        raise FileNotFoundError(f"{path} not found: labels= takes a (N,) integer .npy file or a store")
    else:
        labels, names = np.load(path, allow_pickle=False), None
    if labels.ndim != 1 or (n_rows is not None and len(labels) != n_rows):
        raise ValueError(f"{path}: expected shape ({n_rows},) (one label per input row), got {labels.shape}")
    if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise ValueError(f"{path}: labels must be non-negative integers, got dtype {labels.dtype}")
    return labels.astype(np.int64), names


def _store_source(path: Path) -> dict[str, Any] | None:
    """The store manifest's source description (``{"kind": "wordnet", ...}``), or None."""
    from curate.io.store import read_manifest

    manifest = read_manifest(path)
    return manifest.get("source") or (manifest.get("meta") or {}).get("source")


def _input_path(manifest: dict[str, Any], input_path: str | os.PathLike | None, notes: list[str]) -> Path | None:
    """The clustered input: ``input_path``, else the one the manifest names while it still exists."""
    if input_path is not None:
        return Path(input_path)
    named = manifest.get("input", {}).get("path")
    if not named:
        notes.append("The clustering's manifest names no input: no examples, labels or scatter (pass input=).")
        return None
    if not Path(named).exists():  # moved or deleted since clustering: report the clusters alone
        notes.append(f"The clustered input {named} is gone: no examples, labels or scatter (pass input=).")
        return None
    return Path(named)


def _draw_or_read_sample(
    levels: list[Any], rows: np.ndarray | None, sample_dir: Any, target: Any, seed: int, notes: list[str]
) -> tuple[np.ndarray | None, str]:
    """The curated sample as item positions: read from ``sample_dir``, drawn (``target``), or None."""
    from curate.sampling import hierarchical_sample
    from curate.stage import to_positions

    n_items = int(len(levels[0].assign))
    if sample_dir is not None:
        sample, origin, more = read_sample_indices(sample_dir)
        sample = to_positions(rows, sample, origin)
        notes.extend(more)
    elif target is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = hierarchical_sample(levels, target, strategy="random", seed=seed).indices
        origin = f"drawn by the report: hierarchical sample, target {target}, random leaf selection, seed {seed}"
    else:
        return None, "none"
    if sample.size and (sample.min() < 0 or sample.max() >= n_items):
        raise ValueError(f"sample ({origin}) holds item ids outside [0, {n_items})")
    return sample, origin


def load_report_data(
    cluster_dir: str | os.PathLike,
    sample_dir: str | os.PathLike | None = None,
    input_path: str | os.PathLike | None = None,
    target: int | float | None = 0.1,
    seed: int = 0,
    labels_path: str | os.PathLike | None = None,
) -> ReportData:
    """Load the hierarchy, its input, labels, the curated sample and a random baseline.

    Args:
        cluster_dir: a clustering folder (``manifest.json`` + ``level<t>/``).
        sample_dir: a sample-stage folder (``indices.npy``); None: draw a hierarchical sample of
            ``target`` items here (the report says so), or no sample when ``target`` is None.
        input_path: the clustered embeddings, when the manifest does not name them (or to override).
        target: sample size (count or fraction) when ``sample_dir`` is None.
        seed: seed of the drawn sample and of the random baseline.
        labels_path: labels of the input rows (:func:`read_label_file`) instead of the input's own.

    Raises:
        FileNotFoundError: no clustering, sample or input where named.
        ValueError: the input or the sample does not fit the hierarchy (the message names the file).
    """
    from curate.hierarchy import HierarchicalKMeans, item_clusters
    from curate.io.identity import check_identity
    from curate.stage import check_sample_of, item_rows, open_input, read_clustering_manifest

    cluster_dir = Path(cluster_dir)
    manifest = read_clustering_manifest(cluster_dir)  # a clustering, with the files it vouches for
    model = HierarchicalKMeans.load(cluster_dir)
    notes: list[str] = []
    path = _input_path(manifest, input_path, notes)
    rows = item_rows(cluster_dir)  # the clustering saw a subset of the input: map rows to items
    array = ids = labels = names = source = None
    if path is not None:
        array, ids, labels, described = open_input(path, rows)
        recorded = (manifest.get("input") or {}).get("identity")
        if recorded is not None and input_path is None:  # the rows the clustering saw, not a replaced file
            fresh = "re-run the cluster stage on it, or pass the original as input="
            check_identity(recorded, described["identity"], f"the clustering {cluster_dir}", fresh)
        if array.shape[0] != model.n_items_:
            raise ValueError(
                f"input {path}: {array.shape[0]} rows, the clustering in {cluster_dir} has {model.n_items_}"
            )
        if path.is_dir():
            source = _store_source(path)
            if labels is not None:
                labels, names = read_label_file(path)
                labels = labels if rows is None else labels[rows]
    if labels_path is not None:
        labels, names = read_label_file(labels_path, model.n_items_ if rows is None else None)
        if rows is not None:
            if len(labels) <= rows[-1]:
                raise ValueError(f"{labels_path}: {len(labels)} labels, the clustered subset names row {rows[-1]}")
            labels = labels[rows]
    if sample_dir is not None:
        check_sample_of(sample_dir, cluster_dir)
    sample, origin = _draw_or_read_sample(model.levels_, rows, sample_dir, target, seed, notes)
    return ReportData(
        cluster_dir=cluster_dir,
        manifest=manifest,
        levels=model.levels_,
        input_path=path,
        array=array,
        ids=ids,
        labels=labels,
        label_names=names,
        source=source,
        sample=sample,
        sample_origin=origin,
        random=None if sample is None else random_rows(model.n_items_, len(sample), seed),
        item_clusters=item_clusters(model.levels_),
        notes=notes,
    )


def load_images(source: dict[str, Any], ids: Sequence) -> list[Any]:
    """PIL images of store items ``ids`` for the image sources the embed stage knows.

    Args:
        source: the store manifest's ``source`` (``kind`` ``fashion_mnist``, ``image_folder`` or
            ``image_list``).
        ids: the items' store ids (Fashion-MNIST indices, or file paths relative to ``root``).

    Returns:
        One ``PIL.Image`` per id (None where a file cannot be read).
    """
    from PIL import Image

    kind = source.get("kind")
    if kind == "fashion_mnist":
        from curate.data.datasets.fashion_mnist import load_fashion_mnist

        images, _ = load_fashion_mnist(source.get("split", "train"))
        return [Image.fromarray(images[int(i)], mode="L") for i in ids]
    root = Path(source.get("root") or "/")
    out = []
    for i in ids:
        path = Path(str(i))
        try:
            with Image.open(path if path.is_absolute() else root / path) as image:
                out.append(image.convert("RGB").copy())
        except OSError:
            out.append(None)
    return out


def load_texts(source: dict[str, Any], ids: Sequence) -> list[str | None]:
    """Texts of store items ``ids`` for the text sources the embed stage knows.

    ``wordnet``: the gloss of synset id ``n00001740`` (:func:`curate.data.datasets.wordnet.load_wordnet`);
    ``text_lines``: the line with that 0-based number; ``jsonl``: the record's text field (ids are
    line numbers or the ``id_field`` value). None where an id is not found.
    """
    kind = source.get("kind")
    if kind == "wordnet":
        from curate.data.datasets.wordnet import load_wordnet

        wn = load_wordnet(source.get("pos") or None, with_lemmas=bool(source.get("with_lemmas")))
        lookup = dict(zip(wn.ids, wn.texts))
        return [lookup.get(str(i)) for i in ids]
    if kind == "text_lines":
        from curate.data.sources import read_lines  # the embed stage's records: ids are its line numbers

        lines = read_lines(Path(source["path"]))
        return [lines[int(i)] if 0 <= int(i) < len(lines) else None for i in ids]
    if kind == "jsonl":
        wanted = {str(i) for i in ids}
        found: dict[str, str] = {}
        id_field, text_field = source.get("id_field"), source.get("field", "text")
        with open(source["path"], encoding="utf-8") as f:
            for number, line in enumerate(f):  # one pass over the file, stops once all are found
                if not line.strip():
                    continue
                if id_field is None and str(number) not in wanted:
                    continue
                record = json.loads(line)
                key = str(record.get(id_field)) if id_field is not None else str(number)
                if key in wanted:
                    found[key] = str(record.get(text_field))
                if len(found) == len(wanted):
                    break
        return [found.get(str(i)) for i in ids]
    return [None for _ in ids]
