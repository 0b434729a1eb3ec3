"""Per-device settings of the k-means engine: memory budgets and the matmul precision.

One place decides how much device memory a chunk and a cached shard may take (on CUDA: a share
of the device's free memory, so a GPU does milliseconds of work per chunk and keeps a shard that
fits instead of re-streaming it every iteration) and whether float32 matmuls may use TF32 (one
setting, honoured by the Lloyd pass, k-means++ and the batched matmul of the level-1 split).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

CPU_MEMORY_BUDGET_MB = 256.0
CPU_CACHE_MB = 2048.0
# On CUDA a chunk gets 1/16 of the free memory, between these bounds: at k = 1024 the 256 MB of
# the CPU default is ~40 us of GPU work per chunk, far below launch and copy latencies.
CUDA_CHUNK_MB_MIN, CUDA_CHUNK_MB_MAX = 256.0, 4096.0
# The cached shard may take this share of the free memory, less one chunk (the rest is left to
# k-means++ trials, the reseed, the split's sums and other stages of the process).
CUDA_CACHE_SHARE = 0.5


def default_memory_mb(device: str | torch.device, free_bytes: int | None = None) -> tuple[float, float]:
    """The default ``(memory_budget_mb, cache_mb)`` for ``device``.

    Args:
        device: where the kernels run.
        free_bytes: the device's free memory (CUDA); None on a CPU or when unknown.

    Returns:
        the chunk budget and the most a shard kept on the device may take, in MB. On a CPU (or
        CUDA with ``free_bytes`` unknown): 256 and 2048. On CUDA: ``free / 16`` clamped to
        ``[256, 4096]`` MB for a chunk, and half the free memory less one chunk for the cache.
    """
    if torch.device(device).type != "cuda" or free_bytes is None:
        return CPU_MEMORY_BUDGET_MB, CPU_CACHE_MB
    free_mb = free_bytes / 2**20
    chunk = min(CUDA_CHUNK_MB_MAX, max(CUDA_CHUNK_MB_MIN, free_mb / 16))
    return chunk, max(0.0, CUDA_CACHE_SHARE * free_mb - chunk)


def free_device_bytes(device: str | torch.device) -> int | None:
    """Memory a CUDA device can still give this process (bytes), None on a CPU: the driver's free
    memory plus what PyTorch's caching allocator holds unused (a previous fit's freed cache)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def resolve_memory_mb(
    device: str | torch.device, memory_budget_mb: float | None, cache_mb: float | None
) -> tuple[float, float]:
    """``(memory_budget_mb, cache_mb)`` with each None replaced by :func:`default_memory_mb` of
    the device's current free memory."""
    if memory_budget_mb is not None and cache_mb is not None:
        return float(memory_budget_mb), float(cache_mb)
    chunk, cache = default_memory_mb(device, free_device_bytes(device))
    return (
        chunk if memory_budget_mb is None else float(memory_budget_mb),
        cache if cache_mb is None else float(cache_mb),
    )


@contextlib.contextmanager
def matmul_precision(device: str | torch.device, allow_tf32: bool) -> Iterator[None]:
    """Run a block with CUDA float32 matmuls (``mm``, ``addmm``, ``baddbmm``) on TF32 or not, as
    ``allow_tf32`` says, and restore the process-wide switch after; nothing on a CPU."""
    if torch.device(device).type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = bool(allow_tf32)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
