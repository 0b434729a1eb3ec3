"""Level records: what to build at a level (``LevelSpec``) and what was built (``Level``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.core.atomic import atomic_save_npy
from curate.core.errors import as_int

LEVEL_ARRAYS = ("centroids", "assign", "dist", "offsets", "members")


@dataclass(frozen=True)
class LevelSpec:
    """How to build one level of the hierarchy.

    Attributes:
        k: number of clusters (before splitting, see ``n_splits``).
        resample_steps: resampling-clustering steps ``m`` after the first k-means on the full level
            input; 0 = none. Each step: take the ``sample_size`` members of every cluster closest
            to its centroid, run a fresh k-means (k-means++ init) on that pooled sample, then
            reassign the full level input to the new centroids. So a level runs ``1 + m`` k-means.
        sample_size: ``r``, members drawn per cluster in a resampling step (rule of thumb: half
            the average cluster size of the level).
        n_splits: split every cluster into up to this many sub-clusters by an in-cluster
            k-means (the paper's way to reach ~10M level-1 clusters); 1 = no split. Incompatible
            with resampling at the same level.
    """

    k: int
    resample_steps: int = 0
    sample_size: int = 1
    n_splits: int = 1

    @classmethod
    def of(cls, spec: LevelSpec | dict[str, Any] | Any) -> LevelSpec:
        if isinstance(spec, LevelSpec):
            return spec
        if not isinstance(spec, dict):  # an OmegaConf node or a dataclass
            spec = dict(spec) if hasattr(spec, "keys") else asdict(spec)
        unknown = set(spec) - {"k", "resample_steps", "sample_size", "n_splits"}
        if unknown:
            raise ValueError(f"unknown level keys {sorted(unknown)}; allowed: k, resample_steps, sample_size, n_splits")
        return cls(**{key: as_int(value, key) for key, value in spec.items()})


def validate_levels(specs: Sequence[LevelSpec], n_items: int | None = None) -> None:
    """Check the cross-level rules; raise ``ValueError`` naming the level and field."""
    if len(specs) == 0:
        raise ValueError("levels: at least one level is needed")
    n_input = n_items
    for t, spec in enumerate(specs, start=1):
        where = f"levels[{t - 1}] (level {t})"
        if spec.k < 1:
            raise ValueError(f"{where}: k must be >= 1, got {spec.k}")
        if spec.resample_steps < 0:
            raise ValueError(f"{where}: resample_steps must be >= 0, got {spec.resample_steps}")
        if spec.sample_size < 1:
            raise ValueError(f"{where}: sample_size must be >= 1, got {spec.sample_size}")
        if spec.resample_steps > 0 and spec.sample_size < 2:
            raise ValueError(
                f"{where}: resample_steps={spec.resample_steps} needs sample_size >= 2 "
                "(one point per cluster just reproduces the centroids)"
            )
        if spec.n_splits < 1:
            raise ValueError(f"{where}: n_splits must be >= 1, got {spec.n_splits}")
        if spec.n_splits > 1 and spec.resample_steps > 0:
            raise ValueError(f"{where}: n_splits > 1 cannot be combined with resampling at the same level")
        if t > 1:
            below = specs[t - 2].k * specs[t - 2].n_splits
            if spec.k >= below:
                raise ValueError(
                    f"{where}: k={spec.k} must be smaller than the {below} clusters of level {t - 1} "
                    "(k must decrease from level to level)"
                )
        elif n_input is not None and spec.k > n_input:
            raise ValueError(f"{where}: k={spec.k} exceeds the number of items n={n_input}")


@dataclass
class Level:
    """One built level, in CSR form.

    Attributes:
        centroids: ``(k, d)`` float32.
        assign: ``(n_in,)`` int64 cluster of each input (items at level 1, level-(t-1) clusters above).
        dist: ``(n_in,)`` float32 squared distance of each input to its centroid.
        offsets: ``(k + 1,)`` int64 CSR offsets into ``members``.
        members: ``(n_in,)`` int64 inputs grouped by cluster, each group sorted by ``dist``
            (ties by input id).
        stats: per-level statistics (JSON-serialisable).
    """

    centroids: np.ndarray
    assign: np.ndarray
    dist: np.ndarray
    offsets: np.ndarray
    members: np.ndarray
    stats: dict[str, Any]

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_assignment(
        cls, centroids: np.ndarray, assign: np.ndarray, dist: np.ndarray, stats: dict[str, Any] | None = None
    ) -> Level:
        """Build the CSR and drop empty clusters (renumbering the rest in order)."""
        k = len(centroids)
        counts = np.bincount(assign, minlength=k)
        keep = counts > 0
        stats = dict(stats or {})
        stats["empty_dropped"] = int((~keep).sum())
        if not keep.all():
            renumber = np.cumsum(keep) - 1
            centroids, assign, counts = centroids[keep], renumber[assign], counts[keep]
        members = np.lexsort((np.arange(len(assign)), dist, assign)).astype(np.int64)
        offsets = np.zeros(len(centroids) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(
            centroids=np.ascontiguousarray(centroids, dtype=np.float32),
            assign=assign.astype(np.int64),
            dist=dist.astype(np.float32),
            offsets=offsets,
            members=members,
            stats=stats,
        )

    def save(self, folder: Path) -> None:
        """Write the arrays as ``.npy`` (atomically, one file each)."""
        for name in LEVEL_ARRAYS:
            atomic_save_npy(folder / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, folder: Path, stats: dict[str, Any] | None = None) -> Level:
        missing = [name for name in LEVEL_ARRAYS if not (folder / f"{name}.npy").exists()]
        if missing:
            raise FileNotFoundError(f"{folder}: missing {', '.join(f'{m}.npy' for m in missing)}")
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in LEVEL_ARRAYS}
        return cls(**arrays, stats=dict(stats or {}))
