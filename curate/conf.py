"""Structured (dataclass) schemas of the cluster and sample stages.

Registered in Hydra's ConfigStore, so the YAML files under ``configs/`` are checked against them
(struct mode: a misspelled key is an error) and every value has a type. Cross-field rules live in
``validate_*`` functions that raise ``ValueError`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from curate.hierarchy.levels import LevelSpec, validate_levels
from curate.kmeans.estimator import DISTANCES, INITS
from curate.sampling import STRATEGIES

TOYS = ("toy_2d", "rings_2d")
WANDB_MODES = ("disabled", "offline", "online")


@dataclass
class LevelConf:
    """One level record: ``{k, resample_steps, sample_size, n_splits}`` (see LevelSpec)."""

    k: int = MISSING
    resample_steps: int = 0
    sample_size: int = 1
    n_splits: int = 1


@dataclass
class HierarchyConf:
    """A level preset (``configs/cluster/*.yaml``)."""

    name: str = MISSING
    levels: list[LevelConf] = MISSING
    n_iter: int = 50
    distance: str = "l2"
    init: str = "k-means++"
    resample_strategy: str = "closest"
    init_max_points: int | None = None
    # when set, replaces resample_steps of every level (ablations: cluster.resample_steps_override=0,10,100)
    resample_steps_override: int | None = None


@dataclass
class InputConf:
    """What to cluster: a ``.npy`` file or an embedding store folder, or a bundled toy; with
    ``subset``, only some of its rows (a dedup output folder, a ``.npy`` of row indices or a text
    file of ids)."""

    path: str | None = None
    toy: str | None = None
    subset: str | None = None


@dataclass
class WandbConf:
    mode: str = "disabled"  # disabled | offline | online
    project: str = "ssl-curate"
    entity: str | None = None
    group: str | None = None  # wandb group; None: the run's name (curate.pipeline sets the experiment's)
    init_timeout: float = 60.0  # seconds; online falls back to offline when init fails or times out


@dataclass
class LoggerConf:
    wandb: WandbConf = field(default_factory=WandbConf)


@dataclass
class ResourceConf:
    """Resources of one level job sent by ``curate.submit``; ``None`` keeps the launcher's value."""

    nodes: int | None = None
    gpus_per_node: int | None = None
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    timeout_min: int | None = None


@dataclass
class SubmitConf:
    """``python -m curate.submit``: one job per level, chained with ``afterok`` dependencies."""

    # one record per level (finest first); missing levels use the launcher's resources
    resources: list[ResourceConf] = field(default_factory=list)
    # submitit executor: null = from the launcher (submitit_slurm -> slurm, submitit_local -> local,
    # local -> debug, i.e. in this process)
    executor: str | None = None


@dataclass
class ClusterStageConf:
    input: InputConf = field(default_factory=InputConf)
    cluster: HierarchyConf = MISSING
    name: str = "${cluster.name}"
    out_dir: str = "outputs"
    seed: int = 0
    device: str = "cpu"
    # working memory per chunk (null: 256 on a CPU, a share of the free memory on CUDA)
    memory_budget_mb: float | None = None
    # TF32 float32 matmuls on CUDA (every k-means and the level-1 split)
    allow_tf32: bool = True
    checkpoint_every: int = 10
    # distributed: an upper level runs sharded when its input has this many rows per rank
    shard_min_rows: int = 65536
    # level-1 split: device memory for sub-centroids + float64 sums; beyond it clusters go in batches
    split_memory_mb: float = 4096.0
    # k-means++ of a streamed (memory-mapped) input that fits in this many MB reads it into memory
    # once instead of once per centroid (0: stay out of core)
    init_cache_mb: float = 0.0
    # build levels 1..t (kept in <out>/checkpoints) and exit; the next run resumes from them
    stop_after_level: int | None = None
    logger: LoggerConf = field(default_factory=LoggerConf)
    submit: SubmitConf = field(default_factory=SubmitConf)


@dataclass
class SampleStageConf:
    name: str = "toy_2d"
    out_dir: str = "outputs"
    cluster_dir: str = "${out_dir}/cluster/${name}"
    targets: list[Any] = field(default_factory=lambda: [1000])
    strategy: str = "random"
    method: str = "hierarchical"  # hierarchical | flat
    multiplier: int = 1
    seed: int = 0
    plot: bool = True
    logger: LoggerConf = field(default_factory=LoggerConf)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="cluster_schema", node=ClusterStageConf)
    cs.store(name="sample_schema", node=SampleStageConf)
    cs.store(group="cluster", name="hierarchy_schema", node=HierarchyConf)


def level_specs(cfg: Any) -> list[LevelSpec]:
    """The level records of a cluster-stage config (``cluster.resample_steps_override`` applied)."""
    override = cfg.cluster.get("resample_steps_override")
    levels = [dict(level) for level in cfg.cluster.levels]
    if override is not None:
        levels = [{**level, "resample_steps": override} for level in levels]
    return [LevelSpec.of(level) for level in levels]


def validate_cluster(cfg: Any) -> None:
    """Cross-field checks of a cluster-stage config."""
    if (cfg.input.path is None) == (cfg.input.toy is None):
        raise ValueError("input: set exactly one of input.path (a .npy file or embedding store) or input.toy")
    if cfg.input.toy is not None and cfg.input.toy not in TOYS:
        raise ValueError(f"input.toy: unknown toy {cfg.input.toy!r}; choose from {TOYS}")
    if cfg.cluster.distance not in DISTANCES:
        raise ValueError(f"cluster.distance: must be one of {DISTANCES}, got {cfg.cluster.distance!r}")
    if cfg.cluster.init not in INITS:
        raise ValueError(f"cluster.init: must be one of {INITS}, got {cfg.cluster.init!r}")
    if cfg.cluster.n_iter < 0:
        raise ValueError(f"cluster.n_iter: must be >= 0, got {cfg.cluster.n_iter}")
    try:
        validate_levels(level_specs(cfg))
    except ValueError as err:
        raise ValueError(f"cluster.{err}") from None
    n_levels = len(cfg.cluster.levels)
    stop = cfg.get("stop_after_level")
    if stop is not None and not 1 <= stop <= n_levels:
        raise ValueError(f"stop_after_level: must be in [1, {n_levels}] (the number of levels) or null, got {stop}")
    if cfg.logger.wandb.mode not in WANDB_MODES:
        raise ValueError(f"logger.wandb.mode: must be one of {WANDB_MODES}, got {cfg.logger.wandb.mode!r}")


def validate_sample(cfg: Any) -> None:
    """Cross-field checks of a sample-stage config."""
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"strategy: must be one of {STRATEGIES}, got {cfg.strategy!r}")
    if cfg.method not in ("hierarchical", "flat"):
        raise ValueError(f"method: must be 'hierarchical' or 'flat', got {cfg.method!r}")
    if cfg.multiplier < 1:
        raise ValueError(f"multiplier: must be >= 1, got {cfg.multiplier}")
    if cfg.logger.wandb.mode not in WANDB_MODES:
        raise ValueError(f"logger.wandb.mode: must be one of {WANDB_MODES}, got {cfg.logger.wandb.mode!r}")
    if len(cfg.targets) == 0:
        raise ValueError("targets: give at least one budget (a count, or a fraction in (0, 1])")
    for target in cfg.targets:
        if isinstance(target, bool) or not isinstance(target, int | float) or target <= 0:
            raise ValueError(f"targets: {target!r} is not a positive count or a fraction in (0, 1]")
