"""Input rows for k-means: a tensor, an array, a memory-mapped ``.npy`` or its path.

``RowSource`` validates the container (2-D, floating point, file exists) and reads row blocks as
float32 tensors on a device, so the rest of the engine never loads a memory-mapped input whole.

:meth:`RowSource.blocks` streams consecutive blocks for a pass over the data. Toward a GPU it
reads into two reusable page-locked (pinned) host buffers, copies each to the device with
``non_blocking=True`` and reads the next block on a helper thread meanwhile (double buffering):
the disk or page-cache read, the host-to-device copy and the kernels of the previous block
overlap, and no block is copied twice on the host.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curate.io.shards import NpyRows

ArrayLike = Any  # torch.Tensor | np.ndarray | np.memmap | str | os.PathLike


class RowSource:
    """Read-only ``(n, d)`` floating-point rows, held in memory or memory-mapped on disk.

    Args:
        x: ``(n, d)`` ``torch.Tensor``, ``np.ndarray``/``np.memmap``, or a path to a ``.npy``
            file (opened memory-mapped). Anything with ``shape``, ``dtype`` and row slicing
            that returns arrays (such as a virtual concatenation of shards) works too.
        name: how error messages refer to the input.
    """

    def __init__(self, x: ArrayLike, name: str | None = None) -> None:
        if isinstance(x, RowSource):
            self.data, self.name, self.on_disk = x.data, x.name, x.on_disk
            self.n, self.d = x.n, x.d
            return
        self.on_disk = False
        if isinstance(x, str | os.PathLike):
            name = name or str(x)
            x = NpyRows(Path(x))
        if isinstance(x, np.memmap) or not isinstance(x, np.ndarray | torch.Tensor):
            self.on_disk = True
        self.name = name or "input"
        shape = tuple(x.shape)
        if len(shape) != 2:
            raise ValueError(f"{self.name}: expected a 2-D (n, d) array, got shape {shape}")
        if isinstance(x, torch.Tensor):
            if not x.is_floating_point():
                raise ValueError(
                    f"{self.name}: dtype {x.dtype} is not floating point; k-means needs float rows "
                    "(convert with x.float())"
                )
        elif np.dtype(x.dtype).kind != "f":
            raise ValueError(
                f"{self.name}: dtype {x.dtype} is not floating point; k-means needs float rows "
                "(convert with x.astype(np.float32))"
            )
        self.data = x
        self.n, self.d = shape

    def read(self, start: int, stop: int, device: torch.device | str) -> torch.Tensor:
        """Rows ``[start, stop)`` as a ``(stop - start, d)`` float32 tensor on ``device``."""
        block = self.data[start:stop]
        if isinstance(block, torch.Tensor):
            return block.to(device=device, dtype=torch.float32)
        block = np.ascontiguousarray(block, dtype=np.float32)
        if not block.flags.writeable:  # a read-only memmap view: copy it out of the page cache
            block = block.copy()
        out = torch.from_numpy(block)
        return out if torch.device(device).type == "cpu" else out.to(device)

    def read_into(self, start: int, stop: int, out: torch.Tensor) -> None:
        """Copy rows ``[start, stop)`` into the float32 host tensor ``out: (stop - start, d)``
        (one copy, with the dtype conversion; no temporary for a memory-mapped input)."""
        block = self.data[start:stop]
        if isinstance(block, torch.Tensor):
            out.copy_(block)
        else:
            np.copyto(out.numpy(), block, casting="same_kind")

    def blocks(
        self, start: int, stop: int, step: int, device: torch.device | str, reader: str = "auto"
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(block_start, x)`` for rows ``[start, stop)`` in blocks of ``step`` rows, ``x``
        a ``(m, d)`` float32 tensor on ``device``.

        Args:
            reader: ``plain`` (:meth:`read` per block), ``buffered`` (two reusable host buffers,
                pinned toward CUDA, read ahead on a thread, ``non_blocking`` copies) or ``auto``
                (buffered toward CUDA, plain on a CPU).

        On a CPU the buffered reader's ``x`` is a view of a reused buffer: valid until the next
        block is requested.
        """
        device = torch.device(device)
        if reader == "auto":
            on_device = isinstance(self.data, torch.Tensor) and self.data.device == device
            reader = "buffered" if device.type == "cuda" and not on_device else "plain"
        if reader == "plain":
            for lo in range(start, stop, step):
                yield lo, self.read(lo, min(lo + step, stop), device)
            return
        if reader != "buffered":
            raise ValueError(f"reader must be auto, plain or buffered, got {reader!r}")
        yield from _buffered_blocks(self, start, stop, step, device)

    def take(self, rows: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """Rows at the local indices ``rows: (m,) int64`` as ``(m, d)`` float32 on ``device``."""
        if isinstance(self.data, torch.Tensor):
            return self.data[rows.to(self.data.device)].to(device=device, dtype=torch.float32)
        idx = rows.cpu().numpy()
        order = np.argsort(idx, kind="stable")  # sorted reads are friendlier to a memmap
        block = np.empty((len(idx), self.d), dtype=np.float32)
        block[order] = np.asarray(self.data[idx[order]], dtype=np.float32)
        return torch.from_numpy(block).to(device)


def _buffered_blocks(
    source: RowSource, start: int, stop: int, step: int, device: torch.device
) -> Iterator[tuple[int, torch.Tensor]]:
    """Double-buffered reads of ``source`` (see :meth:`RowSource.blocks`)."""
    starts = list(range(start, stop, step))
    if not starts:
        return
    cuda = device.type == "cuda"
    rows = min(step, stop - start)
    buffers = [torch.empty(rows, source.d, dtype=torch.float32, pin_memory=cuda) for _ in range(2)]
    copied: list[Any] = [None, None]  # CUDA event: the device copy out of that buffer has finished
    filled: queue.Queue = queue.Queue()
    free = [threading.Semaphore(1), threading.Semaphore(1)]
    stop_flag = threading.Event()
    if cuda:
        compute_stream = torch.cuda.current_stream(device)
        copy_stream = torch.cuda.Stream(device)

    def fill() -> None:
        try:
            for i, lo in enumerate(starts):
                slot = i % 2
                free[slot].acquire()  # the consumer has moved past the block that held this buffer
                if stop_flag.is_set():
                    return
                if copied[slot] is not None:
                    copied[slot].synchronize()  # a non_blocking copy may still be reading it
                m = min(lo + step, stop) - lo
                source.read_into(lo, lo + m, buffers[slot][:m])
                filled.put((lo, m, slot))
        except BaseException as error:  # re-raised on the consumer's thread
            filled.put(error)

    worker = threading.Thread(target=fill, name="rowsource-prefetch", daemon=True)
    worker.start()
    try:
        previous = None
        for _ in starts:
            item = filled.get()
            if isinstance(item, BaseException):
                raise item
            lo, m, slot = item
            if previous is not None:
                free[previous].release()  # the block before is done with: its buffer may refill
            host = buffers[slot][:m]
            if cuda:
                # on a side stream: this copy overlaps the kernels already queued for the block
                # before; the compute stream waits for it before touching x
                with torch.cuda.stream(copy_stream):
                    x = host.to(device, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record(copy_stream)
                compute_stream.wait_stream(copy_stream)
                x.record_stream(compute_stream)
                copied[slot] = event
                # the copy is queued: this buffer may refill once the event has passed
                free[slot].release()
                previous = None
            else:
                x, previous = host, slot
            yield lo, x
    finally:
        stop_flag.set()
        for sem in free:
            sem.release()
        worker.join()
