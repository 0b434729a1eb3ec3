"""How a stage command starts: ``hydra_entry`` runs a Hydra app from ``__main__`` with the error
handling of :func:`curate.core.errors.run_guarded`, after checking the path-like overrides
(:func:`curate.core.guard.check_disjoint`) before Hydra creates any folder."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from curate.core.errors import check_component, run_guarded, take_traceback_flag
from curate.core.guard import check_disjoint


def hydra_entry(
    main: Callable[[], Any], single_components: tuple[str, ...] = (), outputs: dict[str, tuple[str, ...]] | None = None
) -> None:
    """Start a Hydra app from ``__main__`` with the same error handling as its body.

    Drops ``--traceback``, checks path-like overrides before Hydra creates any folder, and lets
    Hydra's own failures (composing the config, an override of an unknown key, creating the run
    folder) reach :func:`run_guarded` instead of Hydra's exit code 1: Hydra re-raises them when
    ``HYDRA_FULL_ERROR=1``, so that is set for Hydra, and whether the *user* asked for tracebacks
    is kept in ``CURATE_TRACEBACK``.

    Args:
        main: the ``@hydra.main`` function (its body calls :func:`run_guarded`).
        single_components: keys whose values name a folder under the output folder; an override
            of one of them must be a single path component (``name=../x`` is refused here, before
            Hydra makes ``../x``).
        outputs: ``{output key: input keys}``: an output folder given on the command line that
            overlaps one of those inputs is refused before Hydra creates it (and its ``.hydra/``).
    """
    saved = {key: os.environ.get(key) for key in ("CURATE_TRACEBACK", "HYDRA_FULL_ERROR")}
    take_traceback_flag()
    if "CURATE_TRACEBACK" not in os.environ:
        os.environ["CURATE_TRACEBACK"] = "1" if os.environ.get("HYDRA_FULL_ERROR") == "1" else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _hydra_entry(main, single_components, outputs or {})
    finally:  # as found (an in-process run, e.g. curate.submit's debug executor, must not leak it)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# Hydra's own flags, and which of them take a value: argparse reads them only before the
# overrides (``a=1 -m b=2,3`` would end in a usage dump), so they are moved to the front
_FLAGS_WITH_VALUE = {"-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name",
                     "-cd", "--config-dir", "--experimental-rerun"}  # fmt: skip
_FLAGS = {"-m", "--multirun", "-h", "--help", "--hydra-help", "--version", "--resolve", "-sc",
          "--shell-completion", "--info"}  # fmt: skip
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def flags_first(args: list[str]) -> list[str]:
    """``args`` with Hydra's flags (and their values) before the overrides, each group in its order."""
    flags, overrides, i = [], [], 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        takes = name in _FLAGS_WITH_VALUE and "=" not in arg and i + 1 < len(args)
        takes = takes or (arg == "--info" and i + 1 < len(args) and args[i + 1] in _INFO_VALUES)
        if name in _FLAGS_WITH_VALUE or name in _FLAGS:
            flags += args[i : i + 1 + takes]
            i += 1 + takes
        else:
            overrides.append(arg)
            i += 1
    return flags + overrides


def _hydra_entry(
    main: Callable[[], Any], single_components: tuple[str, ...], outputs: dict[str, tuple[str, ...]]
) -> None:
    sys.argv[1:] = flags_first(sys.argv[1:])
    given = {}
    for arg in sys.argv[1:]:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep:
            given[key] = value
        if sep and key in single_components:
            run_guarded(check_component, key, value, hydra=True)
    if "-m" not in sys.argv and "--multirun" not in sys.argv:  # sweeps: checked in every job
        for out_key, input_keys in outputs.items():
            if given.get(out_key):
                inputs = {key: given[key] for key in input_keys if given.get(key)}
                run_guarded(check_disjoint, given[out_key], inputs, out_key, hydra=True)
    run_guarded(main, hydra=True)
