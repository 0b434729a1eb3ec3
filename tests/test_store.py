"""Embedding store: round trips, views across shards, validation errors."""

import json

import numpy as np
import pytest

from curate.io.store import (
    ConcatenatedRows,
    StoreWriter,
    check_finite,
    finalize_store,
    load_embeddings,
    load_labels,
    read_manifest,
    shard_files,
    write_store,
)


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(23, 5)).astype(np.float32)


def test_single_shard_round_trip(tmp_path, rows):
    ids = [f"img/{i}.jpg" for i in range(len(rows))]
    manifest = write_store(tmp_path / "s", rows, ids, model="m", normalised=False, source={"kind": "test"})
    array, got_ids = load_embeddings(tmp_path / "s")
    assert isinstance(array, np.memmap)
    np.testing.assert_array_equal(np.asarray(array), rows)
    assert list(got_ids) == ids and got_ids[-1] == ids[-1] and len(got_ids) == len(rows)
    assert manifest["count"] == 23 and manifest["dim"] == 5 and manifest["dtype"] == "float32"
    assert manifest["model"] == "m" and manifest["source"] == {"kind": "test"}
    assert read_manifest(tmp_path / "s") == manifest
    assert (tmp_path / "s" / "ids-00000.txt").read_text().splitlines() == ids
    assert not (tmp_path / "s" / ".parts").exists()


def test_multi_shard_views(tmp_path, rows):
    labels = np.arange(len(rows)) % 3
    write_store(tmp_path / "s", rows, labels=labels, label_names=["a", "b", "c"], shard_size=5)
    array, ids = load_embeddings(tmp_path / "s")
    assert isinstance(array, ConcatenatedRows)
    assert array.shape == (23, 5) and len(array) == 23 and array.dtype == np.float32 and array.ndim == 2
    assert list(ids) == list(range(23)) and isinstance(ids[7], int)
    np.testing.assert_array_equal(array[3:17], rows[3:17])  # spans shards 0..3
    np.testing.assert_array_equal(array[5:10], rows[5:10])  # exactly one shard
    np.testing.assert_array_equal(array[20:100], rows[20:])
    np.testing.assert_array_equal(array[-4:], rows[-4:])
    np.testing.assert_array_equal(array[::4], rows[::4])
    assert array[7:7].shape == (0, 5)
    np.testing.assert_array_equal(array[12], rows[12])
    np.testing.assert_array_equal(array[-1], rows[-1])
    idx = np.array([22, 0, 5, 4, 5, 13, -2])
    np.testing.assert_array_equal(array[idx], rows[idx])
    np.testing.assert_array_equal(array[[3, 9]], rows[[3, 9]])
    np.testing.assert_array_equal(array[idx.reshape(1, 7)], rows[idx.reshape(1, 7)])
    mask = np.arange(23) % 2 == 0
    np.testing.assert_array_equal(array[mask], rows[mask])
    np.testing.assert_array_equal(array[2:9, 1], rows[2:9, 1])
    np.testing.assert_array_equal(np.asarray(array), rows)
    with pytest.raises(IndexError, match="out of range"):
        array[np.array([3, 23])]
    with pytest.raises(IndexError):
        array[23]
    got, names = load_labels(tmp_path / "s")
    np.testing.assert_array_equal(got, labels)
    assert got.dtype == np.int64 and names == ["a", "b", "c"]
    assert check_finite(tmp_path / "s") == 23


def test_float16_and_plain_npy(tmp_path, rows):
    write_store(tmp_path / "h", rows, dtype="float16", shard_size=10)
    array, _ = load_embeddings(tmp_path / "h", check=True)
    assert array.dtype == np.float16
    np.testing.assert_allclose(array[0:23].astype(np.float32), rows, atol=2e-3)
    np.save(tmp_path / "x.npy", rows)
    array, ids = load_embeddings(tmp_path / "x.npy", check=True)
    assert ids == range(23)
    np.testing.assert_array_equal(array[4:6], rows[4:6])


def test_writer_ranks_resume_and_settings_guard(tmp_path, rows):
    store = tmp_path / "s"
    meta = {"model": "m", "normalised": True, "source": "unit"}
    # two "ranks" write interleaved shards of one store
    a, b = StoreWriter(store, meta=meta), StoreWriter(store, meta=meta)
    b.write_shard(1, rows[10:20], [str(i) for i in range(10, 20)], items=(10, 20))
    a.write_shard(0, rows[:10], [str(i) for i in range(10)], items=(0, 10))
    with pytest.raises(ValueError, match=r"incomplete: shards \[2\]"):
        finalize_store(store, expected_shards=3)
    assert a.done(0) and a.done(1) and not a.done(2)
    with pytest.raises(ValueError, match="other settings.*model"):
        StoreWriter(store, meta={**meta, "model": "other"})
    b.write_shard(2, rows[20:], [str(i) for i in range(20, 23)], items=(20, 23), skipped=[("x.jpg", "bad")])
    manifest = finalize_store(store, expected_shards=3)
    assert manifest["count"] == 23 and manifest["normalised"] and manifest["skipped"] == 1
    assert [s["rows"] for s in manifest["shards"]] == [10, 10, 3]
    assert (store / "skipped.txt").read_text() == "x.jpg\tbad\n"
    assert finalize_store(store) == manifest  # idempotent
    np.testing.assert_array_equal(load_embeddings(store)[0][0:23], rows)


def test_empty_shard_is_listed_but_holds_no_file(tmp_path, rows):
    writer = StoreWriter(tmp_path / "s")
    writer.write_shard(0, rows[:4], list(range(4)))
    writer.write_shard(1, np.zeros((0, 0), np.float32), [], items=(4, 8), skipped=[("4", "unreadable")])
    writer.write_shard(2, rows[4:6], [8, 9], items=(8, 10))
    manifest = finalize_store(tmp_path / "s")
    assert manifest["shards"][1] == {"index": 1, "emb": None, "ids": None, "rows": 0, "items": [4, 8]}
    array, ids = load_embeddings(tmp_path / "s")
    np.testing.assert_array_equal(array[0:6], rows[:6])
    assert list(ids) == ["0", "1", "2", "3", "8", "9"]
    # the one walk over the shard list: files of the shards holding rows, in row order
    files = shard_files(tmp_path / "s")
    assert [(rec["index"], emb.name, ids.name) for rec, emb, ids in files] == [
        (0, "emb-00000.npy", "ids-00000.txt"),
        (2, "emb-00002.npy", "ids-00002.txt"),
    ]
    assert all(emb.is_file() and ids.is_file() for _, emb, ids in files)


def test_every_reader_refuses_a_manifest_name_out_of_the_store(tmp_path, rows):
    from curate.core.errors import InputError
    from curate.io.identity import input_identity

    write_store(tmp_path / "s", rows, list(range(len(rows))))
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["shards"][0]["ids"] = "../ids.txt"
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in range(len(rows))))
    for read in (load_embeddings, check_finite, input_identity):
        with pytest.raises(InputError, match=r"shards\[\]\.ids '../ids.txt' is not a plain file name"):
            read(tmp_path / "s")


def test_error_mismatched_dims(tmp_path, rows):
    writer = StoreWriter(tmp_path / "s")
    writer.write_shard(0, rows[:5], list(range(5)))
    writer.write_shard(1, rows[5:10, :4], list(range(5, 10)))
    with pytest.raises(ValueError, match="emb-00001.npy.*dimension 4 != 5"):
        finalize_store(tmp_path / "s")
    # a shard replaced on disk after the manifest was written
    write_store(tmp_path / "t", rows, shard_size=10)
    np.save(tmp_path / "t" / "emb-00001.npy", rows[10:20, :3])
    with pytest.raises(ValueError, match="emb-00001.npy: dimension 3 != 5"):
        load_embeddings(tmp_path / "t")
    with pytest.raises(ValueError, match="does not match"):
        ConcatenatedRows([rows[:3], rows[:3, :2]], ["a.npy", "b.npy"])


def test_error_ids_count(tmp_path, rows):
    write_store(tmp_path / "s", rows, [f"id{i}" for i in range(23)], shard_size=10)
    (tmp_path / "s" / "ids-00001.txt").write_text("".join(f"x{i}\n" for i in range(9)))
    with pytest.raises(ValueError, match="ids-00001.txt: 9 ids for 10 rows"):
        load_embeddings(tmp_path / "s")
    with pytest.raises(ValueError, match="3 ids for 4"):
        StoreWriter(tmp_path / "u").write_shard(0, rows[:4], [1, 2, 3])


def test_error_nan_row_named_with_shard(tmp_path, rows):
    write_store(tmp_path / "s", rows, shard_size=10)
    bad = rows[10:20].copy()
    bad[7, 2] = np.nan
    np.save(tmp_path / "s" / "emb-00001.npy", bad)
    load_embeddings(tmp_path / "s")  # not checked by default: no pass over the data
    with pytest.raises(ValueError, match=r"emb-00001.npy: row 7 \(global row 17\) holds NaN"):
        load_embeddings(tmp_path / "s", check=True)
    bad[7, 2] = np.inf
    np.save(tmp_path / "s" / "emb-00001.npy", bad)
    with pytest.raises(ValueError, match="row 7 .*Inf"):
        check_finite(tmp_path / "s", chunk_rows=3)
    with pytest.raises(ValueError, match="row 1 .*NaN or Inf"):
        StoreWriter(tmp_path / "u").write_shard(0, np.array([[1.0], [np.nan]], np.float32), [0, 1])


def test_error_missing_path_and_manifest(tmp_path, rows):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_embeddings(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_embeddings(tmp_path / "nope.npy")
    StoreWriter(tmp_path / "partial").write_shard(0, rows[:2], [0, 1])
    with pytest.raises(FileNotFoundError, match="no manifest.json.*never finalised"):
        load_embeddings(tmp_path / "partial")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_embeddings(tmp_path / "empty_dir")
    write_store(tmp_path / "s", rows, shard_size=10)
    (tmp_path / "s" / "emb-00002.npy").unlink()
    with pytest.raises(FileNotFoundError, match="emb-00002.npy"):
        load_embeddings(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="no labels"):
        load_labels(tmp_path / "s")


def test_error_empty_store(tmp_path):
    writer = StoreWriter(tmp_path / "s")
    writer.write_shard(0, np.zeros((0, 0), np.float32), [], items=(0, 3))
    with pytest.raises(ValueError, match="empty"):
        finalize_store(tmp_path / "s")
    # a manifest that lists no row
    (tmp_path / "m").mkdir()
    manifest = {"format": "ssl-curate-embeddings", "count": 0, "dim": 4, "dtype": "float32", "shards": []}
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="empty"):
        load_embeddings(tmp_path / "m")
    np.save(tmp_path / "e.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="empty"):
        load_embeddings(tmp_path / "e.npy")
