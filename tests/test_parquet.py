"""Parquet input: image tables (paths or bytes) for embed, and embedding tables straight into clustering."""

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.data.parquet_source import ParquetSource
from curate.io.parquet import ParquetRows
from curate.io.store import load_embeddings
from curate.stage import open_input

COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (10, 250, 250), (250, 10, 250), (90, 90, 90)]
PIXELS = ["-m", "curate.embed", "data=parquet", "encoder=pixels", "encoder.channels=3", "num_workers=0"]
PIXELS.append("progress=false")
CLUSTER = ["-m", "curate.cluster", "input.toy=null", "cluster=kmeans_flat", "cluster.n_iter=4", "device=cpu"]


def _one_error_line(proc, *expected: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def encode(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_table(tmp_path) -> tuple[Path, list[bytes]]:
    """A table of 7 images in row groups of 3: relative paths, the same bytes (row 4 unreadable,
    its file too), string ids and integer labels."""
    folder = tmp_path / "table"
    (folder / "img").mkdir(parents=True)
    images = [b"not a png" if i == 4 else encode(COLOURS[i]) for i in range(7)]
    for i, data in enumerate(images):
        (folder / "img" / f"{i}.png").write_bytes(data)
    table = pa.table(
        {
            "path": [f"img/{i}.png" for i in range(7)],
            "img": pa.array(images, type=pa.binary()),
            "key": [f"item-{i}" for i in range(7)],
            "label": pa.array([i % 2 for i in range(7)], type=pa.int32()),
        }
    )
    pq.write_table(table, folder / "images.parquet", row_group_size=3)
    return folder / "images.parquet", images


def test_parquet_source_reads_rows_by_group_byte_exact(image_table):
    path, images = image_table
    source = ParquetSource(path, image_column="img", id_column="key", label_column="label")
    assert len(source.table.groups) == 3 and len(source) == 7
    for i in [6, 0, 3, 4, 2]:  # out of order: each read finds its row group
        assert source.image_bytes(i) == images[i]
    assert source.ids(np.arange(7)) == [f"item-{i}" for i in range(7)]
    np.testing.assert_array_equal(source.labels(), [i % 2 for i in range(7)])
    by_path = ParquetSource(path, path_column="path", limit=5)
    assert len(by_path) == 5 and by_path.ids(np.arange(5)) == ["0", "1", "2", "3", "4"]
    assert by_path.image_bytes(3) == images[3] and by_path.labels() is None
    with pytest.raises(ValueError, match="exactly one"):
        ParquetSource(path)


def test_embed_parquet_paths_and_bytes_cli(tmp_path, cli, image_table):
    path, images = image_table
    by_path, by_bytes = tmp_path / "by_path", tmp_path / "by_bytes"
    cli(*PIXELS, f"data.path={path}", "data.path_column=path", "data.id_column=key", "data.label_column=label",
        f"out={by_path}", "shard_size=2")  # fmt: skip
    emb, ids = load_embeddings(by_path)
    assert list(ids) == [f"item-{i}" for i in range(7) if i != 4]
    assert (by_path / "skipped.txt").read_text().startswith("item-4\t")
    np.testing.assert_array_equal(np.load(by_path / "labels.npy"), [i % 2 for i in range(7) if i != 4])
    # the folder of the table holding the table: a folder of .parquet files is read the same way
    cli(*PIXELS, f"data.path={path.parent}", "data.image_column=img", f"out={by_bytes}", "shard_size=3")
    emb_bytes, ids_bytes = load_embeddings(by_bytes)
    assert list(ids_bytes) == ["0", "1", "2", "3", "5", "6"]  # default ids: the row numbers
    assert (by_bytes / "skipped.txt").read_text().startswith("4\t")
    assert not (by_bytes / "labels.npy").exists()
    np.testing.assert_array_equal(np.asarray(emb_bytes), np.asarray(emb))
    # the rows are those of the same files embedded as an image folder
    ref = tmp_path / "ref"
    (path.parent / "img" / "4.png").unlink()
    cli(*PIXELS, "data=image_folder", f"data.root={path.parent / 'img'}", f"out={ref}")
    ref_emb, ref_ids = load_embeddings(ref)
    assert list(ref_ids) == [f"{i}.png" for i in (0, 1, 2, 3, 5, 6)]
    np.testing.assert_array_equal(np.asarray(emb), np.asarray(ref_emb))


def test_bad_image_tables_give_one_error_line(tmp_path, cli, image_table):
    path, _ = image_table
    run = [*PIXELS, f"data.path={path}", f"out={tmp_path / 'out'}"]
    _one_error_line(cli(*run, check=False), "data.path_column", "data.image_column")
    _one_error_line(cli(*run, "data.image_column=pixels", check=False), "data.image_column", "pixels", str(path))
    _one_error_line(cli(*run, "data.image_column=key", check=False), "data.image_column", "not bytes")
    _one_error_line(cli(*run, "data.path_column=path", "data.label_column=key", check=False), "data.label_column")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 but nothing else of a parquet file")
    proc = cli(*PIXELS, f"data.path={corrupt}", "data.path_column=path", f"out={tmp_path / 'o2'}", check=False)
    _one_error_line(proc, str(corrupt), "data.path")


def _embedding_table(path: Path, x: np.ndarray, fixed: bool = False, row_group_size: int = 50) -> None:
    d = x.shape[1]
    values = pa.array(x.reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(values, d) if fixed else pa.ListArray.from_arrays(
        pa.array(np.arange(0, len(x) * d + 1, d, dtype=np.int32)), values
    )  # fmt: skip
    ids = pa.array([f"row{i}" for i in range(len(x))])
    pq.write_table(pa.table({"id": ids, "embedding": column}), path, row_group_size=row_group_size)


@pytest.mark.parametrize("fixed", [False, True])
def test_parquet_rows_equal_the_array(tmp_path, fixed):
    x = np.random.default_rng(0).normal(size=(233, 5)).astype(np.float32)
    _embedding_table(tmp_path / "e.parquet", x, fixed=fixed, row_group_size=40)
    rows = ParquetRows(tmp_path / "e.parquet")
    assert rows.shape == (233, 5) and rows.dtype == np.float32 and len(rows.groups.groups) == 6
    for part in (slice(0, 233), slice(35, 125), slice(200, 500), slice(7, 7), slice(3, 90, 7)):
        np.testing.assert_array_equal(rows[part], x[part])
    pick = np.asarray([232, 0, 41, 40, 39, 41, -1])
    np.testing.assert_array_equal(rows[pick], x[pick])
    with pytest.raises(IndexError):
        rows[np.asarray([233])]
    array, ids, labels, described = open_input(tmp_path / "e.parquet")
    assert list(ids) == [f"row{i}" for i in range(233)] and ids[5] == "row5" and labels is None
    assert described["kind"] == "parquet" and described["identity"]["rows"]


def test_cluster_a_parquet_table_equals_the_npy(tmp_path, cli):
    rng = np.random.default_rng(1)
    centers = rng.normal(scale=4.0, size=(6, 8))
    x = (centers[rng.integers(0, 6, 600)] + rng.normal(size=(600, 8))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    _embedding_table(tmp_path / "x.parquet", x, row_group_size=64)
    levels = "cluster.levels=[{k:24},{k:6}]"
    cli(*CLUSTER, levels, f"input.path={tmp_path / 'x.npy'}", f"out_dir={tmp_path / 'npy'}")
    cli(*CLUSTER, levels, f"input.path={tmp_path / 'x.parquet'}", f"out_dir={tmp_path / 'pq'}")
    for level in ("level1", "level2"):
        for name in ("assign.npy", "centroids.npy"):
            got = np.load(tmp_path / "pq" / "cluster" / "kmeans_flat" / level / name)
            np.testing.assert_array_equal(got, np.load(tmp_path / "npy" / "cluster" / "kmeans_flat" / level / name))
    # a second run finds the same input (identity of the table) and has nothing to do
    again = cli(*CLUSTER, levels, f"input.path={tmp_path / 'x.parquet'}", f"out_dir={tmp_path / 'pq'}")
    assert "nothing to do" in again.stdout + again.stderr


def test_bad_embedding_tables_give_one_error_line(tmp_path, cli):
    x = np.random.default_rng(2).normal(size=(50, 4)).astype(np.float32)
    good = tmp_path / "good.parquet"
    _embedding_table(good, x)
    run = [*CLUSTER, "cluster.levels=[{k:2}]", f"out_dir={tmp_path / 'o'}"]
    proc = cli(*run, f"input.path={good}", "input.column=vec", check=False)
    _one_error_line(proc, "input.column", "'vec'", str(good))
    _one_error_line(cli(*run, f"input.path={good}", "input.column=id", check=False), "input.column", "not a list")
    _one_error_line(
        cli(*run, f"input.path={good}", "input.id_column=key", check=False), "input.id_column", "'key'", str(good)
    )
    scalar = tmp_path / "scalar.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "embedding": [1.0, 2.0]}), scalar)
    _one_error_line(cli(*run, f"input.path={scalar}", check=False), "input.column", "double", str(scalar))
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "embedding": [[1.0, 2.0], [1.0], [3.0, 4.0]]}), ragged)
    _one_error_line(cli(*run, f"input.path={ragged}", check=False), "input.column", "row 1", str(ragged))
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _one_error_line(cli(*run, f"input.path={corrupt}", check=False), str(corrupt))


def test_bench_parquet_runs_small(tmp_path, load_script):
    bench = load_script("bench_parquet")
    rows = bench.main(
        ["--n", "3000", "--d", "8", "--row-group", "500", "--chunk", "256", "--k", "4", "--tmp", str(tmp_path)]
    )
    assert [r["impl"] for r in rows] == ["stream", "kmeans", "read_table"]  # stream / read_table sums checked inside
    assert all(r["peak_rss_mb"] > 0 and r["extra_mb"] >= 0 for r in rows)
