"""curate.pipeline's arms beyond clustering (issue 21 items 5 and 7): ``decontaminate`` (the
evaluation sets embedded with the pool's encoder, the dedup's ``reference``), the retrieval near a
seed set and the seed set itself mixed with the hierarchical sample in the curated training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config
from test_pipeline import TINY, lines, pipeline_cfg

from curate.io.store import write_store
from curate.pipeline import STAMP, Pipeline, run_pipeline

ARMS = ["mix.retrieval=1", "mix.seed_set=0.5", "mix.homogeneous_fraction=0.5", "retrieve.per_query=2"]


@pytest.fixture(scope="module")
def folders(fmnist_folders) -> Path:
    return fmnist_folders


def arms_cfg(folders: Path, *overrides: str):
    return pipeline_cfg(folders, f"decontaminate=[{folders / 'test'}]", f"seed_set={folders / 'seed'}", *overrides)


def test_arms_become_the_stages_configs(tmp_path, folders):
    """Config level, no work: the references reach the dedup, the mix reaches the trainer, the
    retrieval searches the pool for the seed set's rows; without the arms nothing changes."""
    store = tmp_path / "eval_store"
    write_store(store, np.eye(3, 4, dtype=np.float32))
    p = Pipeline(arms_cfg(folders, *ARMS, f"decontaminate=[{folders / 'test'},{store}]"), tmp_path / "root")
    root = (tmp_path / "root").resolve()
    assert p.dedup_config().reference == [str(root / "embed_reference_0"), str(store)]
    ref = p.other_embed_config("embed_reference_0", str(folders / "test"))
    pool = p.embed_config()
    assert ref.data.root == str(folders / "test") and ref.out == str(root / "embed_reference_0")
    assert ref.encoder == pool.encoder  # the pool's encoder, so the rows compare
    data = p.train_config(p.folder("train"), p.curated_selection()).data
    assert data.selection is None and data.homogeneous_fraction == 0.5
    assert [dict(part) for part in data.mix] == [
        {"selection": str(root / "sample"), "weight": 1.0},
        {"selection": str(root / "sample_retrieval"), "weight": 1.0},
        {"data": {"kind": "image_folder", "root": str(folders / "seed")}, "weight": 0.5},
    ]
    retrieve = p.retrieve_config()
    assert (retrieve.input, retrieve.queries) == (str(root / "embed"), str(root / "embed_seed_set"))
    assert retrieve.out == str(root / "sample_retrieval" / "retrieve") and retrieve.per_query == 2


def test_without_arms_nothing_changes_and_a_store_seed_set_is_queried_as_it_is(tmp_path, folders):
    store = tmp_path / "seed_store"
    write_store(store, np.eye(3, 4, dtype=np.float32))
    p = Pipeline(pipeline_cfg(folders, f"seed_set={store}", "mix.retrieval=1", "retrieve.per_query=2"), tmp_path / "r2")
    assert p.retrieve_config().queries == str(store)
    # no arms: the dedup has no reference and the trainer reads the sample alone
    plain = Pipeline(pipeline_cfg(folders), tmp_path / "plain")
    assert plain.dedup_config().reference is None
    data = plain.train_config(plain.folder("train"), plain.curated_selection()).data
    assert data.selection == str(plain.folder("sample")) and data.mix is None


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["mix.retrieval=1", "retrieve.per_query=2"], "mix.retrieval: needs the seed set"),
        (["mix.seed_set=1"], "mix.seed_set: needs the seed set"),
        (["seed_set=SEED", "mix.retrieval=1"], "retrieve.per_query: required by mix.retrieval"),
        (["seed_set=SEED", "mix.retrieval=1", "retrieve.per_query=0"], "retrieve.per_query: must be an integer"),
        (["seed_set=STORE", "mix.seed_set=1"], "mix.seed_set: seed_set=.* is an embedding store"),
        (["mix.sample=-1"], r"mix.sample: must be a finite weight >= 0"),
        (["mix.sample=0"], "mix: the weights sum to 0"),
        (
            ["seed_set=SEED", "mix.seed_set=1", "mix.homogeneous_fraction=2"],
            r"mix.homogeneous_fraction: must be in \[0, 1\]",
        ),
        (["+data.mix=[{selection: x}]"], "data.mix: the pipeline mixes"),
        (["decontaminate=['']"], r"decontaminate\[0\]: an image folder or an embedding store"),
    ],
)
def test_bad_arms_are_refused_naming_the_key(tmp_path, folders, overrides, key):
    store = tmp_path / "store"
    write_store(store, np.eye(3, 4, dtype=np.float32))
    given = [o.replace("SEED", str(folders / "seed")).replace("STORE", str(store)) for o in overrides]
    with pytest.raises(ValueError, match=key):
        Pipeline(pipeline_cfg(folders, *given), tmp_path / "root")


def test_a_misspelled_retrieve_key_is_refused_when_composed(folders):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="per_querry"):
        compose_config("pipeline", ["data=image_folder", "data.root=x", *TINY, "retrieve.per_querry=2"])


def test_decontaminated_pool_retrieval_and_seed_set_mixed_in_the_curated_training(tmp_path, folders):
    """The pool holds copies of five test images: ``decontaminate=[<test folder>]`` embeds the test
    set with the pool's encoder and the dedup removes the copies; the retrieval near the seed set
    keeps no removed item; the curated training mixes the sample, the retrieval and the seed set's
    images by weight (the manifest's parts), and a second run skips every stage."""
    pool = tmp_path / "pool"
    shutil.copytree(folders / "pool", pool)
    copies = [path for path in sorted((folders / "test").rglob("*.png")) if (pool / path.parent.name).is_dir()][:5]
    for path in copies:
        shutil.copy(path, pool / path.parent.name / f"copy_{path.name}")
    copied = {f"{path.parent.name}/copy_{path.name}" for path in copies}
    cfg = arms_cfg(folders, *ARMS, f"data.root={pool}", "stages=[embed,dedup,cluster,sample,train]")
    root = tmp_path / "run"
    summary = run_pipeline(cfg, root)
    dedup = json.loads((root / "dedup" / "dedup.json").read_text())
    kept = set(lines(root / "dedup" / "kept_ids.txt"))
    assert dedup["contaminated"] >= 5 and not copied & kept and summary["pool_size"] == 155
    assert json.loads((root / "embed_reference_0" / "manifest.json").read_text())["count"] == 50
    retrieved = lines(root / "sample_retrieval" / "ids.txt")
    raw = lines(root / "sample_retrieval" / "retrieve" / "ids.txt")
    assert retrieved == [i for i in raw if i in kept] and len(retrieved) >= 1
    assert json.loads((root / "embed_seed_set" / "manifest.json").read_text())["count"] == 20
    manifest = json.loads((root / "train" / "manifest.json").read_text())
    parts = manifest["selection"]["mix"]
    assert [p["count"] for p in parts] == [40, len(retrieved), 20] and [p["weight"] for p in parts] == [1, 1, 0.5]
    assert sum(p["drawn"] for p in parts) == manifest["samples_seen"] and all(p["drawn"] > 0 for p in parts)
    assert manifest["selection"]["homogeneous_fraction"] == 0.5
    sample = set(lines(root / "sample" / "ids.txt"))
    assert manifest["n_train"] == len(sample | set(retrieved)) + 20  # the pool's union, then the seed set
    train = json.loads((root / "train" / STAMP).read_text())
    assert set(train["inputs"]) == {"sample", "sample_retrieval"}
    again = run_pipeline(cfg, root)
    assert not any(entry["ran"] for entry in again["stages"].values())
