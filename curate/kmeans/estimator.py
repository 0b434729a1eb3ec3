"""The ``KMeans`` estimator: seeded init, chunked Lloyd iterations, checkpoints, distributed.

Every rank runs the same loop on its own shard; only ``k x d`` float64 sums, ``k`` counts and a
few scalars are all-reduced, so the result for ``N`` ranks equals the result for one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curate.core import dist
from curate.core.atomic import atomic_path
from curate.core.errors import as_int
from curate.core.progress import Progress
from curate.io.identity import sharded_rows_digest
from curate.kmeans.blocks import BlockLloyd, block_rows_for, block_workers
from curate.kmeans.device import matmul_precision, resolve_memory_mb
from curate.kmeans.init import distinct_random_indices, kmeans_parallel, kmeans_plusplus, random_init
from curate.kmeans.kernels import accumulate_, assign_chunk, chunk_rows_for, normalize_rows, one_cpu_thread
from curate.kmeans.shard import LocalRows, too_large, too_large_message
from curate.kmeans.source import ArrayLike, RowSource

log = logging.getLogger(__name__)

INITS = ("k-means++", "k-means||", "random")
DISTANCES = ("l2", "cosine")
_SMALL_WORK = 1 << 24
_THREADED_MIN_DIM = 32
_STORAGE = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class KMeans:
    """Lloyd's k-means in PyTorch, chunked, device-agnostic and distributed.

    Example:
        >>> km = KMeans(k=1024, n_iter=50, seed=0).fit(x)      # x: (n, d) tensor / array / .npy
        >>> labels, sq_dist = km.assign(x)                       # (n,) int64, (n,) float32

    Under an initialised process group, ``fit(x_local)`` and ``assign(x_local)`` take this rank's
    shard (shards may differ in size); ``labels`` stay sharded, everything else is global.

    Args:
        k: number of clusters.
        n_iter: Lloyd iterations (the paper's reference runs a fixed 50).
        tol: stop early when the objective's relative decrease in one iteration is below ``tol``
            (0 runs all ``n_iter`` iterations). Lloyd always stops at a fixed point (a step that
            moves no centroid), which gives the same result as running on.
        init: ``"k-means++"`` (greedy D^2 sampling, ``2 + ln k`` trials), ``"k-means||"``
            (Bahmani et al.'s parallel oversampling, a few passes instead of ``k``; see
            :func:`curate.kmeans.init.kmeans_parallel`) or ``"random"`` rows.
        distance: ``"l2"`` (squared Euclidean) or ``"cosine"``: spherical k-means on
            L2-normalised rows with re-normalised centroids (distances reported are squared L2
            between unit vectors, ``2 - 2 cos``).
        seed: seeds the initialisation (the only random step).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        memory_budget_mb: working memory per chunk on the device; sets the chunk size (None: 256
            on a CPU, 1/16 of the free memory within [256, 4096] on CUDA; curate.kmeans.device).
        cache_mb: an input whose prepared copy fits is prepared once and kept on the device: an
            in-memory one anywhere, a memory-mapped one on CUDA (on a CPU those are streamed).
            None: 2048 on a CPU, half the free memory less one chunk on CUDA.
        init_cache_mb: k-means++ reads the shard once per centroid; a streamed shard whose
            float32 copy fits in this many MB is read into memory once for the initialisation
            instead (0, the default: never, so a memory-mapped input stays out of core).
        storage_dtype: ``"float32"`` or ``"bfloat16"`` for the prepared rows kept on the device
            (arithmetic stays float32).
        allow_tf32: allow TF32 matmuls on CUDA (Lloyd, k-means++ and assignment alike).
        init_max_points: run the initialisation on a seeded uniform subset of at most this many
            rows (None: all rows). The subset stays on its ranks.
        checkpoint_dir: where to checkpoint; a fit with the same settings and directory resumes.
        checkpoint_every: iterations between checkpoints.
        on_iteration: called on every rank after each Lloyd iteration with that iteration's
            ``stats`` record (a tracker hook; rank 0 is enough to log it).
        progress_every_s: rank 0 logs a progress line (iteration, ETA, objective, s/iter) when
            this many seconds have passed since the last one (:class:`curate.core.progress.Progress`).
    """

    def __init__(
        self,
        k: int,
        n_iter: int = 50,
        tol: float = 0.0,
        init: str = "k-means++",
        distance: str = "l2",
        seed: int = 0,
        device: str | torch.device = "cpu",
        memory_budget_mb: float | None = None,
        cache_mb: float | None = None,
        init_cache_mb: float = 0.0,
        storage_dtype: str = "float32",
        allow_tf32: bool = True,
        init_max_points: int | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 10,
        on_iteration: Callable[[dict[str, float]], None] | None = None,
        progress_every_s: float = 30.0,
    ) -> None:
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        n_iter, seed = as_int(n_iter, "n_iter", 0), as_int(seed, "seed")
        checkpoint_every = as_int(checkpoint_every, "checkpoint_every", 1)
        if init_max_points is not None:
            init_max_points = as_int(init_max_points, "init_max_points", 1)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if storage_dtype not in _STORAGE:
            raise ValueError(f"storage_dtype must be one of {tuple(_STORAGE)}, got {storage_dtype!r}")
        if init_max_points is not None and init_max_points < k:
            raise ValueError(f"init_max_points={init_max_points} must be >= k={k}")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device={device!r} is not a device torch knows ({err})") from None
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"device={device!r}: k-means runs on 'cpu' or 'cuda[:N]'")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available; use device='cpu'")
        self.k, self.n_iter, self.tol = int(k), int(n_iter), float(tol)
        self.init, self.distance, self.seed = init, distance, int(seed)
        self.memory_budget_mb, self.cache_mb = resolve_memory_mb(self.device, memory_budget_mb, cache_mb)
        self.init_cache_mb = init_cache_mb
        self.storage_dtype, self.allow_tf32 = storage_dtype, allow_tf32
        self.init_max_points = init_max_points
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self.on_iteration, self.progress_every_s = on_iteration, float(progress_every_s)
        self.centroids: torch.Tensor | None = None
        self.inertia: float = math.nan
        self.stats: list[dict[str, float]] = []
        self.labels_: torch.Tensor | None = None
        self.sq_dist_: torch.Tensor | None = None
        self.n_fit_: int = 0

    # -- public API -------------------------------------------------------------------------
    def fit(self, x: ArrayLike) -> KMeans:
        """Cluster ``x: (n, d)`` (this rank's shard when distributed).

        After ``fit``: ``centroids (k, d)`` float32, ``labels_ (n_local,)`` int64 and
        ``sq_dist_ (n_local,)`` float32 (squared distance to the assigned centroid) on CPU,
        ``inertia`` (global sum of squared distances to the final centroids) and ``stats``.
        """
        source = RowSource(x)
        with self._matmul_precision(work=float(source.n) * self.k * source.d, dim=source.d):
            rows = self._local_rows(source)
            if rows.n_global == 0:
                raise ValueError(f"{source.name}: no rows to cluster (n = 0)")
            if self.k > rows.n_global:
                raise ValueError(f"k={self.k} exceeds the number of rows n={rows.n_global} of {source.name}")
            rows.scan()
            self._shift = rows.shift
            c, start_iter = self._resume_or_init(rows)
            progress = Progress(self.n_iter, f"k-means k={self.k}: Lloyd iteration", self.progress_every_s, start_iter)
            for it in range(start_iter, self.n_iter):
                c, stop = self._lloyd_step(rows, c, it)
                if self.on_iteration is not None:
                    self.on_iteration(dict(self.stats[-1]))
                s = self.stats[-1]
                progress.update(1, lambda: f"objective {s['objective']:.6g}, {s['seconds']:.2f} s/iter")  # noqa: B023
                if self._due_checkpoint(it + 1, stop):
                    self._save_checkpoint(c, it + 1, rows)
                if stop:
                    break
            self._set_centroids(c)
            self.labels_, self.sq_dist_, self.inertia = self._assign_rows(rows, c)
            self.n_fit_ = rows.n_global
        return self

    def assign(self, x: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest centroid of every row of ``x: (n, d)``.

        Returns:
            ``labels (n,) int64`` and ``sq_dist (n,) float32``, on CPU.
        """
        if self.centroids is None:
            raise ValueError("KMeans.assign called before fit")
        source = RowSource(x)
        if source.d != self.centroids.shape[1]:
            raise ValueError(
                f"{source.name} has d={source.d} columns but the centroids have d={self.centroids.shape[1]}"
            )
        with self._matmul_precision(work=float(source.n) * self.k * source.d, dim=source.d):
            rows = self._local_rows(source)
            rows.shift = self._shift
            c = self._internal_centroids()
            # on the device until the end: one host read for the pass, not three per chunk
            labels = torch.empty(rows.n, dtype=torch.int64, device=self.device)
            sq = torch.empty(rows.n, dtype=torch.float32, device=self.device)
            none = torch.iinfo(torch.int64).max
            first_bad = torch.full((2,), none, dtype=torch.int64, device=self.device)  # non-finite, huge
            c_sqnorm = c.square().sum(dim=1)
            cpu = self.device.type == "cpu"
            scratch = None if cpu else self._scratch(rows, c.shape[0])
            blocks = BlockLloyd(c, torch.get_num_threads(), accumulate=False) if cpu else None
            workers = block_workers(blocks.threads) if blocks is not None else contextlib.nullcontext()
            with workers as pool:
                self._assign_checked(rows, c, c_sqnorm, scratch, blocks, pool, labels, sq, first_bad)
            bad = first_bad.tolist()
            if bad[0] != none:
                raise ValueError(f"{rows.source.name}: row {rows.offset + bad[0]} contains NaN or Inf")
            if bad[1] != none:
                raise ValueError(too_large_message(rows.source.name, rows.offset + bad[1]))
        return labels.cpu(), sq.cpu()

    def _assign_checked(
        self,
        rows: LocalRows,
        c: torch.Tensor,
        c_sqnorm: torch.Tensor,
        scratch: torch.Tensor | None,
        blocks: BlockLloyd | None,
        pool: Any,
        labels: torch.Tensor,
        sq: torch.Tensor,
        first_bad: torch.Tensor,
    ) -> None:
        """The chunk loop of :meth:`assign`: nearest centroids, and the first non-finite and the
        first too large row (``first_bad: (2,)``, local indices, int64 max where none)."""
        none = torch.iinfo(torch.int64).max
        for start, xb in self._chunks(rows):
            at = torch.arange(start, start + len(xb), device=self.device)
            first_bad[0] = torch.minimum(first_bad[0], torch.where(torch.isfinite(xb).all(dim=1), none, at).min())
            # a huge raw row is refused here too; under cosine its norm overflowed and it normalised to zero
            huge = too_large(xb) | ((xb.square().sum(dim=1) == 0) if rows.cosine else False)
            first_bad[1] = torch.minimum(first_bad[1], torch.where(huge, at, none).min())
            stop = start + len(xb)
            if blocks is not None:
                blocks.feed(xb, labels[start:stop], sq[start:stop], pool)
            else:
                labels[start:stop], sq[start:stop] = assign_chunk(xb, c, c_sqnorm, out=scratch)

    # -- internals --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _matmul_precision(self, work: float = math.inf, dim: int = 1 << 30) -> Iterator[None]:
        """TF32 on CUDA as configured; on a CPU, one thread where threads do not pay.

        ``work`` is the multiply-adds of one pass over the data and ``dim`` the row dimension.
        With few dimensions the pass is a string of small elementwise ops (argmin over the score
        block) rather than a matmul, and OpenMP synchronisation costs more than it saves: a
        6000 x 3000 x 2 Lloyd run took 0.28 s on one thread and 17 s on two busy cores. So small
        problems and ``dim < 32`` run single-threaded.
        """
        if self.device.type != "cuda":
            with one_cpu_thread() if work < _SMALL_WORK or dim < _THREADED_MIN_DIM else contextlib.nullcontext():
                yield
            return
        with matmul_precision(self.device, self.allow_tf32):
            yield

    def _local_rows(self, source: RowSource) -> LocalRows:
        # on a CPU the chunk is only the unit of streaming (the score block is a row block) and must
        # not depend on the thread count: its blocks decide the order of the float64 sums
        chunk = chunk_rows_for(int(self.memory_budget_mb * 2**20), self.k, source.d, self.device, threads=2)
        return LocalRows(
            source,
            self.device,
            chunk_rows=chunk,
            cosine=self.distance == "cosine",
            cache_bytes=int(self.cache_mb * 2**20),
            storage_dtype=_STORAGE[self.storage_dtype],
        )

    def _initialise(self, rows: LocalRows) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        init_rows = rows
        if self.init_max_points is not None and self.init_max_points < rows.n_global:
            init_rows = _subset(rows, self.init_max_points, generator)
        elif self.init != "random" and self.init_cache_mb > 0 and _fits_everywhere(rows, self.init_cache_mb * 2**20):
            # k-means++ reads the shard once per centroid: read a streamed shard from disk once
            init_rows = _in_memory(rows)
        if self.init == "random":
            return random_init(init_rows, self.k, generator)
        if self.init == "k-means||":
            with self._matmul_precision(work=float(init_rows.n) * init_rows.d * self.k, dim=init_rows.d):
                return kmeans_parallel(init_rows, self.k, generator)
        with self._matmul_precision(work=float(init_rows.n) * init_rows.d * (2 + math.log(self.k)), dim=init_rows.d):
            return kmeans_plusplus(init_rows, self.k, generator)

    def _lloyd_step(self, rows: LocalRows, c: torch.Tensor, it: int) -> tuple[torch.Tensor, bool]:
        """One assignment + update pass. Returns the new centroids and whether to stop."""
        t0 = time.perf_counter()
        k, d = c.shape
        sums = torch.zeros(k, d, dtype=torch.float64, device=self.device)
        counts = torch.zeros(k, dtype=torch.int64, device=self.device)
        local_sq = torch.empty(rows.n, dtype=torch.float32, device=self.device)
        if self.device.type == "cpu":
            sums, counts = self._cpu_pass(rows, c, local_sq, accumulate=True)
        else:  # the GPU path: whole chunks, one kernel each
            c_sqnorm = c.square().sum(dim=1)
            scratch = self._scratch(rows, k)
            for start, xb in rows.chunks():
                labels, d2 = assign_chunk(xb, c, c_sqnorm, out=scratch)
                accumulate_(xb, labels, sums, counts)
                local_sq[start : start + len(xb)] = d2
        objective = local_sq.sum(dtype=torch.float64).reshape(1)
        dist.all_reduce_sum_(sums)
        dist.all_reduce_sum_(counts)
        dist.all_reduce_sum_(objective)
        # Device-side bookkeeping, one host read per iteration (a sync on a GPU): no mask indexing.
        empty = (counts == 0).unsqueeze(1)
        means = torch.where(empty, c, (sums / counts.clamp_min(1).unsqueeze(1).to(sums.dtype)).to(torch.float32))
        new_c = normalize_rows(means) if self.distance == "cosine" else means
        shift_t = (new_c - c).double().square().sum().reshape(1)
        obj, shift, n_empty = torch.cat([objective, shift_t, empty.sum().double().reshape(1)]).tolist()
        n_empty = int(n_empty)
        if n_empty:  # rare: the reseed syncs freely
            means[empty.squeeze(1)] = self._reseed(rows, local_sq, n_empty)
            new_c = normalize_rows(means) if self.distance == "cosine" else means
            shift = float((new_c - c).double().square().sum())
        self.stats.append(
            {
                "iteration": it,
                "objective": obj,
                "centroid_shift": shift,
                "empty_reseeded": n_empty,
                "seconds": time.perf_counter() - t0,
            }
        )
        prev = self.stats[-2]["objective"] if len(self.stats) > 1 else math.inf
        # A step that moves no centroid is a fixed point: further iterations would repeat it
        # exactly, so stopping there gives the same result as running all n_iter.
        converged = shift == 0.0 and n_empty == 0
        stop = converged or (self.tol > 0 and prev < math.inf and (prev - obj) <= self.tol * prev)
        return new_c, stop

    def _chunks(self, rows: LocalRows) -> Iterator[tuple[int, torch.Tensor]]:
        """The shard's chunks; a cached shard on a CPU in chunks of 64 blocks (the block pass
        waits for its workers once per chunk)."""
        if self.device.type == "cpu" and rows._cache is not None:
            return rows.chunks(64 * block_rows_for(self.k))
        return rows.chunks()

    def _cpu_pass(
        self, rows: LocalRows, c: torch.Tensor, sq: torch.Tensor, accumulate: bool, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block-parallel pass over the shard on a CPU (:mod:`curate.kmeans.blocks`): fills
        ``sq: (n_local,)`` (and ``labels``, when given) and returns the ``(k, d)`` float64 sums and
        ``(k,)`` int64 counts (empty tensors when not ``accumulate``)."""
        labels = torch.empty(rows.n, dtype=torch.int64) if labels is None else labels
        blocks = BlockLloyd(c, torch.get_num_threads(), accumulate=accumulate)
        with block_workers(blocks.threads) as pool:
            for start, xb in self._chunks(rows):
                stop = start + len(xb)
                blocks.feed(xb, labels[start:stop], sq[start:stop], pool)
        if not accumulate:
            return torch.empty(0, dtype=torch.float64), torch.empty(0, dtype=torch.int64)
        return blocks.sums()

    def _scratch(self, rows: LocalRows, k: int) -> torch.Tensor:
        return torch.empty(min(rows.chunk_rows, max(rows.n, 1)), k, dtype=torch.float32, device=self.device)

    def _reseed(self, rows: LocalRows, local_sq: torch.Tensor, m: int) -> torch.Tensor:
        """Centroids for ``m`` empty clusters: the ``m`` rows farthest from their centroids.

        Ties are broken by global row index, so every world size picks the same rows.
        """
        take = min(m, rows.n)
        vals = torch.full((m,), -1.0, dtype=torch.float32)
        idx = torch.full((m,), -1, dtype=torch.int64)
        if take:
            top_v, top_i = torch.topk(local_sq, take)
            vals[:take], idx[:take] = top_v.cpu(), top_i.cpu() + rows.offset
        all_v = dist.all_gather_stack(vals).flatten()
        all_i = dist.all_gather_stack(idx).flatten()
        order = torch.argsort(all_i, stable=True)
        order = order[torch.argsort(-all_v[order], stable=True)][:m]
        log.info("iteration re-seeds %d empty clusters from the farthest points", m)
        return rows.fetch_global(all_i[order].clamp_min(0))

    def _assign_rows(self, rows: LocalRows, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        # on the device until the end: one copy to the host, not two blocking copies per chunk
        labels = torch.empty(rows.n, dtype=torch.int64, device=self.device)
        sq = torch.empty(rows.n, dtype=torch.float32, device=self.device)
        if self.device.type == "cpu":
            self._cpu_pass(rows, c, sq, accumulate=False, labels=labels)
        else:
            c_sqnorm = c.square().sum(dim=1)
            scratch = self._scratch(rows, c.shape[0])
            for start, xb in rows.chunks():
                labels[start : start + len(xb)], sq[start : start + len(xb)] = assign_chunk(
                    xb, c, c_sqnorm, out=scratch
                )
        total = sq.sum(dtype=torch.float64).reshape(1)
        return labels.cpu(), sq.cpu(), float(dist.all_reduce_sum_(total))

    def _set_centroids(self, c: torch.Tensor) -> None:
        self._c_internal = c
        self.centroids = c if self.distance == "cosine" else c + self._shift

    def _internal_centroids(self) -> torch.Tensor:
        return self._c_internal.to(self.device)

    # -- checkpoints ------------------------------------------------------------------------
    def _fingerprint(self, rows: LocalRows) -> str:
        keys = dict(
            data=self._data_key,  # a few fixed rows of the data (set by _resume_or_init)
            k=self.k,
            init=self.init,
            distance=self.distance,
            seed=self.seed,
            n=rows.n_global,
            d=rows.d,
            init_max_points=self.init_max_points,
            tol=self.tol,
        )
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]

    def _checkpoint_path(self) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / "kmeans_state.npz"

    def _due_checkpoint(self, done: int, stop: bool) -> bool:
        return self.checkpoint_dir is not None and (done % self.checkpoint_every == 0 or stop or done == self.n_iter)

    def _save_checkpoint(self, c: torch.Tensor, done: int, rows: LocalRows) -> None:
        path = self._checkpoint_path()
        if path is not None and dist.is_main_process():
            meta = {"iteration": done, "fingerprint": self._fingerprint(rows), "stats": self.stats}
            with atomic_path(path, suffix=".npz") as tmp:
                np.savez(
                    tmp,
                    centroids=c.cpu().numpy(),
                    shift=rows.shift.cpu().numpy(),
                    meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                )
        dist.barrier()

    def _resume_or_init(self, rows: LocalRows) -> tuple[torch.Tensor, int]:
        path = self._checkpoint_path()
        self._data_key = ""
        if self.checkpoint_dir is not None:  # every rank: a collective, the same for any world size
            self._data_key = sharded_rows_digest(lambda i: rows.source.read(i, i + 1, "cpu").numpy(), rows.n, rows.d)
        if path is not None and path.exists():
            with np.load(path, allow_pickle=False) as state:
                meta: dict[str, Any] = json.loads(state["meta"].tobytes().decode())
                if meta["fingerprint"] != self._fingerprint(rows):
                    raise ValueError(
                        f"checkpoint {path} was written by a k-means run with other settings or data; "
                        "remove it or use another checkpoint_dir"
                    )
                c = torch.from_numpy(state["centroids"]).to(self.device)
            self.stats = list(meta["stats"])
            log.info("resuming k-means from %s at iteration %d", path, meta["iteration"])
            return c, int(meta["iteration"])
        self.stats = []
        c = self._initialise(rows)
        if self.checkpoint_dir is not None:
            self._save_checkpoint(c, 0, rows)
        return c, 0


def _fits_everywhere(rows: LocalRows, cache_bytes: float) -> bool:
    """Whether the shard is streamed and every rank's shard fits ``cache_bytes`` (the same answer
    on every rank, so all take the same branch)."""
    ok = rows._cache is None and rows.n * rows.d * 4 <= cache_bytes
    return bool(dist.all_reduce_(torch.tensor([int(ok)]), "min")[0])


def _in_memory(rows: LocalRows) -> LocalRows:
    """The shard's prepared rows read once into memory (on the device), as a cached ``LocalRows``."""
    local = torch.empty(rows.n, rows.d, dtype=torch.float32, device=rows.device)
    for start, x in rows.chunks():
        local[start : start + len(x)] = x
    return _prepared(rows, local, "in memory")


def _subset(rows: LocalRows, m: int, generator: torch.Generator) -> LocalRows:
    """A seeded uniform subset of ``m`` global rows; each rank keeps the ones it owns."""
    chosen = distinct_random_indices(rows.n_global, m, generator).sort().values
    mine = chosen[(chosen >= rows.offset) & (chosen < rows.offset + rows.n)] - rows.offset
    local = rows.take(mine) if len(mine) else torch.empty(0, rows.d, device=rows.device)
    return _prepared(rows, local, "init subset")


def _prepared(rows: LocalRows, local: torch.Tensor, what: str) -> LocalRows:
    """A cached ``LocalRows`` over already prepared rows ``local: (m, d)`` of this rank."""
    sub = LocalRows(
        RowSource(local, name=f"{rows.source.name} ({what})"),
        rows.device,
        chunk_rows=rows.chunk_rows,
        cosine=False,  # rows are already prepared
        cache_bytes=1 << 62,
    )
    sub._cache = local if len(local) else None
    return sub
