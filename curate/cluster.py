"""Cluster stage: embeddings -> hierarchy of clusters.

    python -m curate.cluster                                   # the bundled 2-D toy
    python -m curate.cluster cluster=web_4level input.path=/data/emb_store name=web
    python -m curate.cluster ... input.path=/data/emb_store input.subset=/data/dedup   # kept rows only
    torchrun --nproc_per_node 8 -m curate.cluster input.path=... device=cuda
    python -m curate.cluster -m launcher=submitit_slurm seed=0,1,2        # a sweep on SLURM

Writes ``<out_dir>/cluster/<name>/``: ``level<t>/{centroids,assign,dist,offsets,members}.npy``,
``metrics.jsonl`` (per-level stats), ``kmeans.jsonl`` (every Lloyd iteration of every k-means run
of this attempt: level, run, objective, shift, seconds), ``metrics.json`` (balance summary),
``items.npy`` (with ``input.subset``: the input rows of the clustered items), ``labels.parquet``
(``id``, ``level_1..level_L``: each item's cluster at every level, :mod:`curate.io.tables`) and ``manifest.json``
(last). A re-run resumes from ``checkpoints/`` (levels, resampling steps, k-means iterations); a
finished run with the same settings and input is skipped (:func:`curate.core.protocol.decide`; the
input's content hash, computed while the fit streams it and recorded in the manifest, is checked
with one read of the input; then the files its manifest vouches for: a missing or changed one is
rebuilt). Checkpoints or a clustering of another input
or other settings are refused; ``overwrite=true`` replaces them (only what this stage wrote).
The run holds ``<out>/.lock``. ``stop_after_level=t`` builds levels 1..t into
``checkpoints/`` and exits (``curate.submit`` sends one such job per level).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from curate import CONFIG_DIR
from curate.analysis.metrics import kl_to_uniform
from curate.conf import ClusterStageConfig, input_toy, level_specs, register_configs, validate_cluster
from curate.core import dist
from curate.core.atomic import atomic_save_npy, atomic_write_json
from curate.core.entry import hydra_entry
from curate.core.errors import IdentityError, InputError, check_device
from curate.core.protocol import Action, Stage, decide, log_skip
from curate.core.tracking import stage_tracker
from curate.data.datasets.toy import write_toy
from curate.hierarchy import HierarchicalKMeans
from curate.io.identity import HashedRows, check_identity, content_digest, verify_files, vouch
from curate.io.shards import rank_rows, shard_range
from curate.io.tables import LABELS_FILE, OUTPUT_FILES, write_labels
from curate.kmeans import RowSource
from curate.stage import guarded_output, open_input, output_dir, read_json, run_stage, stage_name

log = logging.getLogger(__name__)
register_configs()


def toy_input(name: str, out_dir: str | Path) -> Path:
    """Write the bundled toy (rank 0, once) and return the path of its ``x.npy``.

    The toy is there when its ``manifest.json`` (written last) names it: a run killed after
    ``x.npy`` but before ``labels.npy`` and the manifest writes it again, rather than clustering
    a toy without its labels."""
    folder = Path(out_dir) / "data" / name
    manifest = folder / "manifest.json"
    if dist.is_main_process() and not (manifest.exists() and read_json(manifest).get("toy") == name):
        write_toy(name, folder)
    dist.barrier()
    return folder / "x.npy"


def build_model(cfg: DictConfig, checkpoint_dir: Path | None) -> HierarchicalKMeans:
    return HierarchicalKMeans(
        levels=level_specs(cfg),
        n_iter=cfg.cluster.n_iter,
        seed=cfg.seed,
        device=cfg.device,
        distance=str(cfg.cluster.distance),  # the engine takes the choices as plain strings
        init=str(cfg.cluster.init),
        resample_strategy=str(cfg.cluster.resample_strategy),
        memory_budget_mb=cfg.memory_budget_mb,
        init_max_points=cfg.cluster.init_max_points,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=cfg.checkpoint_every,
        shard_min_rows=cfg.shard_min_rows,
        split_memory_mb=cfg.split_memory_mb,
        init_cache_mb=cfg.init_cache_mb,
        allow_tf32=cfg.allow_tf32,
    )


def balance_metrics(model: HierarchicalKMeans) -> dict:
    """Summary of a fitted hierarchy for sweeps: ks, sizes, inertia, and on 2-D data the
    KL-to-uniform of the top-level centroids (``kl_top``, lower = more uniform)."""
    top = model.levels_[-1]
    sizes = top.sizes.astype(np.float64)
    out = {
        "n_items": model.n_items_,
        "k": [level.k for level in model.levels_],
        "inertia": [level.stats["inertia"][-1] for level in model.levels_],
        "seconds": float(sum(level.stats.get("seconds", 0.0) for level in model.levels_)),
        "top_size_cv": float(sizes.std() / sizes.mean()),
    }
    if model.dim_ == 2:
        out["kl_top"] = kl_to_uniform(top.centroids)
    return out


# what this stage writes into its output folder (and may therefore replace with overwrite=true)
OWN_OUTPUTS = ("manifest.json", "metrics.json", "metrics.jsonl", "kmeans.jsonl", "items.npy", "checkpoints")
OWN_OUTPUTS += OUTPUT_FILES["cluster"]
FRESH = "set overwrite=true to replace it, or pick another name="


def cluster(cfg: DictConfig, out: str | Path | None = None) -> Path:
    """Run the stage: fit the hierarchy and save it in ``out``, resume it, or reuse the finished one
    (same settings and input), refusing another. The one curation driver: the command, the pipeline
    and the research comparisons (``research.compare``) all fit through it.

    Args:
        cfg: the stage config (``configs/cluster.yaml`` with :class:`ClusterStageConfig`).
        out: the output folder; None: the one Hydra assigned to this run.

    Returns:
        The output folder.
    """
    validate_cluster(cfg)
    stage_name(cfg)
    check_device(cfg.device)
    dist.init_distributed(device=cfg.device)
    dist.setup_logging()
    out = output_dir() if out is None else Path(out)
    path = cfg.input.path if cfg.input.path is not None else toy_input(input_toy(cfg), cfg.out_dir)
    with guarded_output(out, {"input.path": path, "input.subset": cfg.input.subset}, "out_dir/cluster/name"):
        return _cluster(cfg, out, path)


def _cluster(cfg: DictConfig, out: Path, path: str | Path) -> Path:
    array, ids, _, source = open_input(path, cfg.input.subset, cfg.input.column, cfg.input.id_column)
    model = build_model(cfg, out / "checkpoints")
    config = json.loads(json.dumps(model.config()))
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not cfg.overwrite:
        done = read_json(manifest_path)
        _check_reuse(done, config, source, array, out)
        problems = verify_files(out, done.get("files"))
        if not problems:
            log_skip(out, "clustering")
            return out
        log.warning("%s: %s; building the clustering again", out, "; ".join(problems))
    if dist.is_main_process():
        _start(out, source, cfg.overwrite)
    dist.barrier()
    shard = _local_rows(array)  # hashed while the fit streams it
    fit_input = RowSource(shard, name=str(path))  # error messages name the input file
    stop = cfg.stop_after_level
    # the log describes the levels built so far, so a resumed or later level job rewrites it
    with stage_tracker(cfg, out, "cluster", fresh=True) as tracker:
        # every Lloyd iteration of every k-means run -> <out>/kmeans.jsonl (and wandb kmeans/*)
        model.on_iteration = lambda record: tracker.log_series("kmeans", record)
        if stop is not None and stop < len(model.specs):
            model.fit(fit_input, stop_after_level=stop)
            _check_finite_objective(model, source)
            for t, level in enumerate(model.levels_, start=1):
                tracker.log({"level": t, **level.stats}, step=t)
            log.info("levels 1..%d built in %s; a run without stop_after_level continues from them", stop, out)
            return out
        model.fit(fit_input)
        _check_finite_objective(model, source)
        source = {**source, "content": content_digest(shard, int(array.shape[0]))}  # what a reuse checks
        for t, level in enumerate(model.levels_, start=1):
            tracker.log({"level": t, **level.stats}, step=t)
        summary = balance_metrics(model)
        tracker.summary(summary)
        if dist.is_main_process():
            atomic_write_json(out / "metrics.json", summary)
    own = ["metrics.json", LABELS_FILE]
    rows = array.rows if cfg.input.subset is not None else None
    if dist.is_main_process():  # each item's cluster at every level, for joins on ids
        write_labels(out / LABELS_FILE, [level.assign for level in model.levels_], ids, rows)
    if dist.is_main_process() and cfg.input.subset is not None:
        atomic_save_npy(out / "items.npy", rows)  # the input rows of the items, for the sample stage
        own.append("items.npy")
    files = vouch(out, own) if dist.is_main_process() else {}
    model.save(out, extra={"input": source, "stage_config": OmegaConf.to_container(cfg, resolve=True), "files": files})
    if dist.is_main_process():
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        sizes = ", ".join(f"level {t}: {level.k}" for t, level in enumerate(model.levels_, start=1))
        log.info("clusters written to %s (%s)", out, sizes)
    return out


def _local_rows(array: Any) -> HashedRows:
    """This rank's contiguous rows of ``array``, hashing their content as they are read."""
    start, _ = shard_range(int(array.shape[0]), dist.get_rank(), dist.get_world_size())
    return HashedRows(rank_rows(array, dist.get_rank(), dist.get_world_size()), start)


def _check_reuse(done: dict, config: dict, source: dict, array: Any, out: Path) -> None:
    """A finished clustering in ``out`` is reused only for the same settings and the same input
    (:func:`curate.core.protocol.decide`): the cheap identity (path, size, mtime, a few rows,
    the subset) refuses a changed input at once; when it agrees, the content hash of every row
    (one read of the input, :func:`curate.io.identity.content_digest`) must be the recorded one.

    Raises:
        ValueError / IdentityError: other settings or another input, naming what changed and ``FRESH``.
    """
    recorded = done.get("input") if isinstance(done.get("input"), dict) else {}
    cheap = {key: value for key, value in recorded.items() if key != "content"}
    decision = decide({"status": done.get("status"), "settings": done.get("config"), "inputs": cheap}, config, source)
    what = f"the clustering in {out}"
    if decision.action is Action.recompute and "inputs" in decision.changed:
        _check_same_input(recorded, source, what)  # says how the input changed
    try:
        decision.refuse(what, FRESH)
    except ValueError as err:  # an identity of this run: refused as before (IdentityError)
        raise IdentityError(str(err)) from None
    if recorded.get("content") != content_digest(_local_rows(array), int(array.shape[0])):
        raise IdentityError(
            f"{what} was made from {source['path']}, whose rows changed since (same size and modification time, "
            f"another content hash{'' if 'content' in recorded else ': none recorded, an older version'}); {FRESH}"
        )


def _check_same_input(recorded: dict | None, source: dict, what: str) -> None:
    """The input (and subset) a run was made from must be the one given now."""
    recorded = recorded if isinstance(recorded, dict) else {}
    check_identity(recorded.get("identity"), source["identity"], what, FRESH)
    if recorded.get("subset") != source.get("subset"):
        raise IdentityError(
            f"{what} was made from input.subset={recorded.get('subset')}, not {source.get('subset')}; {FRESH}"
        )
    if "subset_identity" in source:
        check_identity(recorded.get("subset_identity"), source["subset_identity"], f"{what} (input.subset)", FRESH)


def _start(out: Path, source: dict, overwrite: bool) -> None:
    """Before fitting (rank 0): a finished manifest no longer holds; checkpoints of another input
    are refused (or, with ``overwrite``, removed with everything else this stage wrote)."""
    if overwrite:
        for name in OWN_OUTPUTS:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        for level in out.glob("level[0-9]*"):
            if level.is_dir():
                shutil.rmtree(level)
    (out / "manifest.json").unlink(missing_ok=True)  # only reached when it must be rebuilt
    record = out / "checkpoints" / "input.json"
    if record.exists():
        _check_same_input(read_json(record), source, f"the checkpoints in {out / 'checkpoints'}")
    else:
        atomic_write_json(record, source)


def _check_finite_objective(model: HierarchicalKMeans, source: dict) -> None:
    """Refuse a hierarchy whose k-means objective overflowed (rows of huge magnitude square past
    float32): its assignments are meaningless and its numbers are not JSON."""
    for t, level in enumerate(model.levels_, start=1):
        inertia = level.stats.get("inertia") or [0.0]
        if not np.isfinite(np.asarray(inertia, dtype=np.float64)).all():
            raise InputError(
                f"level {t}: the k-means objective overflowed (squared distances beyond float32): the rows "
                f"are too large in magnitude; rescale them (for example L2-normalise) ({source['path']})"
            )


#: the cluster stage's declaration (curate.core.protocol); it writes into Hydra's run folder
STAGE = Stage(
    name="cluster",
    config="cluster",
    schema=ClusterStageConfig,
    run=cluster,
    inputs=("input.path", "input.subset"),
    outputs=("level*", "items.npy", "checkpoints"),
    record="manifest.json",
    check=validate_cluster,
    register=register_configs,
)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="cluster")
def main(cfg: DictConfig) -> None:
    run_stage(cluster, cfg)


if __name__ == "__main__":
    hydra_entry(main, single_components=("name",))
