"""The dedup benchmark's peer (faiss all-pairs range search + the greedy rule) and its multi-rank run."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np

from research.bench.measure import timed

__all__ = ["faiss_allpairs", "run_ranks"]


def faiss_allpairs(x: np.ndarray, threshold: float) -> np.ndarray:
    """The peer: all neighbour lists above ``threshold`` from one faiss range search, then the
    greedy rule row by row (what one writes without :mod:`curate.dedup`).

    Args:
        x: ``(n, d)`` rows.
        threshold: cosine similarity above which a later row duplicates an earlier kept one.

    Returns:
        The kept row indices, ascending.
    """
    import faiss

    xn = np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)
    index = faiss.IndexFlatIP(xn.shape[1])
    index.add(xn)
    lims, _, found = index.range_search(xn, float(threshold))
    keep = np.zeros(len(x), dtype=bool)
    for i in range(len(x)):  # the sequential rule: any kept earlier neighbour removes row i
        neighbours = found[lims[i] : lims[i + 1]]
        earlier = neighbours[neighbours < i]
        keep[i] = not keep[earlier].any()
    return np.flatnonzero(keep)


def _rank_worker(rank: int, world: int, port: int, path: str, spec: dict[str, Any], out: str) -> None:
    import torch
    import torch.distributed as torch_dist

    from curate.core import dist
    from curate.dedup import deduplicate

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(spec["threads"])
    dist.init_distributed(backend="gloo")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        dist.barrier()
        result, wall, cpu = timed(
            lambda: deduplicate(x, spec["threshold"], spec["chunk_size"], spec["device"], "torch", spec["sim_budget"])
        )
        np.save(f"{out}/kept_{rank}.npy", result.kept_indices)
        Path(out, f"time_{rank}.json").write_text(json.dumps({"wall": wall, "cpu": cpu}))
    finally:
        torch_dist.destroy_process_group()


def run_ranks(path: Path, world: int, spec: dict[str, Any], tmp: Path) -> tuple[np.ndarray, float, float]:
    """:func:`curate.dedup.deduplicate` of the ``.npy`` at ``path`` on ``world`` gloo ranks.

    Args:
        spec: ``threshold``, ``chunk_size``, ``device``, ``sim_budget`` and ``threads`` (per rank).
        tmp: a folder for the ranks' results.

    Returns:
        ``(kept indices, max wall seconds over the ranks, summed CPU seconds)``.
    """
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank_worker, args=(world, port, str(path), spec, str(tmp)), nprocs=world)
    times = [json.loads(Path(tmp, f"time_{r}.json").read_text()) for r in range(world)]
    kept = [np.load(tmp / f"kept_{r}.npy", allow_pickle=False) for r in range(world)]
    if any(not np.array_equal(k, kept[0]) for k in kept):
        raise AssertionError("the ranks disagree on the kept rows")
    return kept[0], max(t["wall"] for t in times), sum(t["cpu"] for t in times)
