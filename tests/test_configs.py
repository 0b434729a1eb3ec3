"""Every config under configs/ composes and passes its stage's checks: each primary config, each
option of each config group with the primaries that use the group, and each experiment.

New YAML files are picked up by globbing, so a config that stops composing fails here, before a
job is queued (the lightning-hydra-template way)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CONFIGS, compose_config

ROOT = Path(CONFIGS)
PRIMARIES = sorted(p.stem for p in ROOT.glob("*.yaml"))
# the keys a primary leaves ??? (the user must give them)
REQUIRED = {
    "dedup": ["input=x.npy", "out=y"],
    "embed": ["out=y"],
    "retrieve": ["input=x", "queries=q", "per_query=5", "out=y"],
}
# options that need a value to pass their stage's checks
NEEDS = {
    ("encoder", "timm"): ["encoder.random_init=true"],
    ("data", "image_folder"): ["data.root=x"],  # the pipeline checks that a source's ??? keys are given
    ("data", "image_list"): ["data.path=x"],
    ("data", "jsonl"): ["data.path=x"],
    ("data", "text_lines"): ["data.path=x"],
    ("data", "npy"): ["data.path=x"],
    ("data", "webdataset"): ["data.path=x"],
    ("data", "parquet"): ["data.path=x", "data.image_column=jpg"],
    ("model", "resnet_cpu"): ["ibot.loss_weight=0"],  # a model group option cannot set ibot.* (its header says so)
}
# which primary each experiment overrides (an experiment missing here fails test_every_experiment_is_listed)
EXPERIMENTS = {
    "ablation_toy": "cluster",
    "ablation_toy_sample": "sample",
    "web_4level": "cluster",
    "curation_ssl": "pipeline",
    "curation_ssl_quick": "pipeline",
    "curation_ssl_gpu": "pipeline",
    "curation_ssl_resnet": "pipeline",
}
# sources the trainer refuses (text): selfsup.train takes the data group's image sources only
TEXT_SOURCES = ("jsonl", "text_lines", "wordnet")


def _validator(primary: str) -> Callable[[Any], Any]:
    if primary in ("cluster", "sample"):
        from curate.conf import validate_cluster, validate_sample

        return validate_cluster if primary == "cluster" else validate_sample
    if primary == "dedup":
        from curate.dedup import validate

        return validate
    if primary == "embed":
        from curate.embed.config import validate

        return validate
    if primary == "retrieve":
        from curate.retrieve import validate

        return validate
    if primary == "pipeline":
        from curate.pipeline import validate

        return validate
    from selfsup.config import to_eval_config, to_train_config

    return {"train": to_train_config, "eval": to_eval_config}[primary]


def _groups(primary: str) -> list[str]:
    """The config groups ``configs/<primary>.yaml`` selects in its defaults list."""
    defaults = yaml.safe_load((ROOT / f"{primary}.yaml").read_text()).get("defaults", [])
    return [next(iter(d)) for d in defaults if isinstance(d, dict) and (ROOT / next(iter(d))).is_dir()]


GROUP_CASES = [
    (primary, group, option.stem)
    for primary in PRIMARIES
    for group in _groups(primary)
    for option in sorted((ROOT / group).glob("*.yaml"))
]


def test_primaries_and_groups_are_found():
    assert {"cluster", "sample", "dedup", "embed", "train", "eval"} <= set(PRIMARIES)
    assert {"cluster", "launcher", "data", "encoder", "model"} <= {group for _, group, _ in GROUP_CASES}


@pytest.mark.parametrize("primary", PRIMARIES)
def test_primary_config_composes_and_validates(primary):
    cfg = compose_config(primary, REQUIRED.get(primary, []), hydra=True)
    assert cfg.hydra.run.dir  # every stage names its run folder
    cfg = compose_config(primary, REQUIRED.get(primary, []))
    _validator(primary)(cfg)


@pytest.mark.parametrize("primary, group, option", GROUP_CASES, ids=[f"{p}-{g}={o}" for p, g, o in GROUP_CASES])
def test_group_option_composes_and_validates(primary, group, option):
    overrides = [*REQUIRED.get(primary, []), f"{group}={option}", *NEEDS.get((group, option), [])]
    if (primary, group) == ("train", "data") and option in TEXT_SOURCES:
        with pytest.raises(ValueError, match="image source"):
            _validator(primary)(compose_config(primary, overrides))
        return
    _validator(primary)(compose_config(primary, overrides))
    if group == "launcher":
        assert compose_config(primary, overrides, hydra=True).hydra.launcher._target_


def test_cluster_presets_build_coarser_levels_upwards():
    for option in sorted((ROOT / "cluster").glob("*.yaml")):
        cfg = compose_config("cluster", [f"cluster={option.stem}"])
        assert cfg.name == cfg.cluster.name == option.stem
        ks = [level.k * level.n_splits for level in cfg.cluster.levels]
        assert ks == sorted(ks, reverse=True), option.name


def test_every_experiment_is_listed():
    assert sorted(p.stem for p in (ROOT / "experiment").glob("*.yaml")) == sorted(EXPERIMENTS)


@pytest.mark.parametrize("experiment, primary", sorted(EXPERIMENTS.items()))
def test_experiment_composes_and_validates(experiment, primary):
    overrides = [*REQUIRED.get(primary, []), f"+experiment={experiment}"]
    if experiment == "web_4level":
        overrides.append("input.path=/data/web_emb")  # its comment's command sets the input
    if primary == "pipeline":  # the experiments' commands give the folders
        overrides += ["data=image_folder", "data.root=pool", "eval.train_root=train", "eval.test_root=test"]
        overrides += [] if experiment == "curation_ssl_quick" else ["base.root=seed"]
    cfg = compose_config(primary, overrides, hydra=True)
    assert cfg.hydra.run.dir
    _validator(primary)(compose_config(primary, overrides))


def test_one_list_of_source_kinds():
    """The registry of curate.data.sources names every kind once: a schema each, the image stages' kinds."""
    from curate.data.sources import SOURCE_KINDS, source_kinds
    from curate.embed.config import SOURCES
    from selfsup.config import IMAGE_SOURCES

    assert list(SOURCES) == list(SOURCE_KINDS)
    assert (
        IMAGE_SOURCES
        == source_kinds("image")
        == (
            "image_folder",
            "image_list",
            "fashion_mnist",
            "npy",
            "webdataset",
            "parquet",
        )
    )
    assert source_kinds("text") == ("text_lines", "jsonl", "wordnet")
