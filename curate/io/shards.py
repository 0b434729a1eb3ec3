"""Memory-mapped ``.npy`` inputs and the row range each rank reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of an ``n``-row array that ``rank`` of ``world_size`` owns.

    Contiguous, balanced to within one row, covering ``0..n`` exactly once; shards may be empty
    when ``n < world_size``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def plan_item_shards(
    n: int, shard_size: int, rank: int, world_size: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, int, int]:
    """Cut ``n`` items into shards of at most ``shard_size`` consecutive items, and the shards a
    rank owns.

    Without ``groups`` shard ``k`` covers items ``[k * shard_size, (k + 1) * shard_size)`` and the
    ranks take contiguous blocks of shards (:func:`shard_range`). With ``groups`` (the item offsets
    where the source's own files begin, such as webdataset tar shards) the cuts restart at every
    group, so no shard spans two files, and the ranks take contiguous blocks of whole groups: each
    file is read by one rank. The cuts never depend on the world size.

    Args:
        n: items.
        shard_size: most items per shard (>= 1).
        rank, world_size: the caller's place.
        groups: ``(G + 1,)`` non-decreasing item offsets, ``groups[0] == 0``, ``groups[-1] == n``.

    Returns:
        ``(bounds, first, last)``: ``bounds`` ``(K + 1,) int64`` (shard ``k`` covers items
        ``[bounds[k], bounds[k + 1])``) and the rank's shards ``[first, last)``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if groups is None:
        bounds = np.append(np.arange(0, n, shard_size, dtype=np.int64), np.int64(n))
        first, last = shard_range(len(bounds) - 1, rank, world_size)
        return bounds, first, last
    groups = np.asarray(groups, dtype=np.int64)
    if groups.ndim != 1 or len(groups) < 1 or groups[0] != 0 or groups[-1] != n or np.any(np.diff(groups) < 0):
        raise ValueError(f"groups must be non-decreasing offsets from 0 to {n}")
    starts, owner = [], []
    for g in range(len(groups) - 1):
        cuts = np.arange(groups[g], groups[g + 1], shard_size, dtype=np.int64)
        starts.append(cuts)
        owner.append(np.full(len(cuts), g, dtype=np.int64))
    bounds = np.append(np.concatenate(starts) if starts else np.zeros(0, np.int64), np.int64(n))
    owner_of = np.concatenate(owner) if owner else np.zeros(0, np.int64)
    lo, hi = shard_range(len(groups) - 1, rank, world_size)
    return bounds, int(np.searchsorted(owner_of, lo)), int(np.searchsorted(owner_of, hi))


NPY_MAGIC = b"\x93NUMPY"


def check_npy_magic(path: str | os.PathLike) -> None:
    """Refuse a file that does not start with the ``.npy`` magic bytes (random bytes, a text file,
    a pickle): ``ValueError`` saying it is not a .npy file, before numpy guesses at its content."""
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        what = "an empty file" if not head else "it does not start with the .npy magic bytes"
        raise ValueError(f"{path} is not a .npy file ({what}); give a (n, d) array saved with numpy.save")


def open_npy(path: str | os.PathLike) -> np.memmap:
    """Memory-map a 2-D ``.npy`` file read-only, with clear errors for a missing or bad file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"embedding file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; expected a .npy file")
    check_npy_magic(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:  # empty file, truncated header, pickled content
        raise ValueError(f"cannot read {path} as a .npy array: {err}") from err
    if array.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {array.shape}; expected (n, d)")
    if array.shape[1] == 0:
        raise ValueError(f"{path} holds an array of shape {array.shape}: rows with no column (d = 0)")
    return array


def open_npy_shard(path: str | os.PathLike, rank: int, world_size: int) -> np.memmap:
    """This rank's contiguous row block of a memory-mapped ``(n, d)`` ``.npy`` (no data is read)."""
    array = open_npy(path)
    start, stop = shard_range(array.shape[0], rank, world_size)
    return array[start:stop]


class RowRange:
    """A lazy view of rows ``[start, stop)`` of any row-sliceable ``(n, d)`` array.

    Slicing a memory-mapped array is already lazy; this gives the same for containers whose
    slicing reads (such as the embedding store's virtual concatenation of shards), so a rank can
    hold its shard without reading it.
    """

    def __init__(self, array, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= array.shape[0]:
            raise ValueError(f"row range [{start}, {stop}) is outside an array of {array.shape[0]} rows")
        self.array, self.start, self.stop = array, start, stop
        self.shape = (stop - start, *array.shape[1:])
        self.dtype = array.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            lo, hi, step = index.indices(self.shape[0])
            return self.array[self.start + lo : self.start + hi : step]
        index = np.asarray(index)
        if index.size and (index.min() < -self.shape[0] or index.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        return self.array[self.start + np.where(index < 0, index + self.shape[0], index)]


def rank_rows(array, rank: int, world_size: int):
    """This rank's contiguous rows of ``array`` as a lazy view (``np.memmap`` slices stay memmaps)."""
    start, stop = shard_range(array.shape[0], rank, world_size)
    if isinstance(array, np.ndarray):
        return array[start:stop]
    return RowRange(array, start, stop)


_PREAD_MAX_ROWS = 1 << 16


class NpyRows:
    """Rows of a 2-D ``.npy`` file, read with ``os.pread`` instead of a memory map.

    Pages of a memory map that a process has read count in its resident memory until the kernel
    reclaims them: streaming a 1 GB memmap through k-means peaked at 1.6 GB RSS. Reads into fresh
    buffers keep the peak at one chunk (0.6 GB, docs/benchmarks.md). Row slices are read directly;
    index arrays (a few rows: k-means++ candidates, resampling samples) go through a memory map.

    Args:
        path: a C-ordered ``(n, d)`` ``.npy`` file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        mapped = open_npy(path)
        if not mapped.flags.c_contiguous:
            raise ValueError(f"{path}: Fortran-ordered arrays are not supported; save it C-ordered")
        self.path = Path(path)
        self.shape = tuple(mapped.shape)
        self.dtype = mapped.dtype
        self.offset = int(mapped.offset)
        self.ndim = 2
        self._row_bytes = self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step == 1:
                return self._read(start, max(start, stop))
            return self._gather(np.arange(start, stop, step))
        index = np.asarray(index)
        if index.ndim == 1 and index.dtype.kind in "iu" and len(index) <= _PREAD_MAX_ROWS:
            return self._gather(index)
        return np.array(np.load(self.path, mmap_mode="r", allow_pickle=False)[index])

    def _gather(self, index: np.ndarray) -> np.ndarray:
        """Scattered rows, one ``pread`` each: fancy-indexing a memory map of this file raised the
        peak RSS by 315 MB for 256 random rows of a 512 MB file (readahead), this by nothing."""
        index = np.where(index < 0, index + self.shape[0], index)
        if len(index) and (index.min() < 0 or index.max() >= self.shape[0]):
            raise IndexError(f"{self.path}: row index out of range for {self.shape[0]} rows")
        out = np.empty((len(index), self.shape[1]), dtype=self.dtype)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for j, row in enumerate(index.tolist()):  # a few rows (init, resampling), not a data pass
                got = os.preadv(fd, [memoryview(out[j]).cast("B")], self.offset + row * self._row_bytes)
                if got != self._row_bytes:
                    raise ValueError(f"{self.path}: file is shorter than its header says (truncated?)")
        finally:
            os.close(fd)
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.shape[1]), dtype=self.dtype)
        view = memoryview(out).cast("B")
        fd = os.open(self.path, os.O_RDONLY)
        try:
            done, position = 0, self.offset + start * self._row_bytes
            while done < view.nbytes:
                got = os.preadv(fd, [view[done:]], position + done)
                if got == 0:
                    raise ValueError(f"{self.path}: file is shorter than its header says (truncated?)")
                done += got
        finally:
            os.close(fd)
        return out
