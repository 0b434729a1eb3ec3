"""Every entry point, run as a user runs it: a user's mistake gives one ``error:`` line and exit
code 2, never a traceback, never a destroyed input; tracebacks only when asked for (issue 10).

Each subprocess costs seconds of imports: every test groups several cases.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curate.core.atomic import atomic_save_npy
from curate.core.guard import output_lock
from curate.io.store import write_store

CLUSTER = ["-m", "curate.cluster", "input.toy=null", "cluster=kmeans_flat", "cluster.n_iter=3"]
LEVELS = "cluster.levels=[{k:20},{k:5}]"


def _data(seed: int, n: int = 300, d: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _one_error_line(proc, *expected: str) -> str:
    """The run failed as a user error: exit code 2, one ``error:`` line naming what is expected."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _no_non_finite_json(folder: Path) -> None:
    def refuse(token):
        raise AssertionError(f"{token} in a JSON file of {folder}")

    for path in folder.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow
def test_cluster_user_errors_are_one_line(tmp_path, cli):
    atomic_save_npy(tmp_path / "x.npy", _data(0))
    np.save(tmp_path / "nocols.npy", np.zeros((10, 0), np.float32))
    (tmp_path / "huge").mkdir()
    atomic_save_npy(tmp_path / "huge" / "x.npy", _data(0) * np.float32(1e20))
    (tmp_path / "afile").write_text("")
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    out = tmp_path / "out"
    ok = [*CLUSTER, LEVELS, f"input.path={tmp_path / 'x.npy'}", f"out_dir={out}"]
    _one_error_line(cli(*ok, "name=../../escape", check=False), "name='../../escape' must be a single folder name")
    assert not (tmp_path / "escape").exists() and not (out / "escape").exists()
    _one_error_line(cli(*ok, f"out_dir={tmp_path / 'afile'}", check=False), "not a directory", "afile")
    _one_error_line(cli(*ok, "device=tpu", check=False), "device='tpu'")
    _one_error_line(cli(*ok, "cluster.levls=[]", check=False), "cluster.levls")  # Hydra's own errors too
    _one_error_line(cli(*ok, f"input.path={tmp_path / 'loop_a'}", check=False), "symlink loop", "input.path")
    _one_error_line(cli(*ok, f"input.path={tmp_path / 'nocols.npy'}", check=False), "no column")
    huge = [*CLUSTER, LEVELS, f"input.path={tmp_path / 'huge' / 'x.npy'}", f"out_dir={out}", "name=huge"]
    _one_error_line(cli(*huge, check=False), "row 0 is too large in magnitude", "rescale")
    _no_non_finite_json(out)
    # a traceback when asked for (HYDRA_FULL_ERROR=1 here; --traceback: the inspect test below)
    proc = subprocess.run(
        [sys.executable, *ok, "device=tpu"], capture_output=True, text=True, env={**cli.env, "HYDRA_FULL_ERROR": "1"}
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "device='tpu'" in proc.stderr


@pytest.mark.slow
def test_cluster_and_sample_keep_their_run_identity(tmp_path, cli):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    atomic_save_npy(a, _data(0))
    atomic_save_npy(b, _data(1))  # same shape, other values
    out = tmp_path / "out"
    common = [*CLUSTER, LEVELS, f"out_dir={out}", "name=r"]
    cdir = out / "cluster" / "r"
    # killed after level 1 on a; the same name on b must not resume a's checkpoints
    cli(*common, f"input.path={a}", "stop_after_level=1")
    assert (cdir / "checkpoints" / "level1" / "done.json").exists()
    _one_error_line(cli(*common, f"input.path={b}", check=False), "checkpoints", str(a), "overwrite=true")
    cli(*common, f"input.path={b}", "overwrite=true")
    manifest = json.loads((cdir / "manifest.json").read_text())
    assert manifest["input"]["identity"]["path"] == str(b) and not (cdir / "checkpoints").exists()
    # finished on b: a is refused, b is a no-op, a deleted array is rebuilt rather than skipped
    _one_error_line(cli(*common, f"input.path={a}", check=False), "the clustering in", str(b))
    (cdir / "level2" / "centroids.npy").unlink()
    proc = cli(*common, f"input.path={b}")
    assert "level2/centroids.npy is missing; building the clustering again" in proc.stderr
    assert (cdir / "level2" / "centroids.npy").exists()
    # two budgets that both give the whole pool: two folders, named after what was asked
    sample = ["-m", "curate.sample", f"out_dir={out}", "name=r", "plot=false"]
    cli(*sample, "targets=[1000,2000]")
    for target in (1000, 2000):
        stats = json.loads((out / "sample" / "r" / f"target_{target}" / "stats.json").read_text())
        assert stats["target"] == target and stats["returned"] == 300 and stats["shortfall"] == target - 300
    # another run holds the sample folder
    with output_lock(out / "sample" / "r", distributed=False):
        _one_error_line(cli(*sample, check=False), "another run is writing", f"pid {os.getpid()}")
    # pointed at a store instead of a clustering; the clustered input replaced (300 rows -> 5)
    write_store(tmp_path / "store", _data(2, n=10))
    _one_error_line(cli(*sample, f"cluster_dir={tmp_path / 'store'}", check=False), "is not a clustering")
    atomic_save_npy(b, _data(1, n=5))
    _one_error_line(cli(*sample, check=False), "which changed since", "re-run the cluster stage")


@pytest.mark.slow
def test_dedup_never_writes_over_or_around_its_input(tmp_path, cli):
    parent = tmp_path / "d"
    x = _data(0, n=40, d=8)
    write_store(parent / "store", np.concatenate([x, x[:10]]))
    before = {p.name: p.read_bytes() for p in (parent / "store").iterdir()}
    for out in (parent, parent / "store", parent / "store" / "dedup"):
        args = ["-m", "curate.dedup", f"input={parent / 'store'}", f"out={out}", "write_store=true"]
        _one_error_line(cli(*args, check=False), "overlaps the input input=")
    assert {p.name: p.read_bytes() for p in (parent / "store").iterdir()} == before
    cli("-m", "curate.dedup", f"input={parent / 'store'}", f"out={tmp_path / 'e'}", "write_store=true")
    assert json.loads((tmp_path / "e" / "store" / "manifest.json").read_text())["count"] == 40
    assert not (tmp_path / "e" / ".store.partial").exists()


@pytest.mark.slow
def test_cluster_run_folder_inside_its_input_is_refused_before_hydra_writes(tmp_path, cli):
    store = tmp_path / "cluster" / "old" / "store"
    write_store(store, _data(0, n=40, d=8))

    def snapshot():
        return {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "cluster").rglob("*") if p.is_file()}

    before = snapshot()
    args = [*CLUSTER, "cluster.levels=[{k:5}]", f"input.path={store}"]
    # the run folder <out_dir>/cluster/<name> inside the store, or holding it
    for where in ([f"out_dir={store}"], [f"out_dir={store / 'runs'}", "name=x"], [f"out_dir={tmp_path}", "name=old"]):
        _one_error_line(cli(*args, *where, check=False), "overlaps the input input.path=", "out_dir/cluster/name")
    # --traceback: the traceback, and still nothing written
    proc = cli(*args, f"out_dir={store}", "--traceback", check=False)
    assert proc.returncode != 0 and "UnsafeOutputError" in proc.stderr and "Traceback" in proc.stderr
    assert snapshot() == before and not list((tmp_path / "cluster").rglob(".hydra"))
    cli(*args, f"out_dir={tmp_path / 'o'}")  # an output folder beside the input is fine
    assert (tmp_path / "o" / "cluster" / "kmeans_flat" / "manifest.json").is_file()
    # the sample stage's run folder inside the clustering it reads: refused before Hydra writes
    clustering = tmp_path / "o" / "cluster" / "kmeans_flat"
    files = sorted(p.relative_to(clustering) for p in clustering.rglob("*"))
    proc = cli("-m", "curate.sample", f"cluster_dir={clustering}", f"out_dir={clustering / 'x'}", check=False)
    _one_error_line(proc, "overlaps the input cluster_dir=", "out_dir/sample/name")
    assert sorted(p.relative_to(clustering) for p in clustering.rglob("*")) == files


@pytest.mark.slow
def test_embed_inspect_and_report_errors_are_one_line(tmp_path, cli):
    (tmp_path / "t.txt").write_text("one\ntwo\n")
    (tmp_path / "bad.txt").write_bytes(b"one\n\xff\xfe\n")
    embed = ["-m", "curate.embed", "data=text_lines", "encoder=random_projection", "num_workers=0"]
    _one_error_line(
        cli(*embed, f"data.path={tmp_path / 't.txt'}", f"out={tmp_path / 'e1'}", "shard_size=0", check=False),
        "shard_size must be >= 1",
    )
    _one_error_line(
        cli(*embed, f"data.path={tmp_path / 'bad.txt'}", f"out={tmp_path / 'e2'}", check=False), "bad.txt is not UTF-8"
    )
    # a store folder is no clustering; a manifest that is a JSON list
    write_store(tmp_path / "store", _data(0, n=10))
    _one_error_line(cli("-m", "curate.inspect", str(tmp_path / "store"), check=False), "is not a clustering")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.json").write_text("[1, 2]")
    _one_error_line(cli("-m", "curate.report", f"cluster={tmp_path / 'c'}", check=False), "holds a JSON list")
    proc = cli("-m", "curate.inspect", str(tmp_path / "store"), "--traceback", check=False)
    assert proc.returncode == 1 and "Traceback" in proc.stderr


@pytest.mark.slow
def test_selfsup_errors_are_one_line(tmp_path, cli):
    images = np.random.default_rng(0).integers(0, 255, size=(32, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    train = [
        "-m",
        "selfsup.train",
        "data=npy",
        f"data.path={tmp_path / 'images.npy'}",
        f"out={tmp_path / 'run'}",
    ]
    _one_error_line(cli(*train, "train.iterations=0", check=False), "train.iterations")
    _one_error_line(
        cli("-m", "selfsup.eval", f"backbone={tmp_path / 'none.pt'}", f"out={tmp_path / 'ev'}", check=False), "none.pt"
    )


def test_resume_with_another_model_is_refused_up_front(tmp_path):
    from omegaconf import OmegaConf

    from curate.core.errors import IdentityError
    from selfsup.config import TrainConfig, to_train_config
    from selfsup.train import train

    images = np.random.default_rng(0).integers(0, 255, size=(32, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)

    def cfg(*overrides: str) -> TrainConfig:
        node = OmegaConf.structured(TrainConfig)
        tiny = ["model.embed_dim=32", "model.num_heads=2", "dino.head.n_prototypes=32", "dino.head.hidden_dim=32",
                "dino.head.bottleneck_dim=16", "ibot.head.n_prototypes=32", "ibot.head.hidden_dim=32",
                "ibot.head.bottleneck_dim=16", "crops.local_number=1", "train.batch_size=8"]  # fmt: skip
        node.merge_with_dotlist(
            [f"out={tmp_path / 'run'}", "data.kind=npy", f"data.path={tmp_path / 'images.npy'}", *tiny, *overrides]
        )
        return to_train_config(node)

    train(cfg("model.depth=1", "train.iterations=1", "train.checkpoint_every=1"))
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    with pytest.raises(IdentityError, match=r"another model \(model.depth changed\)"):
        train(cfg("model.depth=2", "train.iterations=2"))
