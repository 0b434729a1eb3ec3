"""Metric tracking of the stages: a JSONL file that is always written, wandb when asked for.

    >>> with Tracker(out, mode="offline", config=cfg_dict, name="cluster/toy_2d") as tracker:
    ...     tracker.log({"inertia": 2.3, "k": 3000}, step=1)          # -> <out>/metrics.jsonl (+ wandb)

Only rank 0 logs (other ranks get a tracker whose calls do nothing). ``<out>/metrics.jsonl`` gets
one JSON object per :meth:`Tracker.log` call, ``{"step": step, **metrics}``, flushed at once.
wandb (``logger.wandb.mode`` in the stage configs):

- ``disabled`` (default): wandb is not even imported; nothing but the JSONL is written.
- ``offline``: a run folder under ``<out>/wandb/`` (upload later with ``wandb sync``); never
  touches the network.
- ``online``: streams to the server; when ``wandb.init`` fails or does not answer within
  ``logger.wandb.init_timeout_s`` seconds, the tracker warns and falls back to ``offline``.

``WANDB_MODE`` in the environment wins over the config (``disabled`` switches wandb off, the test
suite sets it; ``offline`` keeps an online config off the network). Runs are grouped by experiment
(``group``, e.g. the pipeline's name) with the stage as ``job_type``; the wandb run id is a hash of
the project, group, job type and output folder, so a requeued or resumed job continues the same
wandb run (``resume="allow"``). Only scalar metrics go to wandb (nested dicts are flattened to ``a/b`` keys, lists
are kept for the JSONL only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from curate.core import dist
from curate.core.atomic import atomic_write_text, note_written

log = logging.getLogger(__name__)

MODES = ("disabled", "offline", "online")


def _to_json(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy / torch arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def flatten_scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float | int | bool | str]:
    """Scalar leaves of a nested dict as ``{"a/b": value}`` (lists and None are dropped)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_scalars(value, f"{name}/"))
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalar
            flat[name] = value.item()
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
    return flat


class Tracker:
    """Rank-0 metric log: ``<out>/metrics.jsonl`` always, optionally mirrored to wandb.

    Args:
        out: the run's output folder.
        mode: ``"disabled"``, ``"offline"`` or ``"online"`` (wandb).
        config: the resolved stage config, stored with the wandb run.
        name: wandb run name; ``group`` and ``job_type`` group runs in the wandb UI.
        project, entity: wandb project and entity.
        init_timeout_s: seconds ``wandb.init`` may take before an online run falls back to offline.
        fresh: truncate an existing ``metrics.jsonl`` (and series files) first (stages whose log
            describes the whole result rather than one attempt: a resumed run rewrites it instead of
            duplicating lines).
        resume_step: keep only the records with ``step <= resume_step`` of an existing
            ``metrics.jsonl`` (a run resumed from a checkpoint drops what it logged after it).
    """

    def __init__(
        self,
        out: str | Path,
        mode: str = "disabled",
        config: Mapping[str, Any] | None = None,
        name: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        project: str = "ssl-curate",
        entity: str | None = None,
        init_timeout_s: float = 60.0,
        fresh: bool = False,
        resume_step: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"logger.wandb.mode: must be one of {MODES}, got {mode!r}")
        self.out = Path(out)
        self.path = self.out / "metrics.jsonl"
        self.active = dist.is_main_process()
        self.run: Any = None
        self._series: dict[str, int] = {}  # records logged per series
        self.fresh = fresh
        env = os.environ.get("WANDB_MODE")
        if env in ("disabled", "offline") and mode != "disabled":
            mode = env
        self.mode = mode
        self.run_id = run_id(project, group, job_type, self.out)
        if not self.active:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        note_written(self.path)
        if fresh:
            self.path.write_text("")
        elif resume_step is not None and self.path.exists():
            self._truncate(resume_step)
        if mode != "disabled":
            self.run = self._init_wandb(
                dict(config or {}), name, group, job_type, project, entity, float(init_timeout_s)
            )

    def _init_wandb(
        self,
        config: dict[str, Any],
        name: str | None,
        group: str | None,
        job_type: str | None,
        project: str,
        entity: str | None,
        init_timeout_s: float,
    ) -> Any:
        import wandb  # lazily: importing wandb costs seconds and is only needed when enabled

        kwargs = dict(
            dir=str(self.out),
            config=config,
            name=name,
            group=group,
            job_type=job_type,
            project=project,
            entity=entity,
            id=self.run_id,
            resume="allow",
            reinit="create_new",
        )
        if self.mode == "online":
            try:
                return wandb.init(mode="online", settings=wandb.Settings(init_timeout=init_timeout_s), **kwargs)
            except Exception as err:  # network, auth, timeout: keep the run, log offline
                log.warning("wandb online init failed (%s); logging offline to %s/wandb", err, self.out)
                self.mode = "offline"
        # the process-wide settings too: wandb's analytics read those, not the run's, and would
        # otherwise look the server up (DNS, HTTPS) from an offline run
        wandb.setup(settings=wandb.Settings(mode="offline"))
        return wandb.init(mode="offline", settings=wandb.Settings(init_timeout=init_timeout_s), **kwargs)

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Append ``{"step": step, **metrics}`` to ``metrics.jsonl`` (and log scalars to wandb,
        ``step`` as a metric: wandb's own step counts every call, series included)."""
        if not self.active:
            return
        record = {"step": step, **metrics} if step is not None else dict(metrics)
        self._append(self.path, record)
        if self.run is not None:
            self.run.log(flatten_scalars(record))

    def log_series(self, name: str, metrics: Mapping[str, Any]) -> None:
        """Append one record of a fine-grained series (e.g. every k-means iteration) to
        ``<out>/<name>.jsonl``; in wandb its scalars are ``<name>/<key>``, plotted against
        ``<name>/index`` (the record's position in the series)."""
        if not self.active:
            return
        index = self._series.get(name, 0)
        self._series[name] = index + 1
        path = self.out / f"{name}.jsonl"
        if index == 0:
            note_written(path)
        if index == 0 and self.fresh:
            path.write_text("")
        self._append(path, {"index": index, **metrics})
        if self.run is not None:
            if index == 0:
                self.run.define_metric(f"{name}/index")
                self.run.define_metric(f"{name}/*", step_metric=f"{name}/index")
            self.run.log(flatten_scalars({"index": index, **metrics}, prefix=f"{name}/"))

    def _truncate(self, last_step: int) -> None:

        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if record.get("step") is None or record["step"] <= last_step:
                kept.append(line + "\n")
        atomic_write_text(self.path, "".join(kept))

    @staticmethod
    def _append(path: Path, record: Mapping[str, Any]) -> None:
        with path.open("a") as f:
            f.write(json.dumps(record, default=_to_json) + "\n")
            f.flush()

    def summary(self, metrics: Mapping[str, Any]) -> None:
        """Final numbers of the run: wandb's run summary (the JSONL is left alone)."""
        if self.run is not None:
            self.run.summary.update(flatten_scalars(metrics))

    def close(self) -> None:
        """Finish the wandb run (if any)."""
        if self.run is not None:
            self.run.finish()
            self.run = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def run_id(project: str, group: str | None, job_type: str | None, out: Path) -> str:
    """A wandb run id stable across restarts of one job: ``<job_type>-<hash of project, group,
    job type and the absolute output folder>``."""
    key = "\0".join([project, group or "", job_type or "", str(Path(out).resolve())])
    return f"{job_type or 'run'}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def stage_tracker(
    cfg: Any,
    out: Path,
    stage: str,
    fresh: bool = False,
    config: Mapping[str, Any] | None = None,
    name: str | None = None,
    resume_step: int | None = None,
) -> Tracker:
    """A :class:`Tracker` for a stage run from its config (``cfg.logger.wandb``, a DictConfig or a
    dataclass): group ``logger.wandb.group`` (the pipeline sets the experiment's name) or
    ``cfg.name``; ``config`` defaults to the resolved ``cfg``, ``name`` to ``<stage>/<out name>``."""
    from omegaconf import OmegaConf

    wb = cfg.logger.wandb
    if config is None and wb.mode != "disabled":
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return Tracker(
        out,
        mode=wb.mode,
        config=config,
        name=name or f"{stage}/{Path(out).name}",
        group=getattr(wb, "group", None) or getattr(cfg, "name", None) or stage,
        job_type=stage,
        project=wb.project,
        entity=getattr(wb, "entity", None),
        init_timeout_s=wb.init_timeout_s,
        fresh=fresh,
        resume_step=resume_step,
    )
