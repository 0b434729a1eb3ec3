"""curate.core.protocol: one run-only declaration per stage (schema field metadata), one re-run rule
(skip / resume / recompute / refuse), and the re-run defects it removed, through the real CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from curate.core.protocol import (
    COMPLETE,
    RUN_ONLY,
    RUNNING,
    Action,
    completion_record,
    content,
    decide,
    run_only_keys,
)


@dataclass
class _Inner:
    size: int = 3
    workers: int = field(default=0, metadata=RUN_ONLY)


@dataclass
class _Schema:
    threshold: float = 0.5
    device: str = field(default="cpu", metadata=RUN_ONLY)
    inner: _Inner = field(default_factory=_Inner)


def test_run_only_keys_come_from_the_field_metadata_nested_ones_included():
    from omegaconf import OmegaConf

    assert run_only_keys(_Schema) == ("device", "inner.workers")
    cfg = OmegaConf.structured(_Schema)
    assert run_only_keys(cfg) == ("device", "inner.workers")
    assert content(cfg) == {"threshold": 0.5, "inner": {"size": 3}}


@pytest.mark.parametrize(
    ("found", "settings", "inputs", "action", "changed"),
    [
        (None, {"a": 1}, None, Action.run, ()),
        (completion_record(COMPLETE, {"a": 1}, {"n": 2}), {"a": 1}, {"n": 2}, Action.skip, ()),
        (completion_record(RUNNING, {"a": 1}, {"n": 2}), {"a": 1}, {"n": 2}, Action.resume, ()),
        (
            completion_record(COMPLETE, {"a": 1, "b": {"c": 2}}),
            {"a": 1, "b": {"c": 3}},
            None,
            Action.recompute,
            ("b.c",),
        ),
        (completion_record(RUNNING, {"a": 1}), {"a": 1, "new": 0}, None, Action.recompute, ("new",)),
        (completion_record(COMPLETE, {"a": 1}, {"n": 2}), {"a": 1}, {"n": 3}, Action.recompute, ("inputs",)),
        ({"status": COMPLETE, "key": "old"}, {"a": 1}, None, Action.recompute, ("settings",)),  # an older record
    ],
)
def test_the_decision_table(found, settings, inputs, action, changed):
    decision = decide(found, settings, inputs)
    assert decision.action is action and decision.changed == changed


def test_a_refused_recompute_names_the_key_and_the_fix():
    decision = decide(completion_record(COMPLETE, {"dtype": "float32"}), {"dtype": "float16"})
    with pytest.raises(ValueError, match=r"dtype changed\); set overwrite=true \(dtype\)"):
        decision.refuse("the store s", "set overwrite=true")
    decide(None, {}).refuse("unused", "unused")  # nothing to refuse


def _embed_args(text_file: Path, out: Path) -> list[str]:
    return [
        "-m",
        "curate.embed",
        "data=text_lines",
        f"data.path={text_file}",
        "encoder=random_projection",
        "encoder.dim=8",
        "num_workers=0",
        "progress=false",
        f"out={out}",
    ]


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "items.txt"
    path.write_text("".join(f"item number {i} of the list\n" for i in range(40)))
    return path


def test_embed_with_another_dtype_over_a_finished_store_is_not_nothing_to_do(tmp_path, text_file, cli):
    """Was: "already holds this store: nothing to do" and float32 rows left (dtype not in the key)."""
    out = tmp_path / "store"
    cli(*_embed_args(text_file, out))
    again = cli(*_embed_args(text_file, out), "num_workers=0", "batch_size=7")  # run-only: the work is kept
    assert "nothing to do" in again.stderr + again.stdout
    proc = cli(*_embed_args(text_file, out), "dtype=float16", check=False)
    assert "nothing to do" not in proc.stderr + proc.stdout
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "dtype" in last and "overwrite=true" in last
    cli(*_embed_args(text_file, out), "dtype=float16", "overwrite=true")
    assert np.load(out / "emb-00000.npy").dtype == np.float16


def test_dedup_then_write_store_writes_the_store_from_the_same_decisions(tmp_path, text_file, cli):
    """Was: "already holds this dedup; nothing to do" and no store written (write_store not compared)."""
    from curate.io.store import load_embeddings

    store = tmp_path / "store"
    cli(*_embed_args(text_file, store))
    out = tmp_path / "dedup"
    args = ["-m", "curate.dedup", f"input={store}", f"out={out}", "threshold=0.9"]
    cli(*args)
    assert not (out / "store").exists()
    kept_before = (out / "kept_indices.npy").stat().st_mtime_ns
    proc = cli(*args, "write_store=true")
    assert "nothing to do" not in proc.stderr + proc.stdout
    kept = np.load(out / "kept_indices.npy")
    assert (out / "kept_indices.npy").stat().st_mtime_ns == kept_before  # the decisions were kept
    rows, ids = load_embeddings(out / "store")
    full, full_ids = load_embeddings(store)
    np.testing.assert_array_equal(np.asarray(rows), np.asarray(full)[kept])
    assert list(ids) == [full_ids[int(i)] for i in kept]
    assert json.loads((out / "dedup.json").read_text())["store"] == "store"
    again = cli(*args, "write_store=true", "device=cpu")  # now done and the same (device is run-only)
    assert "nothing to do" in again.stderr + again.stdout
    refused = cli(*args, "threshold=0.5", check=False)
    assert refused.returncode == 2 and "threshold" in refused.stderr.strip().splitlines()[-1]


def _pipeline_args(folders: Path, out_dir: Path) -> list[str]:
    from test_pipeline import TINY

    return [
        "-m",
        "curate.pipeline",
        "data=image_folder",
        f"data.root={folders / 'pool'}",
        "data.labels_from_dirs=true",
        f"out_dir={out_dir}",
        "name=p",
        "stages=[embed,dedup,cluster,sample,train]",
        *TINY,
    ]


def test_pipeline_rerun_with_a_run_only_train_setting_keeps_the_training(tmp_path, fmnist_folders, cli):
    """Was: the finished train folder removed and trained again (any key change re-ran the stage),
    and ``train.train.snapshot_every=2`` refused without ``++`` (the train node was untyped)."""
    args = _pipeline_args(fmnist_folders, tmp_path)
    cli(*args)
    train = tmp_path / "p" / "train"
    checkpoint = (train / "checkpoint.pt").stat().st_mtime_ns
    for override in ("++train.train.snapshot_every=2", "train.train.snapshot_every=2"):
        proc = cli(*args, override)
        assert f"{train} already holds this train run: nothing to do" in proc.stderr
        assert (train / "checkpoint.pt").stat().st_mtime_ns == checkpoint  # not trained again
        summary = json.loads((tmp_path / "p" / "summary.json").read_text())
        assert not any(entry["ran"] for entry in summary["stages"].values())
    # a content setting re-runs the training (and only it)
    cli(*args, "train.train.iterations=6")
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert {stage for stage, entry in summary["stages"].items() if entry["ran"]} == {"train"}
    assert json.loads((train / "manifest.json").read_text())["iterations"] == 6


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.train.iterationz=5", "train.train.iterationz"),
        ("cluster.levels=3", "cluster.levels"),
        ("cluster.cluster.levels=[{k: 0, resample_steps: 1, sample_size: 1}]", "cluster.cluster.levels"),
        ("sample.strategy=closets", "sample.strategy"),
        ("eval.eval.knn_k=many", "eval.eval.knn_k"),
    ],
)
def test_a_bad_key_or_value_of_any_stage_fails_before_the_first_stage(tmp_path, fmnist_folders, cli, override, key):
    proc = cli(*_pipeline_args(fmnist_folders, tmp_path), override, check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and key in last
    assert not (tmp_path / "p" / "embed").exists()  # no stage started


def test_cfg_job_shows_every_stage_resolved(cli):
    from omegaconf import OmegaConf

    proc = cli("-m", "curate.pipeline", "--cfg", "job", "seed=3", "train.train.snapshot_every=2", "--resolve")
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.train.train.snapshot_every == 2 and cfg.train.train.seed == 3 and cfg.cluster.seed == 3
    assert cfg.train.model.depth and cfg.cluster.cluster.levels and cfg.dedup.threshold == 0.95
    assert cfg.eval.eval.knn_k and cfg.embed.data == cfg.data


def test_an_old_pipeline_stamp_is_refused_naming_its_folder(tmp_path, fmnist_folders, compose_config):
    from curate.pipeline import STAMP, run_pipeline

    folder = tmp_path / "p" / "embed"
    folder.mkdir(parents=True)
    (folder / STAMP).write_text(json.dumps({"stage": "embed", "key": "0123456789abcdef", "status": "complete"}))
    cfg = compose_config("pipeline", [*_pipeline_args(fmnist_folders, tmp_path)[2:]])
    with pytest.raises(ValueError, match=f"{folder}.*older curate.pipeline"):
        run_pipeline(cfg, tmp_path / "p")
