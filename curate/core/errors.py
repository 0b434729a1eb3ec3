"""The errors a user can fix, and the one wrapper every entry point runs its body in.

A user-facing failure (bad input, a config value, the disk, a permission) ends the program with
one line ``error: <what> (<which file or key>)`` on stderr and exit code 2; anything else is a bug
and keeps its traceback. ``--traceback`` on the command line (and, for the Hydra apps,
``HYDRA_FULL_ERROR=1``) shows the traceback of any error.

Which exceptions are the user's:

- :class:`UserError` and its kinds below (raised by this package's own checks);
- ``ValueError`` (the package's checks raise it with a message naming the key or file; this
  includes ``json.JSONDecodeError`` and ``UnicodeDecodeError``) and ``FileNotFoundError``;
- ``OSError`` of a kind the environment causes: a missing file, a directory where a file was
  expected or the reverse, a permission, a full disk or quota, a symlink loop, a read-only file
  system, a name too long (see :data:`USER_ERRNOS`);
- ``omegaconf`` validation errors (a wrong type for a key) and Hydra's composition errors (an
  unknown config group or override).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

TRACEBACK_FLAG = "--traceback"


class UserError(Exception):
    """A failure the user can fix; printed as one ``error:`` line (exit code 2)."""


class InputError(UserError, ValueError):
    """An input file or array that cannot be used as it is (wrong shape, dtype, values)."""


class IdentityError(UserError, ValueError):
    """An output folder or checkpoint belongs to another input or configuration."""


class UnsafeOutputError(UserError, ValueError):
    """An output path that would overwrite, delete or lie inside an input, or escape its folder."""


class LockedError(UserError):
    """Another run holds the output folder's lock."""


# what the OS says, in the words a user needs
USER_ERRNOS: dict[int, str] = {
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop)",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EEXIST: "file exists",
    errno.ENOTEMPTY: "directory not empty",
    errno.EMFILE: "too many open files",
    errno.EXDEV: "cannot move across file systems",
}


def user_message(err: BaseException) -> str | None:
    """The one-line message for a user-facing failure, or None for a bug (keep its traceback)."""
    if isinstance(err, OSError) and err.errno in USER_ERRNOS:
        what = USER_ERRNOS[err.errno]
        files = [str(f) for f in (err.filename, err.filename2) if f is not None]
        if files:
            return f"{what} ({' -> '.join(files)})"
        text = str(err)
        return text if err.strerror is None or text != f"[Errno {err.errno}] {err.strerror}" else what
    if isinstance(err, UserError | ValueError | FileNotFoundError):
        return str(err) or type(err).__name__
    from hydra.errors import HydraException
    from omegaconf.errors import ValidationError

    if isinstance(err, ValidationError | HydraException):  # a config value or override
        lines = [line.strip() for line in str(err).splitlines() if line.strip()][:2]
        cause = err.__cause__  # Hydra wraps the reason ("expected one of [...]") as the cause
        if cause is not None:
            lines += [line.strip() for line in str(cause).splitlines() if line.strip()][:2]
        text = ""
        for line in lines:
            text += line if not text else (" " if text.endswith((".", ":")) else ": ") + line
        return text or type(err).__name__
    return None


def wants_traceback(hydra: bool = False) -> bool:
    """Whether the user asked to see tracebacks (``--traceback``; ``HYDRA_FULL_ERROR=1`` for Hydra
    apps). :func:`hydra_entry` records the answer in ``CURATE_TRACEBACK`` (inherited by jobs)."""
    if "CURATE_TRACEBACK" in os.environ:
        return os.environ["CURATE_TRACEBACK"] == "1"
    return hydra and os.environ.get("HYDRA_FULL_ERROR") == "1"


def take_traceback_flag(argv: list[str] | None = None) -> list[str]:
    """Remove ``--traceback`` from ``argv`` (default ``sys.argv``, in place) and remember it.

    Hydra and argparse do not know the flag; it is taken off before they parse.
    """
    args = sys.argv if argv is None else argv
    if TRACEBACK_FLAG in args:
        while TRACEBACK_FLAG in args:
            args.remove(TRACEBACK_FLAG)
        os.environ["CURATE_TRACEBACK"] = "1"
    return args


def run_guarded(body: Callable[..., T], *args: Any, hydra: bool = False, **kwargs: Any) -> T:
    """Run an entry point's body: a user-facing failure becomes ``error: <message>`` and exit 2.

    Args:
        body: the stage or tool body.
        hydra: the entry point is a Hydra app (``HYDRA_FULL_ERROR=1`` then shows tracebacks).
    """
    try:
        return body(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - sorted into the user's and the program's below
        message = user_message(err)
        if message is None or wants_traceback(hydra):
            raise
        print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def cli_entry(main: Callable[..., T], argv: list[str] | None = None) -> T:
    """Call an argparse tool's ``main(argv)`` in :func:`run_guarded` (``--traceback`` accepted)."""
    args = take_traceback_flag(list(sys.argv[1:] if argv is None else argv))
    return run_guarded(main, args)


def check_component(key: str, value: Any) -> str:
    """``value`` as one path component (a folder name inside the output folder), or
    :class:`UnsafeOutputError` naming ``key``."""
    text = str(value)
    if text in ("", ".", "..") or "/" in text or "\\" in text or "\x00" in text:
        raise UnsafeOutputError(f"{key}={text!r} must be a single folder name (no '/', not '.' or '..') ({key})")
    return text


def as_int(value: Any, key: str, minimum: int | None = None) -> int:
    """``value`` as an ``int``: a Python or numpy integer (not a bool, not a float such as 5.7,
    which would silently become 5); :class:`InputError` naming ``key`` otherwise."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{key} must be >= {minimum}, got {value}")
    return int(value)


def resolve(path: str | os.PathLike, key: str) -> Any:
    """``Path(path).expanduser().resolve()``; a symlink loop is an :class:`InputError` naming ``key``."""
    from pathlib import Path

    try:
        return Path(path).expanduser().resolve()
    except RuntimeError as err:  # Python < 3.13 reports a symlink loop so
        raise InputError(f"{key}={path}: {err} (a symlink loop)") from None


def check_device(name: Any, key: str = "device") -> None:
    """The one device check of every stage: ``name`` must be ``cpu``, ``auto`` (left to the caller),
    ``cuda`` or ``cuda:N`` of a GPU this machine has; :class:`InputError` naming ``key`` otherwise
    (torch would raise a RuntimeError traceback when the device is first used)."""
    import torch

    if str(name) == "auto":
        return
    try:
        device = torch.device(str(name))
    except (RuntimeError, TypeError) as err:
        raise InputError(f"{key}={name!r} is not a device torch knows: {str(err).split(':')[0]} ({key})") from None
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise InputError(f"{key}={name!r}: the stages run on 'cpu', 'cuda', 'cuda:N' or 'auto' ({key})")
    if not torch.cuda.is_available():
        raise InputError(f"{key}={str(name)!r} but CUDA is not available; use {key}=cpu ({key})")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise InputError(
            f"{key}={str(name)!r} but this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1}) ({key})"
        )
