"""Data out: a clustering's labels.parquet, a sample's selected.parquet and export=webdataset
shards, through the real CLI on small data made here."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.io.store import write_store
from curate.io.wds import ShardWriter, file_id_of_key, file_key, file_member_ext, split_member


def _cluster(cli, path: Path, out: Path, levels: str, *extra: str) -> Path:
    cli(
        "-m",
        "curate.cluster",
        "input.toy=null",
        f"input.path={path}",
        "cluster=kmeans_flat",
        f"cluster.levels={levels}",
        "cluster.n_iter=5",
        f"out_dir={out}",
        "name=c",
        *extra,
    )
    return out / "cluster" / "c"


def _sample(cli, out: Path, *extra: str, check: bool = True):
    return cli("-m", "curate.sample", f"out_dir={out}", "name=c", "plot=false", *extra, check=check)


def _composed(cdir: Path, n: int) -> list[list[int]]:
    """Brute force: each item's cluster at every level, one item at a time."""
    assigns = [np.load(p) for p in sorted(cdir.glob("level*/assign.npy"))]
    table = []
    for item in range(n):
        label, path = int(assigns[0][item]), [int(assigns[0][item])]
        for assign in assigns[1:]:
            label = int(assign[label])
            path.append(label)
        table.append(path)
    return table


def test_labels_and_selected_of_a_bare_npy(tmp_path, toy, cli):
    out = tmp_path / "out"
    cdir = _cluster(cli, toy, out, "[{k:40},{k:8},{k:3}]")
    table = pq.read_table(cdir / "labels.parquet")
    assert table.column_names == ["id", "level_1", "level_2", "level_3"]
    assert str(table.schema.field("id").type) == "string" and str(table.schema.field("level_2").type) == "int64"
    n = np.load(toy).shape[0]
    assert table.column("id").to_pylist() == [str(i) for i in range(n)]  # no ids: the row number as text
    levels = np.stack([table.column(f"level_{t}").to_numpy() for t in (1, 2, 3)], axis=1)
    np.testing.assert_array_equal(levels, np.asarray(_composed(cdir, n)))
    assert "labels.parquet" in json.loads((cdir / "manifest.json").read_text())["files"]

    _sample(cli, out, "targets=[100,0.2]")
    for budget in ("target_100", "target_0.2"):
        folder = out / "sample" / "c" / budget
        selected = pq.read_table(folder / "selected.parquet")
        assert selected.column_names == ["id", "index"] and str(selected.schema.field("index").type) == "int64"
        indices = np.load(folder / "indices.npy")
        np.testing.assert_array_equal(selected.column("index").to_numpy(), indices)
        assert selected.column("id").to_pylist() == [str(i) for i in indices]


def test_labels_and_selected_of_a_store_subset(tmp_path, cli):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    ids = [f"item-{i:04d}" for i in range(500)]
    store = tmp_path / "store"
    write_store(store, x, ids, shard_size=170)
    subset = np.sort(rng.choice(500, size=321, replace=False))
    np.save(tmp_path / "rows.npy", subset)
    out = tmp_path / "out"
    cdir = _cluster(cli, store, out, "[{k:20},{k:4}]", f"input.subset={tmp_path / 'rows.npy'}")
    table = pq.read_table(cdir / "labels.parquet")
    assert table.num_rows == len(subset)
    assert table.column("id").to_pylist() == [ids[r] for r in subset]  # input order of the clustered items
    levels = np.stack([table.column("level_1").to_numpy(), table.column("level_2").to_numpy()], axis=1)
    np.testing.assert_array_equal(levels, np.asarray(_composed(cdir, len(subset))))

    _sample(cli, out, "targets=[50]")
    folder = out / "sample" / "c"
    selected = pq.read_table(folder / "selected.parquet")
    indices = np.load(folder / "indices.npy")
    np.testing.assert_array_equal(selected.column("index").to_numpy(), indices)
    assert set(indices) <= set(subset)
    assert selected.column("id").to_pylist() == [ids[i] for i in indices]
    assert selected.column("id").to_pylist() == (folder / "ids.txt").read_text().splitlines()


def test_labels_parquet_is_written_in_batches(tmp_path):
    from curate.io.tables import write_labels

    rng = np.random.default_rng(0)
    a1, a2 = rng.integers(0, 7, 1000), rng.integers(0, 3, 7)
    write_labels(tmp_path / "l.parquet", [a1, a2], [f"x{i}" for i in range(1000)], batch_rows=64)
    meta = pq.ParquetFile(tmp_path / "l.parquet").metadata
    assert meta.num_rows == 1000 and meta.num_row_groups == 16  # one row group per batch
    table = pq.read_table(tmp_path / "l.parquet")
    np.testing.assert_array_equal(table.column("level_2").to_numpy(), a2[a1])


# ---- webdataset export -------------------------------------------------------------------------
def _image_folder(root: Path) -> dict[str, bytes]:
    """Small PNG / JPEG / BMP files (one with dots in its name, one corrupt); returns id -> bytes
    of the readable ones."""
    rng = np.random.default_rng(0)
    files = {}
    names = [f"cats/{i}.png" for i in range(5)] + [f"dogs/{i}.jpg" for i in range(4)]
    names += ["dogs/img.v2.PNG", "top.bmp", "birds/100%.png"]
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            path, format={"png": "PNG", "jpg": "JPEG", "bmp": "BMP"}[name.rsplit(".", 1)[1].lower()]
        )
        files[name] = path.read_bytes()
    (root / "cats" / "broken.png").write_bytes(b"not a png")  # skipped by embed: rows != items in its shard
    return files


def _read_shards(folder: Path) -> tuple[list[str], dict[str, dict[str, bytes]], list[int]]:
    """Keys in order, {key: {ext: bytes}} and members per shard, read with Python's tarfile."""
    keys, samples, counts = [], {}, []
    for shard in sorted(folder.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
            shard_keys = []
            for member in members:
                key, ext = split_member(member.name)
                if not shard_keys or shard_keys[-1] != key:
                    shard_keys.append(key)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
        keys += shard_keys
        counts.append(len(shard_keys))
    return keys, samples, counts


def test_export_webdataset_is_byte_exact_and_keys_round_trip(tmp_path, cli):
    files = _image_folder(tmp_path / "imgs")
    store = tmp_path / "store"
    cli(
        "-m",
        "curate.embed",
        "data=image_folder",
        f"data.root={tmp_path / 'imgs'}",
        "encoder=random_projection",
        "encoder.dim=8",
        "encoder.image_size=8",
        f"out={store}",
        "num_workers=0",
        "progress=false",
        "shard_size=4",
    )
    out = tmp_path / "out"
    _cluster(cli, store, out, "[{k:4},{k:2}]")
    _sample(cli, out, "targets=[1.0,5]", "export=webdataset", "export_shard_size=3")
    for budget in ("target_1.0", "target_5"):
        folder = out / "sample" / "c" / budget
        keys, samples, counts = _read_shards(folder)
        selected = (folder / "ids.txt").read_text().splitlines()
        assert counts == [3] * (len(selected) // 3) + ([len(selected) % 3] if len(selected) % 3 else [])
        assert keys == [file_key(i) for i in selected]  # in selection order, one sample per item
        for key in keys:
            (ext, data), *rest = samples[key].items()
            assert not rest
            item_id = file_id_of_key(key, ext)  # the rule of curate.io.wds: back to the id
            assert item_id in selected and data == files[item_id]
        stats = json.loads((folder / "stats.json").read_text())["export"]
        assert stats["items"] == len(selected) and [s["count"] for s in stats["shards"]] == counts
    everything = _read_shards(out / "sample" / "c" / "target_1.0")[1]
    assert len(everything) == len(files)  # all readable items, the corrupt one was never embedded
    assert file_key("dogs/img.v2.PNG") in everything and file_key("birds/100%.png") in everything

    # a re-draw with a bigger shard size leaves no stale shard of the first export
    _sample(cli, out, "targets=[1.0,5]", "export=webdataset", "export_shard_size=100")
    assert [p.name for p in (out / "sample" / "c" / "target_1.0").glob("*.tar")] == ["shard-00000.tar"]
    _sample(cli, out, "targets=[1.0,5]")  # and a draw without export leaves none
    assert not list((out / "sample" / "c").rglob("*.tar"))


def test_export_refuses_a_changed_folder_and_a_bare_npy(tmp_path, toy, cli):
    out = tmp_path / "out"
    _cluster(cli, toy, out, "[{k:10}]")
    proc = _sample(cli, out, "targets=[5]", "export=webdataset", check=False)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "bare .npy" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((out / "sample" / "c").glob("*.parquet"))  # refused before anything is written

    files = _image_folder(tmp_path / "imgs")
    store = tmp_path / "store"
    embed = ["data=image_folder", f"data.root={tmp_path / 'imgs'}", "encoder=random_projection"]
    cli("-m", "curate.embed", *embed, "encoder.dim=4", "encoder.image_size=8", f"out={store}", "progress=false")
    out2 = tmp_path / "out2"
    _cluster(cli, store, out2, "[{k:3}]")
    (tmp_path / "imgs" / "cats" / "0a.png").write_bytes(files["cats/0.png"])  # the folder changed since
    proc = _sample(cli, out2, "targets=[5]", "export=webdataset", check=False)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "embed it again" in proc.stderr


@pytest.mark.parametrize("item_id", ["cats/0.png", "a/img.v2.JPG", "100%.png", "v1.0/x.jpeg", "/abs/p.png"])
def test_file_keys_round_trip_through_webdataset_naming(item_id, tmp_path):
    key, ext = file_key(item_id), file_member_ext(item_id)
    assert split_member(f"{key}.{ext}") == (key, ext)  # a webdataset reader splits it back so
    assert file_id_of_key(key, ext) == item_id
    with ShardWriter(tmp_path, 2) as writer:
        writer.write(key, {ext: b"bytes"})
    with tarfile.open(tmp_path / "shard-00000.tar") as tar:
        (member,) = tar.getmembers()
        assert member.name == f"{key}.{ext}" and member.mtime == 0


def test_webdataset_reader_sees_the_exported_samples(tmp_path):
    wds = pytest.importorskip("webdataset")
    samples = [(file_key(f"d/{i}.v{i}.png"), {"png": bytes([i]) * 5, "cls": str(i).encode()}) for i in range(5)]
    ShardWriter(tmp_path, 2).write_all(samples)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    urls = [str(p) for p in sorted(tmp_path.glob("*.tar"))]
    read = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in read] == [key for key, _ in samples]
    assert [s["png"] for s in read] == [m["png"] for _, m in samples]
