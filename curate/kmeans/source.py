"""Input rows for k-means: a tensor, an array, a memory-mapped ``.npy`` or its path.

``RowSource`` validates the container (2-D, floating point, file exists) and reads row blocks as
float32 tensors on a device, so the rest of the engine never loads a memory-mapped input whole.
"""

from __future__ import annotations

import os
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
        return torch.from_numpy(block).to(device)

    def take(self, rows: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """Rows at the local indices ``rows: (m,) int64`` as ``(m, d)`` float32 on ``device``."""
        if isinstance(self.data, torch.Tensor):
            return self.data[rows.to(self.data.device)].to(device=device, dtype=torch.float32)
        idx = rows.cpu().numpy()
        order = np.argsort(idx, kind="stable")  # sorted reads are friendlier to a memmap
        block = np.empty((len(idx), self.d), dtype=np.float32)
        block[order] = np.asarray(self.data[idx[order]], dtype=np.float32)
        return torch.from_numpy(block).to(device)
