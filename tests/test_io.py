"""Atomic writes and the pread-based .npy reader."""

from __future__ import annotations

import os

import numpy as np
import pytest

from curate.core.atomic import atomic_save_npy, atomic_write_json
from curate.io.shards import NpyRows, RowRange, rank_rows


def test_npy_rows_reads_like_numpy(tmp_path):
    x = np.random.default_rng(0).normal(size=(500, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rows = NpyRows(tmp_path / "x.npy")
    assert rows.shape == (500, 7) and rows.dtype == np.float32 and len(rows) == 500
    np.testing.assert_array_equal(rows[10:300], x[10:300])
    np.testing.assert_array_equal(rows[:], x)
    np.testing.assert_array_equal(rows[[4, 2, 499, -1]], x[[4, 2, 499, -1]])
    np.testing.assert_array_equal(rows[::7], x[::7])
    with pytest.raises(IndexError, match="out of range"):
        rows[[500]]
    view = rank_rows(rows, 1, 3)
    assert isinstance(view, RowRange) and view.shape == (167, 7)
    np.testing.assert_array_equal(view[0:10], x[167:177])


def test_npy_rows_truncated_file(tmp_path):
    x = np.ones((100, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[:-200])
    with pytest.raises(ValueError, match="cannot read|shorter than its header"):
        NpyRows(tmp_path / "x.npy")[0:100]


def test_atomic_writes_leave_no_temp_files_and_refuse_objects(tmp_path):
    atomic_save_npy(tmp_path / "a.npy", np.arange(5))
    atomic_write_json(tmp_path / "m.json", {"a": np.int64(3), "b": np.arange(2)})
    assert sorted(os.listdir(tmp_path)) == ["a.npy", "m.json"]
    assert oct(os.stat(tmp_path / "a.npy").st_mode & 0o777) != "0o600"
    with pytest.raises(ValueError, match="object array"):
        atomic_save_npy(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object))
    assert not (tmp_path / "o.npy").exists() and sorted(os.listdir(tmp_path)) == ["a.npy", "m.json"]


def test_id_lists_split_at_newlines_only(tmp_path):
    from curate.data.selection import read_subset
    from curate.io.idlist import read_ids, write_ids

    odd = ["a\x0bb.png", "c\u2028d.png", "e\x1cf.png", " lead and trail .png", "plain.png"]
    assert write_ids(tmp_path / "ids.txt", odd) == 5
    assert read_ids(tmp_path / "ids.txt") == odd  # str.splitlines would give 8 ids and lose the spaces
    (tmp_path / "crlf.txt").write_bytes(b"x.png\r\ny.png\r\n\r\n")
    assert read_ids(tmp_path / "crlf.txt") == ["x.png", "y.png"]
    store_ids = ["plain.png", "e\x1cf.png", "zzz", "c\u2028d.png"]
    write_ids(tmp_path / "pick.txt", ["c\u2028d.png", "e\x1cf.png"])
    np.testing.assert_array_equal(read_subset(tmp_path / "pick.txt", 4, store_ids), [1, 3])
    with pytest.raises(ValueError, match="line break"):
        write_ids(tmp_path / "bad.txt", ["ok", "two\nlines"])
    assert not (tmp_path / "bad.txt").exists()
