"""Retrieval arm: ``python -m curate.retrieve input=<pool store> queries=<store> per_query=N out=<dir>``.

Selects the union of each query's ``N`` nearest pool items by cosine similarity (DINOv2's
retrieval of images near a curated seed set): exact by default, chunked in ``memory_budget_mb``
and sharded over ranks under ``torchrun`` / SLURM with a top-N merge; ``method=ivf`` searches a
faiss IVF index (``nlist`` cells, ``nprobe`` searched per query) instead. The search itself is
:func:`curate.retrieval.search`; ``scripts/bench_retrieve.py`` measures IVF's recall against exact.

Writes into ``out`` (rank 0; the files are listed in :data:`OUTPUTS`):

- ``selected.parquet``: ``id`` (string), ``index`` (int64 pool row), the union, by increasing row;
- ``indices.npy`` and ``ids.txt``: the same rows and ids, so ``out`` is a ``data.selection``;
- ``neighbours.npy`` ``(Q, N)`` int64 and ``similarities.npy`` ``(Q, N)`` float32: per query, its
  pool rows by decreasing similarity (ties: the smaller row);
- ``retrieve.json``: counts and settings; ``manifest.json`` last (the files it vouches for).

A re-run computes again and replaces these files (the manifest is removed first, so a killed run
leaves none). ``out`` must not overlap ``input`` or ``queries``; one run at a time holds it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from curate import CONFIG_DIR
from curate.conf import RetrieveConfig, register_configs
from curate.core import dist
from curate.core.atomic import atomic_save_npy, atomic_write_json
from curate.core.entry import hydra_entry
from curate.core.errors import InputError, check_device
from curate.core.protocol import Stage
from curate.io.identity import input_identity, vouch
from curate.io.idlist import write_ids
from curate.io.store import load_embeddings
from curate.io.tables import OUTPUT_FILES, SELECTED_FILE, write_selected
from curate.retrieval import search
from curate.stage import guarded_output, run_stage

log = logging.getLogger(__name__)
register_configs()

FORMAT = "ssl-curate-retrieval"
#: what this stage writes into ``out``, the manifest last
OUTPUTS = OUTPUT_FILES["retrieve"]
MANIFEST = "manifest.json"


def validate(cfg: Any) -> None:
    """Cross-field checks of a retrieve config; raises ``ValueError`` naming the key."""
    for key in ("per_query", "nlist", "nprobe", "ivf_train_size"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: must be an integer >= 1, got {value!r}")
    if not cfg.memory_budget_mb > 0:
        raise ValueError(f"memory_budget_mb: must be > 0, got {cfg.memory_budget_mb}")


def _open(path: str, key: str) -> tuple[Any, Any]:
    try:
        return load_embeddings(Path(path).expanduser())
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"{key}={path}: {err}") from None


def run_retrieve(cfg: DictConfig) -> dict:
    """Retrieve ``cfg.per_query`` pool items per query and write the outputs (see the module
    docstring); every rank calls it. Returns the content of ``retrieve.json``."""
    validate(cfg)
    check_device(cfg.device)
    dist.init_distributed(device=cfg.device if cfg.method == "exact" else "cpu")
    out = Path(cfg.out)
    with guarded_output(out, {"input": cfg.input, "queries": cfg.queries}, "out"):
        return _run(cfg, out)


def _run(cfg: DictConfig, out: Path) -> dict:
    pool, ids = _open(cfg.input, "input")
    queries, _ = _open(cfg.queries, "queries")
    n, d = int(pool.shape[0]), int(pool.shape[1])
    if queries.shape[1] != d:
        raise InputError(
            f"queries={cfg.queries} has dimension {queries.shape[1]}, the pool input={cfg.input} has {d}: "
            "embed both with the same encoder"
        )
    if cfg.per_query > n:
        raise InputError(f"per_query={cfg.per_query} exceeds the pool's {n} items (input={cfg.input})")
    if cfg.method == "ivf" and cfg.nlist > n:
        raise InputError(f"nlist={cfg.nlist} exceeds the pool's {n} items (input={cfg.input})")
    if dist.is_main_process():
        (out / MANIFEST).unlink(missing_ok=True)  # a killed re-run leaves no manifest vouching for old files
    dist.barrier()
    device = dist.resolve_device(cfg.device) if cfg.method == "exact" else "cpu"
    started = time.perf_counter()
    scores, neighbours = search(
        pool,
        queries,
        int(cfg.per_query),
        method=str(cfg.method),
        device=device,
        memory_budget_mb=cfg.memory_budget_mb,
        nlist=cfg.nlist,
        nprobe=cfg.nprobe,
        train_size=cfg.ivf_train_size,
        seed=cfg.seed,
    )
    elapsed = time.perf_counter() - started
    chosen = np.unique(neighbours[neighbours >= 0])
    summary = {
        "input": str(Path(cfg.input).expanduser().resolve()),
        "queries": str(Path(cfg.queries).expanduser().resolve()),
        "pool_count": n,
        "query_count": int(queries.shape[0]),
        "dim": d,
        "per_query": int(cfg.per_query),
        "selected": int(len(chosen)),
        "method": str(cfg.method),
        "ivf": {"nlist": cfg.nlist, "nprobe": cfg.nprobe, "train_size": cfg.ivf_train_size, "seed": cfg.seed}
        if cfg.method == "ivf"
        else None,
        "similarity": "cosine",
        "world_size": dist.get_world_size(),
        "seconds": elapsed,
    }
    log.info(
        "retrieve: %d queries x %d -> %d distinct pool items of %d (%s) in %.1f s on %d rank(s)",
        summary["query_count"],
        cfg.per_query,
        len(chosen),
        n,
        cfg.method,
        elapsed,
        dist.get_world_size(),
    )
    if dist.is_main_process():
        write_selected(out / SELECTED_FILE, chosen, ids)
        atomic_save_npy(out / "indices.npy", chosen)
        write_ids(out / "ids.txt", (ids[int(i)] for i in chosen))
        atomic_save_npy(out / "neighbours.npy", neighbours)
        atomic_save_npy(out / "similarities.npy", scores)
        atomic_write_json(out / "retrieve.json", summary)
        manifest = {
            "format": FORMAT,
            "status": "complete",
            "config": OmegaConf.to_container(cfg, resolve=True),
            "inputs": {
                "input": input_identity(cfg.input, pool),
                "queries": input_identity(cfg.queries, queries),
            },
            "files": vouch(out, OUTPUTS),
        }
        atomic_write_json(out / MANIFEST, manifest)
    dist.barrier()
    return summary


#: the retrieve stage's declaration (curate.core.protocol); the pipeline reaches it through
#: ``stage_modules.retrieve`` (its retrieval arm, ``mix.retrieval``)
STAGE = Stage(
    name="retrieve",
    config="retrieve",
    schema=RetrieveConfig,
    run=run_retrieve,
    inputs=("input", "queries"),
    outputs=OUTPUTS,
    record=MANIFEST,
    check=validate,
    register=register_configs,
)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="retrieve")
def main(cfg: DictConfig) -> None:
    """Run the retrieve stage on the composed config."""
    dist.init_distributed(device=cfg.device if cfg.method == "exact" else "cpu")
    dist.setup_logging()  # after init: only rank 0 logs
    run_stage(run_retrieve, cfg)


if __name__ == "__main__":
    hydra_entry(main, outputs={"out": ("input", "queries")})
