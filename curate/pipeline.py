"""From an image folder to an evaluated backbone: the stages chained through their files.

    python -m curate.pipeline +experiment=curation_ssl_quick data=image_folder data.root=<POOL> \\
        eval.train_root=<LABELLED TRAIN FOLDER> eval.test_root=<LABELLED TEST FOLDER> name=<NAME>
    python -m curate.pipeline -m +experiment=curation_ssl seed=0,1,2 ...     # one pipeline per seed
    python -m curate.pipeline ... launcher=submitit_slurm submit=true        # one SLURM job per stage

Runs embed -> dedup -> cluster -> sample -> train -> eval (``stages``: any of them, in this
order) by calling each stage's entry function, found through ``stage_modules`` (the module that
declares the stage, its ``STAGE``: :class:`curate.core.protocol.Stage`), with its own config: the
pipeline's ``<stage>`` node, which is the stage's primary config (``configs/<stage>.yaml``) composed
with its schema when the pipeline's schema is registered (:func:`register_schema`), so every key is
typed and checked before any stage runs (``train.train.iterations=...`` is ``train.iterations`` of
``selfsup.train``), with the pipeline's ``data`` / ``encoder`` / paths filled in. Every stage writes
its usual folder under ``<out_dir>/<name>/<stage>/`` (the Hydra run dir of the pipeline; ``-m``
adds the job's overrides), plus ``pipeline.json``: its completion record (``status`` running /
complete, its content ``settings``: the resolved config minus the run-only settings its schema
declares, its ``inputs``: the keys of the stages it reads), its ``key`` (a fingerprint of both) and
its resolved ``config``.

Re-running (:func:`curate.core.protocol.decide`): a stage complete with the same settings and inputs
is skipped ("nothing to do"); one left running (killed) resumes through its own resume (embed
shards, dedup checkpoint, k-means checkpoints, trainer checkpoint); one whose content settings or
inputs changed is recomputed in place: the files its runs wrote in its folder (recorded,
:func:`curate.core.guard.recorded_outputs`) are removed, nothing else, and it runs again, so a
changed train setting re-runs train and eval, not clustering; a changed run-only setting
(``train.train.snapshot_every``, devices, workers, logging) keeps the work. A ``pipeline.json``
written by an older version (no ``settings``) is refused, naming its folder.

Baselines (``baselines``, any of ``balanced, no_tail, random, full``), each a training
(``train_<b>/``) and its evaluation (``eval_<b>/``) beside the curated one:

- ``balanced`` / ``no_tail``, label oracles for the positive control: does this training regime
  show the composition of its training set at all? ``balanced`` water-fills the budget over the
  pool's class sizes (``curate.sampling.water_fill``, random items inside each class); ``no_tail``
  draws it uniformly from the pool without any item of its ``eval.num_tail_classes`` rarest
  classes. Their budget is ``sample.targets[0]`` resolved against the (deduplicated) pool, so they
  need neither cluster nor sample and run first, right after embed / dedup: the control's gap
  (balanced minus no_tail on the tail classes) is known before the curation is paid for. They need
  the pool's labels (``data.labels_from_dirs=true``); selections in ``sample_<b>/ids.txt``, their
  class counts in the stage's result. (A submitted chain, one job per stage, runs them in its
  sample / train / eval jobs, beside the curated ones.)
- ``random``: as many items as the curated sample, uniform from the (deduplicated) pool
  (``sample_random/``); ``full``: that whole pool.

The run ends by writing ``summary.json``: ``pool_size``, ``kept_after_dedup``, ``sample_size``,
``train_images`` (distinct items the trainer drew), ``knn_top1`` / ``linear_top1`` (and ``_tail``,
in %), ``baselines`` (the same per baseline; a label oracle's ``selection`` too) and the stages'
folders and times, in the order they ran.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from curate.analysis.metrics import rarest, rarest_classes
from curate.conf import LoggerConfig, level_specs
from curate.core.atomic import atomic_write_json
from curate.core.guard import has_record, recorded_outputs, remove_recorded
from curate.core.protocol import Action, Stage, completion_record, content, decide, fingerprint, log_skip
from curate.hierarchy.levels import LevelSpec, resolve_levels
from curate.io.idlist import read_ids, write_ids
from curate.sampling import random_rows, resolve_target, water_fill

log = logging.getLogger(__name__)

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
STAGES = ("base", "embed", "dedup", "cluster", "sample", "train", "eval")
# the label oracles of the positive control (run first: they need neither cluster nor sample), then the others
CONTROLS = ("balanced", "no_tail")
BASELINES = (*CONTROLS, "random", "full")
STAMP = "pipeline.json"
SUMMARY_KEYS = ("pool_size", "kept_after_dedup", "sample_size", "train_images", "knn_top1", "linear_top1")
RUNS = ("embed", "dedup", "cluster", "sample", "train", "eval")  # the stages declared in stage_modules
# keys of a stage's own config that follow the pipeline's unless set on its node (interpolations)
LINKED = {
    "embed": {"data": "${data}", "encoder": "${encoder}"},
    "cluster": {"name": "${name}", "seed": "${seed}"},
    "sample": {"name": "${name}", "seed": "${seed}"},
    "train": {"name": "${name}", "train.seed": "${seed}", "data": "${data}"},
}


@dataclass
class EvalStageConfig:
    """``eval.train_root`` / ``eval.test_root``: labelled image folders (one sub-folder per class);
    ``eval.eval``: the eval stage's ``eval`` options (e.g. ``eval.eval.knn_k``), typed by its schema
    when the pipeline's schema is registered (:func:`register_schema`)."""

    train_root: str | None = None
    test_root: str | None = None
    eval: Any = None


@dataclass
class BaseStageConfig:
    """``base.root``: an image folder to train the curation embedding on first (the paper's
    ImageNet-trained model); embed then uses its backbone (``encoder=selfsup``). ``base.train``
    is merged over the pipeline's ``train`` node for that run."""

    root: str | None = None
    train: Any = None


@dataclass
class MixConfig:
    """The parts of the curated training set and their weights (the trainer's ``data.mix``, each
    batch drawn part by part by weight): ``sample``, the hierarchical sample; ``retrieval``, the
    pool items nearest the seed set (``curate.retrieve``, its settings in the ``retrieve`` node,
    duplicates and contaminated items of the dedup left out); ``seed_set``, the seed set's own images.
    With only ``sample`` weighted (the default) the trainer reads the sample alone.
    ``homogeneous_fraction``: the share of batches from one part only (None: 0)."""

    sample: float = 1.0
    retrieval: float = 0.0
    seed_set: float = 0.0
    homogeneous_fraction: float | None = None


@dataclass
class PipelineConfig:
    """``python -m curate.pipeline`` (see the module docstring).

    Attributes:
        name: the experiment; outputs under ``<out_dir>/<name>/`` and wandb group.
        seed: seed of the clustering, the sampling, the baselines' selections and the trainings.
        stages: the stages to run (in pipeline order); a stage left out reuses its finished folder.
        only: run this one stage (its inputs must be finished): what a submitted stage job runs.
        baselines: trainings beside the curated one, any of :data:`BASELINES`: the label oracles
            ``balanced`` / ``no_tail`` (the positive control, run first; they need pool labels),
            ``random`` and ``full``.
        submit: send the stages as dependent jobs through the launcher (``curate.submit``) and return.
        resources: per-stage job resources for ``submit`` (``{train: {gpus_per_node: 1}}``).
        data, encoder: the ``data`` and ``encoder`` groups (the same items for every stage).
        base: optional training of the curation embedding on another folder (``base.root``).
        stage_modules: ``{stage: module}``, the module that declares each stage (its ``STAGE``, a
            :class:`curate.core.protocol.Stage`): how the pipeline reaches the trainer and the
            evaluation without the library importing them (configs/pipeline.yaml).
        embed, dedup, cluster, sample, train: each stage's own config (``configs/<stage>.yaml``
            composed with its schema, filled in by :func:`register_schema`): every key is typed and
            can be set without ``+``; paths are set by the pipeline.
        logger: ``logger.wandb`` (:class:`curate.conf.WandbConfig`), copied into every stage's.
        decontaminate: the evaluation sets to remove from the pool: image folders (embedded with the
            pool's encoder, in ``embed_reference_<i>/``) or embedding stores, passed to the dedup
            stage as its ``reference``.
        seed_set: a curated seed set: an image folder (embedded with the pool's encoder in
            ``embed_seed_set/`` for the retrieval; its images are the ``mix.seed_set`` part) or an
            embedding store (retrieval queries only).
        retrieve: the retrieve stage's config (``configs/retrieve.yaml``: ``per_query``, ``method``,
            ...); its paths are set by the pipeline (``sample_retrieval/retrieve/``).
        mix: the curated training set's parts (:class:`MixConfig`).
    """

    name: str = "pipeline"
    out_dir: str = "outputs"
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: list(STAGES[1:]))
    only: str | None = None
    baselines: list[str] = field(default_factory=list)
    submit: bool = False
    resources: Any = None
    stage_modules: dict[str, str] = field(default_factory=dict)
    data: Any = MISSING
    encoder: Any = MISSING
    base: BaseStageConfig = field(default_factory=BaseStageConfig)
    embed: Any = None
    dedup: Any = None
    cluster: Any = None
    sample: Any = None
    train: Any = None
    eval: EvalStageConfig = field(default_factory=EvalStageConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    decontaminate: list[str] = field(default_factory=list)
    seed_set: str | None = None
    retrieve: Any = None
    mix: MixConfig = field(default_factory=MixConfig)


def validate(cfg: DictConfig) -> None:
    """Cross-field checks of a pipeline config; raises ``ValueError`` naming the key."""
    for key in ("data", "base.root", "eval.train_root", "eval.test_root"):
        if OmegaConf.is_missing(cfg, key):
            raise ValueError(f"{key}: required by this experiment (e.g. {key}=<folder>)")
    missing = [k for k, v in _container(cfg.data).items() if v == "???"] if isinstance(cfg.data, DictConfig) else []
    if missing:
        raise ValueError(f"data.{missing[0]}: required by data.kind={cfg.data.kind} (data.{missing[0]}=...)")
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown or not cfg.stages:
        raise ValueError(f"stages: {unknown or 'empty'}; choose from {list(STAGES)}")
    if cfg.only is not None and cfg.only not in STAGES:
        raise ValueError(f"only: {cfg.only!r} is not a stage of {list(STAGES)}")
    bad = [b for b in cfg.baselines if b not in BASELINES]
    if bad:
        raise ValueError(f"baselines: {bad}; choose from {list(BASELINES)}")
    oracles = [b for b in cfg.baselines if b in CONTROLS]
    if oracles and isinstance(cfg.data, DictConfig) and not has_labels(cfg.data):
        raise ValueError(labels_needed(oracles))
    if cfg.data.get("selection") is not None:
        raise ValueError("data.selection: the pipeline selects the items itself (sample stage); leave it unset")
    targets = (cfg.sample or {}).get("targets")
    if targets is not None and len(targets) != 1:
        raise ValueError(f"sample.targets: the pipeline trains on one budget, got {list(targets)}")
    validate_arms(cfg)


def is_store(path: str | Path) -> bool:
    """An embedding store (a folder with ``manifest.json``) or a ``.npy`` of rows, not images to embed."""
    path = Path(path).expanduser()
    return path.suffix == ".npy" or (path / "manifest.json").is_file()


def validate_arms(cfg: DictConfig) -> None:
    """Cross-field checks of ``decontaminate``, ``seed_set``, ``retrieve`` and ``mix``; raises
    ``ValueError`` naming the key."""
    import math

    if cfg.data.get("mix") is not None or cfg.data.get("homogeneous_fraction") is not None:
        raise ValueError("data.mix: the pipeline mixes the curated parts itself; set mix.{sample,retrieval,seed_set}")
    for i, entry in enumerate(cfg.get("decontaminate") or []):
        if not entry:
            raise ValueError(f"decontaminate[{i}]: an image folder or an embedding store, got {entry!r}")
    mix = cfg.mix
    for key in ("sample", "retrieval", "seed_set"):
        w = mix[key]
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"mix.{key}: must be a finite weight >= 0, got {w}")
    if mix.sample + mix.retrieval + mix.seed_set <= 0:
        raise ValueError("mix: the weights sum to 0; give the sample (mix.sample=1) or another part a weight")
    h = mix.homogeneous_fraction
    if h is not None and not 0.0 <= h <= 1.0:
        raise ValueError(f"mix.homogeneous_fraction: must be in [0, 1], got {h}")
    for key in ("retrieval", "seed_set"):
        if mix[key] > 0 and cfg.seed_set is None:
            raise ValueError(f"mix.{key}: needs the seed set (seed_set=<image folder or embedding store>)")
    if mix.seed_set > 0 and is_store(cfg.seed_set):
        raise ValueError(
            f"mix.seed_set: seed_set={cfg.seed_set} is an embedding store; training on the seed set needs its "
            "images (an image folder)"
        )
    if mix.retrieval > 0 and (cfg.retrieve is None or OmegaConf.is_missing(cfg.retrieve, "per_query")):
        raise ValueError("retrieve.per_query: required by mix.retrieval (retrieve.per_query=<N>)")


def has_labels(data: DictConfig) -> bool:
    """Whether the items of a ``data`` node come with labels (the embed store then has ``labels.npy``)."""
    if data.get("kind") in ("fashion_mnist", "wordnet"):  # labelled sources
        return True
    return any(bool(data.get(key)) for key in ("labels_from_dirs", "labels_path", "label_field"))


def labels_needed(oracles: list[str]) -> str:
    """The error of a label oracle baseline on a pool without labels."""
    return (
        f"baselines: {', '.join(oracles)} select by the pool's labels, which this pool has none of "
        "(set data.labels_from_dirs=true for an image folder with class sub-folders)"
    )


# ---- the label oracles of the positive control ----------------------------------------------
ORACLE_STREAMS = {"balanced": 11, "no_tail": 13}  # random-number streams next to the random baseline's (7)


def balanced_rows(labels: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """A label-balanced sample: ``budget`` water-filled over the class sizes
    (:func:`curate.sampling.water_fill`, the curation's own allocation), random items inside each class.

    Args:
        labels: ``(n,)`` int labels of the pool's items.
        budget: items to take (all of them when the pool is smaller).
        rng: draws the water-fill's remainder and the items.

    Returns:
        ``(m,)`` int64 increasing positions in ``labels``, ``m = min(budget, n)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    sizes = np.bincount(labels)
    quotas = water_fill(sizes, int(budget), rng)
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]  # grouped by class, random inside each class
    cls = labels[order]
    rank = np.arange(len(order)) - (np.cumsum(sizes) - sizes)[cls]  # position inside its class
    return np.sort(order[rank < quotas[cls]])


def no_tail_rows(labels: np.ndarray, budget: int, tail: list[int], rng: np.random.Generator) -> np.ndarray:
    """``budget`` items uniformly without replacement among those whose label is not in ``tail``.

    Returns:
        ``(m,)`` int64 increasing positions in ``labels``, ``m = min(budget, items outside the tail)``.
    """
    candidates = np.flatnonzero(~np.isin(np.asarray(labels), np.asarray(tail, dtype=np.int64)))
    return np.sort(rng.choice(candidates, size=min(int(budget), len(candidates)), replace=False))


def oracle_rows(
    name: str, labels: np.ndarray, budget: int, tail: list[int] | None, rng: np.random.Generator
) -> np.ndarray:
    """The selection of the label oracle ``name`` (``balanced`` or ``no_tail``) among ``labels``."""
    if name == "balanced":
        return balanced_rows(labels, budget, rng)
    return no_tail_rows(labels, budget, tail or [], rng)


# ---- the stages' declarations and configs ------------------------------------------------------
def stage_modules(overrides: Sequence[str] = ()) -> dict[str, str]:
    """The registry ``stage_modules`` of configs/pipeline.yaml (``{stage: module}``), with the
    command line's ``stage_modules.<stage>=<module>`` overrides applied."""
    modules = {str(k): str(v) for k, v in OmegaConf.load(Path(CONFIG_DIR) / "pipeline.yaml").stage_modules.items()}
    for arg in overrides:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key.startswith("stage_modules."):
            modules[key.split(".", 1)[1]] = value
    return modules


def load_stage(name: str, modules: dict[str, str] | None = None) -> Stage:
    """The declaration (``STAGE``) of the module that ``stage_modules.<name>`` names.

    Raises:
        ValueError: the stage has no module, it cannot be imported or it declares no ``STAGE``.
    """
    modules = stage_modules() if modules is None else modules
    path = modules.get(name)
    if path is None:
        raise ValueError(f"stage_modules.{name}: no module declares the {name} stage (stage_modules.{name}=<module>)")
    try:
        module = importlib.import_module(path)
    except ImportError as err:
        raise ValueError(f"stage_modules.{name}={path} cannot be imported: {err} (stage_modules.{name})") from None
    stage = getattr(module, "STAGE", None)
    if not isinstance(stage, Stage):
        raise ValueError(f"stage_modules.{name}={path} declares no STAGE (a curate.core.protocol.Stage)")
    return stage


def compose_stage(
    config_name: str, overrides: list[str], values: dict[str, Any] | None = None, modules: dict[str, str] | None = None
) -> DictConfig:
    """The stage's primary config (``configs/<config_name>.yaml``) with ``overrides``, composed
    by Hydra (inside a running Hydra app, through its global instance), then ``values`` set by
    dotted key (paths are set, not parsed: a multirun folder such as ``seed=0`` is no override).
    The stage's declaration (``stage_modules``) registers its schemas first."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    stage = load_stage(config_name, modules)

    def composed() -> DictConfig:
        if stage.register is not None:  # here: Hydra's context puts resolvers registered inside it back on exit
            stage.register()
        return compose(config_name=stage.config, overrides=overrides)

    if GlobalHydra.instance().is_initialized():
        cfg = composed()
    else:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = composed()
    for key, value in (values or {}).items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


_REGISTERED: dict[str, DictConfig] = {}


def register_schema(overrides: Sequence[str] = ()) -> DictConfig:
    """Register ``pipeline_schema`` in Hydra's ConfigStore: :class:`PipelineConfig` whose stage nodes
    are the stages' own configs, composed from ``configs/<stage>.yaml`` with their schemas (so the
    pipeline's config is typed throughout: an unknown key or a bad value anywhere fails when it is
    composed, before any stage runs, and ``--cfg job`` shows every stage's settings). The keys of
    :data:`LINKED` follow the pipeline's (``${seed}``, ``${name}``, ``${data}``) unless set.

    Args:
        overrides: the command line (its ``stage_modules.<stage>=<module>`` are used).

    Returns:
        The registered node.
    """
    modules = stage_modules(overrides)
    cache = json.dumps(modules, sort_keys=True)
    if cache not in _REGISTERED:
        node = OmegaConf.structured(PipelineConfig)
        for name in RUNS:
            cfg = compose_stage(name, [], modules=modules)
            OmegaConf.resolve(cfg)  # its own interpolations (${cluster.name}) mean its own keys
            for key, value in LINKED.get(name, {}).items():
                OmegaConf.update(cfg, key, value, merge=False)
            if name == "eval":
                node.eval.eval = cfg.eval
            else:
                node[name] = cfg
        node.retrieve = retrieve_node(modules)
        _REGISTERED[cache] = node
    ConfigStore.instance().store(name="pipeline_schema", node=_REGISTERED[cache])
    return _REGISTERED[cache]


def retrieve_node(modules: dict[str, str]) -> DictConfig:
    """The retrieve stage's config (``configs/retrieve.yaml`` with its schema) as the pipeline's
    ``retrieve`` node: typed, its paths (``input``, ``queries``, ``out``) left for the pipeline."""
    cfg = compose_stage("retrieve", [], modules=modules)
    OmegaConf.resolve(cfg)
    return cfg


def _merge(cfg: DictConfig, settings: Any, where: str) -> DictConfig:
    """``settings`` merged over a stage config (struct: a key the stage does not have is an error)."""
    if settings is None:
        return cfg
    try:
        return OmegaConf.merge(cfg, OmegaConf.create(OmegaConf.to_container(settings, resolve=True)))
    except OmegaConfBaseException as err:
        raise ValueError(f"{where}: {str(err).splitlines()[0]}") from None


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    """Replace a node wholesale (a data node of another source kind has other keys)."""
    OmegaConf.update(cfg, key, value, merge=False, force_add=True)


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


@contextlib.contextmanager
def hydra_output_dir(path: Path) -> Iterator[None]:
    """Stages that read their folder from ``HydraConfig`` (cluster, sample) get ``path``; the
    pipeline's own Hydra state is put back afterwards."""
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    saved = instance.cfg
    instance.cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(path)}}})
    try:
        yield
    finally:
        instance.cfg = saved


# ---- stamps: the pipeline's completion record of a stage ----------------------------------------
def read_stamp(folder: Path) -> dict | None:
    path = folder / STAMP
    return json.loads(path.read_text()) if path.exists() else None


def write_stamp(
    folder: Path, stage: str, key: str, status: str, cfg: DictConfig, settings: dict, inputs: dict, result: Any = None
) -> None:
    """``<folder>/pipeline.json``: a completion record (:func:`curate.core.protocol.completion_record`)
    with the stage, its key (a fingerprint of its settings and inputs, what later stages record as
    their input), its whole resolved config and its result."""
    folder.mkdir(parents=True, exist_ok=True)
    full = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    record = completion_record(status, settings, inputs, stage=stage, key=key, config=full)
    if result is not None:
        record["result"] = result
    atomic_write_json(folder / STAMP, record)


# ---- the pipeline --------------------------------------------------------------------------------
class Pipeline:
    """The stages of one pipeline config under ``root`` (see the module docstring)."""

    def __init__(self, cfg: DictConfig, root: Path) -> None:
        validate(cfg)
        self.cfg = cfg
        self.root = Path(root).expanduser().resolve()
        self.keys: dict[str, str] = {}
        self.report: dict[str, dict] = {}
        self.stages = {name: load_stage(name, self.stage_modules()) for name in RUNS}
        self.check()
        self.check_arms()

    def check(self) -> None:
        """Every stage config this run executes, built and checked by its stage's own rules
        (:attr:`Stage.check`) before any work: a bad value fails now, naming the pipeline's key."""
        configs = {
            "embed": self.embed_config,
            "dedup": self.dedup_config,
            "cluster": self.cluster_config,
            "sample": self.sample_config,
            "train": lambda: self.train_config(self.folder("train"), self.curated_selection()),
            "eval": lambda: self.eval_config(self.folder("eval"), self.folder("train")),
        }
        if self.cfg.base.root is not None:
            configs["base"] = self.base_config
        for name, build in configs.items():
            if not (self.wanted(name) or (name == "base" and self.wanted("embed"))):
                continue
            stage = self.stages["train" if name == "base" else name]
            if stage.check is None:
                continue
            try:
                stage.check(build())
            except ValueError as err:
                raise ValueError(f"{'base.train' if name == 'base' else name}.{err}") from None

    def tracked(self, cfg: DictConfig, key: str = "logger.wandb") -> DictConfig:
        """The pipeline's wandb settings in a stage's logger node; the experiment's name as group
        unless ``logger.wandb.group`` is set."""
        wb = self.cfg.logger.wandb
        node = OmegaConf.select(cfg, key)
        node.mode, node.project, node.group = wb.mode, wb.project, wb.get("group") or self.cfg.name
        node.init_timeout_s = wb.init_timeout_s
        if wb.get("entity") is not None:
            node.entity = wb.entity
        return cfg

    def folder(self, stage: str) -> Path:
        return self.root / stage

    def wanted(self, stage: str) -> bool:
        """In ``stages`` (or ``only``); a baseline's stages count as the stage they repeat, and
        ``base`` runs with ``embed``."""
        kind = stage.split("_")[0]
        if self.cfg.only is not None:
            return kind == self.cfg.only
        return kind in self.cfg.stages or (kind == "base" and "embed" in self.cfg.stages)

    def needed(self, stage: str) -> bool:
        """Whether a stage this run executes comes after ``stage`` (and may read it)."""
        order = STAGES.index(stage.split("_")[0])
        return any(self.wanted(s) for s in STAGES[order + 1 :])

    def available(self, stage: str) -> bool:
        """Run in this pipeline, or finished earlier (with the key it would have now)."""
        if self.wanted(stage):
            return True
        stamp = read_stamp(self.folder(stage))
        return stamp is not None and stamp["status"] == "complete" and stamp["key"] == self.keys.get(stage)

    # -- stage configs (the pipeline's node of the stage with its paths) --
    def node(self, stage: str) -> DictConfig:
        """A typed copy of the pipeline's node of ``stage``, standing alone: interpolations
        (``${seed}``, the user's) resolved against the pipeline's config first."""
        cfg = copy.deepcopy(self.cfg[stage])
        OmegaConf.resolve(cfg)
        cfg._set_parent(None)
        return cfg

    def embed_config(self) -> DictConfig:
        cfg = self.node("embed")
        cfg.out = str(self.folder("embed"))
        _set(cfg, "data", _container(self.cfg.data))
        if self.cfg.base.root is not None:  # the base model's backbone, with the selfsup encoder's defaults
            from curate.embed.config import SelfsupEncoderConfig

            backbone = str(self.folder("base") / "backbone.pt")
            _set(
                cfg, "encoder", OmegaConf.to_container(OmegaConf.structured(SelfsupEncoderConfig(checkpoint=backbone)))
            )
        return self.tracked(cfg)

    def base_config(self) -> DictConfig:
        cfg = self.train_config(self.folder("base"), None)
        _set(cfg, "data", {"kind": "image_folder", "root": str(self.cfg.base.root)})
        return _merge(cfg, self.cfg.base.train, "base.train")

    def dedup_config(self) -> DictConfig:
        cfg = self.node("dedup")
        cfg.input, cfg.out = str(self.folder("embed")), str(self.folder("dedup"))
        if self.cfg.decontaminate:
            cfg.reference = [path for _, path in self.references()]
        return self.tracked(cfg)

    def cluster_config(self) -> DictConfig:
        cfg = self.node("cluster")
        values = {"input.path": str(self.folder("embed")), "input.toy": None, "out_dir": str(self.root)}
        if self.available("dedup"):
            values["input.subset"] = str(self.folder("dedup"))
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, merge=False)
        return self.tracked(cfg)

    def sample_config(self) -> DictConfig:
        cfg = self.node("sample")
        cfg.cluster_dir, cfg.out_dir = str(self.folder("cluster")), str(self.root)
        return self.tracked(cfg)

    def train_config(self, folder: Path, selection: Path | list[dict] | None) -> DictConfig:
        """The trainer's config in ``folder`` on ``selection``: a folder, None (the whole pool) or
        the parts of a mix (``data.mix``, :meth:`curated_selection`)."""
        cfg = self.node("train")
        cfg.out = str(folder)
        if isinstance(selection, list):
            h = self.cfg.mix.homogeneous_fraction
            data = dict(_container(self.cfg.data), selection=None, mix=selection, homogeneous_fraction=h)
        else:
            data = dict(_container(self.cfg.data), selection=None if selection is None else str(selection))
        _set(cfg, "data", data)
        return self.tracked(cfg)

    def eval_config(self, folder: Path, train_dir: Path) -> DictConfig:
        values = {"out": str(folder), "name": self.cfg.name, "backbone": str(train_dir / "backbone.pt")}
        cfg = _merge(compose_stage("eval", [], values, self.stage_modules()), self.eval_options(), "eval.eval")
        for split in ("train", "test"):
            root = self.cfg.eval.get(f"{split}_root")
            if root is not None:
                _set(cfg, f"data.{split}", {"kind": "image_folder", "root": str(root), "labels_from_dirs": True})
        if cfg.eval.tail_classes is None and cfg.eval.pool_labels is None:  # unless set on eval.eval
            tail = self.tail_classes()
            if tail is not None:
                cfg.eval.tail_classes = tail
            elif (self.folder("embed") / "labels.npy").exists():
                cfg.eval.pool_labels = str(self.folder("embed") / "labels.npy")
        return self.tracked(cfg)

    def eval_options(self) -> DictConfig:
        """``{eval: <the pipeline's eval.eval node>}``, resolved against the pipeline's config."""
        return OmegaConf.create({"eval": _container(self.cfg.eval.eval) or {}})

    def stage_modules(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.cfg.get("stage_modules") or {}).items()} or stage_modules()

    def tail_classes(self) -> list[int] | None:
        """The rarest classes of the pool (``eval.num_tail_classes`` of them, absent ones first) as
        class ids of the labelled train folder, matched by class name (a pool missing a class
        numbers its folders differently); None without pool labels or a train folder."""
        from curate.data.sources import ImageFolderSource

        store, root = self.folder("embed"), self.cfg.eval.get("train_root")
        if root is None or not (store / "label_names.json").exists() or not (store / "labels.npy").exists():
            return None
        names = json.loads((store / "label_names.json").read_text())
        counts = np.bincount(np.load(store / "labels.npy", allow_pickle=False), minlength=len(names))
        pool = dict(zip(names, counts.tolist()))
        eval_names = ImageFolderSource(root, labels_from_dirs=True).label_names
        sizes = np.asarray([pool.get(name, 0) for name in eval_names])
        return sorted(int(c) for c in rarest(sizes, self.num_tail_classes(), with_empty=True))

    def num_tail_classes(self) -> int:
        """``eval.num_tail_classes`` of the evaluation (``eval.eval`` over the eval stage's default)."""
        cfg = _merge(compose_stage("eval", [], None, self.stage_modules()), self.eval_options(), "eval.eval")
        return int(cfg.eval.num_tail_classes)

    # -- running --
    def identify(self, stage: str, cfg: DictConfig, upstream: list[str]) -> tuple[dict, dict, str]:
        """``(settings, inputs, key)`` of a stage: its content settings (its config minus the
        run-only keys its schema declares, :func:`curate.core.protocol.content`), the keys of the
        stages it reads, and their fingerprint (recorded in ``self.keys``: what later stages read)."""
        settings = content(cfg)
        inputs = {u: self.keys[u] for u in upstream if u in self.keys}
        self.keys[stage] = key = fingerprint(settings, inputs)
        return settings, inputs, key

    def step(self, stage: str, cfg: DictConfig, upstream: list[str], body: Any) -> Any:
        """Skip, resume or (re)run one stage by :func:`curate.core.protocol.decide` on its stamp;
        returns its result (from the stamp when skipped)."""
        folder = self.folder(stage)
        settings, inputs, key = self.identify(stage, cfg, upstream)
        if not self.wanted(stage):
            if self.available(stage):
                return read_stamp(folder).get("result")
            if not self.needed(stage):
                return None  # left out, and no stage of this run reads it (or a later job runs it)
            raise ValueError(f"stages: {stage} is needed by a later stage but {folder} holds no finished run of it")
        stamp = read_stamp(folder)
        if stamp is None and folder.exists() and any(folder.iterdir()):
            raise ValueError(f"{folder} exists and was not made by curate.pipeline (no {STAMP}); pick another name")
        decision = decide(stamp, settings, inputs)
        if decision.action is Action.skip:
            log_skip(folder, f"{stage} run")
            self.report[stage] = {"dir": str(folder), "ran": False}
            return stamp.get("result")
        if decision.action is Action.recompute:
            if "settings" not in stamp:
                raise ValueError(
                    f"{folder / STAMP} was written by an older curate.pipeline, whose settings cannot be compared; "
                    f"remove {folder} to run the {stage} stage again, or choose another name= ({folder})"
                )
            if not has_record(folder):
                raise ValueError(
                    f"{folder} was made by an older curate.pipeline, which did not record the files its stages "
                    f"wrote; remove {folder} to run the {stage} stage again, or choose another name= ({folder})"
                )
            shown = ", ".join(decision.changed[:4]) + (" ..." if len(decision.changed) > 4 else "")
            removed = remove_recorded(folder)  # what its runs wrote, nothing else: a recompute in place
            log.info(
                "%s: %s changed: removed the %d file(s) it wrote in %s; running it again", stage, shown, removed, folder
            )
        write_stamp(folder, stage, key, "running", cfg, settings, inputs)
        log.info("%s: %s in %s", stage, "resuming" if decision.action is Action.resume else "running", folder)
        t0 = time.perf_counter()
        with recorded_outputs(folder):  # every file the stage writes in its folder is recorded
            result = body(cfg)
        seconds = time.perf_counter() - t0
        write_stamp(folder, stage, key, "complete", cfg, settings, inputs, result)
        self.report[stage] = {"dir": str(folder), "ran": True, "seconds": seconds}
        return result

    def run(self) -> dict[str, Any] | None:
        """Run the pipeline; returns the summary (None when ``only`` runs a single stage).

        Order: [base ->] embed -> dedup; the label oracle baselines (selection, training and
        evaluation each: the positive control comes first); cluster -> sample -> train -> eval; the
        ``random`` and ``full`` baselines."""
        self.root.mkdir(parents=True, exist_ok=True)
        manifest, dedup, reads = self.run_pool()
        self.check_pool(manifest, dedup)
        pool = self.folder("dedup") if dedup is not None else None
        for name in (b for b in self.cfg.baselines if b in CONTROLS):
            self.run_training(f"train_{name}", f"eval_{name}", self.control_selection(name, pool), [f"sample_{name}"])
        self.log_control()
        self.run_curated(reads)
        for name in (b for b in self.cfg.baselines if b not in CONTROLS):
            if name == "random":
                selection, upstream = self.random_selection(pool), ["sample_random"]
            else:
                selection, upstream = pool, reads
            self.run_training(f"train_{name}", f"eval_{name}", selection, upstream)
        if self.cfg.only not in (None, "eval"):
            return None  # a stage job of a submitted chain: the eval job writes the summary
        return self.write_summary(manifest, dedup)

    def check_pool(self, manifest: dict | None, dedup: dict | None) -> None:
        """Once the pool's size ``n`` is known (the embedded items, less the duplicates), before the
        heavy work after it (the label oracles' trainings, the clustering): every level's ``k``
        resolved and checked against its input, the sampling budget against ``n``
        (:func:`check_sizes`); one error naming the key."""
        if manifest is None:  # no finished embedding in this run: nothing is known yet
            return
        n = int(dedup["kept"] if dedup is not None else manifest["count"])
        pool = f"after dedup of {manifest['count']} embedded" if dedup is not None else "embedded"
        cluster = self.cluster_config() if self.wanted("cluster") else None
        wants_budget = self.wanted("sample") or any(b in CONTROLS for b in self.cfg.baselines)
        specs = check_sizes(cluster, self.sample_config() if wants_budget else None, n, pool)
        if specs:
            log.info(
                "cluster: k = %s for the n=%d items (%s)", " / ".join(str(s.k * s.n_splits) for s in specs), n, pool
            )

    def log_control(self) -> None:
        """Log the positive control's gap (balanced minus no_tail on the tail, in points) once both
        are evaluated: what to look at before the curation runs."""
        scores = {name: self.results(f"train_{name}", f"eval_{name}") for name in CONTROLS}
        gaps = []
        for metric in ("knn_tail", "linear_tail"):
            pair = [scores[name].get(metric) for name in CONTROLS]
            if None not in pair:
                gaps.append(f"{metric} {pair[0] - pair[1]:+.1f} ({pair[0]:.1f} vs {pair[1]:.1f})")
        if gaps:
            log.info("positive control, balanced minus no_tail: %s", ", ".join(gaps))

    def run_pool(self) -> tuple[dict | None, dict | None, list[str]]:
        """[base ->] embed -> dedup (when run, or finished earlier); returns the store's and the
        dedup's results and the stages the clustering reads."""
        run_embed, run_dedup = self.stages["embed"].run, self.stages["dedup"].run
        embed_reads = []
        if self.cfg.base.root is not None:
            self.step("base", self.base_config(), [], _train_summary(self.stages["train"].run))
            embed_reads = ["base"]
        manifest = self.step("embed", self.embed_config(), embed_reads, lambda c: _store_summary(run_embed(c)))
        dedup_reads = ["embed", *self.run_references()]
        dedup_cfg = self.dedup_config()
        self.identify("dedup", dedup_cfg, dedup_reads)
        if not self.available("dedup"):
            del self.keys["dedup"]
            return manifest, None, ["embed"]
        dedup = self.step("dedup", dedup_cfg, dedup_reads, lambda c: _dedup_summary(run_dedup(c)))
        return manifest, dedup, ["embed", "dedup"]

    def run_curated(self, reads: list[str]) -> None:
        """cluster -> sample -> train -> eval; the clustering reads the stages ``reads``."""

        def in_folder(fn: Any, stage: str) -> Any:
            def body(c: DictConfig) -> Any:
                with hydra_output_dir(self.folder(stage)):
                    return str(fn(c))

            return body

        self.step("cluster", self.cluster_config(), reads, in_folder(self.stages["cluster"].run, "cluster"))
        self.step("sample", self.sample_config(), ["cluster"], in_folder(self.stages["sample"].run, "sample"))
        self.run_training("train", "eval", self.curated_selection(), ["sample", *self.run_arms()])

    def run_training(
        self, train_stage: str, eval_stage: str, selection: Path | list[dict] | None, upstream: list[str]
    ) -> None:
        """Train on ``selection`` (None: the whole pool; a list: the parts of a mix) in
        ``train_stage``, evaluate in ``eval_stage``."""
        train_dir = self.folder(train_stage)
        self.step(
            train_stage, self.train_config(train_dir, selection), upstream, _train_summary(self.stages["train"].run)
        )
        eval_cfg = self.eval_config(self.folder(eval_stage), train_dir)
        self.step(eval_stage, eval_cfg, [train_stage], _eval_summary(self.stages["eval"].run))

    def write_summary(self, manifest: dict | None, dedup: dict | None) -> dict[str, Any]:
        """``summary.json`` (see the module docstring); returns it."""
        summary: dict[str, Any] = {"name": self.cfg.name, "root": str(self.root), "seed": self.cfg.seed}
        if manifest is not None:
            summary["pool_size"] = manifest["count"]
            summary["kept_after_dedup"] = dedup["kept"] if dedup is not None else manifest["count"]
        if (self.folder("sample") / "indices.npy").exists() and self.available("sample"):
            summary["sample_size"] = int(len(np.load(self.folder("sample") / "indices.npy", allow_pickle=False)))
        summary.update(self.results("train", "eval"))
        summary["baselines"] = {name: self.baseline_results(name) for name in self.cfg.baselines}
        summary.update(stages=self.report, keys=self.keys)
        atomic_write_json(self.root / "summary.json", summary)
        shown = ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in ((k, summary.get(k)) for k in SUMMARY_KEYS)
            if v is not None
        )
        log.info("summary: %s -> %s", shown, self.root / "summary.json")
        return summary

    def results(self, train_stage: str, eval_stage: str) -> dict[str, Any]:
        """The training's sizes and the evaluation's scores (those of the two that finished)."""
        out: dict[str, Any] = {}
        for stage in (train_stage, eval_stage):
            stamp = self.finished(stage)
            if stamp is not None:
                result = dict(stamp["result"])
                if "distinct_items_seen" in result:
                    out.update(train_images=result["distinct_items_seen"], n_train=result["n_train"])
                else:
                    out.update(result)
        return out

    def baseline_results(self, name: str) -> dict[str, Any]:
        """A baseline's :meth:`results`; a label oracle's also its ``selection`` (count, budget,
        class counts, tail classes)."""
        out = self.results(f"train_{name}", f"eval_{name}")
        stamp = self.finished(f"sample_{name}") if name in CONTROLS else None
        if stamp is not None:
            out["selection"] = stamp["result"]
        return out

    def finished(self, stage: str) -> dict | None:
        """The stamp of a stage finished with the key it has in this run, else None."""
        stamp = read_stamp(self.folder(stage))
        if stamp is not None and stamp["status"] == "complete" and stamp["key"] == self.keys.get(stage):
            return stamp
        return None

    def random_selection(self, pool: Path | None) -> Path:
        """``sample_random/ids.txt``: as many ids as the curated sample, uniform without replacement
        from the (deduplicated) pool, drawn with ``seed``."""
        folder = self.folder("sample_random")
        cfg = OmegaConf.create({"seed": self.cfg.seed, "pool": None if pool is None else str(pool)})

        def body(c: DictConfig) -> dict:
            n = int(len(np.load(self.folder("sample") / "indices.npy", allow_pickle=False)))
            if pool is not None:
                ids = read_ids(pool / "kept_ids.txt")
            else:
                from curate.io.store import load_embeddings

                _, store_ids = load_embeddings(self.folder("embed"))
                ids = [str(i) for i in store_ids]
            pick = random_rows(len(ids), n, int(c.seed))  # the one random baseline (its seeded stream)
            write_ids(folder / "ids.txt", (ids[i] for i in pick))
            return {"count": int(len(pick))}

        upstream = ["sample", "dedup" if pool is not None else "embed"]
        self.step("sample_random", cfg, upstream, body)
        return folder

    def control_selection(self, name: str, pool: Path | None) -> Path:
        """``sample_<name>/ids.txt``: a label oracle's selection (:func:`oracle_rows`) from the
        (deduplicated) pool, drawn with ``seed``. Its budget is ``sample.targets[0]`` resolved against
        the pool's size, so it needs neither cluster nor sample; the tail is the store's
        ``eval.num_tail_classes`` rarest classes (the evaluation's rule, in the store's label ids).
        Its result: ``count``, ``budget``, ``class_counts`` (per store label), ``tail_classes`` (no_tail)."""
        folder = self.folder(f"sample_{name}")
        settings = {"seed": self.cfg.seed, "pool": None if pool is None else str(pool)}
        settings["target"] = self.sample_config().targets[0]
        if name == "no_tail":  # the balanced set does not depend on the tail: not in its key
            settings["num_tail_classes"] = self.num_tail_classes()

        def body(c: DictConfig) -> dict:
            ids, labels, names = self.store_labels()
            rows = np.arange(len(labels)) if pool is None else np.load(pool / "kept_indices.npy", allow_pickle=False)
            budget = resolve_target(c.target, len(rows))
            tail = rarest_classes(labels, len(names), int(c.num_tail_classes)) if name == "no_tail" else None
            rng = np.random.default_rng([int(c.seed), ORACLE_STREAMS[name]])
            pick = rows[oracle_rows(name, labels[rows], budget, tail, rng)]
            if len(pick) < budget:
                log.warning("sample_%s: %d items for a budget of %d (the pool holds no more)", name, len(pick), budget)
            write_ids(folder / "ids.txt", (ids[i] for i in pick))
            counts = np.bincount(labels[pick], minlength=len(names)).tolist()
            return {"count": int(len(pick)), "budget": budget, "class_counts": counts, "tail_classes": tail}

        self.step(f"sample_{name}", OmegaConf.create(settings), ["dedup" if pool is not None else "embed"], body)
        return folder

    def store_labels(self) -> tuple[list[str], np.ndarray, list[str]]:
        """The embed store's ids, ``(N,)`` labels and label names.

        Raises:
            ValueError: the store has no labels (naming ``baselines`` and ``data.labels_from_dirs``).
        """
        from curate.io.store import load_embeddings, load_labels

        store = self.folder("embed")
        try:
            labels, names = load_labels(store)
        except FileNotFoundError:
            raise ValueError(labels_needed([b for b in self.cfg.baselines if b in CONTROLS])) from None
        _, ids = load_embeddings(store)
        names = names or [str(c) for c in range(int(labels.max(initial=-1)) + 1)]
        return [str(i) for i in ids], labels, names

    # -- the arms beyond clustering: decontamination, retrieval, the seed set, the mix --
    def references(self) -> list[tuple[str | None, str]]:
        """Per ``decontaminate`` entry, ``(stage, store)``: an image folder is embedded by the stage
        ``embed_reference_<i>`` into its folder; a store is used as it is (stage None)."""
        out: list[tuple[str | None, str]] = []
        for i, entry in enumerate(self.cfg.decontaminate):
            if is_store(entry):
                out.append((None, str(Path(entry).expanduser())))
            else:
                out.append((f"embed_reference_{i}", str(self.folder(f"embed_reference_{i}"))))
        return out

    def other_embed_config(self, stage: str, root: str) -> DictConfig:
        """The embed config of the image folder ``root`` in ``stage``'s folder: the pool's encoder
        (the base model's, when trained) and embed settings, so its rows compare with the pool's."""
        from curate.embed.config import ImageFolderDataConfig

        cfg = self.embed_config()
        cfg.out = str(self.folder(stage))
        data = ImageFolderDataConfig(root=str(Path(root).expanduser()))
        _set(cfg, "data", OmegaConf.to_container(OmegaConf.structured(data)))
        return cfg

    def run_references(self) -> list[str]:
        """Embed the ``decontaminate`` image folders (before dedup); returns their stages."""
        run_embed = self.stages["embed"].run
        reads = ["base"] if self.cfg.base.root is not None else []
        stages = []
        for i, (stage, _) in enumerate(self.references()):
            if stage is not None:
                cfg = self.other_embed_config(stage, self.cfg.decontaminate[i])
                self.step(stage, cfg, reads, lambda c: _store_summary(run_embed(c)))
                stages.append(stage)
        return stages

    def check_arms(self) -> None:
        """The retrieval's config checked by the retrieve stage's own rules before any work (when
        ``mix.retrieval`` is weighted and this run samples); one error naming ``retrieve.<key>``."""
        if not (self.cfg.mix.retrieval > 0 and self.wanted("sample")):
            return
        check = load_stage("retrieve", self.stage_modules()).check
        try:
            if check is not None:
                check(self.retrieve_config())
        except ValueError as err:
            raise ValueError(f"retrieve.{err}") from None

    def curated_selection(self) -> Path | list[dict]:
        """What the curated training reads: the sample folder, or with ``mix.retrieval`` /
        ``mix.seed_set`` weighted the parts of its ``data.mix`` (weight 0 parts left out)."""
        mix = self.cfg.mix
        if not (mix.retrieval > 0 or mix.seed_set > 0):
            return self.folder("sample")
        parts: list[dict] = []
        if mix.sample > 0:
            parts.append({"selection": str(self.folder("sample")), "weight": float(mix.sample)})
        if mix.retrieval > 0:
            parts.append({"selection": str(self.folder("sample_retrieval")), "weight": float(mix.retrieval)})
        if mix.seed_set > 0:
            seed = {"kind": "image_folder", "root": str(Path(self.cfg.seed_set).expanduser())}
            parts.append({"data": seed, "weight": float(mix.seed_set)})
        return parts

    def run_arms(self) -> list[str]:
        """The mix's parts beyond the sample, before the curated training: the seed set embedded
        (an image folder) and the retrieval; returns the stages the training reads besides the sample."""
        if not self.cfg.mix.retrieval > 0:
            return []
        reads = []
        if not is_store(self.cfg.seed_set):
            cfg = self.other_embed_config("embed_seed_set", self.cfg.seed_set)
            base = ["base"] if self.cfg.base.root is not None else []
            run_embed = self.stages["embed"].run
            self.step("embed_seed_set", cfg, base, lambda c: _store_summary(run_embed(c)))
            reads.append("embed_seed_set")
        self.retrieval_selection(reads)
        return ["sample_retrieval"]

    def retrieve_config(self) -> DictConfig:
        """The retrieve stage's config: the pipeline's ``retrieve`` node over ``configs/retrieve.yaml``,
        the pool store searched for the seed set's rows, into ``sample_retrieval/retrieve/``."""
        cfg = _merge(compose_stage("retrieve", [], None, self.stage_modules()), self.cfg.retrieve, "retrieve")
        seed = self.cfg.seed_set
        cfg.input = str(self.folder("embed"))
        cfg.queries = str(Path(seed).expanduser()) if is_store(seed) else str(self.folder("embed_seed_set"))
        cfg.out = str(self.folder("sample_retrieval") / "retrieve")
        return cfg

    def retrieval_selection(self, reads: list[str]) -> Path:
        """``sample_retrieval/ids.txt``: the pool items nearest the seed set (``curate.retrieve``
        in ``sample_retrieval/retrieve/``), less those the dedup removed (near-duplicates and
        copies of the ``decontaminate`` sets), in the retrieval's order. Its result: ``retrieved``
        (distinct items retrieved) and ``count`` (kept)."""
        folder = self.folder("sample_retrieval")
        run = load_stage("retrieve", self.stage_modules()).run
        dedup = self.folder("dedup") if "dedup" in self.keys else None  # run (or finished) in this pipeline

        def body(c: DictConfig) -> dict:
            result = run(c)
            ids = read_ids(Path(c.out) / "ids.txt")
            if dedup is not None:
                kept = set(read_ids(dedup / "kept_ids.txt"))
                ids = [i for i in ids if i in kept]
            if not ids:
                raise ValueError(f"mix.retrieval: the dedup removed every retrieved item ({folder})")
            write_ids(folder / "ids.txt", ids)
            return {"retrieved": int(result["selected"]), "count": len(ids)}

        upstream = ["embed", *reads, *(["dedup"] if dedup is not None else [])]
        self.step("sample_retrieval", self.retrieve_config(), upstream, body)
        return folder


def check_sizes(cluster: DictConfig | None, sample: DictConfig | None, n: int, pool: str) -> list[LevelSpec]:
    """The pool-size checks of a run whose clustering gets ``n`` items.

    Args:
        cluster: the cluster stage's config (None: not checked).
        sample: the sample stage's config; its ``targets[0]`` (None: not checked).
        n: the items the clustering gets.
        pool: how messages describe them (``after dedup of 1276 embedded``).

    Returns:
        The levels resolved for ``n`` (every ``k`` an int; :func:`curate.hierarchy.levels.resolve_levels`),
        empty without ``cluster``.

    Raises:
        ValueError: one line naming the key (``cluster.cluster.levels[0] (level 1): k=1500 exceeds ...``,
            ``cluster.cluster.init_max_points``, ``sample.targets[0]``) and what scales instead.
    """
    specs: list[LevelSpec] = []
    if cluster is not None:
        try:
            specs = resolve_levels(level_specs(cluster), n)
        except ValueError as err:
            raise ValueError(
                f"cluster.cluster.{err} ({pool}); a k relative to the level's input scales with the pool: "
                "a fraction (k: 0.1) or k: auto"
            ) from None
        init_max = cluster.cluster.get("init_max_points")
        biggest = max(spec.k for spec in specs)
        if init_max is not None and init_max < biggest:
            raise ValueError(
                f"cluster.cluster.init_max_points={init_max} is below k={biggest}, the largest k of the levels "
                f"for the n={n} items ({pool})"
            )
    if sample is not None:
        target = sample.targets[0]
        budget = resolve_target(target, n)
        most = n * int(sample.get("multiplier", 1))
        if not 1 <= budget <= most:
            raise ValueError(
                f"sample.targets[0]={target} asks for {budget} of the n={n} items ({pool}; at most {most}); "
                "a fraction of the pool (sample.targets=[0.3]) scales with it"
            )
    return specs


def _store_summary(manifest: dict) -> dict:
    return {"count": int(manifest["count"]), "dim": int(manifest["dim"])}


def _dedup_summary(summary: dict) -> dict:
    return {"count": int(summary["count"]), "kept": int(summary["kept"])}


def _train_summary(train: Any) -> Any:
    def body(cfg: DictConfig) -> dict:
        out = train(cfg)
        return {k: out[k] for k in ("iterations", "start_iteration", "n_train", "distinct_items_seen")}

    return body


def _eval_summary(evaluate: Any) -> Any:
    def body(cfg: DictConfig) -> dict:
        report = evaluate(cfg)
        out = {f"{m}_top1": 100.0 * report[m]["top1"] for m in ("knn", "linear")}
        for m in ("knn", "linear"):
            tail = report[m]["tail_mean"]
            out[f"{m}_tail"] = None if tail is None else 100.0 * tail
        return {**out, "n_eval_train": report["n_train"], "n_test": report["n_test"]}

    return body


def chain(cfg: DictConfig) -> list[str]:
    """The stage jobs of a submitted pipeline, in order (each runs with ``only=<stage>``)."""
    validate(cfg)
    return [s for s in STAGES if s in cfg.stages or (s == "base" and cfg.base.root is not None)]


def run_pipeline(cfg: DictConfig, root: str | Path | None = None) -> dict[str, Any] | None:
    """Run (or resume) the pipeline of ``cfg`` under ``root`` (default ``<out_dir>/<name>``);
    returns the summary (None for a stage job, ``only``)."""
    root = Path(root) if root is not None else Path(cfg.out_dir) / cfg.name
    return Pipeline(cfg, root).run()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pipeline")
def _app(cfg: DictConfig) -> None:
    from curate.core.dist import setup_logging
    from curate.stage import output_dir, run_stage

    setup_logging()
    root = output_dir()
    if cfg.submit:
        from hydra.core.hydra_config import HydraConfig

        from curate.submit import submit_pipeline

        hc = HydraConfig.get()
        launcher = OmegaConf.to_container(hc.launcher, resolve=True)
        run_stage(lambda c: submit_pipeline(c, root, list(hc.overrides.task), launcher, chain(c)), cfg)
        return
    run_stage(lambda c: run_pipeline(c, root), cfg)


def main() -> None:
    """Hydra entry point: ``python -m curate.pipeline [overrides]``. The pipeline's schema (every
    stage's typed config, :func:`register_schema`) is registered first, so Hydra checks the whole
    command line against it before any stage runs."""
    register_schema(sys.argv[1:])
    _app()


if __name__ == "__main__":
    from curate.core.entry import hydra_entry

    hydra_entry(main, single_components=("name",))
