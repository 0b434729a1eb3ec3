"""What a composed stage config must satisfy before any work, read from its schema declaration.

Two checks, both from the dataclass schemas (no second list of keys or limits anywhere):

- **Declared keys only.** Hydra's ``+key=value`` appends a key even to a struct config; a key that
  no schema node declares is refused (``+newkey=1``, ``+cluster.levls=[]``).
- **Declared bounds.** A field may carry its lower bound as metadata, ``field(default=...,
  metadata=at_least(0))`` (``value >= 0``) or ``above(0)`` (``value > 0``), combined with the
  run-only marker where it applies (``at_least(1, run_only=True)``). None (an unset optional)
  passes.

:func:`check_settings` runs both on every stage's config before its body (``curate.stage.run_stage``)
and raises one ``ValueError`` naming the first offending key.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from curate.core.protocol import RUN_ONLY


def at_least(lower: float, *, run_only: bool = False) -> Mapping[str, Any]:
    """Field metadata: the value must be ``>= lower`` (and, with ``run_only``, is a run-only setting)."""
    return {"at_least": lower, **(RUN_ONLY if run_only else {})}


def above(lower: float, *, run_only: bool = False) -> Mapping[str, Any]:
    """Field metadata: the value must be ``> lower`` (and, with ``run_only``, is a run-only setting)."""
    return {"above": lower, **(RUN_ONLY if run_only else {})}


def settings_problems(cfg: DictConfig) -> list[str]:
    """Every undeclared key and out-of-bounds value of a composed config, one message each
    (``<key>: ...`` ending in ``(<key>)``), in the order of the config."""
    return list(_problems(cfg, ""))


def check_settings(cfg: DictConfig) -> None:
    """Raise ``ValueError`` with the first of :func:`settings_problems` (a no-op when there is none)."""
    problems = settings_problems(cfg)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ValueError(problems[0] + more)


def _problems(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, ListConfig):
        for i in range(len(node)):
            child = node._get_node(i)
            if _is_container(child):
                yield from _problems(child, f"{prefix.rstrip('.')}[{i}].")
        return
    kind = OmegaConf.get_type(node)
    declared = (
        {f.name: f for f in dataclasses.fields(kind)}
        if isinstance(kind, type) and dataclasses.is_dataclass(kind)
        else None
    )
    for name in node.keys():
        if not prefix and name == "hydra":  # a config composed with its Hydra node (compose API)
            continue
        key = f"{prefix}{name}"
        if declared is not None and name not in declared:
            yield (
                f"{key} is not a setting of this stage (its schema {kind.__name__} declares no such key); remove "
                f"+{key}=... or check its spelling ({key})"
            )
            continue
        child = node._get_node(name)
        if _is_container(child):
            yield from _problems(child, f"{key}.")
        elif declared is not None and not (child._is_missing() or child._is_none()):
            problem = _bound_problem(declared[name].metadata, node[name], key)
            if problem:
                yield problem


def _is_container(child: Any) -> bool:
    return isinstance(child, DictConfig | ListConfig) and not (
        child._is_none() or child._is_missing() or child._is_interpolation()
    )


def _bound_problem(metadata: Mapping[str, Any], value: Any, key: str) -> str | None:
    checks = [(metadata.get("at_least"), ">=", lambda v, b: v >= b), (metadata.get("above"), ">", lambda v, b: v > b)]
    for bound, sign, ok in checks:
        if bound is None or not isinstance(value, numbers.Real) or isinstance(value, bool):
            continue
        if not ok(value, bound):
            return f"{key} must be {sign} {bound}, got {value} ({key})"
    return None
