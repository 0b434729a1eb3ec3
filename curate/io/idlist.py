"""Id lists (``ids.txt``, ``kept_ids.txt``, ``train_ids.txt``): one item id per line, as text.

Lines end at ``"\\n"`` only (``str.splitlines`` would also split at ``\\x0b``, ``\\x1c``, ``\\u2028``, ...,
which a file name may hold); a ``"\\r"`` before it is dropped and empty lines are skipped. An id that
holds a line break cannot be written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from curate.core.atomic import atomic_write_text


def write_ids(path: str | os.PathLike, ids: Iterable[object]) -> int:
    """Write ``ids`` (as ``str``) one per line, atomically; returns how many.

    Raises:
        ValueError: an id holds ``"\\n"`` or ``"\\r"`` (it would read back as two ids).
    """
    lines = [str(i) for i in ids]
    bad = next((line for line in lines if "\n" in line or "\r" in line), None)
    if bad is not None:
        raise ValueError(f"{path}: id {bad!r} holds a line break; ids are written one per line")
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))
    return len(lines)


def read_ids(path: str | os.PathLike) -> list[str]:
    """The ids of a :func:`write_ids` file (or a hand-written list with ``\\r\\n`` line ends)."""
    text = Path(path).read_text()
    return [line.removesuffix("\r") for line in text.split("\n") if line.removesuffix("\r")]
