"""Count the points where code would wait for an accelerator (host syncs), on any device.

On a GPU every ``.item()``, ``bool(t)``, ``.cpu()``, ``nonzero``, boolean-mask index or
``bincount`` blocks the host until the device has finished all queued work, so one per chunk in a
hot loop leaves the GPU idle between chunks. :func:`count_host_syncs` intercepts these calls with
a ``TorchFunctionMode``, so a test on a CPU can check how many a loop makes (the same code on CUDA
would sync there); ``torch.cuda.set_sync_debug_mode`` checks it on a GPU.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# Calls that return host values or data-dependent shapes: each waits for the device.
_ALWAYS = {
    "item",
    "tolist",
    "numpy",
    "nonzero",
    "argwhere",
    "bincount",
    "unique",
    "unique_consecutive",
    "masked_select",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "cpu",
}
_INDEXING = {"__getitem__", "__setitem__", "index_put", "index_put_"}


def _has_bool_tensor(index: Any) -> bool:
    items = index if isinstance(index, tuple | list) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _to_host(args: tuple, kwargs: dict) -> bool:
    targets = [*args[1:], kwargs.get("device")]
    for t in targets:
        if isinstance(t, str | torch.device) and torch.device(t).type == "cpu":
            return True
    return False


class HostSyncCounter(TorchFunctionMode):
    """Counts, by name, the torch calls that would block the host on an accelerator.

    Counted: host reads (``item``, ``tolist``, ``numpy``, ``bool``/``int``/``float`` of a
    tensor, ``.cpu()``, ``.to("cpu")``), data-dependent shapes (``nonzero``, ``unique``,
    ``masked_select``, ``bincount``, ``repeat_interleave`` without ``output_size``, and indexing
    with a boolean mask). A blocking host-to-device copy also syncs on CUDA; it is not counted
    (the engine copies streamed chunks with ``non_blocking=True``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _ALWAYS:
            self.counts[name] += 1
        elif name == "to" and _to_host(args, kwargs):
            self.counts["to(cpu)"] += 1
        elif name in _INDEXING and len(args) > 1 and _has_bool_tensor(args[1]):
            self.counts[f"{name}[bool mask]"] += 1
        elif name == "repeat_interleave" and kwargs.get("output_size") is None and len(args) < 4:
            self.counts[name] += 1
        elif name == "where" and len(args) == 1 and not kwargs:
            self.counts["where(cond)"] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_host_syncs() -> Iterator[HostSyncCounter]:
    """``with count_host_syncs() as c: ...`` then ``c.total`` / ``c.counts``."""
    counter = HostSyncCounter()
    with counter:
        yield counter
