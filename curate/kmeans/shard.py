"""This rank's rows as the kernels see them, plus the few collectives that cross shards.

``LocalRows`` wraps a ``RowSource`` (this rank's shard), knows the shard's global row offset,
and yields chunks already prepared for the kernels: float32 on the device, centred by the global
mean (which keeps the matmul expansion of squared distances accurate) or L2-normalised for the
cosine distance. A shard whose prepared copy fits ``cache_bytes`` is prepared once and kept on the
device: an in-memory shard anywhere, a memory-mapped one on CUDA too (there the budget is device
memory, and streaming it again from the host every Lloyd iteration is what makes a GPU run slow).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from curate.core import dist
from curate.kmeans.kernels import normalize_rows
from curate.kmeans.source import RowSource

# Largest squared row norm the float32 kernels can hold. Squared distances are expanded as
# |x|^2 - 2 x.c + |c|^2 on centred rows; a centred row or centroid has norm at most twice the
# largest raw norm R, so every term stays below 16 R^2, which must fit float32.
MAX_SQ_NORM = float(torch.finfo(torch.float32).max) / 16


def too_large(x: torch.Tensor) -> torch.Tensor:
    """``(m,) bool``: rows of ``x: (m, d)`` whose squared norm the float32 kernels cannot hold
    (an overflowing square reads as ``inf``, which is flagged too)."""
    return x.float().square().sum(dim=1) > MAX_SQ_NORM


def too_large_message(name: str, row: int) -> str:
    return (
        f"{name}: row {row} is too large in magnitude for float32 k-means (squared norm above "
        f"{MAX_SQ_NORM:.3g}: squared distances would overflow); rescale the rows (for example "
        f"divide by a constant or L2-normalise) before clustering"
    )


class LocalRows:
    """One rank's shard of the k-means input, streamed in prepared chunks.

    Args:
        source: this rank's rows.
        device: where the kernels run.
        chunk_rows: rows per chunk.
        cosine: L2-normalise rows (spherical k-means) instead of centring them.
        cache_bytes: prepare and keep the whole shard on ``device`` when its prepared copy
            needs at most this many bytes and it is held in memory or ``device`` is CUDA (a
            memory-mapped shard on a CPU is always streamed: issue 2 keeps it out of core).
        storage_dtype: dtype of the prepared rows (``torch.bfloat16`` halves memory; chunks are
            upcast to float32 before any arithmetic).
        reader: how streamed blocks are read (:meth:`RowSource.blocks`): ``auto`` (pinned double
            buffers toward CUDA), ``plain`` or ``buffered``.
    """

    def __init__(
        self,
        source: RowSource,
        device: torch.device,
        chunk_rows: int,
        cosine: bool,
        cache_bytes: int,
        storage_dtype: torch.dtype = torch.float32,
        reader: str = "auto",
    ) -> None:
        self.source = source
        self.device = device
        self.chunk_rows = chunk_rows
        self.cosine = cosine
        self.storage_dtype = storage_dtype
        self.n, self.d = source.n, source.d
        counts = dist.all_gather_stack(torch.tensor([self.n], dtype=torch.int64)).flatten()
        self.rank = dist.get_rank()
        self.offset = int(counts[: self.rank].sum())
        self.n_global = int(counts.sum())
        self.shift = torch.zeros(self.d, dtype=torch.float32, device=device)
        self._cache: torch.Tensor | None = None
        self.reader = reader
        itemsize = torch.empty(0, dtype=storage_dtype).element_size()
        resident = not source.on_disk or torch.device(device).type == "cuda"
        self._cache_allowed = resident and self.n * self.d * itemsize <= cache_bytes

    # -- validation -------------------------------------------------------------------------
    def scan(self) -> None:
        """Check every row (finite; squared norm within :data:`MAX_SQ_NORM`; non-zero for cosine)
        and compute the global mean, in one pass;
        a shard that may be cached is kept on the device on the way (float32 storage).

        The checks stay on the device (one host sync for the whole pass, not two per chunk).

        Raises:
            ValueError: naming the first bad row (global index) on every rank.
        """
        total = torch.zeros(self.d, dtype=torch.float64, device=self.device)
        none = torch.iinfo(torch.int64).max
        first_bad = torch.full((3,), none, dtype=torch.int64, device=self.device)  # non-finite, huge, zero
        keep_raw = self._cache_allowed and self.n > 0 and self.storage_dtype == torch.float32
        if keep_raw:  # filled in place: a torch.cat of the chunks would hold the data twice at its peak
            self._cache = torch.empty(self.n, self.d, dtype=torch.float32, device=self.device)
        for start, x in self.source.blocks(0, self.n, self.chunk_rows, self.device, self.reader):
            at = torch.arange(start, start + len(x), device=self.device)
            sq_norm = x.square().sum(dim=1)  # inf where the square overflows
            bad = [~torch.isfinite(x).all(dim=1), sq_norm > MAX_SQ_NORM]
            if self.cosine:
                bad.append(sq_norm == 0)
            for kind, flags in enumerate(bad):
                first_bad[kind] = torch.minimum(first_bad[kind], torch.where(flags, at, none).min())
            total += x.sum(dim=0, dtype=torch.float64)
            if keep_raw:
                self._cache[start : start + len(x)] = x
        first = first_bad.cpu()
        kind = int(first.argmin())
        local = torch.tensor([int(first[kind]) + self.offset, kind] if first[kind] < none else [-1, -1])
        bad_all = dist.all_gather_stack(local)
        flagged = bad_all[bad_all[:, 0] >= 0]
        if len(flagged):
            self._cache = None
            row, kind = flagged[flagged[:, 0].argmin()].tolist()
            if kind == 1:
                raise ValueError(too_large_message(self.source.name, row))
            what = "contains NaN or Inf" if kind == 0 else "is all zeros (no direction for cosine distance)"
            raise ValueError(f"{self.source.name}: row {row} {what}; clean or drop it before clustering")
        dist.all_reduce_sum_(total)
        if not self.cosine and self.n_global > 0:
            self.shift = (total / self.n_global).to(torch.float32)
        if keep_raw:  # prepare the kept raw rows in place, a chunk at a time
            for start in range(0, self.n, self.chunk_rows):
                block = self._cache[start : start + self.chunk_rows]
                block.copy_(self.prepare(block))
        elif self._cache_allowed and self.n:
            self._cache = torch.empty(self.n, self.d, dtype=self.storage_dtype, device=self.device)
            for start, x in self._stream():
                self._cache[start : start + len(x)] = x

    # -- reading ----------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Map raw float32 rows into the kernels' space (centred, or normalised)."""
        x = normalize_rows(x) if self.cosine else x - self.shift
        return x.to(self.storage_dtype)

    def _stream(self) -> Iterator[tuple[int, torch.Tensor]]:
        for start, x in self.source.blocks(0, self.n, self.chunk_rows, self.device, self.reader):
            yield start, self.prepare(x)

    def chunks(self, chunk_rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(local_start, x)`` with ``x: (m, d)`` float32 prepared rows.

        ``chunk_rows`` overrides the chunk size for a cached shard (a kernel with fewer output
        columns than ``k``, such as the k-means++ trials, can take bigger chunks).
        """
        if self._cache is None:
            for start, x in self._stream():
                yield start, x.float()
            return
        step = chunk_rows or self.chunk_rows
        for start in range(0, self.n, step):
            yield start, self._cache[start : start + step].float()

    def take(self, local_rows: torch.Tensor) -> torch.Tensor:
        """Prepared rows at local indices ``(m,) int64`` -> ``(m, d)`` float32."""
        if self._cache is not None:
            return self._cache[local_rows.to(self.device)].float()
        return self.prepare(self.source.take(local_rows, self.device)).float()

    def fetch_global(self, global_rows: torch.Tensor) -> torch.Tensor:
        """Prepared rows at global indices ``(m,)``, owned by any rank -> ``(m, d)`` on every rank.

        Each owner fills its rows into zeros and a sum all-reduce completes the block (exact: the
        other ranks add zeros).
        """
        if not dist.is_distributed():
            return self.take(global_rows)
        out = torch.zeros(len(global_rows), self.d, dtype=torch.float32, device=self.device)
        mine = (global_rows >= self.offset) & (global_rows < self.offset + self.n)
        if bool(mine.any()):
            out[mine.to(self.device)] = self.take(global_rows[mine] - self.offset)
        return dist.all_reduce_sum_(out)
