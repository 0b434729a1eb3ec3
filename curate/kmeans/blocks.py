"""Row-block parallel Lloyd pass on a CPU, faiss-style.

The rows are cut into blocks of :func:`block_rows_for` rows (a function of ``k`` only); block
``b`` (counted over the whole pass) belongs to group ``b % G``, and each group owns a float64
``(k, d)`` partial sum. A group's blocks are processed in order by one worker thread at a time,
each block's GEMM, argmin and accumulation while the block's ``(rows x k)`` scores are in cache,
with torch's intra-op threads at 1 (the workers are Python threads; torch releases the GIL inside
its ops). The partial sums are merged once per pass in group order. ``G`` and the block size
depend on ``k`` and ``d`` only, never on the number of threads, so the sums (and so the
centroids) are bit-identical for any thread count.

Groups are handed to workers dynamically: on a machine where another process runs, a
descheduled worker delays its current group only, not a fixed half of the pass.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from curate.kmeans.kernels import _DIRECT_MAX_D, argmin_rows, assign_chunk, cpu_threads, row_sqnorms

# rows per block: at most 1024 (1024 x 1024 float32 scores are 4 MB: on one thread a 200k x 128,
# k = 1024 pass took 0.755 s with 1024-row blocks against 0.796 s with 512), at least 256 (a
# 256-row GEMM at d = 128 still runs at the rate of a large one); docs/benchmarks.md
BLOCK_ROWS = 1024
_MIN_BLOCK_ROWS = 256
_BLOCK_SCORE_BYTES = 4 << 20
_MAX_GROUPS = 16
# the group partial sums together take at most this much memory (at least one group)
_GROUP_SUMS_BYTES = 256 << 20


def block_rows_for(k: int) -> int:
    """Rows per block for ``k`` centroids: a 4 MB ``(rows, k)`` float32 score block, within
    [256, 1024] rows. Depends on ``k`` only, so the order of the sums does not depend on threads."""
    return max(_MIN_BLOCK_ROWS, min(BLOCK_ROWS, _BLOCK_SCORE_BYTES // (4 * max(1, k))))


def n_groups(k: int, d: int) -> int:
    """Partial-sum groups for ``k x d`` float64 sums: up to 16, within 256 MB together."""
    return max(1, min(_MAX_GROUPS, _GROUP_SUMS_BYTES // max(1, 8 * k * d)))


class BlockLloyd:
    """One Lloyd pass (or an assignment pass) over chunks of rows, block-parallel on a CPU.

    Args:
        c: ``(k, d)`` float32 centroids.
        threads: worker threads (1: everything runs in the calling thread, same result).
        accumulate: also sum the rows per label (Lloyd); False for an assignment pass.

    After the chunks are fed (:meth:`feed`), :meth:`sums` gives ``(k, d)`` float64 sums and
    ``(k,)`` int64 counts.
    """

    def __init__(self, c: torch.Tensor, threads: int, accumulate: bool = True) -> None:
        self.c = c
        self.c_sqnorm = c.square().sum(dim=1)
        k, d = c.shape
        # (d, k) contiguous: the block GEMM ran 15% faster than on the transposed view c.T
        self.c_t = c.T.contiguous()
        self.groups = n_groups(k, d) if accumulate else _MAX_GROUPS
        self.accumulate = accumulate
        self.block_rows = block_rows_for(k)
        self.threads = max(1, min(int(threads), self.groups))
        if accumulate:
            self.group_sums = torch.zeros(self.groups, k, d, dtype=torch.float64)
            self.group_counts = torch.zeros(self.groups, k, dtype=torch.int64)
        self._next_block = 0
        self._local = threading.local()

    def _scratch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This worker thread's buffers: ``(block_rows, k)`` float32 scores, ``(block_rows, d)``
        float64 rows and ``(block_rows,)`` int64 ones (allocated once per thread and pass)."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None:
            (k, d), m = self.c.shape, self.block_rows
            bufs = self._local.bufs = (
                torch.empty(m, k, dtype=torch.float32),
                torch.empty(m, d, dtype=torch.float64),
                torch.ones(m, dtype=torch.int64),
            )
        return bufs

    def _assign(self, xb: torch.Tensor, scratch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels ``(m,)`` and squared distances ``(m,)`` of one block ``xb: (m, d)``."""
        if xb.shape[1] <= _DIRECT_MAX_D:
            return assign_chunk(xb, self.c, self.c_sqnorm, out=scratch)
        scores = torch.addmm(self.c_sqnorm.unsqueeze(0), xb, self.c_t, alpha=-2.0, out=scratch[: len(xb)])
        best, labels = argmin_rows(scores)  # ||x||^2 does not change the argmin: added to the minimum only
        return labels, (best + row_sqnorms(xb)).clamp_min_(0.0)

    def _run_group(self, g: int, x: torch.Tensor, starts: list[int], labels: torch.Tensor, sq: torch.Tensor) -> None:
        scratch, x64, ones = self._scratch()
        for s in starts:
            xb = x[s : s + self.block_rows]
            m = len(xb)
            lab, d2 = self._assign(xb, scratch)
            labels[s : s + m] = lab
            sq[s : s + m] = d2
            if self.accumulate:
                self.group_sums[g].index_add_(0, lab, x64[:m].copy_(xb))
                self.group_counts[g].index_add_(0, lab, ones[:m])

    def feed(self, x: torch.Tensor, labels: torch.Tensor, sq: torch.Tensor, pool: ThreadPoolExecutor | None) -> None:
        """Process ``x: (m, d)`` float32 rows; write their ``labels: (m,)`` int64 and squared
        distances ``sq: (m,)`` float32 (views into the caller's output)."""
        by_group: dict[int, list[int]] = {}
        for s in range(0, len(x), self.block_rows):
            by_group.setdefault(self._next_block % self.groups, []).append(s)
            self._next_block += 1
        if pool is None or len(by_group) == 1:
            for g, starts in by_group.items():
                self._run_group(g, x, starts, labels, sq)
            return
        futures = [pool.submit(self._run_group, g, x, starts, labels, sq) for g, starts in by_group.items()]
        for f in futures:
            f.result()

    def sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(k, d)`` float64 sums and ``(k,)`` int64 counts, merged in group order."""
        sums = self.group_sums[0].clone()
        for g in range(1, self.groups):
            sums += self.group_sums[g]
        return sums, self.group_counts.sum(dim=0)


def _one_thread_worker() -> None:
    torch.set_num_threads(1)


@contextlib.contextmanager
def block_workers(threads: int) -> Iterator[ThreadPoolExecutor | None]:
    """A pool of ``threads`` workers with torch at one intra-op thread each (None for one
    thread); the calling thread's torch ops also run on one thread meanwhile."""
    with cpu_threads(1):
        if threads <= 1:
            yield None
            return
        pool = ThreadPoolExecutor(threads, initializer=_one_thread_worker)
        try:
            yield pool
        finally:
            pool.shutdown(wait=True)
