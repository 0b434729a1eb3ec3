"""The stage protocol: what a stage declares once, and the one rule that decides a re-run.

A stage declares (:class:`Stage`): its typed config (a dataclass schema), which of its settings
are *run-only* (where or how it runs: devices, workers, logging, checkpoint cadence; marked on the
schema with ``field(..., metadata=RUN_ONLY)``), its inputs (config keys of input paths, whose
identity enters the record), its outputs and its completion record (a JSON file in its output
folder holding ``status``, the content ``settings`` and the ``inputs`` it was computed from).

One function, :func:`decide`, turns a record found on disk and the settings of this run into an
action, for every stage and for the pipeline alike:

=====================  ===================  ===========================================
record on disk         content settings     action
=====================  ===================  ===========================================
none                   --                   ``run``: start afresh
complete               same                 ``skip`` (only then "nothing to do" is logged)
running (partial)      same                 ``resume`` from the stage's own checkpoints
any                    changed              ``recompute`` what they change, or refuse with
                                            one ``error:`` naming the key and the fix
any                    only run-only ones   as if the same: the work is kept
=====================  ===================  ===========================================

Run-only settings never enter :func:`content`, so changing one keeps the work by construction.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

#: field metadata of a run-only setting: ``field(default=..., metadata=RUN_ONLY)``
RUN_ONLY: Mapping[str, bool] = {"run_only": True}
COMPLETE, RUNNING = "complete", "running"


def run_only_keys(schema: type | DictConfig) -> tuple[str, ...]:
    """The dotted keys of the run-only settings of a schema (a dataclass type) or of a config
    composed from one, nested dataclass nodes included (``train.num_workers``, ``logger``).

    For a config, the types of its nodes are read (a ``data`` node of another source kind is
    typed by its own schema), so it is the declaration of the config as it stands.
    """
    node = OmegaConf.structured(schema) if isinstance(schema, type) else schema
    return tuple(sorted(_run_only(node, "")))


def _run_only(node: DictConfig, prefix: str) -> set[str]:
    keys: set[str] = set()
    kind = OmegaConf.get_type(node)
    marked = {f.name for f in dataclasses.fields(kind) if f.metadata.get("run_only")} if _is_dataclass(kind) else set()
    keys |= {prefix + name for name in marked}
    for name in node.keys() if isinstance(node, DictConfig) else ():
        if name in marked:
            continue
        child = node._get_node(name)
        if isinstance(child, DictConfig) and not (child._is_none() or child._is_missing() or child._is_interpolation()):
            keys |= _run_only(child, f"{prefix}{name}.")
    return keys


def _is_dataclass(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def content(cfg: DictConfig | Mapping[str, Any], run_only: Iterable[str] | None = None) -> dict[str, Any]:
    """What a stage computes from: its resolved config as plain data, minus the run-only keys
    (those of :func:`run_only_keys` for a config when ``run_only`` is None)."""
    if isinstance(cfg, DictConfig):
        keys = run_only_keys(cfg) if run_only is None else tuple(run_only)
        tree = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    else:
        keys, tree = tuple(run_only or ()), json.loads(json.dumps(cfg, default=str))
    for key in keys:
        _drop(tree, key)
    return json.loads(json.dumps(tree, default=str))  # as it reads back from a record


def _drop(tree: Any, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if isinstance(tree, dict) and head in tree:
        if rest:
            _drop(tree[head], rest)
        else:
            del tree[head]


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two plain trees (sorted; lists compare whole)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [
            k
            for key in sorted(set(old) | set(new))
            for k in changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [prefix.rstrip(".") or "settings"]


def fingerprint(settings: Any, inputs: Any = None) -> str:
    """A short stable hash of content settings and input identities (16 hex digits)."""
    text = json.dumps({"config": settings, "upstream": inputs}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def completion_record(status: str, settings: Mapping[str, Any], inputs: Any = None, **extra: Any) -> dict[str, Any]:
    """A completion record: ``status`` (``running`` / ``complete``), the content ``settings``, the
    ``inputs`` it was computed from, and the stage's own fields (``extra``)."""
    return {"status": status, "settings": settings, "inputs": inputs, **extra}


class Action(enum.StrEnum):
    run = "run"
    skip = "skip"
    resume = "resume"
    recompute = "recompute"


@dataclass(frozen=True)
class Decision:
    """What to do with a stage's output folder; ``changed``: the content keys that differ."""

    action: Action
    changed: tuple[str, ...] = ()

    def refuse(self, where: str, fix: str, key_prefix: str = "") -> None:
        """Raise one :class:`ValueError` naming the first changed key, its values and ``fix``
        (the caller's ``error:`` line); a no-op unless :attr:`action` is ``recompute``."""
        if self.action is not Action.recompute:
            return
        keys = [key_prefix + k for k in self.changed]
        shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        raise ValueError(f"{where} was made with other settings ({shown} changed); {fix} ({keys[0]})")


def decide(found: Mapping[str, Any] | None, settings: Mapping[str, Any], inputs: Any = None) -> Decision:
    """The one re-run rule (see the module docstring's table).

    Args:
        found: the completion record on disk (:func:`completion_record`), None when there is none.
        settings: this run's content settings (:func:`content`).
        inputs: this run's input identities (compared as a whole under the key ``inputs``).

    Returns:
        A :class:`Decision`. A record without ``settings`` (written by an older version) counts as
        changed in every key: ``changed == ("settings",)``.
    """
    if found is None:
        return Decision(Action.run)
    if "settings" not in found:
        return Decision(Action.recompute, ("settings",))
    changed = changed_keys(found.get("settings"), settings)
    if found.get("inputs") != json.loads(json.dumps(inputs, default=str)):
        changed.append("inputs")
    if changed:
        return Decision(Action.recompute, tuple(changed))
    return Decision(Action.skip if found.get("status") == COMPLETE else Action.resume)


def log_skip(where: Any, what: str, detail: str = "") -> None:
    """The one "nothing to do" line (``<where> already holds this <what>``), for a ``skip`` only."""
    log.info("%s already holds this %s%s: nothing to do", where, what, f" ({detail})" if detail else "")


@dataclass(frozen=True)
class Stage:
    """A stage's declaration (each stage module exposes one as ``STAGE``).

    Attributes:
        name: the stage (``embed``, ``dedup``, ``cluster``, ``sample``, ``train``, ``eval``).
        config: its primary config, ``configs/<config>.yaml``.
        schema: the dataclass of that config; its run-only fields carry :data:`RUN_ONLY`.
        run: the entry function, ``run(cfg) -> result``.
        inputs: config keys of its input paths (their identity enters its record).
        outputs: the files it writes in its output folder.
        record: its completion record's file name (written last).
        check: cross-field checks of a composed config (raises ``ValueError`` naming the key).
        register: registers its schemas in Hydra's ConfigStore (called before composing).
    """

    name: str
    config: str
    schema: type
    run: Callable[[DictConfig], Any]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    record: str = "manifest.json"
    check: Callable[[Any], None] | None = None
    register: Callable[[], None] | None = None

    @property
    def run_only(self) -> tuple[str, ...]:
        """The dotted keys of its run-only settings (from the schema's field metadata)."""
        return run_only_keys(self.schema)


def plain(node: Any) -> Any:
    """A config node as plain data (resolved); other values as they are."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node
