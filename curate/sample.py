"""Sample stage: hierarchy -> curated item indices for one or several budgets.

    python -m curate.sample                                    # the bundled 2-D toy, 1000 points
    python -m curate.sample name=web targets=[100000000,0.5] strategy=random

Writes ``<out_dir>/sample/<name>/`` (one budget) or one sub-folder per budget, named after what
was asked (``target_1000/``, ``target_0.5/``; the realised size is ``returned`` in its stats):
``indices.npy`` (int64, sorted), ``selected.parquet`` (``id``, ``index``: :mod:`curate.io.tables`),
``ids.txt`` when the embeddings have ids, with ``export=webdataset`` the selected items' original
files as ``shard-00000.tar``, ... (``export_shard_size`` items each, :mod:`curate.export`), ``stats.json``
(requested / returned sizes and per-level balance: clusters touched, quota histogram, entropy),
``metrics.json`` (the balance numbers sweeps compare, see :func:`balance_metrics`), and for 2-D
inputs ``sample.png`` (curated vs uniform random sample of the same size). One line per budget
goes to ``metrics.jsonl`` (and wandb when ``logger.wandb.mode`` is not ``disabled``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from curate import CONFIG_DIR
from curate.analysis.balance import label_balance
from curate.analysis.metrics import kl_to_uniform, share_of_rarest
from curate.analysis.plots import plot_pool_vs_samples
from curate.conf import SampleStageConfig, register_configs, validate_sample
from curate.core import dist
from curate.core.atomic import atomic_save_npy, atomic_write_json
from curate.core.entry import hydra_entry
from curate.core.guard import recorded_outputs
from curate.core.protocol import Stage
from curate.core.tracking import stage_tracker
from curate.export import export_selection, exporter_for
from curate.hierarchy import HierarchicalKMeans
from curate.io.identity import file_sha256
from curate.io.idlist import write_ids
from curate.io.tables import SELECTED_FILE, write_selected
from curate.sampling import SampleResult, flat_sample, random_rows, resolve_target, sample_budgets, sample_stats
from curate.stage import guarded_output, open_clustered_input, output_dir, run_stage, stage_name

log = logging.getLogger(__name__)
register_configs()


def with_random_baseline(n_items: int, results: dict[Any, SampleResult], seed: int) -> dict[Any, dict]:
    """Pair every curated sample with a uniform random sample of the same size (the baseline,
    :func:`curate.sampling.random_rows`; an oversampled target gets all ``n_items`` rows).

    Returns:
        ``{target: {"result": SampleResult, "random": (m,) int64 sorted indices}}``.
    """
    return {
        target: {"result": res, "random": random_rows(n_items, len(res.indices), seed)}
        for target, res in results.items()
    }


def balance_metrics(
    levels: list[dict[str, Any]], x: Any, labels: np.ndarray | None, indices: np.ndarray, n_rarest: int = 1
) -> dict[str, Any]:
    """The numbers a sweep compares for one sample.

    Args:
        levels: balance of the sample over the clusters of every level of the hierarchy, finest
            first (:func:`curate.sampling.sample_stats`), whatever the sampling method.
        x: ``(N, d)`` pool embeddings (read only when ``d == 2``).
        labels: ``(N,)`` int labels of the pool, or None.
        indices: ``(m,)`` sampled item indices.
        n_rarest: how many of the pool's rarest labels ``rarest_share`` pools.

    Returns:
        ``returned``, ``normalized_entropy_finest`` / ``normalized_entropy_top`` (entropy of the
        sample over the level-1 / top-level clusters over its maximum), and when available
        ``kl_sample`` (2-D: KL-to-uniform of the sampled points), ``rarest_share`` and
        ``rarest_pool_share`` (share of the ``n_rarest`` rarest labels in the sample and the pool).
    """
    out: dict[str, Any] = {"returned": int(len(indices))}
    if levels:
        out["normalized_entropy_finest"] = levels[0]["normalized_entropy"]
        out["normalized_entropy_top"] = levels[-1]["normalized_entropy"]
    if x.shape[1] == 2 and len(indices):
        out["kl_sample"] = kl_to_uniform(np.asarray(x[np.unique(indices)]))
    if labels is not None and len(indices):
        out["rarest_share"] = share_of_rarest(labels[indices], labels, n_rarest)
        out["rarest_pool_share"] = share_of_rarest(labels, labels, n_rarest)
    return out


def sample(cfg: DictConfig) -> Path:
    """Run the stage; returns the output folder."""
    validate_sample(cfg)
    stage_name(cfg)
    dist.setup_logging()
    out = output_dir()
    cluster_dir = Path(cfg.cluster_dir)
    # the folder holds the outputs of this run only: the budgets of an earlier one are removed
    with guarded_output(out, {"cluster_dir": cluster_dir}, "out_dir/sample/name"), recorded_outputs(out):
        return _sample(cfg, out, cluster_dir)


def budget_folder(target: int | float) -> str:
    """The sub-folder of one budget, named after what was asked (``target_1000``, ``target_0.5``):
    two budgets that give the same size still get two folders."""
    return f"target_{target}"


def _sample(cfg: DictConfig, out: Path, cluster_dir: Path) -> Path:
    array, ids, labels, rows = open_clustered_input(cluster_dir)  # checks the clustering and its input
    hkm = HierarchicalKMeans.load(cluster_dir)
    exporter = exporter_for(cfg.export, cluster_dir)  # before the draw: an input that cannot be exported fails first
    clustering = {"path": str(cluster_dir.resolve()), "manifest_sha256": file_sha256(cluster_dir / "manifest.json")}
    targets = list(cfg.targets)
    for target in targets:  # every budget against the pool before any is drawn
        try:
            resolve_target(target, hkm.n_items_)
        except ValueError as err:
            raise ValueError(f"targets={target}: {err} (targets)") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cfg.method == "flat":
            results = {
                t: flat_sample(hkm.levels_[0], t, strategy=cfg.strategy, multiplier=cfg.multiplier, seed=cfg.seed)
                for t in targets
            }
        else:
            results = sample_budgets(hkm.levels_, targets, cfg.strategy, cfg.multiplier, cfg.seed)
    for w in caught:
        log.warning("%s", w.message)
    drawn = with_random_baseline(hkm.n_items_, results, cfg.seed)
    summary = []
    tracker = stage_tracker(cfg, out, "sample", fresh=True)
    for step, (target, entry) in enumerate(drawn.items()):
        res: SampleResult = entry["result"]
        folder = out if len(targets) == 1 else out / budget_folder(target)
        # rows of the input store, also when the clustering saw a subset of it
        index = res.indices if rows is None else rows[res.indices]
        atomic_save_npy(folder / "indices.npy", index)
        write_selected(folder / SELECTED_FILE, index, ids, res.indices)
        if ids is not None:
            write_ids(folder / "ids.txt", (ids[i] for i in res.indices))
        stats = {
            **res.stats,
            "target": target,
            "method": cfg.method,
            "cluster_dir": str(cluster_dir),
            "clustering": clustering,
        }
        if labels is not None:
            stats["labels"] = {
                "curated": label_balance(labels, res.indices),
                "random": label_balance(labels, entry["random"]),
            }
        if (export := export_selection(exporter, index, folder, cfg.export_shard_size)) is not None:
            stats["export"] = export
        atomic_write_json(folder / "stats.json", stats)
        balance = sample_stats(hkm.levels_, res.indices)["levels"]
        metrics = {"target": target, "method": cfg.method, "strategy": cfg.strategy}
        metrics.update(balance_metrics(balance, array, labels, res.indices))
        atomic_write_json(folder / "metrics.json", metrics)
        tracker.log(metrics, step=step)
        if cfg.plot and array.shape[1] == 2:
            plot_pool_vs_samples(np.asarray(array[:]), res.indices, entry["random"], folder / "sample.png", dpi=110)
        summary.append({"target": target, "folder": str(folder), "returned": len(res.indices)})
        log.info("budget %s: %d items -> %s (shortfall %d)", target, len(res.indices), folder, res.stats["shortfall"])
    tracker.close()
    if len(targets) > 1:
        atomic_write_json(out / "summary.json", summary)
    return out


#: the sample stage's declaration (curate.core.protocol); it writes into Hydra's run folder
STAGE = Stage(
    name="sample",
    config="sample",
    schema=SampleStageConfig,
    run=sample,
    inputs=("cluster_dir",),
    outputs=("indices.npy", "ids.txt"),
    record="stats.json",
    check=validate_sample,
    register=register_configs,
)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    run_stage(sample, cfg)


if __name__ == "__main__":
    hydra_entry(main, single_components=("name",))
