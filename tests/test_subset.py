"""Clustering a subset of a store (dedup's kept rows, row indices or ids), mapped back to store rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curate.data.selection import SubsetIds, SubsetRows, read_subset
from curate.io.shards import NpyRows
from curate.io.store import load_embeddings, write_store
from curate.stage import to_positions


def test_read_subset_forms_and_errors(tmp_path):
    ids = [f"doc{i}" for i in range(10)]
    np.save(tmp_path / "rows.npy", np.array([7, 2, 5]))
    np.testing.assert_array_equal(read_subset(tmp_path / "rows.npy", 10), [2, 5, 7])
    (tmp_path / "dd").mkdir()
    np.save(tmp_path / "dd" / "kept_indices.npy", np.array([0, 3]))
    np.testing.assert_array_equal(read_subset(tmp_path / "dd", 10), [0, 3])
    (tmp_path / "ids.txt").write_text("doc9\ndoc1\n")
    np.testing.assert_array_equal(read_subset(tmp_path / "ids.txt", 10, ids), [1, 9])
    bad = {
        "missing.npy": (None, FileNotFoundError, "subset not found"),
        "empty.npy": (np.array([], np.int64), ValueError, "is empty"),
        "far.npy": (np.array([1, 10]), ValueError, "row 10 is outside the store's 10 rows"),
        "neg.npy": (np.array([-1]), ValueError, "row -1 is outside"),
        "twice.npy": (np.array([4, 1, 4]), ValueError, "row 4 is listed more than once"),
        "float.npy": (np.array([1.0]), ValueError, "1-D integer array"),
        "matrix.npy": (np.zeros((2, 2), np.int64), ValueError, "1-D integer array"),
    }
    for name, (content, error, match) in bad.items():
        if content is not None:
            np.save(tmp_path / name, content)
        with pytest.raises(error, match=match):
            read_subset(tmp_path / name, 10)
    (tmp_path / "broken.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot read it as a .npy"):
        read_subset(tmp_path / "broken.npy", 10)
    (tmp_path / "unknown.txt").write_text("doc1\ndoc77\n")
    with pytest.raises(ValueError, match=r"1 id\(s\) are not in the store, e.g. \['doc77'\]"):
        read_subset(tmp_path / "unknown.txt", 10, ids)
    with pytest.raises(ValueError, match="needs a store with ids"):
        read_subset(tmp_path / "ids.txt", 10, None)


@pytest.mark.parametrize("base_kind", ["ndarray", "npy_rows", "store"])
def test_subset_rows_reads_like_numpy(tmp_path, base_kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    if base_kind == "ndarray":
        base = x
    elif base_kind == "npy_rows":
        np.save(tmp_path / "x.npy", x)
        base = NpyRows(tmp_path / "x.npy")
    else:
        write_store(tmp_path / "s", x, ids=list(range(500)), shard_size=64)
        base = load_embeddings(tmp_path / "s")[0]
    for rows in (np.flatnonzero(rng.uniform(size=500) < 0.9), np.sort(rng.choice(500, 20, replace=False))):
        view, ref = SubsetRows(base, rows), x[rows]  # dense (covering block) and sparse (gather) reads
        assert view.shape == ref.shape and len(view) == len(rows)
        np.testing.assert_array_equal(view[:], ref)
        np.testing.assert_array_equal(view[3:11], ref[3:11])
        np.testing.assert_array_equal(view[1:15:4], ref[1:15:4])
        np.testing.assert_array_equal(view[5:5], ref[5:5])
        np.testing.assert_array_equal(view[np.array([4, 0, 9])], ref[[4, 0, 9]])
        np.testing.assert_array_equal(view[-1], ref[-1])
        np.testing.assert_array_equal(view[2:6, 1], ref[2:6, 1])
        np.testing.assert_array_equal(np.asarray(view), ref)
    ids = SubsetIds([f"i{k}" for k in range(500)], np.array([3, 8]))
    assert list(ids) == ["i3", "i8"] and ids[1] == "i8" and ids[0:1] == ["i3"] and len(ids) == 2


def test_to_positions():
    rows = np.array([2, 5, 9])
    np.testing.assert_array_equal(to_positions(rows, np.array([9, 2]), "s"), [2, 0])
    np.testing.assert_array_equal(to_positions(None, np.array([9, 2]), "s"), [9, 2])
    for outside in (3, 10):
        with pytest.raises(ValueError, match=f"s: row {outside} is not among the clustered subset"):
            to_positions(rows, np.array([2, outside]), "s")


def _pool_with_copies(tmp_path: Path) -> tuple[Path, np.ndarray, list[str], np.ndarray]:
    """A store of 4 blobs (600 items) in which 200 later rows copy earlier ones."""
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2, 3], [300, 150, 100, 50])
    centers = rng.normal(scale=1.0, size=(4, 32))  # within-blob cosines stay well below 0.95
    x = (centers[labels] + rng.normal(size=(600, 32))).astype(np.float32)
    src = rng.integers(0, 600, size=200)
    x = np.concatenate([x, x[src] * 1.5])  # scaled copies: cosine 1
    labels = np.concatenate([labels, labels[src]])
    ids = [f"item{i}" for i in range(len(x))]
    write_store(tmp_path / "pool", x, ids=ids, labels=labels, label_names=list("abcd"), shard_size=256)
    return tmp_path / "pool", x, ids, labels


def test_dedup_then_cluster_the_kept_rows(tmp_path, cli):
    pool, x, ids, labels = _pool_with_copies(tmp_path)
    cli("-m", "curate.dedup", f"input={pool}", f"out={tmp_path / 'dd'}", "device=cpu", "write_store=true")
    kept = np.load(tmp_path / "dd" / "kept_indices.npy")
    assert len(kept) == 600 and kept.max() < 600  # the copies come last, so the originals stay
    common = ["input.toy=null", "cluster=kmeans_flat", "cluster.levels=[{k:30},{k:4}]", "cluster.n_iter=5"]
    subset = f"input.subset={tmp_path / 'dd'}"
    cli("-m", "curate.cluster", *common, f"input.path={pool}", subset, f"out_dir={tmp_path}/o")
    cli("-m", "curate.cluster", *common, f"input.path={tmp_path / 'dd' / 'store'}", f"out_dir={tmp_path}/ref")
    cdir = tmp_path / "o" / "cluster" / "kmeans_flat"
    manifest = json.loads((cdir / "manifest.json").read_text())
    assert manifest["input"]["subset"] == str((tmp_path / "dd").resolve()) and manifest["input"]["subset_rows"] == 600
    np.testing.assert_array_equal(np.load(cdir / "items.npy"), kept)
    # the same rows in the same order: the same hierarchy as clustering dedup's written store
    ref = tmp_path / "ref" / "cluster" / "kmeans_flat"
    for name in ("level1/centroids.npy", "level1/assign.npy", "level2/assign.npy"):
        np.testing.assert_array_equal(np.load(cdir / name), np.load(ref / name))
    cli("-m", "curate.sample", f"out_dir={tmp_path}/o", "name=kmeans_flat", "targets=[120]", "plot=false")
    sdir = tmp_path / "o" / "sample" / "kmeans_flat"
    indices = np.load(sdir / "indices.npy")
    assert len(indices) == 120 and np.isin(indices, kept).all()  # store rows of kept items
    assert (sdir / "ids.txt").read_text().split() == [ids[i] for i in indices]
    stats = json.loads((sdir / "stats.json").read_text())
    np.testing.assert_allclose(
        stats["labels"]["curated"]["share"], np.bincount(labels[indices], minlength=4) / 120, atol=1e-9
    )
    # inspect and report read the sample's store rows back as the clustering's items
    proc = cli("-m", "curate.inspect", f"cluster={cdir}", f"sample={sdir}", f"labels={pool / 'labels.npy'}")
    assert "120 items" in proc.stdout
    cli("-m", "curate.report", f"cluster={cdir}", f"sample={sdir}", f"out={tmp_path / 'report'}")
    assert (tmp_path / "report" / "report.html").exists()
    # a dedup of another store is refused, naming both
    other, *_ = _pool_with_copies(tmp_path / "other")
    proc = cli("-m", "curate.cluster", *common, f"input.path={other}", subset, "name=o", check=False)
    assert proc.returncode == 2 and "is a dedup of" in proc.stderr and str(other) in proc.stderr
    # a subset naming an id the store does not have: one line, naming the file
    (tmp_path / "ids.txt").write_text("item1\nnot-an-id\n")
    ids_subset = f"input.subset={tmp_path / 'ids.txt'}"
    proc = cli("-m", "curate.cluster", *common, f"input.path={pool}", ids_subset, "name=bad", check=False)
    assert proc.returncode == 2 and "ids.txt: 1 id(s) are not in the store" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_items_beyond_a_changed_input_are_refused(tmp_path):
    from curate.stage import open_input

    np.save(tmp_path / "x.npy", np.zeros((10, 3), np.float32))
    array, _, _, description = open_input(tmp_path / "x.npy", np.array([2, 9]))
    assert array.shape == (2, 3) and description["subset_rows"] == 2
    with pytest.raises(ValueError, match="name row 12 but .* has 10 rows"):
        open_input(tmp_path / "x.npy", np.array([2, 12]))
