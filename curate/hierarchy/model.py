"""``HierarchicalKMeans``: bottom-up hierarchical k-means with resampling (METHOD.md section 1).

Level 1 clusters the items; level ``t > 1`` clusters the centroids of level ``t - 1``. At each
level: one k-means on the full level input, then ``resample_steps`` resampling-clustering steps
(sample the ``sample_size`` members of every cluster closest to its centroid, fresh k-means++ on
that pooled sample, reassign the full level input). Optionally level 1 splits every cluster into
``n_splits`` sub-clusters.

A level's ``k`` may be relative to its input (a fraction, or ``auto``: :class:`LevelSpec`); the fit
resolves it against the rows the level actually gets (``resolved_``, the manifest's ``spec``). With
``fit_fraction`` / ``fit_max_points`` the level's first k-means runs its Lloyd iterations on a
seeded subset of the level input and then assigns every row once; what follows (resampling, the
split) starts from that assignment of all rows.

Distributed: level 1 runs on the sharded items with the distributed k-means engine (each rank
its shard); its assignments are then gathered so every rank holds the level's CSR. An upper
level whose input (the previous level's centroids, held by every rank) has at least
``shard_min_rows`` rows per rank runs the same way on row blocks of it, so extra GPUs speed it
up too; smaller ones run replicated (the same computation on every rank, no communication).
Either way the hierarchy for N ranks equals the one for a single process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import curate
from curate.core import dist
from curate.core.atomic import atomic_path, atomic_write_json
from curate.core.errors import IdentityError, InputError
from curate.hierarchy.levels import LEVEL_ARRAYS, Level, LevelSpec, resolve_level, validate_levels
from curate.hierarchy.split import split_clusters, split_clusters_regrouped
from curate.io.identity import sharded_rows_digest, vouch
from curate.io.jsonfile import read_json
from curate.io.shards import rank_rows
from curate.kmeans import KMeans, RowSource
from curate.kmeans.device import matmul_precision, resolve_memory_mb
from curate.kmeans.kernels import chunk_rows_for
from curate.kmeans.shard import LocalRows
from curate.kmeans.source import ArrayLike
from curate.sampling import hierarchical_sample

log = logging.getLogger(__name__)

RESAMPLE_STRATEGIES = ("closest", "random")
FORMAT_VERSION = 1
FIT_SUBSET_STREAM = 2_000_000  # the seed stream of a level's fit subset (resampling steps: 1..m, split: 1e6)


def resample_members(level: Level, sample_size: int, strategy: str, rng: np.random.Generator) -> np.ndarray:
    """The pooled resampling sample: ``sample_size`` members of every cluster.

    ``closest``: the members nearest to the centroid (the head of each CSR segment);
    ``random``: uniform without replacement inside each cluster. Clusters smaller than
    ``sample_size`` give all their members.

    Returns:
        ``(m,)`` int64 sorted input indices.
    """
    sizes = level.sizes
    if strategy == "closest":
        pos = level.offsets[:-1, None] + np.arange(sample_size)[None, :]
        picked = level.members[pos[np.arange(sample_size)[None, :] < sizes[:, None]]]
    elif strategy == "random":
        order = np.lexsort((rng.random(len(level.assign)), level.assign))
        rank = np.arange(len(order)) - level.offsets[level.assign[order]]
        picked = order[rank < sample_size]
    else:
        raise ValueError(f"resample_strategy must be one of {RESAMPLE_STRATEGIES}, got {strategy!r}")
    return np.sort(picked).astype(np.int64)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of a hierarchy written by :meth:`HierarchicalKMeans.save`.

    Raises:
        FileNotFoundError: there is none (no finished clustering in ``folder``).
        InputError: it is not a JSON object, or not a clustering's (a store's, say).
    """
    path = Path(folder) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: no finished clustering in {folder}")
    manifest = read_json(path)
    if "levels" not in manifest or "config" not in manifest:
        raise InputError(f"{folder} is not a clustering (its manifest.json has no levels) ({path})")
    return manifest


class HierarchicalKMeans:
    """Hierarchical k-means with resampling.

    Example:
        >>> levels = [dict(k=3000, resample_steps=10, sample_size=2), dict(k=1000, resample_steps=10,
        ...           sample_size=2), dict(k=300, resample_steps=10, sample_size=2)]
        >>> hkm = HierarchicalKMeans(levels, n_iter=50, seed=0).fit(x)          # x: (N, d)
        >>> hkm.levels_[0].centroids, hkm.levels_[0].offsets, hkm.levels_[0].members
        >>> idx = hkm.sample(target=1000, strategy="random", seed=0)            # (1000,) int64

    Args:
        levels: level records ``{k, resample_steps, sample_size, n_splits}`` (dicts or
            :class:`LevelSpec`), finest first.
        n_iter: Lloyd iterations of every k-means (and of the in-cluster split).
        seed: seeds every k-means (each level and step gets its own derived seed).
        device, distance, memory_budget_mb, init_max_points: passed to :class:`KMeans`.
        init: initialisation of the first k-means of each level (resampling steps always use
            k-means++, as the method prescribes).
        resample_strategy: ``"closest"`` (the method) or ``"random"`` members per cluster.
        checkpoint_dir: resume folder: completed levels, completed resampling steps and k-means
            iterations are kept there; a fit with the same settings resumes from it.
        shard_min_rows: an upper level runs sharded over the ranks when its input has at least
            this many rows per rank, replicated otherwise (the result is the same).
        split_memory_mb: device memory for the sub-centroids and float64 sums of the level-1
            split; more clusters are split in batches (the result is the same).
        on_iteration: called after every Lloyd iteration of every k-means run with its stats
            record plus ``level`` and ``run`` (0: the full run, ``m``: resampling step ``m``).
        init_cache_mb: passed to :class:`KMeans` (k-means++ of a streamed shard in memory).
        allow_tf32: TF32 float32 matmuls on CUDA, for every k-means and the split alike.
        split_regroup: distributed level-1 split: regroup the rows by cluster across ranks once
            (all-to-all) and split each rank's clusters alone, with no communication per
            iteration (the prepared rows are then held in host memory); False: every rank splits
            its own rows and the slot sums are all-reduced every iteration. Same result.
    """

    def __init__(
        self,
        levels: Sequence[LevelSpec | dict[str, Any]],
        n_iter: int = 50,
        seed: int = 0,
        device: str = "cpu",
        distance: str = "l2",
        init: str = "k-means++",
        resample_strategy: str = "closest",
        memory_budget_mb: float | None = None,
        init_max_points: int | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 10,
        shard_min_rows: int = 65536,
        split_memory_mb: float = 4096.0,
        on_iteration: Callable[[dict[str, Any]], None] | None = None,
        init_cache_mb: float = 0.0,
        allow_tf32: bool = True,
        split_regroup: bool = True,
    ) -> None:
        self.specs = [LevelSpec.of(spec) for spec in levels]
        validate_levels(self.specs)
        if resample_strategy not in RESAMPLE_STRATEGIES:
            raise ValueError(f"resample_strategy must be one of {RESAMPLE_STRATEGIES}, got {resample_strategy!r}")
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        self.n_iter, self.seed, self.device = int(n_iter), int(seed), device
        self.distance, self.init, self.resample_strategy = distance, init, resample_strategy
        self.memory_budget_mb, _ = resolve_memory_mb(device, memory_budget_mb, 0.0)
        self.init_max_points = init_max_points
        self.allow_tf32 = bool(allow_tf32)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self.shard_min_rows = int(shard_min_rows)
        self.split_memory_mb = float(split_memory_mb)
        self.on_iteration = on_iteration
        self.init_cache_mb = float(init_cache_mb)
        self.split_regroup = bool(split_regroup)
        self._sharded: set[int] = set()  # the levels of this fit that run sharded
        self.levels_: list[Level] = []
        self.resolved_: list[LevelSpec] = []  # the specs as built: every k an int (a relative k resolved)
        self.n_items_: int = 0
        self.dim_: int = 0
        # validates device / distance / init the same way the engine does
        self._kmeans(self.specs[0].k if not self.specs[0].relative else 1, seed=0)

    # -- configuration ------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "levels": [spec.record() for spec in self.specs],
            "n_iter": self.n_iter,
            "seed": self.seed,
            "distance": self.distance,
            "init": self.init,
            "resample_strategy": self.resample_strategy,
            "init_max_points": self.init_max_points,
        }

    def _seed(self, level: int, step: int) -> int:
        return int(np.random.SeedSequence([self.seed, level, step]).generate_state(1)[0])

    def _kmeans(
        self,
        k: int,
        seed: int,
        init: str | None = None,
        checkpoint_dir: Path | None = None,
        run: tuple[int, int] | None = None,
    ) -> KMeans:
        hook = None
        if self.on_iteration is not None and run is not None:
            level, step = run
            hook = lambda stats: self.on_iteration({"level": level, "run": step, **stats})  # noqa: E731
        return KMeans(
            on_iteration=hook,
            init_cache_mb=self.init_cache_mb,
            k=k,
            n_iter=self.n_iter,
            init=init or self.init,
            distance=self.distance,
            seed=seed,
            device=self.device,
            memory_budget_mb=self.memory_budget_mb,
            init_max_points=self.init_max_points,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=self.checkpoint_every,
            allow_tf32=self.allow_tf32,
        )

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, x: ArrayLike, stop_after_level: int | None = None) -> HierarchicalKMeans:
        """Build every level from ``x: (N, d)`` (this rank's shard when distributed).

        ``stop_after_level=t`` builds levels ``1..t`` only (one job per level on a cluster: with
        a ``checkpoint_dir``, a later fit resumes from them).
        """
        source = RowSource(x)
        n_items = int(dist.all_reduce_sum_(torch.tensor([source.n], dtype=torch.int64)))
        if n_items == 0:
            raise ValueError(f"{source.name}: no rows to cluster (n = 0)")
        validate_levels(self.specs, n_items)
        self.n_items_, self.dim_ = n_items, source.d
        self._check_checkpoint_config(n_items, source.d, source)
        self.levels_, self.resolved_ = [], []
        level_input: ArrayLike = source
        for t, given in enumerate(self.specs[:stop_after_level], start=1):
            # a relative k against the level's actual input: the items, or the clusters level t - 1 kept
            spec = resolve_level(given, t, n_items if t == 1 else self.levels_[-1].k)
            self.resolved_.append(spec)
            world = dist.get_world_size()
            sharded = t == 1 or (world > 1 and level_input.shape[0] >= self.shard_min_rows * world)
            if sharded:
                self._sharded.add(t)
            level = self._load_level_checkpoint(t)
            if level is None:
                x_t = level_input
                if t > 1 and sharded:  # every rank holds the whole input: each takes a row block
                    x_t = rank_rows(level_input, dist.get_rank(), dist.get_world_size())
                with contextlib.nullcontext() if sharded else dist.local_only():
                    level = self._build_level(t, spec, x_t, sharded)
                self._save_level_checkpoint(t, level)
            self.levels_.append(level)
            level_input = level.centroids
        return self

    def _gather(self, t: torch.Tensor, sharded: bool) -> np.ndarray:
        return (dist.all_gather_rows(t) if sharded else t).numpy()

    def _build_level(self, t: int, spec: LevelSpec, x: ArrayLike, sharded: bool) -> Level:
        started = time.perf_counter()
        stats: dict[str, Any] = {"level": t, "k_requested": spec.k * spec.n_splits, "inertia": []}
        n_rows = self.levels_[t - 2].k if t > 1 and len(self.levels_) >= t - 1 else self.n_items_
        log.info("level %d of %d: k-means with k=%d on %d rows", t, len(self.specs), spec.k, n_rows)
        km = self._kmeans(spec.k, self._seed(t, 0), checkpoint_dir=self._run_dir(t, 0), run=(t, 0))
        fit_rows = spec.fit_rows(n_rows)
        if fit_rows < n_rows:  # Lloyd on a seeded subset, then every row assigned once
            log.info("level %d: fitting on %d of the %d rows (fit_fraction / fit_max_points)", t, fit_rows, n_rows)
            km.fit(self._fit_subset(x, n_rows, fit_rows, self._seed(t, FIT_SUBSET_STREAM), sharded))
            local_labels, local_sq = km.assign(x)
            stats.update(fit_rows=fit_rows, fit_inertia=km.inertia)  # fit_inertia: of the subset
        else:
            km.fit(x)
            local_labels, local_sq = km.labels_, km.sq_dist_
        centroids = km.centroids.cpu().numpy()
        labels, sq = self._gather(local_labels, sharded), self._gather(local_sq, sharded)
        # the objective over every row of the level (a subset fit's gathered distances: the same sum on any world size)
        stats["inertia"].append(km.inertia if fit_rows == n_rows else float(sq.sum(dtype=np.float64)))
        stats["empty_reseeded"] = sum(s["empty_reseeded"] for s in km.stats)
        if spec.n_splits > 1:
            log.info("level %d: splitting each of %d clusters into %d", t, spec.k, spec.n_splits)
            centroids, labels, sq, split_stats = self._split(spec, x, local_labels, labels, sharded, t)
            stats["split"] = split_stats
        for step in range(1, spec.resample_steps + 1):
            log.info("level %d: resampling step %d of %d", t, step, spec.resample_steps)
            centroids, labels, sq, inertia = self._resample_step(t, step, spec, x, centroids, labels, sq, sharded)
            stats["inertia"].append(inertia)
        level = Level.from_assignment(centroids, labels, sq, stats)
        level.stats.update(
            k=level.k,
            seconds=time.perf_counter() - started,
            resample_steps=spec.resample_steps,
            size_min=int(level.sizes.min()),
            size_median=float(np.median(level.sizes)),
            size_max=int(level.sizes.max()),
        )
        log.info(
            "level %d: %d clusters (%d empty dropped), inertia %.4g, %.1fs",
            t,
            level.k,
            level.stats["empty_dropped"],
            stats["inertia"][-1],
            level.stats["seconds"],
        )
        self._clear_level_scratch(t)
        return level

    def _split(
        self, spec: LevelSpec, x: ArrayLike, local_labels: torch.Tensor, labels: np.ndarray, sharded: bool, t: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        source = RowSource(x)
        rows = LocalRows(
            source,
            torch.device(self.device),
            chunk_rows=chunk_rows_for(int(self.memory_budget_mb * 2**20), spec.n_splits, source.d, self.device),
            cosine=self.distance == "cosine",
            cache_bytes=int(resolve_memory_mb(self.device, self.memory_budget_mb, None)[1] * 2**20),
        )
        rows.scan()
        split = split_clusters_regrouped if sharded and dist.is_distributed() and self.split_regroup else split_clusters
        with matmul_precision(self.device, self.allow_tf32):  # the batched matmul, like KMeans'
            sub, slot_local, sq_local, stats = split(
                rows,
                local_labels,
                labels,
                spec.k,
                spec.n_splits,
                self.n_iter,
                self._seed(t, 1_000_000),
                self.memory_budget_mb,
                self.split_memory_mb,
                init="random" if self.init == "random" else "k-means++",
            )
        if self.distance != "cosine":
            sub = sub + rows.shift.cpu().numpy()
        return sub, self._gather(slot_local, sharded), self._gather(sq_local, sharded), stats

    def _resample_step(
        self,
        t: int,
        step: int,
        spec: LevelSpec,
        x: ArrayLike,
        centroids: np.ndarray,
        labels: np.ndarray,
        sq: np.ndarray,
        sharded: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        saved = self._load_step(t, step)
        if saved is not None:
            return saved
        current = Level.from_assignment(centroids, labels, sq)
        rng = np.random.default_rng(self._seed(t, step))
        picked = resample_members(current, spec.sample_size, self.resample_strategy, rng)
        if len(picked) < spec.k:
            raise ValueError(
                f"level {t}: the resampling sample holds {len(picked)} points, fewer than k={spec.k}; "
                f"raise sample_size (now {spec.sample_size})"
            )
        sample = _take_global(RowSource(x), picked, sharded)
        km = self._kmeans(
            spec.k, self._seed(t, step), init="k-means++", checkpoint_dir=self._run_dir(t, step), run=(t, step)
        )
        km.fit(sample)
        new_labels, new_sq = km.assign(x)
        result = (
            km.centroids.cpu().numpy(),
            self._gather(new_labels, sharded),
            self._gather(new_sq, sharded),
            float(dist.all_reduce_sum_(new_sq.sum(dtype=torch.float64).reshape(1))),
        )
        self._save_step(t, step, result)
        return result

    def _fit_subset(self, x: ArrayLike, n_rows: int, m: int, seed: int, sharded: bool) -> torch.Tensor:
        """The level's fit subset: ``m`` of its ``n_rows`` global rows, uniform without replacement
        (seeded: the same rows for any number of ranks), in row order; this rank's part as
        ``(m_local, d)`` float32 in host memory."""
        chosen = np.sort(np.random.default_rng(seed).choice(n_rows, size=m, replace=False))
        return _take_global(RowSource(x), chosen, sharded)

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, target: int | float, strategy: str = "random", seed: int = 0, multiplier: int = 1) -> np.ndarray:
        """Hierarchical balanced sample: ``(target,)`` int64 item indices (see curate.sampling)."""
        self._require_fitted()
        return hierarchical_sample(self.levels_, target, strategy=strategy, multiplier=multiplier, seed=seed).indices

    def _require_fitted(self) -> None:
        if not self.levels_:
            raise ValueError("HierarchicalKMeans is not fitted: call fit() or load()")

    # -- persistence ------------------------------------------------------------------------
    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write ``level<t>/*.npy`` for every level, then ``manifest.json`` (last).

        Only rank 0 writes.
        """
        self._require_fitted()
        folder = Path(folder)
        if dist.is_main_process():
            for t, level in enumerate(self.levels_, start=1):
                level.save(folder / f"level{t}")
            extra = dict(extra or {})
            written = [f"level{t}/{name}.npy" for t in range(1, len(self.levels_) + 1) for name in LEVEL_ARRAYS]
            files = {**extra.pop("files", {}), **vouch(folder, written)}  # what the manifest vouches for
            manifest = {
                "format_version": FORMAT_VERSION,
                "status": "complete",
                "config": self.config(),
                "n_items": self.n_items_,
                "dim": self.dim_,
                # spec: the level as built, a relative k resolved (k: 0.1 -> the int it gave)
                "levels": [
                    {"k": level.k, "n_inputs": int(len(level.assign)), "spec": spec.record(), "stats": level.stats}
                    for level, spec in zip(self.levels_, self.resolved_, strict=True)
                ],
                "versions": _versions(),
                **extra,
                "files": files,
            }
            atomic_write_json(folder / "manifest.json", manifest)
        dist.barrier()

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> HierarchicalKMeans:
        """Read a hierarchy written by :meth:`save`."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        config = manifest["config"]
        hkm = cls(
            levels=config["levels"],
            n_iter=config["n_iter"],
            seed=config["seed"],
            device=device,
            distance=config["distance"],
            init=config["init"],
            resample_strategy=config["resample_strategy"],
            init_max_points=config["init_max_points"],
        )
        hkm.levels_ = [
            Level.load(folder / f"level{t}", entry["stats"]) for t, entry in enumerate(manifest["levels"], start=1)
        ]
        hkm.n_items_, hkm.dim_ = manifest["n_items"], manifest["dim"]
        # the specs as built (an older manifest has none: its k were all ints)
        hkm.resolved_ = [LevelSpec.of(entry.get("spec", spec)) for entry, spec in zip(manifest["levels"], hkm.specs)]
        return hkm

    # -- checkpoints ------------------------------------------------------------------------
    def _scratch_dir(self, t: int) -> Path | None:
        """Where level ``t`` keeps its per-step and per-run checkpoints, or None.

        In a sharded level every rank takes part in its checkpoints (rank 0 writes). In a
        replicated level only rank 0 checkpoints and resumes: the other ranks recompute, so none
        reads a file that rank 0 is replacing or deleting.
        """
        if self.checkpoint_dir is None or (t not in self._sharded and not dist.is_main_process()):
            return None
        return self.checkpoint_dir / f"level{t}"

    def _run_dir(self, t: int, step: int) -> Path | None:
        folder = self._scratch_dir(t)
        return None if folder is None else folder / f"run{step}"

    def _check_checkpoint_config(self, n_items: int, dim: int, source: RowSource) -> None:
        """Checkpoints hold this configuration and a digest of a few fixed rows of the data (the
        same for any number of ranks); a fit on other data or settings is refused."""
        if self.checkpoint_dir is None:
            return

        data = sharded_rows_digest(lambda i: source.read(i, i + 1, "cpu").numpy(), source.n, source.d)
        expected = {**self.config(), "n_items": n_items, "dim": dim, "data": data}
        path = self.checkpoint_dir / "config.json"
        if path.exists():
            found = json.loads(path.read_text())
            if found != json.loads(json.dumps(expected)):
                raise IdentityError(
                    f"{self.checkpoint_dir} holds checkpoints of another clustering (settings or data differ); "
                    "use a new output folder or delete it (the cluster stage: overwrite=true)"
                )
        elif dist.is_main_process():
            atomic_write_json(path, expected)
        dist.barrier()

    def _load_level_checkpoint(self, t: int) -> Level | None:
        if self.checkpoint_dir is None:
            return None
        folder = self.checkpoint_dir / f"level{t}"
        done = folder / "done.json"
        if not done.exists():
            return None
        log.info("level %d: loaded from checkpoint %s", t, folder)
        return Level.load(folder, json.loads(done.read_text()))

    def _save_level_checkpoint(self, t: int, level: Level) -> None:
        if self.checkpoint_dir is None:
            return
        if dist.is_main_process():
            folder = self.checkpoint_dir / f"level{t}"
            level.save(folder)
            atomic_write_json(folder / "done.json", level.stats)
        dist.barrier()

    def _step_path(self, t: int, step: int) -> Path | None:
        folder = self._scratch_dir(t)
        return None if folder is None else folder / f"step{step}.npz"

    def _load_step(self, t: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
        path = self._step_path(t, step)
        if path is None or not path.exists():
            return None
        with np.load(path, allow_pickle=False) as f:
            return f["centroids"], f["assign"], f["dist"], float(f["inertia"])

    def _save_step(self, t: int, step: int, result: tuple) -> None:
        path = self._step_path(t, step)
        if path is not None and dist.is_main_process():
            centroids, assign, sq, inertia = result
            with atomic_path(path, suffix=".npz") as tmp:
                np.savez(tmp, centroids=centroids, assign=assign, dist=sq, inertia=np.array(inertia))
        dist.barrier()

    def _clear_level_scratch(self, t: int) -> None:
        """Remove the per-step and per-run checkpoints of a level once it is complete."""
        if self.checkpoint_dir is None or not dist.is_main_process():
            return
        folder = self.checkpoint_dir / f"level{t}"
        for path in list(folder.glob("step*.npz")) + list(folder.glob("run*")):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _take_global(source: RowSource, rows: np.ndarray, sharded: bool) -> torch.Tensor:
    """This rank's rows among the sorted global row indices ``rows: (m,)`` of a level input
    (sharded: each rank holds a contiguous block; replicated: all of it), as ``(m_local, d)``
    float32 in host memory."""
    offset = int(dist.all_gather_stack(torch.tensor([source.n])).flatten()[: dist.get_rank()].sum()) if sharded else 0
    mine = rows[(rows >= offset) & (rows < offset + source.n)] - offset
    return source.take(torch.from_numpy(mine), "cpu")


def _versions() -> dict[str, str]:
    import subprocess

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {
        "ssl_curate": curate.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "git_sha": sha,
    }
