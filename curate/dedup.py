"""Near-duplicate removal: ``python -m curate.dedup input=<store> out=<dir> [threshold=0.95]``.

Rule (sequential greedy, defined on the store's row order): rows are L2-normalised; row ``i`` is
**kept** unless some **kept** row ``j < i`` has cosine similarity ``x_i . x_j > threshold``
(strictly greater). So the first row of a group of copies is kept, every later copy is removed,
and a row similar only to *removed* rows is kept (with ``a ~ b``, ``b ~ c`` but not ``a ~ c``: ``a``
and ``c`` are kept, ``b`` removed). For each removed row, ``duplicate_of`` is its most similar
earlier kept row (ties: the smallest index).

Kernel (no Python loop over rows). Rows are streamed in *windows* of ``world_size * chunk_size``
rows; rank ``r`` reads the ``r``-th chunk of each window and the ranks all-gather the window.

1. Against the kept rows of earlier windows. Each rank holds the kept rows of its own chunks (a
   shard of the kept set: memory and matmul work are split over the ranks); it computes the best
   similarity of every window row to its shard in blocks that fit ``sim_budget``, and an
   all-reduce (max, then min of the index among the maxima) gives the best over all kept rows.
   A row above the threshold is removed; earlier decisions are final, so this is exact.
2. Inside the window. Rank ``r`` compares its chunk with the later rows of the window and keeps
   the pairs above the threshold as an edge list ``j -> i`` (``j < i``); the ranks all-gather the
   edges. The greedy rule is then a fixed point, run identically on every rank: repeat "remove
   every undecided row with a kept predecessor; keep every undecided row whose predecessors are
   all removed" (two scatters over the edges per round). Each round decides at least the lowest
   undecided row, so it ends; the number of rounds is the length of the longest chain of
   near-duplicates inside the window (1-3 on real data).
3. Each rank adds its chunk's kept rows to its shard.

The result depends only on the row order and the threshold, not on ``chunk_size`` nor on the
number of ranks (up to float rounding of similarities within ~1e-6 of the threshold). Cost:
``O(N * K * d / world_size)`` per rank for ``K`` kept rows, on any device; each rank holds
``K / world_size`` kept rows (float32). The ``faiss`` backend does step 1 with an exact
``IndexFlatIP.range_search`` over the rank's shard instead of torch.

Tolerance (:data:`SIM_TOLERANCE`). Similarities are float32 dot products of normalised rows: two
copies of one row can come out at 1.0000001 and two orthogonal rows at 1e-8. A pair counts as
near-duplicates only when its computed cosine exceeds ``threshold + SIM_TOLERANCE`` (1e-5, above
the rounding of float32 dot products of unit rows in practice, which is ~1e-6 for d <= 4096), so
``threshold=1.0`` removes nothing and ``threshold=0.0`` keeps exactly orthogonal rows; a pair whose
cosine lies within 1e-5 above the threshold may be kept.

Decontamination (``reference=<store | list of stores>``: the evaluation sets). A pool row whose
cosine similarity to any reference row exceeds the threshold (same tolerance) is removed first:
it is a *fixed* removal, so it neither stays nor removes a later pool row, and the greedy rule
runs on the rest. Each window's rows are searched against the references with the exact chunked
search of :func:`curate.retrieval.search` (the references sharded over the ranks, top-1 merged),
so the result does not depend on the number of ranks either. ``contaminated_by`` gives, for each
row removed that way, its most similar reference row (rows of the references concatenated in the
order given).

A checkpoint (the decisions so far) is written by rank 0 every ``checkpoint_every_s`` seconds; a
killed run started again resumes from it (at any world size) and ends with the same result.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from curate import CONFIG_DIR
from curate.conf import DedupConfig, register_configs
from curate.core import dist
from curate.core.atomic import atomic_path, atomic_save_npy, atomic_write_json
from curate.core.entry import hydra_entry
from curate.core.errors import IdentityError, InputError, UnsafeOutputError
from curate.core.progress import Progress
from curate.core.protocol import COMPLETE, Action, Stage, completion_record, content, decide, fingerprint, log_skip
from curate.io.identity import check_identity, input_identity
from curate.io.idlist import write_ids
from curate.io.store import StoreWriter, finalize_store, load_embeddings, read_manifest
from curate.retrieval import normalised_rows, search
from curate.stage import guarded_output, read_json, run_stage

log = logging.getLogger(__name__)

#: a computed cosine counts as above the threshold only beyond this margin (float32 rounding; see above)
SIM_TOLERANCE = 1e-5
RULE = (
    "sequential greedy: keep row i unless a kept row j < i has cosine(x_i, x_j) > threshold + 1e-5; "
    "rows with cosine > threshold + 1e-5 to a reference row removed first"
)
# content settings that change only which files are made from the decisions, not the decisions
OUTPUT_ONLY = {"write_store"}
FRESH = "set overwrite=true or choose another out="


register_configs()


def validate(cfg: Any) -> None:
    """Cross-field checks of a dedup config; raises ``ValueError`` naming the field."""
    if not -1.0 <= cfg.threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {cfg.threshold}")
    if cfg.chunk_size is not None and cfg.chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {cfg.chunk_size}")
    if cfg.chunk_size is not None and cfg.sim_budget is not None and cfg.sim_budget < cfg.chunk_size:
        raise ValueError(f"sim_budget must be >= chunk_size ({cfg.chunk_size}), got {cfg.sim_budget}")
    if cfg.checkpoint_every_s < 0:
        raise ValueError(f"checkpoint_every_s must be >= 0, got {cfg.checkpoint_every_s}")
    if cfg.shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {cfg.shard_size}")
    reference_paths(cfg.reference)


def reference_paths(reference: Any) -> list[str]:
    """``reference`` (None, one path or a list of paths) as a list of paths; raises
    ``ValueError`` naming ``reference`` for anything else."""
    if reference is None:
        return []
    paths = [reference] if isinstance(reference, str) else list(reference) if _is_list(reference) else None
    if paths is None or not all(isinstance(p, str) and p.strip() for p in paths):
        raise ValueError(f"reference must be a store path or a list of store paths, got {reference!r}")
    return [str(p) for p in paths]


def _is_list(value: Any) -> bool:
    from omegaconf import ListConfig

    return isinstance(value, list | tuple | ListConfig)


@dataclass
class DedupResult:
    """Outcome of :func:`deduplicate` for ``N`` rows.

    Attributes:
        keep: ``(N,) bool``, True for kept rows (on every rank).
        duplicate_of: ``(N,) int64``: for a removed row, its most similar earlier kept row; -1 for
            kept rows. Rank 0 only (None on the other ranks: 12 bytes a row they do not need).
        similarity: ``(N,) float32``: the cosine similarity to ``duplicate_of`` (NaN for kept rows);
            rank 0 only.
        contaminated_by: ``(N,) int64``: for a row removed for its similarity to a reference row,
            that (most similar) reference row; -1 for the others. Rank 0 only.
    """

    keep: np.ndarray
    duplicate_of: np.ndarray | None
    similarity: np.ndarray | None
    contaminated_by: np.ndarray | None = None

    @property
    def kept_indices(self) -> np.ndarray:
        """``(K,) int64`` indices of the kept rows, increasing."""
        return np.flatnonzero(self.keep).astype(np.int64)


def resolve_edges(n: int, src: torch.Tensor, dst: torch.Tensor, fixed_removed: torch.Tensor) -> torch.Tensor:
    """The sequential greedy rule on ``n`` rows given their near-duplicate pairs, no loop over rows.

    Args:
        n: number of rows.
        src, dst: ``(E,) int64`` edges ``src < dst``: rows ``src`` and ``dst`` are near-duplicates.
        fixed_removed: ``(n,) bool``, rows already removed (duplicates of earlier rows outside
            these ``n``); they neither stay nor remove anyone.

    Returns:
        ``(n,) bool``: True for the rows kept.
    """
    live = ~fixed_removed[src] & ~fixed_removed[dst]
    src, dst = src[live], dst[live]
    keep = ~fixed_removed.clone()
    if src.numel() == 0:
        return keep
    device = fixed_removed.device
    kept = torch.zeros(n, dtype=torch.bool, device=device)
    removed = torch.zeros(n, dtype=torch.bool, device=device)
    undecided = torch.zeros(n, dtype=torch.bool, device=device)
    undecided[src] = True
    undecided[dst] = True
    while bool(undecided.any()):
        # kept rows remove their undecided successors
        hit = torch.zeros(n, dtype=torch.bool, device=device)
        hit[dst[kept[src]]] = True
        newly_removed = undecided & hit
        removed |= newly_removed
        undecided &= ~newly_removed
        # a row whose predecessors are all removed is kept
        blocked = torch.zeros(n, dtype=torch.bool, device=device)
        blocked[dst[~removed[src]]] = True
        newly_kept = undecided & ~blocked
        kept |= newly_kept
        undecided &= ~newly_kept
    involved = kept | removed
    keep[involved] = kept[involved]
    return keep


def best_kept_predecessor(
    n: int, src: torch.Tensor, dst: torch.Tensor, sim: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row, its most similar kept predecessor along the edges (ties: the smallest).

    Args:
        n: number of rows.
        src, dst, sim: ``(E,)`` edges ``src < dst`` and their similarities.
        keep: ``(n,) bool``.

    Returns:
        ``(best (n,) float32, arg (n,) int64)``: ``-inf`` / ``-1`` for rows without a kept
        predecessor.
    """
    use = keep[src]
    src, dst, sim = src[use], dst[use], sim[use]
    best = torch.full((n,), -float("inf"), device=keep.device).scatter_reduce(0, dst, sim, "amax")
    candidate = torch.where(sim == best[dst], src, torch.full_like(src, n))
    arg = torch.full((n,), n, dtype=torch.int64, device=keep.device).scatter_reduce(0, dst, candidate, "amin")
    return best, torch.where(arg == n, -1, arg)


class _KeptRows:
    """This rank's shard of the kept rows: a growing ``(K_r, d)`` float32 buffer (capacity
    doubles) and their global indices, in increasing order. Queries are compared in tiles of
    ``query_rows x block`` similarities."""

    def __init__(self, d: int, device: torch.device, query_rows: int, block: int) -> None:
        self.rows = torch.empty(0, d, device=device)
        self.index = torch.empty(0, dtype=torch.int64, device=device)
        self.count = 0
        self.query_rows, self.block = query_rows, block

    def add(self, rows: torch.Tensor, index: torch.Tensor) -> None:
        need = self.count + len(rows)
        if need > len(self.rows):
            cap = max(need, 2 * len(self.rows), 1024)
            grown = torch.empty(cap, self.rows.shape[1], device=self.rows.device)
            grown[: self.count] = self.rows[: self.count]
            grown_index = torch.empty(cap, dtype=torch.int64, device=self.rows.device)
            grown_index[: self.count] = self.index[: self.count]
            self.rows, self.index = grown, grown_index
        self.rows[self.count : need] = rows
        self.index[self.count : need] = index
        self.count = need

    def best(self, x: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Max similarity of each row of ``x (c, d)`` to the shard and the argmax's global index
        (ties: the smallest index; ``-inf`` / ``-1`` for an empty shard)."""
        best = torch.full((len(x),), -float("inf"), device=x.device)
        arg = torch.full((len(x),), -1, dtype=torch.int64, device=x.device)
        for q in range(0, len(x), self.query_rows):
            query = x[q : q + self.query_rows]
            top, where = best[q : q + self.query_rows], arg[q : q + self.query_rows]  # views
            for start in range(0, self.count, self.block):
                stop = min(self.count, start + self.block)
                value, first = (query @ self.rows[start:stop].T).max(1)  # torch returns the first maximum
                better = value > top  # strict: an earlier block (smaller indices) wins ties
                top.copy_(torch.where(better, value, top))
                where.copy_(torch.where(better, self.index[start:stop][first], where))
        return best, arg


class _FaissKept:
    """This rank's shard of the kept rows in an exact ``faiss.IndexFlatIP``; range-search queries."""

    def __init__(self, d: int) -> None:
        import faiss

        self.index = faiss.IndexFlatIP(d)
        self.ids: list[np.ndarray] = []
        self.count = 0

    def add(self, rows: torch.Tensor, index: torch.Tensor) -> None:
        self.index.add(np.ascontiguousarray(rows.cpu().numpy(), dtype=np.float32))
        self.ids.append(index.cpu().numpy())
        self.count += len(rows)

    def best(self, x: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`_KeptRows.best`, but only similarities above ``threshold`` are found."""
        n = len(x)
        best = np.full(n, -np.inf, dtype=np.float32)
        arg = np.full(n, -1, dtype=np.int64)
        if self.count:
            lims, dist_, found = self.index.range_search(np.ascontiguousarray(x.cpu().numpy()), float(threshold))
            lims = lims.astype(np.int64)
            counts = np.diff(lims)
            if len(dist_):
                ids = np.concatenate(self.ids)[found]
                rows = np.repeat(np.arange(n), counts)
                order = np.lexsort((ids, -dist_, rows))  # per query: most similar, then smallest index
                first = lims[:-1][counts > 0]
                best[counts > 0] = dist_[order][first]
                arg[counts > 0] = ids[order][first]
        return torch.from_numpy(best).to(x.device), torch.from_numpy(arg).to(x.device)


@dataclass
class _Progress:
    """Decisions for rows ``[0, next_row)``; the rest is undecided."""

    keep: np.ndarray
    duplicate_of: np.ndarray | None  # rank 0 only
    similarity: np.ndarray | None  # rank 0 only
    contaminated_by: np.ndarray | None  # rank 0 only
    next_row: int = 0

    @classmethod
    def fresh(cls, n: int, details: bool) -> _Progress:
        if not details:
            return cls(np.zeros(n, bool), None, None, None)
        return cls(
            np.zeros(n, bool), np.full(n, -1, np.int64), np.full(n, np.nan, np.float32), np.full(n, -1, np.int64)
        )


def _fingerprint(n: int, d: int, threshold: float, identity: dict | None = None) -> str:
    """What a checkpoint's decisions depend on: the rule, the input's shape and identity, the threshold."""
    return fingerprint({"rule": RULE, "count": n, "dim": d, "threshold": float(threshold)}, identity)


def _save_checkpoint(path: Path, progress: _Progress, fingerprint: str) -> None:
    stop = progress.next_row
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(
            tmp,
            fingerprint=np.array(fingerprint),
            next_row=np.array(stop),
            keep=progress.keep[:stop],
            duplicate_of=progress.duplicate_of[:stop],
            similarity=progress.similarity[:stop],
            contaminated_by=progress.contaminated_by[:stop],
        )


def _load_checkpoint(path: Path | None, n: int, fingerprint: str, details: bool) -> _Progress:
    progress = _Progress.fresh(n, details)
    if path is None or not path.exists():
        return progress
    with np.load(path, allow_pickle=False) as saved:
        if str(saved["fingerprint"]) != fingerprint:
            raise IdentityError(
                f"{path} is a dedup checkpoint of another input or threshold; set overwrite=true to start afresh "
                "or choose another out="
            )
        stop = int(saved["next_row"])
        progress.keep[:stop] = saved["keep"]
        if details:
            progress.duplicate_of[:stop] = saved["duplicate_of"]
            progress.similarity[:stop] = saved["similarity"]
            progress.contaminated_by[:stop] = saved["contaminated_by"]
    progress.next_row = stop
    log.info("resuming dedup from %s at row %d of %d", path, stop, n)
    return progress


def _first_bad_row(chunk: torch.Tensor, start: int, n: int) -> int:
    """The smallest non-finite row over all ranks (``n`` when none); every rank gets the same."""
    finite = torch.isfinite(chunk).all(1)
    local = n if bool(finite.all()) else start + int(torch.nonzero(~finite)[0])
    return int(dist.all_reduce_(torch.tensor([local], dtype=torch.int64), "min")[0])


def _global_best(best: torch.Tensor, arg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine every rank's best similarity to its kept shard: the max, and the smallest index
    among the ranks that reach it."""
    if not dist.is_distributed():
        return best, arg
    top = dist.all_reduce_(best.clone(), "max")
    big = torch.iinfo(torch.int64).max
    candidate = torch.where((best == top) & (arg >= 0), arg, torch.full_like(arg, big))
    candidate = dist.all_reduce_(candidate, "min")
    return top, torch.where(candidate == big, -1, candidate)


def _window_edges(
    mine: torch.Tensor, window: torch.Tensor, offset: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Near-duplicate pairs ``j < i`` between this rank's rows (window positions ``offset + j``)
    and the window, gathered from all ranks: ``(src, dst, sim)`` in window positions."""
    sim = mine @ window.T  # (c, m); row j is window position offset + j
    pairs = torch.nonzero(torch.triu(sim > threshold, diagonal=offset + 1))
    values = sim[pairs[:, 0], pairs[:, 1]]
    src = dist.all_gather_rows(pairs[:, 0] + offset)
    dst = dist.all_gather_rows(pairs[:, 1])
    return src, dst, dist.all_gather_rows(values)


def default_sizes(device: torch.device, chunk_size: int | None, sim_budget: int | None) -> tuple[int, int]:
    """``(chunk_size, sim_budget)`` with the device's defaults for the unset ones.

    On a CPU, tiles of 1024 x 1024 similarities (4 MB) stay in cache: 1.76x faster than 4096 x
    8192 for 30k x 128 rows on one thread (docs/benchmarks.md). A GPU wants large tiles (few
    kernel launches): 8192 rows and 2^27 similarities (512 MB).
    """
    cpu = torch.device(device).type == "cpu"
    return chunk_size or (1024 if cpu else 8192), sim_budget or (2**20 if cpu else 2**27)


def deduplicate(
    x: Any,
    threshold: float = 0.95,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    backend: str = "torch",
    sim_budget: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every_s: float = 300.0,
    identity: dict | None = None,
    reference: Any = (),
    memory_budget_mb: float = 256.0,
    name: str = "input",
) -> DedupResult:
    """Remove near-duplicates with the sequential greedy rule (see the module docstring).

    Called on every rank of a ``torch.distributed`` group with the same arguments, the ranks
    share the work and all return the same ``keep`` (``duplicate_of`` and ``similarity`` on rank 0
    only); alone, it runs in one process.

    Args:
        x: ``(N, d)`` rows: array, memmap, :class:`~curate.io.store.ConcatenatedRows` or tensor;
            streamed by chunks (each rank reads its own), normalised on the fly.
        threshold: a row is a duplicate when its cosine similarity to a kept earlier row is
            strictly greater.
        chunk_size: rows per rank and step (a ``chunk_size x world_size * chunk_size`` similarity
            block is held); None: 1024 on CPU, 8192 on GPU.
        device: where the similarities are computed (torch backend).
        backend: ``"torch"`` or ``"faiss"`` (exact inner-product range search for the kept rows).
        sim_budget: most entries of a similarity tile against the kept rows; None: 2^20 on CPU,
            2^27 on GPU.
        checkpoint: an ``.npz`` path: resume from it when it exists, and (rank 0) save the
            decisions there every ``checkpoint_every_s`` seconds. None: no checkpoints.
        checkpoint_every_s: seconds between checkpoints (0: after every window).
        identity: the input's identity (:func:`curate.io.identity.input_identity`), kept in the
            checkpoint: a checkpoint of another input is refused (include the references' too).
        reference: ``(R_k, d)`` row sets (the evaluation sets; arrays, memmaps or store views):
            a row more similar than ``threshold`` to any of their rows is removed first (see the
            module docstring); every rank passes the same ones.
        memory_budget_mb: working memory of one reference search tile (:func:`curate.retrieval.search`).
        name: how error messages refer to ``x`` (the command passes its input path).

    Returns:
        :class:`DedupResult`.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available; use device='cpu'")
    rank, world = dist.get_rank(), dist.get_world_size()
    n, d = int(x.shape[0]), int(x.shape[1])
    cut = float(threshold) + SIM_TOLERANCE
    reference = list(reference)
    offsets = np.cumsum([0] + [int(r.shape[0]) for r in reference])
    checkpoint = None if checkpoint is None else Path(checkpoint)
    fingerprint = _fingerprint(n, d, threshold, identity)
    progress = _load_checkpoint(checkpoint, n, fingerprint, details=rank == 0)
    chunk_size, sim_budget = default_sizes(device, chunk_size, sim_budget)
    block = max(1, sim_budget // chunk_size)
    kept: Any = _KeptRows(d, device, chunk_size, block) if backend == "torch" else _FaissKept(d)
    _rebuild_shard(x, kept, progress, chunk_size, rank, world, device)
    window_rows = world * chunk_size
    last_saved = time.monotonic()
    report = Progress(n, "dedup: row", done=progress.next_row)
    for w0 in range(progress.next_row, n, window_rows):
        m = min(window_rows, n - w0)
        lo, hi = w0 + min(m, rank * chunk_size), w0 + min(m, (rank + 1) * chunk_size)
        mine = normalised_rows(x, lo, hi, device)
        bad = _first_bad_row(mine, lo, n)
        if bad < n:
            raise ValueError(f"{name}: row {bad} holds NaN or Inf")
        window = dist.all_gather_rows(mine)  # (m, d)
        # 1. against the kept rows of earlier windows (each rank: its shard)
        contaminated = _reference_hits(window, reference, offsets, cut, device, memory_budget_mb)
        best, arg = _global_best(*kept.best(window, cut))
        removed_prev = best > cut
        # 2. inside the window
        src, dst, sim = _window_edges(mine, window, lo - w0, cut)
        keep = resolve_edges(m, src, dst, removed_prev | (contaminated >= 0))
        in_best, in_arg = best_kept_predecessor(m, src, dst, sim, keep)
        # the most similar kept row, earlier window or this one (ties: the earlier window, smaller)
        from_window = in_best > best
        dup = torch.where(from_window, in_arg + w0, arg).masked_fill(keep | (contaminated >= 0), -1)
        dup_sim = torch.where(from_window, in_best, best)
        rows = slice(w0, w0 + m)
        progress.keep[rows] = keep.cpu().numpy()
        if progress.duplicate_of is not None:
            progress.duplicate_of[rows] = dup.cpu().numpy()
            progress.similarity[rows] = np.where(dup.cpu().numpy() < 0, np.nan, dup_sim.cpu().numpy())
            progress.contaminated_by[rows] = contaminated.cpu().numpy()
        progress.next_row = w0 + m
        # 3. this rank's kept rows join its shard
        mine_keep = keep[lo - w0 : hi - w0]
        kept.add(mine[mine_keep], torch.arange(lo, hi, device=device)[mine_keep])
        if checkpoint is not None and rank == 0 and time.monotonic() - last_saved >= checkpoint_every_s:
            _save_checkpoint(checkpoint, progress, fingerprint)
            last_saved = time.monotonic()
        report.update(m, lambda: f"{progress.next_row - int(progress.keep[: progress.next_row].sum())} removed so far")
    return DedupResult(progress.keep, progress.duplicate_of, progress.similarity, progress.contaminated_by)


def _reference_hits(
    window: torch.Tensor, reference: list[Any], offsets: np.ndarray, cut: float, device: torch.device, budget: float
) -> torch.Tensor:
    """For each row of ``window (m, d)`` (normalised, the same on every rank), its most similar
    reference row when that similarity exceeds ``cut``, else -1: ``(m,) int64`` rows of the
    references concatenated (ties: the earlier reference, then the smaller row)."""
    best = torch.full((len(window),), -float("inf"))
    hit = torch.full((len(window),), -1, dtype=torch.int64)
    for k, rows in enumerate(reference):
        scores, index = search(rows, window, 1, device=device, memory_budget_mb=budget)
        scores, index = torch.from_numpy(scores[:, 0]), torch.from_numpy(index[:, 0])
        better = scores > best
        best, hit = torch.where(better, scores, best), torch.where(better, index + int(offsets[k]), hit)
    return torch.where(best > cut, hit, -1).to(window.device)


def _rebuild_shard(
    x: Any, kept: Any, progress: _Progress, chunk_size: int, rank: int, world: int, device: torch.device
) -> None:
    """Reload this rank's kept rows after a resume: those of the chunks it would have read
    (row ``i`` belongs to rank ``(i // chunk_size) % world``), so the shards are as if never
    interrupted."""
    done = np.flatnonzero(progress.keep[: progress.next_row])
    mine = done[(done // chunk_size) % world == rank]
    for start in range(0, len(mine), 65536):
        index = mine[start : start + 65536]
        rows = torch.from_numpy(np.array(x[index], dtype=np.float32).reshape(len(index), x.shape[1]))
        kept.add(F.normalize(rows.to(device), dim=1), torch.from_numpy(index).to(device))


def run_dedup(cfg: DictConfig) -> dict:
    """Deduplicate ``cfg.input`` and write ``kept_indices.npy``, ``kept_ids.txt``,
    ``duplicate_of.npy`` and ``dedup.json`` (last) to ``cfg.out`` (rank 0).

    Under ``torchrun`` / SLURM every rank runs this and shares the work. A finished run with the
    same input (identity: path, size, modification time, a few rows) and threshold is skipped; a
    killed one resumes from ``<out>/checkpoint.npz``. ``out`` must not overlap the input; one run
    at a time holds it.

    Returns:
        The content of ``dedup.json``.
    """
    validate(cfg)
    dist.init_distributed(device=cfg.device if cfg.backend == "torch" else "cpu")
    out = Path(cfg.out)
    inputs = {"input": cfg.input, **{f"reference[{i}]": p for i, p in enumerate(reference_paths(cfg.reference))}}
    with guarded_output(out, inputs, "out"):
        return _run_dedup(cfg, out)


def open_references(paths: list[str], d: int, pool: str) -> tuple[list[Any], list[dict]]:
    """The reference stores as row sets, and their records ``{path, identity, count}``.

    Raises:
        InputError: a missing or unreadable store, a dimension other than the pool's ``d``, a
            NaN / Inf row; one line naming ``reference``.
    """
    from curate.io.store import check_finite

    rows, records = [], []
    for path in paths:
        try:
            array, _ = load_embeddings(Path(path).expanduser())
            if int(array.shape[1]) != d:
                raise InputError(
                    f"reference={path} has dimension {array.shape[1]}, the pool input={pool} has {d}: "
                    "embed both with the same encoder"
                )
            check_finite(Path(path).expanduser())
        except (FileNotFoundError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"reference={path}: {err}") from None
        rows.append(array)
        records.append({"path": str(Path(path).expanduser().resolve()), "identity": input_identity(path, array)})
        records[-1]["count"] = int(array.shape[0])
    return rows, records


def _run_dedup(cfg: DictConfig, out: Path) -> dict:
    array, ids = load_embeddings(cfg.input)
    source = str(Path(cfg.input).expanduser().resolve())
    references, ref_records = open_references(reference_paths(cfg.reference), int(array.shape[1]), cfg.input)
    identity = input_identity(cfg.input, array)
    # the references' identities are content settings: another evaluation set is another dedup
    settings = {
        **content(cfg),
        "input": source,
        "reference": [{k: r[k] for k in ("path", "identity")} for r in ref_records] or None,
    }
    done = out / "dedup.json"
    if cfg.overwrite and dist.is_main_process():
        _remove_own_outputs(out, source)
    dist.barrier()
    found = read_json(done) if done.exists() else None
    decision = decide(found, settings, identity)
    if decision.action is Action.skip:
        log_skip(out, "dedup")
        return found
    if decision.action is Action.recompute:
        if "inputs" in decision.changed:  # the input was replaced: say how
            check_identity(found.get("identity"), identity, f"the dedup in {out}", FRESH)
        if set(decision.changed) <= OUTPUT_ONLY:  # the same decisions, another set of files from them
            return _rewrite_outputs(cfg, out, found, settings, array, ids)
        decision.refuse(f"the dedup in {out}", FRESH)
    device = dist.resolve_device(cfg.device)
    started = time.perf_counter()
    result = deduplicate(
        array,
        cfg.threshold,
        cfg.chunk_size,
        device,
        str(cfg.backend),
        cfg.sim_budget,
        checkpoint=out / "checkpoint.npz",
        checkpoint_every_s=cfg.checkpoint_every_s,
        identity={"input": identity, "reference": settings["reference"]} if references else identity,
        reference=references,
        name=str(cfg.input),
    )
    elapsed = time.perf_counter() - started
    kept = result.kept_indices
    n = len(result.keep)
    contaminated = _contamination(result.contaminated_by, ref_records)
    removed_ref = sum(r["removed"] for r in contaminated) if contaminated else 0
    log.info(
        "dedup: kept %d of %d rows (%d near-duplicates, %d near a reference row, above cosine %.3f) in %.1f s "
        "on %d rank(s)",
        len(kept),
        n,
        n - len(kept) - removed_ref,
        removed_ref,
        cfg.threshold,
        elapsed,
        dist.get_world_size(),
    )
    summary = {
        "input": source,
        "identity": identity,
        "count": n,
        "kept": len(kept),
        "removed": n - len(kept),
        "duplicates": n - len(kept) - removed_ref,
        "contaminated": removed_ref if references else None,
        "reference": contaminated,
        "threshold": float(cfg.threshold),
        "tolerance": SIM_TOLERANCE,
        "rule": RULE,
        "backend": cfg.backend,
        "chunk_size": cfg.chunk_size,
        "world_size": dist.get_world_size(),
        "store": "store" if cfg.write_store else None,
        **completion_record(COMPLETE, settings, identity),
    }
    if dist.is_main_process():
        atomic_save_npy(out / "kept_indices.npy", kept)
        atomic_save_npy(out / "duplicate_of.npy", result.duplicate_of)
        if references:
            atomic_save_npy(out / "contaminated_by.npy", result.contaminated_by)
        else:
            (out / "contaminated_by.npy").unlink(missing_ok=True)  # a run's outputs are its own only
        write_ids(out / "kept_ids.txt", (ids[int(i)] for i in kept))
        if cfg.write_store:
            _write_kept_store(Path(cfg.input), out / "store", array, ids, kept, cfg)
        atomic_write_json(done, summary)
        (out / "checkpoint.npz").unlink(missing_ok=True)
        if "logger" in cfg:
            from curate.core.tracking import stage_tracker

            record = {k: summary[k] for k in ("count", "kept", "removed", "threshold")}
            with stage_tracker(cfg, out, "dedup", fresh=True) as tracker:
                tracker.log({**record, "seconds": elapsed}, step=0)
                tracker.summary(record)
    dist.barrier()
    return summary


def _contamination(contaminated_by: np.ndarray | None, records: list[dict]) -> list[dict] | None:
    """Per reference: ``path``, ``count`` (its rows) and ``removed`` (pool rows removed for their
    similarity to it); None without references (rank 0's counts; other ranks: zeros)."""
    if not records:
        return None
    hits = np.zeros(0, np.int64) if contaminated_by is None else contaminated_by[contaminated_by >= 0]
    offsets = np.cumsum([0] + [r["count"] for r in records])
    per = np.histogram(hits, bins=offsets)[0] if len(hits) else np.zeros(len(records), np.int64)
    return [{"path": r["path"], "count": r["count"], "removed": int(c)} for r, c in zip(records, per)]


def _rewrite_outputs(cfg: DictConfig, out: Path, found: dict, settings: dict, array: Any, ids: Any) -> dict:
    """A finished dedup whose :data:`OUTPUT_ONLY` settings changed: its decisions are kept and the
    files they make now are added (``write_store=true``: the kept rows' store); nothing is removed."""
    if dist.is_main_process():
        kept = np.load(out / "kept_indices.npy", allow_pickle=False)
        if cfg.write_store:
            log.info("%s: keeping its decisions, writing the store of the kept rows", out)
            _write_kept_store(Path(cfg.input), out / "store", array, ids, kept, cfg)
        store = "store" if cfg.write_store or found.get("store") else None
        atomic_write_json(out / "dedup.json", {**found, "store": store, "settings": settings})
    dist.barrier()
    return read_json(out / "dedup.json")


def _is_own_store(path: Path, source: str) -> bool:
    """Whether ``path`` is a store this stage wrote from ``source`` (its manifest says so)."""
    try:
        manifest = read_manifest(path)
    except (FileNotFoundError, ValueError):
        return False
    origin = (manifest.get("meta") or {}).get("source") or {}
    return isinstance(origin, dict) and origin.get("kind") == "dedup" and origin.get("input") == source


def _remove_own_outputs(out: Path, source: str) -> None:
    """``overwrite=true``: remove what an earlier dedup wrote into ``out`` (nothing else)."""
    for name in (
        "dedup.json",
        "checkpoint.npz",
        "kept_indices.npy",
        "duplicate_of.npy",
        "kept_ids.txt",
        "contaminated_by.npy",
    ):
        (out / name).unlink(missing_ok=True)
    for name in ("store", STORE_PARTIAL):
        folder = out / name
        if folder.exists() and (name == STORE_PARTIAL or _is_own_store(folder, source)):
            shutil.rmtree(folder)


STORE_PARTIAL = ".store.partial"


def _write_kept_store(src: Path, dst: Path, array: Any, ids: Any, kept: np.ndarray, cfg: DictConfig) -> dict:
    """The kept rows, ids and labels as a new store (streamed, ``shard_size`` rows at a time).

    Written in ``<out>/.store.partial`` (resumable) and renamed to ``dst`` when complete; a
    ``dst`` that this stage did not write is never touched (refused).
    """
    source = str(src.expanduser().resolve())
    if dst.exists():
        if _is_own_store(dst, source):  # finished before a kill, dedup.json not yet written
            return read_manifest(dst)
        raise UnsafeOutputError(f"{dst} exists and is not a store this dedup wrote; move it away (out)")
    manifest = read_manifest(src) if src.is_dir() else {}
    labels, names = None, None
    if manifest.get("labels"):
        from curate.io.store import load_labels

        labels, names = load_labels(src)
    partial = dst.parent / STORE_PARTIAL
    writer = StoreWriter(
        partial,
        meta={
            "model": manifest.get("model"),
            "normalised": manifest.get("normalised", False),
            "source": {"kind": "dedup", "input": source, "threshold": float(cfg.threshold)},
        },
        dtype=manifest.get("dtype", "float32"),
        ids_format=manifest.get("ids_format", "npy"),
        label_names=names,
    )
    n_shards = max(1, -(-len(kept) // cfg.shard_size))
    for k in range(n_shards):
        if writer.done(k):
            continue
        part = kept[k * cfg.shard_size : (k + 1) * cfg.shard_size]
        writer.write_shard(
            k,
            np.asarray(array[part]),
            [ids[int(i)] for i in part],
            items=(k * cfg.shard_size, k * cfg.shard_size + len(part)),
            labels=None if labels is None else labels[part],
        )
    result = finalize_store(partial, expected_shards=n_shards)
    os.replace(partial, dst)
    return result


#: the dedup stage's declaration (curate.core.protocol)
STAGE = Stage(
    name="dedup",
    config="dedup",
    schema=DedupConfig,
    run=run_dedup,
    inputs=("input",),
    outputs=("kept_indices.npy", "kept_ids.txt", "duplicate_of.npy", "contaminated_by.npy", "store"),
    record="dedup.json",
    check=validate,
    register=register_configs,
)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="dedup")
def main(cfg: DictConfig) -> None:
    """Run the dedup stage on the composed config."""
    dist.init_distributed(device=cfg.device if cfg.backend == "torch" else "cpu")
    dist.setup_logging()  # after init: only rank 0 logs
    run_stage(run_dedup, cfg)


if __name__ == "__main__":
    hydra_entry(main, outputs={"out": ("input", "reference")})
