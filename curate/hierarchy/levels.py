"""Level records: what to build at a level (``LevelConfig`` in a config, ``LevelSpec`` resolved) and what
was built (``Level``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING

from curate.core.atomic import atomic_save_npy
from curate.core.errors import as_int

LEVEL_ARRAYS = ("centroids", "assign", "dist", "offsets", "members")
#: ``k: auto``: ``k = n_input / (2 * sample_size)``, METHOD.md's rule of thumb for ``r`` read backwards
AUTO = "auto"
LEVEL_KEYS = ("k", "resample_steps", "sample_size", "n_splits", "fit_fraction", "fit_max_points")
# the keys added after the first manifests: left out of a record while at their defaults, so a
# clustering (or checkpoint) made before them keeps its identity
_OPTIONAL = {"fit_fraction": 1.0, "fit_max_points": None}


@dataclass
class LevelConfig:
    """The schema of one level record in a cluster config (``cluster.levels[i]``); see :class:`LevelSpec`.

    ``k`` is a count (``1500``), a fraction of the level's input in (0, 1) (``0.1``) or ``auto``.
    """

    k: int | float | str = MISSING
    resample_steps: int = 0
    sample_size: int = 1
    n_splits: int = 1
    fit_fraction: float = 1.0
    fit_max_points: int | None = None


def parse_k(value: Any, where: str = "k") -> int | float | str:
    """A level's ``k`` as given: an int ``>= 1``, a float fraction in (0, 1) or ``"auto"``.

    Raises:
        ValueError: naming ``where`` for anything else (a bool, ``1500.0``, ``1.5``, another string).
    """
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{where}: k must be >= 1, got {value}")
        return int(value)
    if isinstance(value, float | np.floating):
        if not 0.0 < float(value) < 1.0:
            raise ValueError(
                f"{where}: k={value!r}: a fraction of the level's input must be in (0, 1); give a count as an int"
            )
        return float(value)
    if value == AUTO:
        return AUTO
    raise ValueError(f"{where}: k must be an int count, a fraction in (0, 1) or 'auto', got {value!r}")


def round_half_up(x: float) -> int:
    """``x`` rounded to the nearest integer, halves up (``round`` would round 4.5 to 4)."""
    return int(np.floor(x + 0.5))


@dataclass(frozen=True)
class LevelSpec:
    """How to build one level of the hierarchy.

    Attributes:
        k: number of clusters (before splitting, see ``n_splits``): an int; or relative to the
            level's input count ``n`` (the items at level 1, the clusters of the level below
            above it), resolved to an int when ``n`` is known (:meth:`resolve`): a float ``f`` in
            (0, 1) gives ``round(f * n)``; ``"auto"`` gives ``round(n / (2 * sample_size))``, the
            rule of thumb ``r = n / k / 2`` (METHOD.md) read backwards: ``sample_size`` is half the
            average cluster size (it needs ``sample_size >= 2``). The paper's ``r = 10 / 5 / 3``
            at levels 2-4 give its own ratios (10M -> 500k -> 50k -> 10k: 20x, 10x, 5x). A
            resolved relative ``k`` is kept within ``[1, n]`` at level 1 and ``[1, n - 1]`` above
            (an upper level must have fewer clusters than its input).
        resample_steps: resampling-clustering steps ``m`` after the first k-means on the full level
            input; 0 = none. Each step: take the ``sample_size`` members of every cluster closest
            to its centroid, run a fresh k-means (k-means++ init) on that pooled sample, then
            reassign the full level input to the new centroids. So a level runs ``1 + m`` k-means.
        sample_size: ``r``, members drawn per cluster in a resampling step (rule of thumb: half
            the average cluster size of the level).
        n_splits: split every cluster into up to this many sub-clusters by an in-cluster
            k-means (the paper's way to reach ~10M level-1 clusters); 1 = no split. Incompatible
            with resampling at the same level.
        fit_fraction: the level's first k-means fits its Lloyd iterations on a seeded uniform
            subset of ``round(fit_fraction * n)`` input rows, then assigns every row once to the
            fitted centroids (resampling steps and the split then start from that assignment);
            1 = fit on all rows.
        fit_max_points: at most this many rows in that subset (None: no cap).
    """

    k: int | float | str
    resample_steps: int = 0
    sample_size: int = 1
    n_splits: int = 1
    fit_fraction: float = 1.0
    fit_max_points: int | None = None

    @classmethod
    def of(cls, spec: LevelSpec | dict[str, Any] | Any) -> LevelSpec:
        if isinstance(spec, LevelSpec):
            return spec
        if not isinstance(spec, dict):  # an OmegaConf node or a dataclass
            spec = dict(spec) if hasattr(spec, "keys") else asdict(spec)
        unknown = set(spec) - set(LEVEL_KEYS)
        if unknown:
            raise ValueError(f"unknown level keys {sorted(unknown)}; allowed: {', '.join(LEVEL_KEYS)}")
        values: dict[str, Any] = {}
        for key, value in spec.items():
            if key == "k":  # its range is checked by validate_levels, which names the level
                values[key] = int(value) if isinstance(value, np.integer) else value
                if isinstance(value, bool) or not isinstance(value, int | float | str | np.number):
                    parse_k(value)
            elif key == "fit_fraction":
                if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                    raise ValueError(f"fit_fraction must be a number in (0, 1], got {value!r}")
                values[key] = float(value)
            elif key == "fit_max_points" and value is None:
                values[key] = None
            else:
                values[key] = as_int(value, key)
        return cls(**values)

    @property
    def relative(self) -> bool:
        """Whether ``k`` is given relative to the level's input (a fraction or ``auto``)."""
        return not isinstance(self.k, int)

    def record(self) -> dict[str, Any]:
        """The spec as a JSON-able dict; the fit keys only when set (see ``_OPTIONAL``)."""
        out = asdict(self)
        return {key: value for key, value in out.items() if key not in _OPTIONAL or value != _OPTIONAL[key]}

    def resolve(self, n_input: int, cap: int) -> LevelSpec:
        """This spec with ``k`` an int for a level input of ``n_input`` rows (``cap``: the most
        clusters a relative ``k`` may give: ``n_input`` at level 1, ``n_input - 1`` above)."""
        if not self.relative:
            return self
        wanted = self.k * n_input if isinstance(self.k, float) else n_input / (2 * self.sample_size)
        return replace(self, k=max(1, min(round_half_up(wanted), cap)))

    def fit_rows(self, n_input: int) -> int:
        """Rows of the level's input its first k-means fits on (``n_input``: all of them)."""
        m = n_input if self.fit_fraction >= 1.0 else max(1, round_half_up(self.fit_fraction * n_input))
        return m if self.fit_max_points is None else min(m, self.fit_max_points)


def validate_levels(specs: Sequence[LevelSpec], n_items: int | None = None) -> None:
    """Check the cross-level rules; raise ``ValueError`` naming the level and field. With
    ``n_items``, the relative ``k`` are resolved and every level checked against its input
    (:func:`resolve_levels`)."""
    if len(specs) == 0:
        raise ValueError("levels: at least one level is needed")
    for t, spec in enumerate(specs, start=1):
        where = f"levels[{t - 1}] (level {t})"
        parse_k(spec.k, where)
        if spec.resample_steps < 0:
            raise ValueError(f"{where}: resample_steps must be >= 0, got {spec.resample_steps}")
        if spec.sample_size < 1:
            raise ValueError(f"{where}: sample_size must be >= 1, got {spec.sample_size}")
        if spec.resample_steps > 0 and spec.sample_size < 2:
            raise ValueError(
                f"{where}: resample_steps={spec.resample_steps} needs sample_size >= 2 "
                "(one point per cluster just reproduces the centroids)"
            )
        if spec.k == AUTO and spec.sample_size < 2:
            raise ValueError(
                f"{where}: k=auto reads sample_size (k = n / (2 * sample_size), half the average cluster size); "
                f"set sample_size >= 2, got {spec.sample_size}"
            )
        if spec.n_splits < 1:
            raise ValueError(f"{where}: n_splits must be >= 1, got {spec.n_splits}")
        if spec.n_splits > 1 and spec.resample_steps > 0:
            raise ValueError(f"{where}: n_splits > 1 cannot be combined with resampling at the same level")
        if not 0.0 < spec.fit_fraction <= 1.0:
            raise ValueError(f"{where}: fit_fraction must be in (0, 1], got {spec.fit_fraction}")
        if spec.fit_max_points is not None and spec.fit_max_points < 1:
            raise ValueError(f"{where}: fit_max_points must be >= 1 or null, got {spec.fit_max_points}")
        if spec.fit_max_points is not None and not spec.relative and spec.fit_max_points < spec.k:
            raise ValueError(f"{where}: fit_max_points={spec.fit_max_points} leaves fewer rows to fit than k={spec.k}")
        if t > 1 and not spec.relative and not specs[t - 2].relative:
            below = specs[t - 2].k * specs[t - 2].n_splits
            if spec.k >= below:
                raise ValueError(
                    f"{where}: k={spec.k} must be smaller than the {below} clusters of level {t - 1} "
                    "(k must decrease from level to level)"
                )
    if n_items is not None:
        resolve_levels(specs, n_items)


def resolve_level(spec: LevelSpec, t: int, n_input: int) -> LevelSpec:
    """Level ``t``'s spec with an int ``k`` for an input of ``n_input`` rows, checked against it.

    Raises:
        ValueError: naming ``levels[t-1] (level t)``: ``k`` exceeds the items (level 1) or is not
            below the clusters of level ``t - 1``; the fit subset holds fewer rows than ``k``.
    """
    where = f"levels[{t - 1}] (level {t})"
    cap = n_input if t == 1 else n_input - 1
    if spec.relative and cap < 1:
        raise ValueError(f"{where}: k={spec.k} leaves no clusters: level {t - 1} has only {n_input} cluster")
    out = spec.resolve(n_input, cap)
    given = f"k={out.k}" if not spec.relative else f"k={spec.k!r} (= {out.k})"
    if t == 1 and out.k > n_input:
        raise ValueError(f"{where}: {given} exceeds the number of items n={n_input}")
    if t > 1 and out.k >= n_input:
        raise ValueError(
            f"{where}: {given} must be smaller than the {n_input} clusters of level {t - 1} "
            "(k must decrease from level to level)"
        )
    rows = out.fit_rows(n_input)
    if rows < out.k:
        raise ValueError(
            f"{where}: fit_fraction={spec.fit_fraction}, fit_max_points={spec.fit_max_points} leave {rows} of "
            f"{n_input} rows to fit, fewer than {given}"
        )
    return out


def resolve_levels(specs: Sequence[LevelSpec], n_items: int) -> list[LevelSpec]:
    """Every level's spec with an int ``k`` for ``n_items`` items, as far as it can be known before
    fitting: level ``t > 1`` is taken to get all ``k * n_splits`` clusters of level ``t - 1`` (a fit
    resolves again against the clusters actually kept, :func:`resolve_level`).

    Raises:
        ValueError: as :func:`resolve_level`, for the first level that does not fit.
    """
    out: list[LevelSpec] = []
    n_input = int(n_items)
    for t, spec in enumerate(specs, start=1):
        out.append(resolve_level(spec, t, n_input))
        n_input = out[-1].k * out[-1].n_splits
    return out


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
