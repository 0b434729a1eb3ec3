"""On-disk formats: atomic writes, memory-mapped arrays and per-rank shards."""

from curate.io.atomic import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text
from curate.io.shards import open_npy, shard_range

__all__ = [
    "atomic_path",
    "atomic_save_npy",
    "atomic_write_json",
    "atomic_write_text",
    "open_npy",
    "shard_range",
]
