"""Guards around a stage's output folder: one writer at a time, no leftovers, never over an input.

- :func:`output_lock` takes an advisory ``flock`` on ``<folder>/.lock`` (rank 0 of a run); a
  second run on the same folder is refused with the holder's host and pid.
- :func:`remove_stray_tmp` deletes the temporary files :func:`curate.core.atomic.atomic_path`
  leaves when a writer is killed (only names of that exact pattern, only under the lock).
- :func:`check_disjoint` refuses an output path that is, contains or lies inside an input.
- :func:`recorded_outputs` keeps a folder holding exactly the outputs of its last completed run:
  it records the files a run writes (every atomic write is announced,
  :func:`curate.core.atomic.listen_writes`) and, when the run completes, removes the files the
  previous completed run wrote and this one did not. :func:`remove_recorded` removes everything
  recorded (a recompute in place). A file no run of the stage wrote is never touched.

The record: ``<folder>/.outputs.log`` (appended while a run writes, across a killed attempt and
its resume: one relative path a line) and ``<folder>/.outputs.json`` (the files of the last
completed run, ``{"files": [...]}``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from curate.core.atomic import atomic_write_json, listen_writes
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


OUTPUTS_LOG, OUTPUTS_RECORD = ".outputs.log", ".outputs.json"
_RECORDING: set[Path] = set()  # folders a block records (a nested block on the same folder joins it)


@contextlib.contextmanager
def recorded_outputs(folder: str | os.PathLike) -> Iterator[None]:
    """The block is one run of a stage writing ``folder``: every file written under it is
    recorded, and when the block completes (no exception) the files the previous completed run
    recorded and this run did not write are removed (and the folders that leaves empty), so the
    folder holds exactly the outputs of this run, plus whatever the stage never wrote (a user's
    files). A run that wrote nothing keeps the record as it is. Every rank enters it (each logs
    what it writes, rank 0 ends the run) while :func:`output_lock` is held; a killed run leaves
    its log, which its resume extends.
    """
    folder = Path(folder).resolve()
    if folder in _RECORDING:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / OUTPUTS_LOG

    def note(path: Path) -> None:
        rel = _relative(folder, path)
        if rel is not None and rel not in (OUTPUTS_LOG, OUTPUTS_RECORD):
            with log_path.open("a") as f:
                f.write(rel + "\n")

    _RECORDING.add(folder)
    try:
        with listen_writes(note):
            yield
    finally:
        _RECORDING.discard(folder)
    from curate.core import dist

    if not dist.is_main_process():  # every rank logs what it writes; rank 0 ends the run
        return
    current = _logged(folder)
    if not current:
        return
    stale = _completed(folder) - current
    _remove(folder, stale)
    atomic_write_json(folder / OUTPUTS_RECORD, {"files": sorted(current)})
    log_path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d output(s) of the previous run that this run did not write, in %s", len(stale), folder)


def remove_recorded(folder: str | os.PathLike) -> int:
    """Remove every file a run recorded in ``folder`` (:func:`recorded_outputs`: the last completed
    run's and a killed attempt's since), the folders that leaves empty, and the record itself;
    returns how many files were listed. Nothing else in ``folder`` is touched."""
    folder = Path(folder).resolve()
    names = _completed(folder) | _logged(folder)
    _remove(folder, names)
    for name in (OUTPUTS_LOG, OUTPUTS_RECORD):
        (folder / name).unlink(missing_ok=True)
    return len(names)


def has_record(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a record of :func:`recorded_outputs`."""
    return any((Path(folder) / name).exists() for name in (OUTPUTS_LOG, OUTPUTS_RECORD))


def _relative(folder: Path, path: Path) -> str | None:
    """``path`` relative to ``folder`` (posix), or None when it lies outside it."""
    full = Path(os.path.abspath(path))
    if folder not in full.parents:
        full = full.parent.resolve() / full.name  # the folder reached through a link
        if folder not in full.parents:
            return None
    return full.relative_to(folder).as_posix()


def _logged(folder: Path) -> set[str]:
    path = folder / OUTPUTS_LOG
    return {line for line in path.read_text().split("\n") if line} if path.exists() else set()


def _completed(folder: Path) -> set[str]:
    path = folder / OUTPUTS_RECORD
    if not path.exists():
        return set()
    try:
        files = json.loads(path.read_text()).get("files", [])
    except (json.JSONDecodeError, AttributeError):
        return set()
    return {name for name in files if isinstance(name, str)}


def _remove(folder: Path, names: set[str]) -> None:
    """Unlink the recorded files ``names`` of ``folder`` (never a path outside it, never a folder
    itself), then each of their parent folders that is left empty, up to ``folder``."""
    parents: set[Path] = set()
    for name in names:
        path = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute() or _relative(folder, path) is None:
            continue
        if path.is_file() or path.is_symlink():
            path.unlink()
        parents.update(p for p in path.parents if folder in p.parents)
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty (a user's file, a current output) or gone
            parent.rmdir()
