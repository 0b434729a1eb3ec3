"""What a stage's SLURM job asks for, and a check that a SLURM launch can be requeued.

``configs/launcher/submitit_slurm.yaml`` sizes a job from the stage's own ``device`` through two
resolvers registered here: a stage on ``cpu`` (the cluster stage's default; the sample stage has
no device) asks for no GPU and one task; any other device (``auto``, ``cuda``) for ``per_node``
GPUs and one rank per GPU. Explicit ``hydra.launcher.gpus_per_node=...`` still wins.

:class:`LauncherCheck` (a Hydra callback of the stage configs) refuses the plain
``hydra/launcher=submitit_slurm``, for a sweep and a single run alike, before any work: that form
lacks the requeue and signal settings of ``launcher=submitit_slurm``, so a preempted or timed-out
job would be lost.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SLURM_TARGET = "SlurmLauncher"
EXECUTORS = ("slurm", "local", "debug")  # submitit executors of curate.submit (submit.executor)


def gpus_for(device: Any, per_node: int) -> int | None:
    """GPUs per node of a job whose stage runs on ``device``: None (no GPU requested) for ``cpu``."""
    return None if str(device) == "cpu" else int(per_node)


def ranks_for(gpus: int | None) -> int:
    """Tasks per node: one rank per GPU, one task without GPUs."""
    return max(int(gpus or 0), 1)


def register_resolvers() -> None:
    """``${curate_gpus:<device>,<per node>}`` and ``${curate_ranks:<gpus>}`` (idempotent)."""
    if not OmegaConf.has_resolver("curate_gpus"):
        OmegaConf.register_new_resolver("curate_gpus", gpus_for)
        OmegaConf.register_new_resolver("curate_ranks", ranks_for)


def launcher_problem(launcher: DictConfig) -> str | None:
    """Why a composed ``hydra.launcher`` may not send jobs, or None (only SLURM is checked)."""
    if not str(launcher.get("_target_", "")).endswith(SLURM_TARGET):
        return None
    extra = launcher.get("additional_parameters") or {}
    if not extra.get("requeue") or not launcher.get("max_num_timeout"):
        return (
            "hydra/launcher=submitit_slurm has no requeue settings (a preempted or timed-out job would be lost); "
            "use launcher=submitit_slurm (configs/launcher/submitit_slurm.yaml) instead (hydra.launcher)"
        )
    return None


def check_launcher(launcher: DictConfig) -> None:
    """Exit with ``error: ...`` (code 2) before any job is queued when :func:`launcher_problem` finds one."""
    problem = launcher_problem(launcher)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(2)


class LauncherCheck(Callback):
    """Hydra callback: runs :func:`check_launcher` when a sweep (``-m``) starts, before the launcher,
    and when a single run starts (the launcher named there would be ignored: the run would go on
    here, not on SLURM)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_launcher(config.hydra.launcher)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_launcher(config.hydra.launcher)
