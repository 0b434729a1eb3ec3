"""On-disk formats: atomic writes, memory-mapped arrays and per-rank shards."""

from curate.core.atomic import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text
from curate.io.shards import open_npy, shard_range
from curate.io.store import (
    ConcatenatedRows,
    StoreWriter,
    check_finite,
    finalize_store,
    load_embeddings,
    load_labels,
    read_manifest,
    write_store,
)

__all__ = [
    "ConcatenatedRows",
    "StoreWriter",
    "check_finite",
    "finalize_store",
    "load_embeddings",
    "load_labels",
    "read_manifest",
    "write_store",
    "atomic_path",
    "atomic_save_npy",
    "atomic_write_json",
    "atomic_write_text",
    "open_npy",
    "shard_range",
]
