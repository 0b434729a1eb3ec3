"""Send the cluster stage to a scheduler one hierarchy level per job (or the pipeline one stage per job), and return.

    python -m curate.submit +experiment=web_4level input.path=/data/web_emb name=web \\
        hydra.launcher.partition=<partition> hydra.launcher.account=<account>
    python -m curate.submit launcher=submitit_slurm cluster=toy_2d submit.resources='[{nodes:1},{nodes:1},{nodes:1}]'
    python -m curate.submit launcher=submitit_local cluster=toy_2d     # local processes, one after the other
    python -m curate.submit cluster=toy_2d                            # launcher=local: in this process
    python -m curate.submit cluster=toy_2d --cfg job                  # print the composed config, submit nothing
    python -m curate.submit -m launcher=submitit_slurm seed=0,1,2     # one chain of level jobs per seed

The arguments are the cluster stage's own overrides (``python -m curate.cluster ARGS`` builds the
same hierarchy in one go). Level ``t < T`` becomes a job running the stage with
``stop_after_level=t``: it builds levels ``1..t`` into ``<out>/checkpoints/`` (earlier levels are
loaded from there) and exits; the last job runs the stage to the end and writes the manifest, so
the result equals a single-job run. Each job is a submitit ``Checkpointable``: on preemption or
time-out (``SIGUSR2`` ``signal_delay_s`` before the limit) submitit requeues it and the stage
resumes from its checkpoints in the same output folder.

Executors (``submit.executor``, by default from the launcher):

- ``slurm`` (``launcher=submitit_slurm``): every job is queued at once, level ``t + 1`` with
  ``--dependency=afterok:<job of level t>`` (and ``--kill-on-invalid-dep=yes``); partition,
  account, constraint, time limit... come from ``hydra.launcher.*`` (the same settings as
  sweeps), per-level nodes / GPUs / tasks / time from ``submit.resources``. Prints the job ids
  and returns without waiting.
- ``local`` (``launcher=submitit_local``) and ``debug`` (``launcher=local``: in this process):
  no scheduler holds dependencies there, so each level job is waited for before the next one
  is submitted (the command blocks).

Job logs, pickles and sbatch scripts go to ``<out>/.submitit/<job id>/``; ``<out>/submit.json``
lists the jobs.

The pipeline (``curate.pipeline``) the same way, one job per stage (:func:`submit_pipeline`)::

    python -m curate.pipeline +experiment=curation_ssl ... launcher=submitit_slurm submit=true \
        resources='{embed: {gpus_per_node: 1}, train: {gpus_per_node: 1}, cluster: {cpus_per_task: 32}}'
"""

from __future__ import annotations

import argparse
import itertools
import logging
import runpy
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit
from omegaconf import DictConfig, OmegaConf, open_dict

from curate.core.atomic import atomic_write_json
from curate.core.errors import run_guarded, take_traceback_flag
from curate.core.launch import EXECUTORS

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# AutoExecutor's generic parameters: passed as they are; other launcher keys get the "<cluster>_" prefix
GENERIC = (
    "timeout_min",
    "cpus_per_task",
    "gpus_per_node",
    "tasks_per_node",
    "mem_gb",
    "nodes",
    "name",
    "stderr_to_stdout",
)
# hydra.launcher keys that are not job parameters (or that curate.submit sets itself)
NOT_PARAMS = ("_target_", "submitit_folder", "max_num_timeout", "array_parallelism")
# stage keys the level jobs set themselves
OWN_KEYS = ("stop_after_level", "out_dir")


class StageJob(submitit.helpers.Checkpointable):
    """A stage run as a submitit job: ``python -m <stage> <overrides>`` in the job's process.

    Checkpointable: when submitit signals a preemption or time-out, :meth:`checkpoint` (inherited)
    resubmits the same call, and the stage resumes from the checkpoints in its output folder.

    Args:
        stage: the stage module, e.g. ``"curate.cluster"``.
        overrides: its Hydra overrides.
        out: the run's output folder (returned by the job).
    """

    def __init__(self, stage: str, overrides: Sequence[str], out: str | Path) -> None:
        self.stage = stage
        self.overrides = list(overrides)
        self.out = str(out)

    def __call__(self) -> str:
        argv = sys.argv
        sys.argv = [self.stage, *self.overrides]
        try:  # exactly `python -m <stage> <overrides>`, in this process (so submitit's signal handler is ours)
            with warnings.catch_warnings():  # in-process (debug) runs find the stage module already imported
                warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
                runpy.run_module(self.stage, run_name="__main__", alter_sys=True)
        finally:
            sys.argv = argv
        return self.out

    def __repr__(self) -> str:
        return f"StageJob({self.stage} {' '.join(self.overrides)})"


def compose_cluster(overrides: Sequence[str]) -> DictConfig:
    """The cluster stage's config for ``overrides``, with its ``hydra`` node (launcher settings)."""
    from hydra import compose, initialize_config_dir

    import curate.cluster  # noqa: F401  (registers the schemas)

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3", job_name="cluster"):
        return compose(config_name="cluster", overrides=list(overrides), return_hydra_config=True)


def executor_kind(cfg: DictConfig) -> str:
    """``submit.executor``, or the one the launcher implies (submitit_slurm -> slurm, ...)."""
    if cfg.submit.executor is not None:
        if cfg.submit.executor not in EXECUTORS:
            raise ValueError(f"submit.executor: must be one of {EXECUTORS} or null, got {cfg.submit.executor!r}")
        return str(cfg.submit.executor)
    target = str(cfg.hydra.launcher.get("_target_", ""))
    if target.endswith("SlurmLauncher"):
        return "slurm"
    if target.endswith("LocalLauncher"):
        return "local"
    return "debug"


def launcher_parameters(cfg: DictConfig, kind: str) -> dict[str, Any]:
    """AutoExecutor parameters from ``hydra.launcher`` (what hydra-submitit-launcher would pass)."""
    if kind == "debug" or not cfg.hydra.launcher.get("_target_", "").startswith("hydra_plugins.hydra_submitit"):
        return {}
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    return {
        key if key in GENERIC else f"{kind}_{key}": value
        for key, value in launcher.items()
        if key not in NOT_PARAMS and value is not None
    }


def chained(params: dict[str, Any], name: str, kind: str, after: str | None) -> dict[str, Any]:
    """``params`` with the job ``name`` and, on SLURM, an ``afterok`` dependency on job ``after``
    (a job whose dependency can never be met is cancelled, not left pending)."""
    params = {**params, "name": name}
    if kind == "slurm":
        extra = dict(params.pop("slurm_additional_parameters", None) or {})
        if after is not None:
            params["slurm_dependency"] = f"afterok:{after}"
            extra["kill-on-invalid-dep"] = "yes"
        if extra:
            params["slurm_additional_parameters"] = extra
    return params


def level_parameters(cfg: DictConfig, kind: str, t: int, after: str | None) -> dict[str, Any]:
    """Parameters of the level-``t`` job: the launcher's, then ``submit.resources[t - 1]``, then
    the job name and, on SLURM, the ``afterok`` dependency on job ``after``."""
    params = launcher_parameters(cfg, kind)
    resources = cfg.submit.resources
    if t <= len(resources):
        params.update({key: value for key, value in resources[t - 1].items() if value is not None})
    return chained(params, f"{cfg.name}-level{t}", kind, after)


def level_overrides(overrides: Sequence[str], out_dir: Path, t: int, n_levels: int) -> list[str]:
    """The stage overrides of the level-``t`` job (absolute ``out_dir``; ``stop_after_level`` but for
    the last level; ``overwrite`` for the first job only: later ones continue its checkpoints)."""
    own = (*OWN_KEYS, "overwrite") if t > 1 else OWN_KEYS
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in own]
    kept.append(f"out_dir={out_dir}")
    if t < n_levels:
        kept.append(f"stop_after_level={t}")
    return kept


def submit_levels(overrides: Sequence[str], executor: str | None = None) -> tuple[Path, list[submitit.Job]]:
    """Submit one cluster-stage job per level (see the module docstring).

    Args:
        overrides: the cluster stage's overrides.
        executor: ``"slurm"``, ``"local"`` or ``"debug"``; None: ``submit.executor`` or the launcher's.

    Returns:
        ``(output folder, jobs)``, finest level first. SLURM jobs are queued (not awaited); local and
        debug jobs have finished.
    """
    from curate.conf import validate_cluster
    from curate.core.launch import check_launcher

    cfg = compose_cluster(overrides)
    validate_cluster(cfg)
    check_launcher(cfg.hydra.launcher)
    kind = executor or executor_kind(cfg)
    n_levels = len(cfg.cluster.levels)
    if len(cfg.submit.resources) > n_levels:
        raise ValueError(f"submit.resources: {len(cfg.submit.resources)} records for {n_levels} levels")
    out_dir = Path(cfg.out_dir).expanduser().resolve()
    out = Path(cfg.hydra.run.dir).expanduser().resolve()  # the jobs run from this working directory too
    folder = out / ".submitit" / "%j"
    init = {} if kind == "debug" else {f"{kind}_max_num_timeout": cfg.hydra.launcher.get("max_num_timeout", 3)}
    jobs: list[submitit.Job] = []
    for t in range(1, n_levels + 1):
        ex = submitit.AutoExecutor(folder=folder, cluster=kind, **init)  # fresh: no parameter leaks across levels
        ex.update_parameters(**level_parameters(cfg, kind, t, jobs[-1].job_id if jobs else None))
        job = ex.submit(StageJob("curate.cluster", level_overrides(overrides, out_dir, t, n_levels), out))
        log.info("level %d: job %s", t, job.job_id)
        jobs.append(job)
        if kind != "slurm":
            job.result()  # no scheduler-side dependencies here: the next level waits for this one
    atomic_write_json(
        out / "submit.json",
        {"executor": kind, "jobs": [{"level": t, "job_id": j.job_id} for t, j in enumerate(jobs, start=1)]},
    )
    return out, jobs


# ---- the pipeline, one job per stage ---------------------------------------------------------------
PIPELINE_OWN_KEYS = ("submit", "only", "hydra.run.dir")


def pipeline_kind(launcher: DictConfig) -> str:
    """``slurm`` / ``local`` / ``debug`` from a ``hydra.launcher`` node."""
    target = str(launcher.get("_target_", ""))
    return "slurm" if target.endswith("SlurmLauncher") else "local" if target.endswith("LocalLauncher") else "debug"


def pipeline_stage_parameters(cfg: DictConfig, launcher: DictConfig, kind: str, stage: str, after: str | None) -> dict:
    """Job parameters of one pipeline stage: the launcher's, then ``resources.<stage>`` (e.g. GPUs
    for embed and train, CPUs for cluster), the job name and, on SLURM, ``afterok`` on job ``after``."""
    params = launcher_parameters(OmegaConf.create({"hydra": {"launcher": launcher}}), kind)
    own = OmegaConf.to_container(OmegaConf.create((cfg.resources or {}).get(stage) or {}))
    params.update({key: value for key, value in own.items() if value is not None})
    return chained(params, f"{cfg.name}-{stage}", kind, after)


def submit_pipeline(
    cfg: DictConfig,
    root: str | Path,
    overrides: Sequence[str],
    launcher: dict,
    stages: Sequence[str],
    executor: str | None = None,
) -> list[submitit.Job]:
    """Submit the stages of ``python -m curate.pipeline <overrides>`` as one job each (``only=<stage>``),
    chained like the level jobs of :func:`submit_levels` (SLURM: queued at once with ``afterok``;
    local / debug: one after the other). Every job is a :class:`StageJob` (requeued on preemption;
    the stage resumes from its folder). ``stages``: the stage jobs in order (``curate.pipeline.chain``,
    passed in by the pipeline, which sits above this module). Writes ``<root>/submit.json``; returns the jobs."""
    launcher = OmegaConf.create(launcher)
    kind = executor or pipeline_kind(launcher)
    root = Path(root).expanduser().resolve()
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in PIPELINE_OWN_KEYS]
    folder = root / ".submitit" / "%j"
    init = {} if kind == "debug" else {f"{kind}_max_num_timeout": launcher.get("max_num_timeout", 3)}
    jobs: list[submitit.Job] = []
    stages = list(stages)
    for stage in stages:
        ex = submitit.AutoExecutor(folder=folder, cluster=kind, **init)
        ex.update_parameters(**pipeline_stage_parameters(cfg, launcher, kind, stage, jobs[-1].job_id if jobs else None))
        run_dir = "hydra.run.dir='" + str(root).replace("\\", "\\\\").replace("'", "\\'") + "'"  # quoted: seed=0
        job = ex.submit(StageJob("curate.pipeline", [*kept, f"only={stage}", run_dir], root))
        log.info("%s: job %s", stage, job.job_id)
        print(f"{stage}: job {job.job_id}")
        jobs.append(job)
        if kind != "slurm":
            job.result()
    atomic_write_json(
        root / "submit.json",
        {"executor": kind, "jobs": [{"stage": s, "job_id": j.job_id} for s, j in zip(stages, jobs)]},
    )
    return jobs


def parse_hydra_flags(args: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Hydra's command-line flags that ``curate.submit`` honours (``--cfg``/``-c``, ``--resolve``,
    ``--package``/``-p``, ``--multirun``/``-m``) and the overrides left."""
    parser = argparse.ArgumentParser(prog="python -m curate.submit", add_help=False)
    parser.add_argument("-c", "--cfg", choices=("job", "hydra", "all"))
    parser.add_argument("--resolve", action="store_true")
    parser.add_argument("-p", "--package")
    parser.add_argument("-m", "--multirun", action="store_true")
    flags, rest = parser.parse_known_args(list(args))
    unknown = [a for a in rest if a.startswith("-")]
    if unknown:
        raise ValueError(f"unknown flag {unknown[0]} (curate.submit takes overrides, --cfg, --resolve, -p, -m)")
    return flags, rest


def sweep_points(overrides: Sequence[str]) -> list[list[str]]:
    """The runs of ``-m overrides``: the cartesian product of the swept values (``seed=0,1``,
    ``x=range(3)``), as Hydra's basic sweeper expands them; one point when nothing is swept."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lists = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ValueError(f"{override.input_line}: only lists and ranges can be swept here")
            key = override.get_key_element()
            lists.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            lists.append([override.input_line])
    return [list(point) for point in itertools.product(*lists)]


def point_overrides(point: list[str]) -> list[str]:
    """One sweep point's overrides, run in ``hydra.sweep.dir/hydra.sweep.subdir`` (where
    ``python -m curate.cluster -m`` would put it) instead of the single run's folder."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_cluster(point)
    HydraConfig.instance().set_config(cfg)  # resolves ${hydra:...} in the folder names
    folder = str(Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir))
    return [*point, "hydra.run.dir='" + folder.replace("\\", "\\\\").replace("'", "\\'") + "'"]


def show_config(overrides: Sequence[str], flags: argparse.Namespace) -> str:
    """What ``--cfg job|hydra|all`` prints (as Hydra apps do): the composed config, its ``hydra``
    node or both, optionally resolved and narrowed to ``--package``."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_cluster(overrides)
    HydraConfig.instance().set_config(cfg)
    if flags.resolve:  # before narrowing: the hydra node refers to the job's keys
        OmegaConf.set_readonly(cfg.hydra, False)
        OmegaConf.resolve(cfg)
    if flags.cfg == "job":
        with open_dict(cfg):
            del cfg["hydra"]
    elif flags.cfg == "hydra":
        cfg = OmegaConf.create({"hydra": cfg.hydra})
    if flags.package and flags.package != "_global_":
        cfg = OmegaConf.select(cfg, flags.package)
        if cfg is None:
            raise ValueError(f"--package {flags.package}: no such node in the config")
    return OmegaConf.to_yaml(cfg) if OmegaConf.is_config(cfg) else f"{cfg}\n"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m curate.submit [-m] [--cfg job] [cluster-stage overrides]``: print the job ids and return.

    ``--cfg job|hydra|all`` (with ``--resolve``, ``-p``) prints the composed cluster config and
    submits nothing; ``-m`` submits one chain of level jobs per point of the sweep.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return
    args = take_traceback_flag(args)
    flags, overrides = run_guarded(parse_hydra_flags, args, hydra=True)
    points = run_guarded(sweep_points, overrides, hydra=True) if flags.multirun else [overrides]
    if flags.cfg:
        for point in points:
            print(run_guarded(show_config, point, flags, hydra=True), end="")
        return
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    for point in points:
        if flags.multirun:
            point = run_guarded(point_overrides, point, hydra=True)
            print(f"run {' '.join(point[:-1])}:")
        out, jobs = run_guarded(submit_levels, point, hydra=True)
        for t, job in enumerate(jobs, start=1):
            print(f"level {t}: job {job.job_id}")
        print(f"output: {out}")


if __name__ == "__main__":
    from curate.submit import main as _main  # so the pickled jobs refer to curate.submit, not __main__

    _main()  # guarded inside (run_guarded), --traceback accepted
