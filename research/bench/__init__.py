"""Benchmark support: what ``scripts/bench_kmeans.py``, ``scripts/bench_dedup.py`` and
``scripts/scaling.py`` measure and model with.

- :mod:`~research.bench.measure`: the ``torch.mm`` rate probe, peak memory, wall / CPU time, worker
  subprocesses with a thread limit, rows appended or rewritten as soon as they are measured, ratios
  to a peer.
- :mod:`~research.bench.data`: synthetic inputs (clustered points written chunk by chunk, a pool with
  near-duplicates).
- :mod:`~research.bench.kmeans`: the k-means workers (ours, faiss, sklearn), their runs and rows.
- :mod:`~research.bench.dedup`: the dedup peer (faiss all-pairs) and the multi-rank run.
- :mod:`~research.bench.inits`: ``scripts/bench_init.py``'s init, load, curation and quality rows.
- :mod:`~research.bench.costmodel`: the cost model of the engine at the paper's web scale (time,
  bytes, memory per level); :mod:`~research.bench.scaling_report`: its markdown report.

Importing this package does not import torch, faiss or sklearn.
"""

from research.bench.data import near_duplicate_pool, write_clustered_npy
from research.bench.measure import (
    RESULT_TAG,
    PeakMemory,
    add_ratios,
    append_jsonl,
    matmul_gflops,
    run_module,
    timed,
    write_rows,
)

__all__ = [
    "RESULT_TAG",
    "PeakMemory",
    "add_ratios",
    "append_jsonl",
    "matmul_gflops",
    "near_duplicate_pool",
    "run_module",
    "timed",
    "write_clustered_npy",
    "write_rows",
]
