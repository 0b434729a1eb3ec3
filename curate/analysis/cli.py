"""``key=value`` command lines for the analysis tools (``curate.report``, ``curate.inspect``).

The pipeline stages are Hydra apps; these two tools only read a finished run and write next to
it, so they take the same ``key=value`` style, checked against a dataclass by OmegaConf (an
unknown key or a wrong type is refused before anything runs), without Hydra's output folders.
The earlier ``--key value`` form is still accepted.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["MISSING", "parse_keyvalues", "usage_error"]

T = TypeVar("T")


def usage_error(message: str, where: str) -> SystemExit:
    """Print ``error: <message> (<where>)`` on stderr; return the ``SystemExit(2)`` to raise."""
    print(f"error: {message} ({where})", file=sys.stderr)
    return SystemExit(2)


def _usage(schema: type, prog: str, doc: str) -> str:
    lines = [f"usage: {prog} key=value ...", "", doc.strip(), "", "keys:"]
    for f in dataclasses.fields(schema):
        default = "required" if f.default is MISSING else f"default {f.default!r}"
        lines.append(f"  {f.name}=  ({default}) {f.metadata.get('help', '')}".rstrip())
    return "\n".join(lines)


def _to_dotlist(argv: Sequence[str], positional: str | None, prog: str) -> list[str]:
    """``key=value`` items as they are; ``--key value`` / ``--key=value`` and one bare positional mapped to them."""
    items: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            if not sep:
                if not args:
                    raise usage_error(f"{arg} needs a value", prog)
                value = args.pop(0)
            items.append(f"{key.replace('-', '_')}={value}")
        elif "=" in arg:
            items.append(arg)
        elif positional is not None:
            items.append(f"{positional}={arg}")
            positional = None
        else:
            raise usage_error(f"unexpected argument {arg!r}: arguments are key=value", prog)
    return items


def parse_keyvalues(
    schema: type[T], argv: Sequence[str] | None, prog: str, doc: str = "", positional: str | None = None
) -> T:
    """Parse ``key=value`` arguments into a ``schema`` dataclass instance.

    Args:
        schema: a dataclass; a field without default (``MISSING``) is required; ``metadata["help"]``
            is shown by ``--help``.
        argv: the arguments (None: ``sys.argv[1:]``).
        prog: the program name for messages (``python -m curate.report``).
        doc: text shown by ``--help``.
        positional: a field a single bare argument sets (``python -m curate.inspect DIR``).

    Raises:
        SystemExit: 0 after ``--help``; 2 with one ``error:`` line for an unknown key, a wrong type
            or a missing required key.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(_usage(schema, prog, doc))
        raise SystemExit(0)
    base = OmegaConf.structured(schema)
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(_to_dotlist(argv, positional, prog)))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "arguments"
        raise usage_error(str(err).splitlines()[0], f"{prog} {key}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise usage_error(f"{missing[0]}= is required", prog)
    out: Any = OmegaConf.to_object(cfg)
    return out
