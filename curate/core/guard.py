"""Guards around a stage's output folder: one writer at a time, no leftovers, never over an input.

- :func:`output_lock` takes an advisory ``flock`` on ``<folder>/.lock`` (rank 0 of a run); a
  second run on the same folder is refused with the holder's host and pid.
- :func:`remove_stray_tmp` deletes the temporary files :func:`curate.core.atomic.atomic_path`
  leaves when a writer is killed (only names of that exact pattern, only under the lock).
- :func:`check_disjoint` refuses an output path that is, contains or lies inside an input.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from curate.core.errors import LockedError, UnsafeOutputError, resolve

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# atomic_path's temporary names: ".<name>.<8 random chars from mkstemp>.tmp[<suffix>]"
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def _holder(path: Path) -> str:
    try:
        text = path.read_text().split()
    except OSError:
        text = []
    return f"host {text[0]}, pid {text[1]}" if len(text) >= 2 else "holder unknown"


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, distributed: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder`` (created) for the block.

    Under ``torch.distributed`` rank 0 takes the lock for the whole run and every rank learns
    whether it got it (a collective: all ranks must enter together); with ``distributed=False``
    this process takes it alone. The lock file stays (removing it would race with a waiting run).

    Raises:
        LockedError: another process holds it; the message names its host and pid.
    """
    from curate.core import dist

    folder = Path(folder)
    path = folder / LOCK_NAME
    fd = None
    held_by = ""
    main = not distributed or dist.is_main_process()
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            os.close(fd)
            fd, held_by = None, _holder(path)
        else:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
    if distributed:
        import torch

        ok = dist.all_reduce_(torch.tensor([0 if held_by else 1], dtype=torch.int64), "min")
        got = bool(ok[0])
    else:
        got = not held_by
    if not got:
        if fd is not None:
            os.close(fd)
        who = held_by or "see rank 0"
        raise LockedError(
            f"another run is writing {folder} ({who}); wait for it to end or use another output folder ({path})"
        )
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def remove_stray_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed writer left under ``folder`` (recursively); call it while
    holding :func:`output_lock`. Returns the removed paths."""
    removed = []
    for root, _, files in os.walk(folder):
        for name in files:
            if _TMP_NAME.match(name):
                path = Path(root) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed), folder)
    return removed


def overlaps(a: str | os.PathLike, b: str | os.PathLike, keys: tuple[str, str] = ("path", "path")) -> bool:
    """Whether ``a`` and ``b`` are the same path or one lies inside the other (after resolving)."""
    pa, pb = resolve(a, keys[0]), resolve(b, keys[1])
    return pa == pb or pa in pb.parents or pb in pa.parents


def check_disjoint(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None], out_key: str) -> None:
    """Refuse an output folder that is, contains or lies inside one of the ``inputs``.

    Args:
        out: the output folder.
        inputs: ``{key: path}`` of every input (None entries are skipped).
        out_key: the config key of ``out``, for the message.

    Raises:
        UnsafeOutputError: naming both keys and paths.
    """
    for key, path in inputs.items():
        if path is not None and overlaps(out, path, (out_key, key)):
            raise UnsafeOutputError(
                f"{out_key}={out} overlaps the input {key}={path}: a stage never writes into, over or around "
                f"its input; choose an output folder outside it ({out_key})"
            )
