"""Near-duplicate removal: ``python -m curate.dedup input=<store> out=<dir> [threshold=0.95]``.

Rule (sequential greedy, defined on the store's row order): rows are L2-normalised; row ``i`` is
**kept** unless some **kept** row ``j < i`` has cosine similarity ``x_i . x_j > threshold``
(strictly greater). So the first row of a group of copies is kept, every later copy is removed,
and a row similar only to *removed* rows is kept (with ``a ~ b``, ``b ~ c`` but not ``a ~ c``: ``a``
and ``c`` are kept, ``b`` removed). For each removed row, ``duplicate_of`` is its most similar
earlier kept row.

Kernel (no Python loop over rows): rows are streamed in chunks of ``chunk_size``. For a chunk C,

1. ``C @ K.T`` against the kept rows K of earlier chunks (in blocks that fit a memory budget):
   a row with a similarity above the threshold is removed; the decisions of earlier chunks are
   final, so this is exact;
2. inside the chunk the greedy rule is a fixed point on the strictly upper-triangular adjacency
   ``A[j, i] = (j < i) and sim > t`` of the remaining rows: repeat "remove every undecided row with
   a kept predecessor; keep every undecided row whose predecessors are all removed" (two
   matrix-vector products per round, on the sub-matrix of rows that have any edge). Each round
   decides at least the lowest undecided row, so it ends; the number of rounds is the length of
   the longest chain of near-duplicates inside the chunk (1-3 on real data);
3. the chunk's kept rows join K.

Cost: O(N * K * d) for K kept rows, on any device; K's rows stay in memory (float32, K x d).
The ``faiss`` backend does step 1 with an exact ``IndexFlatIP.range_search`` instead of torch.
Not distributed: the rule depends on every earlier decision, so one process runs it (a GPU
handles millions of rows); the embed/cluster stages are the distributed ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from curate.io.atomic import atomic_save_npy, atomic_write_json, atomic_write_text
from curate.io.store import MANIFEST, StoreWriter, finalize_store, load_embeddings, read_manifest

log = logging.getLogger(__name__)

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
RULE = "sequential greedy: keep row i unless a kept row j < i has cosine(x_i, x_j) > threshold"


@dataclass
class DedupConfig:
    """``python -m curate.dedup input=<store or .npy> out=<dir>``.

    Attributes:
        input: an embedding store directory or a ``(N, d)`` ``.npy``.
        out: output directory (also Hydra's run dir).
        threshold: cosine similarity above which a row is a near-duplicate of a kept earlier row.
        chunk_size: rows compared per step (a ``chunk_size^2`` similarity block is held).
        backend: ``torch`` (matmul on ``device``) or ``faiss`` (exact ``IndexFlatIP`` range search).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` (torch backend).
        sim_budget: most similarity entries held at once against the kept rows (memory bound).
        write_store: also write the kept rows as an embedding store in ``<out>/store``.
        shard_size: rows per shard of that store.
    """

    input: str = MISSING
    out: str = MISSING
    threshold: float = 0.95
    chunk_size: int = 4096
    backend: str = "torch"
    device: str = "auto"
    sim_budget: int = 2**25
    write_store: bool = False
    shard_size: int = 50000


ConfigStore.instance().store(name="dedup_schema", node=DedupConfig)


def validate(cfg: Any) -> None:
    """Cross-field checks of a dedup config; raises ``ValueError`` naming the field."""
    if not -1.0 <= cfg.threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {cfg.threshold}")
    if cfg.chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {cfg.chunk_size}")
    if cfg.sim_budget < cfg.chunk_size:
        raise ValueError(f"sim_budget must be >= chunk_size ({cfg.chunk_size}), got {cfg.sim_budget}")
    if cfg.backend not in ("torch", "faiss"):
        raise ValueError(f"backend must be torch or faiss, got {cfg.backend!r}")
    if cfg.shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {cfg.shard_size}")


@dataclass
class DedupResult:
    """Outcome of :func:`deduplicate` for ``N`` rows.

    Attributes:
        keep: ``(N,) bool``, True for kept rows.
        duplicate_of: ``(N,) int64``: for a removed row, its most similar earlier kept row; -1 for
            kept rows.
        similarity: ``(N,) float32``: the cosine similarity to ``duplicate_of`` (NaN for kept rows).
    """

    keep: np.ndarray
    duplicate_of: np.ndarray
    similarity: np.ndarray

    @property
    def kept_indices(self) -> np.ndarray:
        """``(K,) int64`` indices of the kept rows, increasing."""
        return np.flatnonzero(self.keep).astype(np.int64)


def resolve_within_chunk(adj: torch.Tensor, fixed_removed: torch.Tensor) -> torch.Tensor:
    """The sequential greedy rule inside one chunk, without a loop over rows.

    Args:
        adj: ``(c, c) bool``, ``adj[j, i]`` True when ``j < i`` and rows ``j``, ``i`` are
            near-duplicates (strictly upper triangular).
        fixed_removed: ``(c,) bool``, rows already removed (duplicates of earlier chunks); they
            neither stay nor remove anyone.

    Returns:
        ``(c,) bool``: True for the rows kept.
    """
    adj = adj & ~fixed_removed[:, None] & ~fixed_removed[None, :]
    keep = ~fixed_removed.clone()
    involved = torch.nonzero(adj.any(0) | adj.any(1)).flatten()
    if involved.numel() == 0:
        return keep
    sub = adj[involved][:, involved].to(torch.float32)  # edges only among involved rows
    c = involved.numel()
    kept = torch.zeros(c, dtype=torch.bool, device=adj.device)
    removed = torch.zeros(c, dtype=torch.bool, device=adj.device)
    undecided = torch.ones(c, dtype=torch.bool, device=adj.device)
    while bool(undecided.any()):
        # kept rows remove their undecided successors
        hit = (kept.to(torch.float32) @ sub) > 0
        newly_removed = undecided & hit
        removed |= newly_removed
        undecided &= ~newly_removed
        # a row whose predecessors are all removed is kept
        blocked = ((~removed).to(torch.float32) @ sub) > 0
        newly_kept = undecided & ~blocked
        kept |= newly_kept
        undecided &= ~newly_kept
    keep[involved] = kept
    return keep


class _KeptRows:
    """Growing ``(K, d)`` float32 buffer of the kept rows (capacity doubles) and their indices."""

    def __init__(self, d: int, device: torch.device) -> None:
        self.rows = torch.empty(0, d, device=device)
        self.index = torch.empty(0, dtype=torch.int64, device=device)
        self.count = 0

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


def _best_kept_torch(x: torch.Tensor, kept: _KeptRows, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max similarity of each row of ``x (c, d)`` to the kept rows, and the argmax's global index."""
    best = torch.full((len(x),), -float("inf"), device=x.device)
    arg = torch.full((len(x),), -1, dtype=torch.int64, device=x.device)
    for start in range(0, kept.count, block):  # blocks of kept rows, sized by the memory budget
        stop = min(kept.count, start + block)
        sim = x @ kept.rows[start:stop].T
        value, where = sim.max(1)
        better = value > best
        best = torch.where(better, value, best)
        arg = torch.where(better, kept.index[start:stop][where], arg)
    return best, arg


class _FaissKept:
    """The kept rows in an exact ``faiss.IndexFlatIP``; queries by range search."""

    def __init__(self, d: int) -> None:
        import faiss

        self.faiss = faiss
        self.index = faiss.IndexFlatIP(d)
        self.ids: list[np.ndarray] = []
        self.count = 0

    def add(self, rows: torch.Tensor, index: torch.Tensor) -> None:
        self.index.add(np.ascontiguousarray(rows.cpu().numpy(), dtype=np.float32))
        self.ids.append(index.cpu().numpy())
        self.count += len(rows)

    def best(self, x: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(x)
        best = np.full(n, -np.inf, dtype=np.float32)
        arg = np.full(n, -1, dtype=np.int64)
        if self.count:
            lims, dist, found = self.index.range_search(np.ascontiguousarray(x.cpu().numpy()), float(threshold))
            lims = lims.astype(np.int64)
            counts = np.diff(lims)
            if len(dist):
                rows = np.repeat(np.arange(n), counts)
                order = np.lexsort((-dist, rows))  # per query, the most similar first
                first = lims[:-1][counts > 0]
                best[counts > 0] = dist[order][first]
                arg[counts > 0] = np.concatenate(self.ids)[found[order][first]]
        return torch.from_numpy(best).to(x.device), torch.from_numpy(arg).to(x.device)


def deduplicate(
    x: Any,
    threshold: float = 0.95,
    chunk_size: int = 4096,
    device: str | torch.device = "cpu",
    backend: str = "torch",
    sim_budget: int = 2**25,
) -> DedupResult:
    """Remove near-duplicates with the sequential greedy rule (see the module docstring).

    Args:
        x: ``(N, d)`` rows: array, memmap, :class:`~curate.io.store.ConcatenatedRows` or tensor;
            streamed by chunks, normalised on the fly.
        threshold: a row is a duplicate when its cosine similarity to a kept earlier row is
            strictly greater.
        chunk_size: rows per step.
        device: where the similarities are computed (torch backend).
        backend: ``"torch"`` or ``"faiss"`` (exact inner-product range search for the kept rows).
        sim_budget: most entries of a similarity block against the kept rows.

    Returns:
        :class:`DedupResult`.
    """
    device = torch.device(device)
    n, d = int(x.shape[0]), int(x.shape[1])
    keep = np.zeros(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan, dtype=np.float32)
    kept: Any = _KeptRows(d, device) if backend == "torch" else _FaissKept(d)
    block = max(1, sim_budget // max(chunk_size, 1))
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        rows = x[start:stop]
        if isinstance(rows, torch.Tensor):
            rows = rows.to(torch.float32)
        else:  # a copy: memory-mapped rows are read-only
            rows = torch.from_numpy(np.array(rows, dtype=np.float32))
        chunk = F.normalize(rows.to(device), dim=1)
        if not torch.isfinite(chunk).all():
            bad = start + int(torch.nonzero(~torch.isfinite(chunk).all(1))[0])
            raise ValueError(f"row {bad} holds NaN or Inf")
        # 1. against the kept rows of earlier chunks
        if backend == "torch":
            best, arg = _best_kept_torch(chunk, kept, block)
        else:
            best, arg = kept.best(chunk, threshold)
        removed_prev = best > threshold
        # 2. inside the chunk
        sim = chunk @ chunk.T
        adj = torch.triu(sim > threshold, diagonal=1)
        keep_chunk = resolve_within_chunk(adj, removed_prev)
        # for rows removed inside the chunk: the most similar earlier kept row of the chunk
        by_kept = sim.masked_fill(~(adj & keep_chunk[:, None]), -float("inf"))
        in_best, in_arg = by_kept.max(0)
        removed_in = ~keep_chunk & ~removed_prev
        local = torch.arange(start, stop, device=device)
        dup = torch.where(removed_prev, arg, torch.where(removed_in, local[in_arg], torch.full_like(arg, -1)))
        dup_sim = torch.where(removed_prev, best, in_best)
        keep[start:stop] = keep_chunk.cpu().numpy()
        duplicate_of[start:stop] = dup.cpu().numpy()
        similarity[start:stop] = np.where(keep[start:stop], np.nan, dup_sim.cpu().numpy())
        # 3. the chunk's kept rows join the kept set
        kept.add(chunk[keep_chunk], local[keep_chunk])
    return DedupResult(keep, duplicate_of, similarity)


def run_dedup(cfg: DictConfig) -> dict:
    """Deduplicate ``cfg.input`` and write ``kept_indices.npy``, ``kept_ids.txt``,
    ``duplicate_of.npy`` and ``dedup.json`` (last) to ``cfg.out``.

    Returns:
        The content of ``dedup.json``.
    """
    validate(cfg)
    out = Path(cfg.out)
    array, ids = load_embeddings(cfg.input)
    device = _device(cfg.device)
    started = time.perf_counter()
    result = deduplicate(array, cfg.threshold, cfg.chunk_size, device, cfg.backend, cfg.sim_budget)
    elapsed = time.perf_counter() - started
    kept = result.kept_indices
    n = len(result.keep)
    log.info(
        "dedup: kept %d of %d rows (%d near-duplicates above cosine %.3f) in %.1f s",
        len(kept),
        n,
        n - len(kept),
        cfg.threshold,
        elapsed,
    )
    atomic_save_npy(out / "kept_indices.npy", kept)
    atomic_save_npy(out / "duplicate_of.npy", result.duplicate_of)
    atomic_write_text(out / "kept_ids.txt", "".join(f"{ids[int(i)]}\n" for i in kept))
    summary = {
        "input": str(Path(cfg.input).resolve()),
        "count": n,
        "kept": len(kept),
        "removed": n - len(kept),
        "threshold": float(cfg.threshold),
        "rule": RULE,
        "backend": cfg.backend,
        "chunk_size": int(cfg.chunk_size),
        "store": None,
    }
    if cfg.write_store:
        summary["store"] = "store"
        _write_kept_store(Path(cfg.input), out / "store", array, ids, kept, cfg)
    atomic_write_json(out / "dedup.json", summary)
    return summary


def _write_kept_store(src: Path, dst: Path, array: Any, ids: Any, kept: np.ndarray, cfg: DictConfig) -> dict:
    """The kept rows, ids and labels as a new store (streamed, ``shard_size`` rows at a time)."""
    manifest = read_manifest(src) if src.is_dir() else {}
    labels, names = None, None
    if manifest.get("labels"):
        from curate.io.store import load_labels

        labels, names = load_labels(src)
    if (dst / MANIFEST).exists():
        import shutil

        shutil.rmtree(dst)
    writer = StoreWriter(
        dst,
        meta={
            "model": manifest.get("model"),
            "normalised": manifest.get("normalised", False),
            "source": {"kind": "dedup", "input": str(src.resolve()), "threshold": float(cfg.threshold)},
        },
        dtype=manifest.get("dtype", "float32"),
        ids_format=manifest.get("ids_format", "npy"),
        label_names=names,
    )
    n_shards = max(1, -(-len(kept) // cfg.shard_size))
    for k in range(n_shards):
        part = kept[k * cfg.shard_size : (k + 1) * cfg.shard_size]
        writer.write_shard(
            k,
            np.asarray(array[part]),
            [ids[int(i)] for i in part],
            items=(k * cfg.shard_size, k * cfg.shard_size + len(part)),
            labels=None if labels is None else labels[part],
        )
    return finalize_store(dst, expected_shards=n_shards)


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available")
    return torch.device(device)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="dedup")
def main(cfg: DictConfig) -> None:
    """Run the dedup stage on the composed config."""
    from curate.dist import setup_logging

    setup_logging()
    run_dedup(cfg)


if __name__ == "__main__":
    main()
