"""Run identity, guarded outputs and refused inputs (issue 10), through the Python API.

Each test is a case that gave a silently wrong result or a destructive write before: a resumed
run on other data, a finished run judged from its manifest alone, a replaced input, two writers
on one folder, a killed writer's leftovers, a path out of the output folder or the store, huge
or degenerate rows, float labels, truncated integers, identical rows, line separators.
"""

import json
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from curate.core.atomic import atomic_path, atomic_save_npy, atomic_write_json
from curate.core.errors import IdentityError, InputError, LockedError, UnsafeOutputError, check_component, user_message
from curate.core.guard import check_disjoint, output_lock, remove_stray_tmp
from curate.dedup import deduplicate
from curate.hierarchy import HierarchicalKMeans
from curate.io.identity import (
    check_identity,
    fixed_rows,
    input_identity,
    rows_digest,
    sharded_rows_digest,
    verify_files,
    vouch,
)
from curate.io.shards import open_npy
from curate.io.store import load_embeddings, load_labels, write_store
from curate.kmeans import KMeans
from curate.stage import open_clustered_input, open_input

ROOT = Path(__file__).resolve().parents[1]


def _data(seed: int, n: int = 300, d: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# -- 1. run identity ---------------------------------------------------------------------------
def test_identity_reads_a_few_rows_and_sees_a_replaced_input(tmp_path):
    x = _data(0)
    atomic_save_npy(tmp_path / "x.npy", x)
    first = input_identity(tmp_path / "x.npy")
    assert set(first) == {"path", "size", "mtime_ns", "rows"}
    assert list(fixed_rows(300)) == [0, 43, 85, 128, 171, 214, 256, 299] and len(fixed_rows(3)) == 3

    class Counting:  # rows_digest must read the fixed rows only, never the data
        shape, dtype = x.shape, x.dtype
        asked: list = []

        def __getitem__(self, index):
            self.asked.append(np.asarray(index))
            return x[index]

    view = Counting()
    assert rows_digest(view) == first["rows"] and sum(a.size for a in view.asked) == 8
    # the same rows spread over ranks digest alike (also -0.0 vs 0.0, which an all-reduce sums to 0.0)
    x[0, 0] = -0.0
    assert sharded_rows_digest(lambda i: x[i], len(x), 4) == rows_digest(x)
    # same shape, other values at a fixed row, and a rewrite (new mtime): both change the identity
    y = _data(0)
    y[43] += 1.0
    atomic_save_npy(tmp_path / "x.npy", y)
    second = input_identity(tmp_path / "x.npy")
    assert second["rows"] != first["rows"] and second["mtime_ns"] != first["mtime_ns"]
    with pytest.raises(IdentityError, match=r"which changed since \(it was modified, its rows differ\); start afresh"):
        check_identity(first, second, "run", "start afresh")
    check_identity(second, input_identity(tmp_path / "x.npy"), "run", "")  # unchanged: accepted


def test_hierarchy_checkpoints_refuse_another_input_of_the_same_shape(tmp_path):
    a, b = _data(0), _data(1)
    levels = [dict(k=20), dict(k=5, resample_steps=2, sample_size=2)]
    HierarchicalKMeans(levels, n_iter=5, checkpoint_dir=tmp_path).fit(a, stop_after_level=1)
    with pytest.raises(IdentityError, match="checkpoints of another clustering"):
        HierarchicalKMeans(levels, n_iter=5, checkpoint_dir=tmp_path).fit(b)
    resumed = HierarchicalKMeans(levels, n_iter=5, checkpoint_dir=tmp_path).fit(a)
    fresh = HierarchicalKMeans(levels, n_iter=5).fit(a)
    np.testing.assert_array_equal(resumed.levels_[1].centroids, fresh.levels_[1].centroids)


def test_kmeans_checkpoint_refuses_another_input_of_the_same_shape(tmp_path):
    a, b = _data(0), _data(1)
    KMeans(k=8, n_iter=3, checkpoint_dir=tmp_path).fit(a)
    assert (tmp_path / "kmeans_state.npz").exists()
    with pytest.raises(ValueError, match="other settings or data"):
        KMeans(k=8, n_iter=6, checkpoint_dir=tmp_path).fit(b)
    KMeans(k=8, n_iter=3, checkpoint_dir=tmp_path).fit(a)  # the same input resumes


def test_manifest_vouches_for_its_files(tmp_path):
    hkm = HierarchicalKMeans([dict(k=10), dict(k=3)], n_iter=3).fit(_data(0))
    hkm.save(tmp_path)
    files = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert {f"level{t}/{a}.npy" for t in (1, 2) for a in ("centroids", "assign")} <= set(files)
    assert verify_files(tmp_path, files) == []
    assert all("sha256" in record for record in files.values())  # small files: hashed
    (tmp_path / "level2" / "centroids.npy").unlink()
    assert verify_files(tmp_path, files) == ["level2/centroids.npy is missing"]
    np.save(tmp_path / "level1" / "dist.npy", np.zeros(300, np.float32))  # same size, other content
    assert "level1/dist.npy was modified" in verify_files(tmp_path, files)
    assert vouch(tmp_path, ["level1/assign.npy"])["level1/assign.npy"]["size"] > 0


def test_rows_of_a_replaced_input_are_refused(tmp_path):
    path = tmp_path / "x.npy"
    atomic_save_npy(path, _data(0))
    array, _, _, source = open_input(path)
    HierarchicalKMeans([dict(k=10)], n_iter=3).fit(array).save(tmp_path / "c", extra={"input": source})
    open_clustered_input(tmp_path / "c")  # unchanged: fine
    atomic_save_npy(path, _data(0, n=5))  # 300 rows -> 5: a sample would name rows up to 299
    with pytest.raises(IdentityError, match="its size changed"):
        open_clustered_input(tmp_path / "c")
    from curate.analysis.data import load_report_data  # what curate.report and curate.inspect read

    with pytest.raises(IdentityError, match="its size changed"):
        load_report_data(tmp_path / "c", target=None)
    (tmp_path / "c" / "manifest.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="holds a JSON list"):
        open_clustered_input(tmp_path / "c")


# -- 2. guarded writes ---------------------------------------------------------------------------
def test_output_lock_names_its_holder(tmp_path):
    with output_lock(tmp_path / "out", distributed=False):
        with pytest.raises(LockedError, match=rf"host {re.escape(socket.gethostname())}, pid {os.getpid()}"):
            with output_lock(tmp_path / "out", distributed=False):
                pass
    with output_lock(tmp_path / "out", distributed=False):  # released: free again
        pass


def test_stray_temporary_files_of_a_killed_writer_are_removed(tmp_path):
    class Killed(BaseException):
        pass

    with pytest.raises(Killed):  # a kill between writing and renaming...
        with atomic_path(tmp_path / "sub" / "a.npy", suffix=".npy") as tmp:
            np.save(tmp, np.zeros(3))
            stray = tmp.with_name(tmp.name + "~")
            tmp.rename(stray)  # ...leaves the temporary file (atomic_path cleans its own name only)
            raise Killed
    user_file = tmp_path / "notes.tmp"
    user_file.write_text("mine")
    assert remove_stray_tmp(tmp_path) == []  # "~" appended: no longer the exact pattern
    stray.rename(tmp)
    assert remove_stray_tmp(tmp_path) == [tmp] and not tmp.exists() and user_file.exists()


def test_outputs_never_overlap_inputs_and_names_are_one_component(tmp_path):
    store = tmp_path / "d" / "store"
    for out in (tmp_path / "d", store, store / "sub"):
        with pytest.raises(UnsafeOutputError, match="overlaps the input input="):
            check_disjoint(out, {"input": store}, "out")
    check_disjoint(tmp_path / "e", {"input": store, "input.subset": None}, "out")
    for bad in ("../../escape", "a/b", "..", ".", ""):
        with pytest.raises(UnsafeOutputError, match="single folder name"):
            check_component("name", bad)
    assert check_component("name", "web-4level_v2") == "web-4level_v2"


def test_json_files_never_hold_non_finite_numbers(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"inertia": [1.0, float("inf")], "x": np.float32("nan")})

    def refuse(token):
        raise AssertionError(f"non-JSON constant {token}")

    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {"inertia": [1.0, None], "x": None}


# -- 3. refused inputs ---------------------------------------------------------------------------
def test_degenerate_and_huge_rows(tmp_path):
    np.save(tmp_path / "empty_cols.npy", np.zeros((10, 0), np.float32))
    with pytest.raises(ValueError, match="no column"):
        open_npy(tmp_path / "empty_cols.npy")
    with pytest.raises(ValueError, match="no column"):
        load_embeddings(tmp_path / "empty_cols.npy")
    # dedup of rows of magnitude 1e20: the direction counts, not the (overflowing) squared norm
    x = _data(0, n=200, d=8)
    x[100:] = x[:100] * 1.0001
    small = deduplicate(x, threshold=0.99)
    huge = deduplicate(x * np.float32(1e20), threshold=0.99)
    np.testing.assert_array_equal(huge.keep, small.keep)
    assert huge.keep.sum() == 100


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a, b]), axis=1)  # one pair per cluster iff the two agree up to renaming
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


def test_kmeans_api_refuses_rows_whose_squares_overflow_and_is_exact_below():
    # the case: 300 finite float32 rows of magnitude ~1e20 (inertia was inf, 291 points in one cluster)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 8)).astype(np.float32) * 10
    x = centres[np.arange(300) % 5] + rng.standard_normal((300, 8)).astype(np.float32)
    bad = x * np.float32(1e20)
    fits = {
        "KMeans": lambda a: KMeans(k=5, n_iter=10, seed=0).fit(a),
        "KMeans cosine": lambda a: KMeans(k=5, n_iter=10, seed=0, distance="cosine").fit(a),
        "HierarchicalKMeans": lambda a: HierarchicalKMeans([dict(k=5)], n_iter=10, seed=0).fit(a),
    }
    for fit in fits.values():
        with pytest.raises(ValueError, match=r"row 0 is too large in magnitude.*rescale"):
            fit(bad)
    one = x.copy()
    one[123] *= np.float32(1e20)  # one bad row: named
    with pytest.raises(ValueError, match=r"row 123 is too large"):
        KMeans(k=5, n_iter=10, seed=0).fit(one)
    with pytest.raises(ValueError, match=r"row 7 is too large"):  # assign on new rows: the same check
        KMeans(k=5, n_iter=10, seed=0).fit(x).assign(np.concatenate([x[:7], bad[7:9]]))
    # below the limit the result is the unscaled one, scaled: the refusal is not a blanket one
    ref = KMeans(k=5, n_iter=10, seed=0).fit(x)
    big = KMeans(k=5, n_iter=10, seed=0).fit(x * np.float32(1e16))
    assert np.isfinite(big.inertia) and _same_partition(ref.labels_.numpy(), big.labels_.numpy())
    assert big.inertia == pytest.approx(ref.inertia * 1e32, rel=1e-3)


def test_labels_must_be_non_negative_integers_with_enough_names(tmp_path):
    emb = _data(0, n=6)
    write_store(tmp_path / "s", emb, labels=np.array([0, 1, 2, 0, 1, 2]), label_names=["a", "b"])
    with pytest.raises(InputError, match="2 label names for labels up to 2"):
        load_labels(tmp_path / "s")
    atomic_save_npy(tmp_path / "s" / "labels.npy", np.array([0, 1, -1, 0, 1, 0]))
    with pytest.raises(InputError, match="labels must be >= 0, got -1"):
        load_labels(tmp_path / "s")
    atomic_save_npy(tmp_path / "x.npy", emb)
    atomic_save_npy(tmp_path / "labels.npy", np.array([0.2, 1.7, 0.5, 0.1, 0.9, 0.3]))
    with pytest.raises(InputError, match="integer"):  # once truncated: every label 0 or 1
        open_input(tmp_path / "x.npy")


def test_manifest_file_names_stay_inside_the_store(tmp_path):
    write_store(tmp_path / "s", _data(0, n=6))
    np.save(tmp_path / "outside.npy", _data(1, n=6))
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["shards"][0]["emb"] = "../outside.npy"
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="not a plain file name inside the store"):
        load_embeddings(tmp_path / "s")


def test_integers_are_integers_everywhere():
    for bad in (dict(k=2, n_iter=2.7), dict(k=2.5), dict(k=True), dict(k=2, seed=0.5), dict(k=2, checkpoint_every=1.5)):
        with pytest.raises(ValueError, match="integer"):
            KMeans(**bad)
    with pytest.raises(ValueError, match="must be an integer"):
        HierarchicalKMeans([dict(k=5, resample_steps=1.5, sample_size=2)])
    with pytest.raises(ValueError, match="a fraction of the level's input must be in"):  # k < 1: a fraction
        HierarchicalKMeans([dict(k=5.7)])
    assert KMeans(k=np.int64(3), n_iter=np.int32(2)).n_iter == 2


def test_random_init_on_identical_rows_is_refused_like_kmeans_plusplus():
    x = np.ones((50, 3), np.float32)
    for init in ("random", "k-means++"):
        with pytest.raises(ValueError, match="only 1 distinct points found, fewer than k=3"):
            KMeans(k=3, init=init).fit(x)
    dup = np.concatenate([np.repeat(_data(0, n=4, d=3), 100, axis=0), _data(1, n=30, d=3)])
    assert len(torch.unique(KMeans(k=20, init="random", n_iter=5).fit(dup).centroids, dim=0)) == 20


def test_text_lines_are_newline_separated_records(tmp_path):
    from curate.data.sources import text_lines_source

    (tmp_path / "t.txt").write_bytes("a\x0cb\nc\u2028d\r\ne\rf\n\ng".encode())
    source = text_lines_source(tmp_path / "t.txt")
    assert [source.load(i) for i in range(len(source))] == ["a\x0cb", "c\u2028d", "e\rf", "g"]
    assert source.ids(np.arange(4)) == [0, 1, 2, 4]  # ids are line numbers: line 3 is empty
    from curate.analysis.data import load_texts  # the report shows the same records for those ids

    assert load_texts(dict(source.describe()), [0, 1, 4]) == ["a\x0cb", "c\u2028d", "g"]
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"bad.txt is not UTF-8 text \(byte 3"):
        text_lines_source(tmp_path / "bad.txt")


# -- 4. errors -------------------------------------------------------------------------------------
def test_user_errors_and_bugs_are_told_apart(tmp_path):
    import errno

    assert user_message(PermissionError(errno.EACCES, "Permission denied", "/x")) == "permission denied (/x)"
    assert user_message(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    assert "symlink loop" in user_message(OSError(errno.ELOOP, "Too many levels", "/l"))
    assert user_message(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x")) == "not a directory (/f/x)"
    assert user_message(ValueError("k: must be >= 1")) == "k: must be >= 1"
    for bug in (TypeError("x"), KeyError("k"), AttributeError("a"), OSError(errno.EIO, "I/O error")):
        assert user_message(bug) is None


def test_np_load_never_unpickles():
    """Every ``np.load`` of the package and scripts passes ``allow_pickle=False`` explicitly."""
    missing = []
    for folder in ("curate", "selfsup", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            for match in re.finditer(r"np\.load\(", text):
                depth, end = 1, match.end()
                while depth:
                    depth += {"(": 1, ")": -1}.get(text[end], 0)
                    end += 1
                if "allow_pickle=False" not in text[match.start() : end]:
                    missing.append(f"{path.relative_to(ROOT)}:{text[: match.start()].count(chr(10)) + 1}")
    assert missing == []


def test_submit_passes_overwrite_to_the_first_level_job_only(tmp_path):
    from curate.submit import level_overrides

    first = level_overrides(["overwrite=true", "seed=1"], tmp_path, 1, 3)
    later = level_overrides(["overwrite=true", "seed=1"], tmp_path, 2, 3)
    assert "overwrite=true" in first and "overwrite=true" not in later and "seed=1" in later


# -- selfsup.train / selfsup.eval: the same lock, cleanup and selection checks as the stages ----------
_TINY_SSL = [
    "model.depth=1",
    "model.embed_dim=32",
    "model.num_heads=2",
    "dino.head.n_prototypes=32",
    "dino.head.hidden_dim=32",
    "dino.head.bottleneck_dim=16",
    "ibot.head.n_prototypes=32",
    "ibot.head.hidden_dim=32",
    "ibot.head.bottleneck_dim=16",
    "crops.local_number=1",
    "train.batch_size=8",
    "train.iterations=1",
    "train.device=cpu",
]


def _images(folder: Path, n: int = 64) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
    np.save(folder / "labels.npy", np.arange(n) % 4)
    return folder / "images.npy"


def _train_cfg(out: Path, images: Path, *overrides: str):
    from omegaconf import OmegaConf

    from selfsup.config import TrainConfig, to_train_config

    cfg = OmegaConf.structured(TrainConfig)
    cfg.merge_with_dotlist([f"out={out}", "data.kind=npy", f"data.path={images}", *_TINY_SSL, *overrides])
    return to_train_config(cfg)


def _eval_cfg(out: Path, backbone: Path, images: Path, *overrides: str):
    from omegaconf import OmegaConf

    from selfsup.config import EvalConfig, to_eval_config

    cfg = OmegaConf.structured(EvalConfig)
    data = [f"data.{part}.{key}" for part in ("train", "test") for key in ("kind=npy", f"path={images}")]
    labels = [f"data.{part}.labels_path={images.with_name('labels.npy')}" for part in ("train", "test")]
    cfg.merge_with_dotlist(
        [f"out={out}", f"backbone={backbone}", *data, *labels, "eval.device=cpu", "eval.linear_epochs=1"]
        + ["eval.linear_lrs=[0.1]", "eval.knn_k=3", "eval.num_workers=0", *overrides]
    )
    return to_eval_config(cfg)


def test_selfsup_train_and_eval_lock_their_folder_and_clean_a_killed_writers_temporaries(tmp_path):
    from selfsup.eval import evaluate
    from selfsup.train import train

    images = _images(tmp_path / "data")
    run, ev = tmp_path / "run", tmp_path / "eval"
    for folder, kept in ((run, "checkpoint.pt"), (ev, "eval.json")):
        with atomic_path(folder / kept, suffix=Path(kept).suffix) as tmp:
            tmp.write_bytes(b"partial")
        (folder / kept).rename(tmp)  # undo the rename: what a writer killed before it leaves
        assert list(folder.iterdir()) == [tmp]
    cfg = _train_cfg(run, images)
    with output_lock(run, distributed=False):  # another run writes the folder: refused, naming it
        with pytest.raises(LockedError, match=rf"pid {os.getpid()}"):
            train(cfg)
    assert not (run / "backbone.pt").exists()
    train(cfg)
    assert list(run.glob(".*.tmp*")) == [] and (run / "backbone.pt").is_file()
    ecfg = _eval_cfg(ev, run / "backbone.pt", images)
    with output_lock(ev, distributed=False):
        with pytest.raises(LockedError, match=rf"pid {os.getpid()}"):
            evaluate(ecfg)
    assert not (ev / "eval.json").exists()
    evaluate(ecfg)
    assert list(ev.glob(".*.tmp*")) == [] and (ev / "eval.json").is_file()


def test_selfsup_refuses_a_sample_whose_clustering_or_input_changed(tmp_path, compose_config):
    from curate.sample import _sample
    from curate.stage import check_selection
    from selfsup.eval import evaluate
    from selfsup.train import train

    images = _images(tmp_path / "data", n=300)
    emb = tmp_path / "emb.npy"

    def cluster(x):
        atomic_save_npy(emb, x)
        array, _, _, source = open_input(emb)
        HierarchicalKMeans([dict(k=10)], n_iter=3).fit(array).save(tmp_path / "c", extra={"input": source})

    cluster(_data(0))
    scfg = compose_config("sample", [f"cluster_dir={tmp_path / 'c'}", "targets=[50]", "plot=false"])
    sample = _sample(scfg, tmp_path / "s", tmp_path / "c")
    assert (sample / "indices.npy").is_file()
    check_selection(sample)  # as drawn: fine
    cfg = _train_cfg(tmp_path / "run", images, f"data.selection={sample}")
    ecfg = _eval_cfg(tmp_path / "ev", tmp_path / "none.pt", images, f"data.train.selection={sample}")
    # the clustered input replaced by other rows of the same shape: the sample's rows mean other items
    y = _data(0)
    y[43] += 1.0
    atomic_save_npy(emb, y)
    with pytest.raises(IdentityError, match=rf"data.selection={re.escape(str(sample))}: .*which changed since"):
        train(cfg)
    with pytest.raises(IdentityError, match=r"data.train.selection=.*which changed since"):
        evaluate(ecfg)
    assert not (tmp_path / "run").exists()
    # re-clustered since the draw (on the restored input): the sample belongs to the old clustering
    cluster(_data(0))
    with pytest.raises(IdentityError, match=r"data.selection=.*draw the sample again"):
        train(cfg)
    import shutil

    shutil.rmtree(tmp_path / "c")
    with pytest.raises(IdentityError, match=r"data.selection=.*which is gone"):
        train(cfg)
