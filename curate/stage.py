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


def open_input(path: str | Path) -> tuple[Any, Sequence | None, np.ndarray | None, dict[str, Any]]:
    """Open embeddings to cluster without reading them.

    Args:
        path: a ``(N, d)`` ``.npy`` file (a ``labels.npy`` beside it is picked up when its length
            matches) or an embedding store folder (``manifest.json`` + shards).

    Returns:
        ``(array, ids or None, labels or None, description)``; ``array`` is memory-mapped.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if path.is_dir():
        from curate.io.store import load_embeddings, load_labels

        array, ids = load_embeddings(path)
        labels = None
        if (path / "labels.npy").exists():
            labels, _ = load_labels(path)
        return array, ids, labels, {"kind": "store", "path": str(path)}
    array = NpyRows(path)
    labels_path = path.with_name("labels.npy")
    labels = None
    if labels_path.exists() and labels_path != path:
        candidate = np.load(labels_path, mmap_mode="r")
        labels = np.asarray(candidate) if candidate.shape == (array.shape[0],) else None
    return array, None, labels, {"kind": "npy", "path": str(path)}


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
