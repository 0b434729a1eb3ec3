"""Structured (dataclass) schemas of the cluster, sample and dedup stages.

Registered in Hydra's ConfigStore, so the YAML files under ``configs/`` are checked against them
(struct mode: a misspelled key is an error) and every value has a type. The defaults live here
only: a YAML file sets what differs. Choices are :class:`~enum.StrEnum` fields, so a wrong value
fails when Hydra composes the config (before a job is queued) and ``--help`` lists the options.
Cross-field rules live in ``validate_*`` functions that raise ``ValueError`` naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.nodes import EnumNode

from curate.core.launch import EXECUTORS, register_resolvers
from curate.core.protocol import RUN_ONLY, run_only_keys
from curate.core.settings import above, at_least, check_settings
from curate.core.tracking import MODES
from curate.hierarchy.levels import LevelConfig, LevelSpec, validate_levels
from curate.hierarchy.model import RESAMPLE_STRATEGIES
from curate.kmeans.estimator import DISTANCES, INITS
from curate.sampling import STRATEGIES


def choices(name: str, values: Iterable[str], module: str = __name__) -> type[StrEnum]:
    """A :class:`~enum.StrEnum` whose members are named by their values (``k-means++`` too).

    OmegaConf reads a string into an Enum field by member name, so overrides, saved configs and
    the values the engine takes are the same strings; members compare equal to them.
    """
    return StrEnum(name, {value: value for value in values}, module=module)


# the engine's own tuples are the source of the choices; the stages pass plain strings to it
Distance = choices("Distance", DISTANCES)
Init = choices("Init", INITS)
ResampleStrategy = choices("ResampleStrategy", RESAMPLE_STRATEGIES)
Toy = choices("Toy", ("toy_2d", "rings_2d"))
WandbMode = choices("WandbMode", MODES)
SampleStrategy = choices("SampleStrategy", STRATEGIES)
SampleMethod = choices("SampleMethod", ("hierarchical", "flat"))
DedupBackend = choices("DedupBackend", ("torch", "faiss"))
ExportFormat = choices("ExportFormat", ("webdataset",))
RetrieveMethod = choices("RetrieveMethod", ("exact", "ivf"))
Executor = choices("Executor", EXECUTORS)
DEFAULT_TOY = Toy.toy_2d


@dataclass
class HierarchyConfig:
    """A level preset (``configs/cluster/*.yaml``)."""

    name: str = MISSING
    levels: list[LevelConfig] = MISSING
    n_iter: int = 50
    distance: Distance = Distance.l2
    init: Init = Init["k-means++"]
    resample_strategy: ResampleStrategy = ResampleStrategy.closest
    init_max_points: int | None = None
    # when set, replaces resample_steps of every level (ablations: cluster.resample_steps_override=0,10,100)
    resample_steps_override: int | None = None


@dataclass
class InputConfig:
    """What to cluster: a ``.npy`` file or an embedding store folder, or a bundled toy (``toy``
    null: ``toy_2d`` when no ``path`` is given either); with ``subset``, only some of its rows (a
    dedup output folder, a ``.npy`` of row indices or a text file of ids). A ``.parquet`` path is
    read by row groups: embeddings from ``column`` (a list of floats per row), ids from
    ``id_column`` (null: row numbers)."""

    path: str | None = None
    toy: Toy | None = None
    subset: str | None = None
    column: str = "embedding"
    id_column: str | None = "id"


@dataclass
class WandbConfig:
    """``logger.wandb`` of every stage (curate's, selfsup's) and of ``curate.pipeline`` (which copies
    its settings into each stage's): see :mod:`curate.core.tracking`."""

    mode: WandbMode = WandbMode.disabled
    project: str = "ssl-curate"
    entity: str | None = None
    group: str | None = None  # wandb group; None: the run's name (curate.pipeline sets the experiment's)
    init_timeout_s: float = 60.0  # online falls back to offline when init fails or takes longer


@dataclass
class LoggerConfig:
    """``logger``: where a stage's metrics go besides its ``metrics.jsonl``."""

    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class ResourceConfig:
    """Resources of one level job sent by ``curate.submit``; ``None`` keeps the launcher's value."""

    nodes: int | None = None
    gpus_per_node: int | None = None
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    timeout_min: int | None = None


@dataclass
class SubmitConfig:
    """``python -m curate.submit``: one job per level, chained with ``afterok`` dependencies."""

    # one record per level (finest first); missing levels use the launcher's resources
    resources: list[ResourceConfig] = field(default_factory=list)
    # submitit executor: null = from the launcher (submitit_slurm -> slurm, submitit_local -> local,
    # local -> debug, i.e. in this process)
    executor: Executor | None = None


@dataclass
class ClusterStageConfig:
    input: InputConfig = field(default_factory=InputConfig)
    cluster: HierarchyConfig = MISSING
    name: str = "${cluster.name}"
    out_dir: str = "outputs"
    seed: int = field(default=0, metadata=at_least(0))
    device: str = field(default="cpu", metadata=RUN_ONLY)
    # working memory per chunk (null: 256 on a CPU, a share of the free memory on CUDA)
    memory_budget_mb: float | None = field(default=None, metadata=above(0, run_only=True))
    # TF32 float32 matmuls on CUDA (every k-means and the level-1 split)
    allow_tf32: bool = True
    checkpoint_every: int = field(default=10, metadata=at_least(1, run_only=True))
    # distributed: an upper level runs sharded when its input has this many rows per rank
    shard_min_rows: int = field(default=65536, metadata=at_least(1, run_only=True))
    # level-1 split: device memory for sub-centroids + float64 sums; beyond it clusters go in batches
    split_memory_mb: float = field(default=4096.0, metadata=above(0, run_only=True))
    # k-means++ of a streamed (memory-mapped) input that fits in this many MB reads it into memory
    # once instead of once per centroid (0: stay out of core)
    init_cache_mb: float = field(default=0.0, metadata=at_least(0, run_only=True))
    # build levels 1..t (kept in <out>/checkpoints) and exit; the next run resumes from them
    stop_after_level: int | None = field(default=None, metadata=RUN_ONLY)
    # replace what an earlier run left in the output folder (checkpoints or a finished clustering
    # of other settings or another input) instead of refusing
    overwrite: bool = field(default=False, metadata=RUN_ONLY)
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata=RUN_ONLY)
    submit: SubmitConfig = field(default_factory=SubmitConfig, metadata=RUN_ONLY)


@dataclass
class SampleStageConfig:
    name: str = "toy_2d"
    out_dir: str = "outputs"
    cluster_dir: str = "${out_dir}/cluster/${name}"
    targets: list[Any] = field(default_factory=lambda: [1000])
    strategy: SampleStrategy = SampleStrategy.random
    method: SampleMethod = SampleMethod.hierarchical
    multiplier: int = field(default=1, metadata=at_least(1))
    seed: int = field(default=0, metadata=at_least(0))
    plot: bool = field(default=True, metadata=RUN_ONLY)
    # webdataset: also write the selected items' original files as tar shards in the sample folder
    export: ExportFormat | None = None
    export_shard_size: int = field(default=10_000, metadata=at_least(1))
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata=RUN_ONLY)


@dataclass
class DedupConfig:
    """``python -m curate.dedup input=<store or .npy> out=<dir>``.

    Attributes:
        input: an embedding store directory or a ``(N, d)`` ``.npy``.
        out: output directory (also Hydra's run dir).
        threshold: cosine similarity above which a row is a near-duplicate of a kept earlier row
            (or of a reference row); computed cosines are compared with a 1e-5 margin for float32
            rounding (``curate.dedup.SIM_TOLERANCE``), so ``1.0`` removes nothing.
        reference: decontamination: a store (or ``.npy``) or a list of them, e.g. the evaluation
            sets embedded with the pool's encoder; every pool row more similar than ``threshold``
            to one of their rows is removed too. Their identities are content settings.
        chunk_size: rows per rank and step (a ``chunk_size x world_size * chunk_size`` similarity
            block is held); None: 1024 on CPU, 8192 on GPU.
        backend: ``torch`` (matmul on ``device``) or ``faiss`` (exact ``IndexFlatIP`` range search).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` (torch backend).
        sim_budget: most similarity entries of one tile against the kept rows; None: 2^20 on CPU,
            2^27 on GPU.
        write_store: also write the kept rows as an embedding store in ``<out>/store``.
        shard_size: rows per shard of that store.
        checkpoint_every_s: seconds between checkpoints of the decisions (rank 0; 0: every step).
        overwrite: replace a finished dedup or a checkpoint of another input in ``out`` (only the
            files this stage writes) instead of refusing.
    """

    input: str = MISSING
    out: str = field(default=MISSING, metadata=RUN_ONLY)
    threshold: float = 0.95
    reference: Any = None  # str | list[str]
    chunk_size: int | None = field(default=None, metadata=at_least(1, run_only=True))
    backend: DedupBackend = field(default=DedupBackend.torch, metadata=RUN_ONLY)
    device: str = field(default="auto", metadata=RUN_ONLY)
    sim_budget: int | None = field(default=None, metadata=at_least(1, run_only=True))
    write_store: bool = False
    shard_size: int = field(default=50000, metadata=at_least(1, run_only=True))
    checkpoint_every_s: float = field(default=300.0, metadata=at_least(0, run_only=True))
    overwrite: bool = field(default=False, metadata=RUN_ONLY)
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata=RUN_ONLY)  # metrics.jsonl in out (+ wandb)


@dataclass
class RetrieveConfig:
    """``python -m curate.retrieve input=<pool store> queries=<store> per_query=N out=<dir>``.

    Attributes:
        input: the pool: an embedding store directory or a ``(N, d)`` ``.npy``.
        queries: the queries (a curated seed set): a store or a ``(Q, d)`` ``.npy`` of the same ``d``.
        per_query: ``N``, the pool items kept per query (its ``N`` nearest by cosine similarity).
        out: output directory (also Hydra's run dir); must not overlap ``input`` or ``queries``.
        method: ``exact`` (chunked matmul, ties to the smaller row) or ``ivf`` (faiss IVF, approximate).
        nlist: IVF cells (``method=ivf``).
        nprobe: IVF cells searched per query (``method=ivf``).
        ivf_train_size: pool rows the IVF quantizer is trained on (a seeded random subset).
        seed: seed of that subset.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` (exact method).
        memory_budget_mb: working memory of one similarity tile and one pool chunk.
    """

    input: str = MISSING
    queries: str = MISSING
    per_query: int = MISSING
    out: str = MISSING
    method: RetrieveMethod = RetrieveMethod.exact
    nlist: int = 1024
    nprobe: int = 16
    ivf_train_size: int = 100_000
    seed: int = 0
    device: str = "auto"
    memory_budget_mb: float = 256.0


def register_configs() -> None:
    """Register the cluster/sample/dedup/retrieve schemas and the ``--help`` resolver (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="cluster_schema", node=ClusterStageConfig)
    cs.store(name="sample_schema", node=SampleStageConfig)
    cs.store(group="cluster", name="hierarchy_schema", node=HierarchyConfig)
    cs.store(name="dedup_schema", node=DedupConfig)
    cs.store(name="retrieve_schema", node=RetrieveConfig)
    register_help()


def choice_fields(cfg: DictConfig, prefix: str = "") -> list[tuple[str, type[Enum]]]:
    """``(dotted key, Enum type)`` of every choice field of a composed config (``hydra`` left out)."""
    found = []
    for key in cfg.keys():
        if not prefix and key == "hydra":
            continue
        node = cfg._get_node(key)
        if isinstance(node, EnumNode):
            found.append((f"{prefix}{key}", node.enum_type))
        elif isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            found += choice_fields(node, f"{prefix}{key}.")
    return found


def choices_help(cfg: DictConfig) -> str:
    """The ``--help`` section listing each choice field's options, one ``key: a | b`` line each."""
    lines = [f"  {key}: {' | '.join(member.value for member in enum)}" for key, enum in choice_fields(cfg)]
    return "== Choices ==\n" + "\n".join(lines) + "\n" if lines else ""


def _with_leaves(cfg: DictConfig, keys: Iterable[str]) -> set[str]:
    """``keys`` and the dotted keys of every value below those that are nodes (an override names a leaf)."""
    out = set(keys)
    for key in keys:
        node = OmegaConf.select(cfg, key, throw_on_missing=False)
        if isinstance(node, DictConfig):
            plain = OmegaConf.to_container(node, resolve=False)
            stack = [(key, plain)]
            while stack:
                prefix, tree = stack.pop()
                for name, value in tree.items() if isinstance(tree, dict) else ():
                    out.add(f"{prefix}.{name}")
                    stack.append((f"{prefix}.{name}", value))
    return out


def _exclude_keys(*keys: str, _root_: DictConfig) -> list[str]:
    return sorted({*map(str, keys), *_with_leaves(_root_, run_only_keys(_root_))})


def register_help() -> None:
    """``${curate_choices:}`` (the primary configs' ``hydra.help.footer``): the choices of the
    composed config, read from its Enum fields, so ``--help`` lists them without a second copy;
    ``${curate_run_only:<key>,...}`` (the primary configs' ``hydra.job.config.override_dirname.exclude_keys``):
    the given keys (paths) and the composed config's run-only settings, read from its schemas' field
    metadata (:func:`curate.core.protocol.run_only_keys`), so a sweep job's folder is named by what it
    computes without a second list; also the launcher's resolvers (:func:`curate.core.launch.register_resolvers`)."""
    if not OmegaConf.has_resolver("curate_choices"):
        OmegaConf.register_new_resolver("curate_choices", lambda *, _root_: choices_help(_root_))
    if not OmegaConf.has_resolver("curate_run_only"):
        OmegaConf.register_new_resolver("curate_run_only", _exclude_keys)
    register_resolvers()


def level_specs(cfg: Any) -> list[LevelSpec]:
    """The level records of a cluster-stage config (``cluster.resample_steps_override`` applied)."""
    override = cfg.cluster.get("resample_steps_override")
    levels = [dict(level) for level in cfg.cluster.levels]
    if override is not None:
        levels = [{**level, "resample_steps": override} for level in levels]
    return [LevelSpec.of(level) for level in levels]


def input_toy(cfg: Any) -> str | None:
    """The toy a cluster-stage config clusters: ``input.toy``, else ``toy_2d`` when no
    ``input.path`` is given (setting a path clears the default toy); None for a path."""
    if cfg.input.path is not None:
        return None
    return str(cfg.input.toy) if cfg.input.toy is not None else str(DEFAULT_TOY)


def validate_cluster(cfg: Any) -> None:
    """Cross-field checks of a cluster-stage config (after the schema's declared keys and bounds:
    :func:`curate.core.settings.check_settings`)."""
    if isinstance(cfg, DictConfig):
        check_settings(cfg)
    if cfg.input.path is not None and cfg.input.toy is not None:
        raise ValueError("input: set input.path (a .npy file or embedding store) or input.toy, not both")
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


def validate_sample(cfg: Any) -> None:
    """Cross-field checks of a sample-stage config (after the schema's declared keys and bounds:
    :func:`curate.core.settings.check_settings`)."""
    if isinstance(cfg, DictConfig):
        check_settings(cfg)
    if len(cfg.targets) == 0:
        raise ValueError("targets: give at least one budget (a count, or a fraction in (0, 1])")
    for target in cfg.targets:
        if isinstance(target, bool) or not isinstance(target, int | float) or target <= 0:
            raise ValueError(f"targets: {target!r} is not a positive count or a fraction in (0, 1]")
        if isinstance(target, float) and target > 1:
            raise ValueError(f"targets: {target!r} is a fraction above 1; give a fraction in (0, 1] or an int count")
