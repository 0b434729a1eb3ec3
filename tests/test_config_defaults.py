"""One source of truth for configuration: the dataclasses hold the defaults, the YAML files what differs;
choices are Enums refused at composition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIGS
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import curate.cluster  # noqa: F401  (each stage module registers its schemas)
import curate.dedup  # noqa: F401
import curate.embed.run  # noqa: F401
import curate.retrieve  # noqa: F401
import curate.sample  # noqa: F401
import selfsup.config  # noqa: F401
from curate.pipeline import register_schema

register_schema()  # the pipeline's schema: every stage's typed config (registered explicitly, not on import)
CONFIGS = Path(CONFIGS)
PRIMARY = ("cluster", "sample", "dedup", "embed", "train", "eval", "pipeline", "retrieve")
# group options backed by a schema of their own (configs/model/ presets spell out the architecture they name)
GROUPS = ("cluster", "encoder", "data")
OPTIONS = tuple(f"{group}/{path.stem}" for group in GROUPS for path in sorted((CONFIGS / group).glob("*.yaml")))


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}`` of a plain container; lists are leaves."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}{key}."))
    return out


def repeated_defaults(configs: Path, name: str) -> tuple[list[str], int]:
    """The keys of ``configs/<name>.yaml`` (``name``: a primary, or ``<group>/<option>``) whose value
    equals its schema's default, and the number of keys it sets (``defaults`` and ``hydra`` left out).
    The schema is the first entry of its defaults list (in the option's group)."""
    raw = OmegaConf.to_container(OmegaConf.load(configs / f"{name}.yaml"), resolve=False)
    schema_name = raw.pop("defaults")[0]
    raw.pop("hydra", None)
    group = f"{name.rsplit('/', 1)[0]}/" if "/" in name else ""
    schema = ConfigStore.instance().load(f"{group}{schema_name}.yaml").node
    defaults = _leaves(OmegaConf.to_container(schema, resolve=False, enum_to_str=True))
    given = _leaves(raw)
    missing = object()
    same = [key for key, value in given.items() if defaults.get(key, missing) == value]
    return same, len(given)


@pytest.mark.parametrize("name", PRIMARY + OPTIONS)
def test_yaml_repeats_no_dataclass_default(name):
    same, total = repeated_defaults(CONFIGS, name)
    assert not same, f"configs/{name}.yaml repeats {len(same)} of its {total} keys' dataclass defaults: {same}"


def test_repeat_counter_sees_a_repeated_default(tmp_path):
    """The check above can fail: a YAML that repeats a default (also ``???`` and an Enum) is caught."""
    (tmp_path / "cluster.yaml").write_text(
        "defaults: [cluster_schema, _self_]\nseed: 0\nout_dir: elsewhere\ncluster: {distance: l2}\nhydra: {}\n"
    )
    (tmp_path / "dedup.yaml").write_text("defaults: [dedup_schema]\ninput: ???\nthreshold: 0.9\n")
    assert repeated_defaults(tmp_path, "cluster") == (["seed"], 3)  # cluster.distance: MISSING node, no default
    assert repeated_defaults(tmp_path, "dedup") == (["input"], 2)
    (tmp_path / "sample.yaml").write_text("defaults: [sample_schema]\nstrategy: random\nmethod: flat\n")
    assert repeated_defaults(tmp_path, "sample") == (["strategy"], 2)
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "p.yaml").write_text("defaults: [hierarchy_schema]\nname: p\nn_iter: 50\ninit: random\n")
    assert repeated_defaults(tmp_path, "cluster/p") == (["n_iter"], 3)


def test_enum_fields_hold_the_engine_choices():
    from curate.conf import Distance, Init, ResampleStrategy, SampleStrategy, choice_fields
    from curate.hierarchy.model import RESAMPLE_STRATEGIES
    from curate.kmeans.estimator import DISTANCES, INITS
    from curate.sampling import STRATEGIES

    assert [m.value for m in Distance] == list(DISTANCES) and [m.value for m in Init] == list(INITS)
    assert [m.value for m in ResampleStrategy] == list(RESAMPLE_STRATEGIES)
    assert [m.value for m in SampleStrategy] == list(STRATEGIES)
    cfg = OmegaConf.structured(curate.conf.ClusterStageConfig)
    cfg.cluster = OmegaConf.structured(curate.conf.HierarchyConfig)
    cfg.cluster.distance = "cosine"  # read by value, compares equal to the engine's string
    assert cfg.cluster.distance == "cosine" and f"{cfg.cluster.distance}" == "cosine"
    keys = dict(choice_fields(cfg))
    assert keys["cluster.distance"] is Distance and keys["cluster.init"] is Init and "input.toy" in keys
    with pytest.raises(Exception, match="expected one of"):
        cfg.cluster.init = "kmeans++"


def test_setting_a_path_clears_the_default_toy(tmp_path):
    from curate.conf import input_toy, validate_cluster
    from curate.submit import compose_cluster

    assert input_toy(compose_cluster([])) == "toy_2d"
    assert input_toy(compose_cluster(["input.toy=rings_2d"])) == "rings_2d"
    cfg = compose_cluster([f"input.path={tmp_path}/x.npy"])
    validate_cluster(cfg)
    assert input_toy(cfg) is None
    with pytest.raises(ValueError, match="input.path .* or input.toy, not both"):
        validate_cluster(compose_cluster([f"input.path={tmp_path}/x.npy", "input.toy=toy_2d"]))


@pytest.mark.slow
def test_cluster_runs_on_a_path_without_clearing_the_toy(tmp_path, cli, blobs):
    import numpy as np

    np.save(tmp_path / "x.npy", blobs)
    levels = "cluster.levels=[{k:20},{k:4}]"
    cli("-m", "curate.cluster", f"input.path={tmp_path / 'x.npy'}", levels, "name=p", f"out_dir={tmp_path}")
    manifest = (tmp_path / "cluster" / "p" / "manifest.json").read_text()
    assert str(tmp_path / "x.npy") in manifest and not (tmp_path / "data" / "toy_2d").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage, override, options",
    [
        ("curate.cluster", "cluster.distance=cosinee", "l2, cosine"),
        ("curate.cluster", "cluster.init=kmeans++", "k-means++, k-means||, random"),
        ("curate.sample", "strategy=closer", "random, closest, farthest"),
        ("curate.dedup", "backend=fais", "torch, faiss"),
        ("selfsup.train", "dino.centering=sinkhorn", "center, sinkhorn_knopp"),
    ],
)
def test_a_wrong_choice_fails_at_composition(tmp_path, cli, stage, override, options):
    extra = ["input=x", "out=y"] if stage == "curate.dedup" else []
    proc = cli("-m", stage, override, *extra, f"hydra.run.dir={tmp_path}/run", "--cfg", "job", check=False)
    assert proc.returncode != 0
    assert override.split("=")[1] in proc.stderr and options in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_help_lists_the_choices(cli):
    text = cli("-m", "curate.cluster", "--help").stdout
    assert "== Choices ==" in text
    assert "cluster.distance: l2 | cosine" in text and "cluster.init: k-means++ | k-means|| | random" in text
    assert "input.toy: toy_2d | rings_2d" in text and "logger.wandb.mode: disabled | offline | online" in text
    train = cli("-m", "selfsup.train", "--help").stdout
    assert "dino.centering: center | sinkhorn_knopp" in train and "ibot.mask_type: block | random" in train
