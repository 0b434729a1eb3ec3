"""Webdataset input: tar shards made here, indexed by member offsets, embedded through the real CLI."""

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import compose_config
from PIL import Image

from curate.data.webdataset_source import INDEX_FOLDER, WebdatasetSource, index_shard
from curate.io.shards import plan_item_shards
from curate.io.store import load_embeddings, read_manifest

COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (10, 250, 250), (250, 10, 250), (90, 90, 90)]
PIXELS = ["data=webdataset", "encoder=pixels", "encoder.channels=3", "num_workers=0", "progress=false"]


def encode(colour, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    """A webdataset shard: each sample's members ``<key>.<suffix>`` in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))


def make_shards(folder: Path, missing_cls: bool = False) -> dict[str, dict[str, bytes]]:
    """Three shards of 3, 3 and 2 samples: distinct colours, one unreadable image (``s04``), one
    sample without an image member (``s06``, only ``json``); with ``missing_cls`` ``s07`` has no cls.

    Returns:
        ``{key: {suffix: bytes}}`` as written.
    """
    samples = []
    for i in range(8):
        key = f"s{i:02d}"
        members = {"json": json.dumps({"i": i}).encode()}
        if i == 4:
            members["jpg"] = b"\xff\xd8 not a jpeg"
        elif i != 6:
            members["txt"] = b"caption"  # not an image: the image is the first jpg/jpeg/png/webp member
            members["webp" if i == 5 else "png"] = encode(COLOURS[i % len(COLOURS)], "WEBP" if i == 5 else "PNG")
        if not (missing_cls and i == 7):
            members["cls"] = str(i % 3).encode()
        samples.append((key, members))
    write_tar(folder / "shard-000000.tar", samples[:3])
    write_tar(folder / "shard-000001.tar", samples[3:6])
    write_tar(folder / "shard-000002.tar", samples[6:])
    return dict(samples)


def test_index_reads_every_member_byte_exact(tmp_path):
    written = make_shards(tmp_path / "shards")
    source = WebdatasetSource(str(tmp_path / "shards"))
    assert source.keys == list(written) and len(source) == 8
    np.testing.assert_array_equal(source.groups(), [0, 3, 6, 8])
    for i, members in enumerate(written.values()):
        assert source.members(i) == members  # every member, byte for byte, through the offsets
        image = next((members[s] for s in ("png", "webp", "jpg") if s in members), None)
        if image is None:
            with pytest.raises(ValueError, match="has no jpg/jpeg/png/webp member"):
                source.image_bytes(i)
        else:
            assert source.image_bytes(i) == image
    assert np.array_equal(source.load(0), np.asarray(Image.open(io.BytesIO(written["s00"]["png"]))))
    np.testing.assert_array_equal(source.labels(), [i % 3 for i in range(8)])
    # the same samples as webdataset's own reader gives (its key rules, its grouping)
    import webdataset as wds

    reference = list(wds.WebDataset(str(tmp_path / "shards" / "shard-{000000..000002}.tar"), shardshuffle=False))
    assert [s["__key__"] for s in reference] == source.keys
    for i, sample in enumerate(reference):
        assert {k: v for k, v in sample.items() if not k.startswith("__")} == source.members(i)


def test_brace_pattern_limit_and_missing_cls(tmp_path, caplog):
    make_shards(tmp_path / "shards", missing_cls=True)
    source = WebdatasetSource(str(tmp_path / "shards" / "shard-{000001..000002}.tar"), limit=4)
    assert source.keys == ["s03", "s04", "s05", "s06"]
    np.testing.assert_array_equal(source.groups(), [0, 3, 4])
    with caplog.at_level("WARNING"):
        assert WebdatasetSource(str(tmp_path / "shards")).labels() is None  # s07 has no cls
    assert "1 of 8 samples have no cls member" in caplog.text


def test_plan_item_shards_never_crosses_a_tar_shard():
    groups = np.asarray([0, 3, 3, 8, 9])  # an empty tar shard included
    bounds, first, last = plan_item_shards(9, 2, 0, 1, groups)
    np.testing.assert_array_equal(bounds, [0, 2, 3, 5, 7, 8, 9])
    assert (first, last) == (0, 6)
    owned = [plan_item_shards(9, 2, r, 2, groups)[1:] for r in range(2)]
    assert owned == [(0, 2), (2, 6)]  # rank 0: tar shards 0 and 1 (empty); rank 1: shards 2 and 3
    # without groups: the uniform cuts of before
    bounds, first, last = plan_item_shards(5, 2, 1, 2)
    np.testing.assert_array_equal(bounds, [0, 2, 4, 5])
    assert (first, last) == (2, 3)


def _image_folder(tmp_path: Path, written: dict) -> Path:
    """The readable images of the shards as files named by key: the reference store's input."""
    folder = tmp_path / "folder"
    for key, members in written.items():
        for suffix in ("png", "webp"):
            if suffix in members:
                folder.mkdir(exist_ok=True)
                (folder / f"{key}.{suffix}").write_bytes(members[suffix])
    return folder


def test_embed_webdataset_cli(tmp_path, cli):
    written = make_shards(tmp_path / "shards")
    out = tmp_path / "store"
    args = ["-m", "curate.embed", *PIXELS, f"data.path={tmp_path / 'shards'}", f"out={out}", "shard_size=2"]
    first = cli(*args)
    emb, ids = load_embeddings(out)
    assert list(ids) == ["s00", "s01", "s02", "s03", "s05", "s07"]
    skipped = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())
    assert sorted(skipped) == ["s04", "s06"] and "no jpg/jpeg/png/webp member" in skipped["s06"]
    np.testing.assert_array_equal(np.load(out / "labels.npy"), [0, 1, 2, 0, 2, 1])
    manifest = read_manifest(out)
    assert [s["items"] for s in manifest["shards"]] == [[0, 2], [2, 3], [3, 5], [5, 6], [6, 8]]  # cut per tar shard
    # the same rows as the same images embedded from a folder
    folder = _image_folder(tmp_path, written)
    ref = tmp_path / "ref"
    cli("-m", "curate.embed", *PIXELS, "data=image_folder", f"data.root={folder}", f"out={ref}")
    ref_emb, ref_ids = load_embeddings(ref)
    assert [Path(i).stem for i in ref_ids] == list(ids)
    np.testing.assert_allclose(np.asarray(emb), np.asarray(ref_emb), rtol=0, atol=0)

    # the index is cached in the store folder and reused by the next run
    index_files = sorted((out / INDEX_FOLDER).glob("*.json"))
    assert len(index_files) == 3
    stamps = [p.stat().st_mtime_ns for p in index_files]
    assert "3 shards (0 reused" in first.stdout + first.stderr
    again = cli(*args, "overwrite=true")
    assert "3 shards (3 reused" in again.stdout + again.stderr
    assert [p.stat().st_mtime_ns for p in index_files] == stamps
    # a shard that changed is indexed again (and only that one)
    shard = tmp_path / "shards" / "shard-000002.tar"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    third = cli(*args, "overwrite=true")
    assert "3 shards (2 reused" in third.stdout + third.stderr
    assert len(list((out / INDEX_FOLDER).glob("*.json"))) == 4
    assert index_shard(shard)["shard"]["mtime_ns"] == shard.stat().st_mtime_ns


def _embed_rank(rank: int, world: int, port: int, overrides: list[str]) -> None:
    import torch.distributed as torch_dist

    from curate.embed import run_embed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    try:
        run_embed(compose_config("embed", overrides))
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def _store_files(folder: Path) -> dict[str, bytes]:
    keep = ("emb-", "ids-", "labels", "manifest", "skipped")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith(keep)}


def test_two_ranks_write_the_same_store_as_one(tmp_path, free_port, monkeypatch):
    make_shards(tmp_path / "shards")
    base = [*PIXELS, f"data.path={tmp_path / 'shards'}", "shard_size=2", "device=cpu"]
    from curate.embed import run_embed

    run_embed(compose_config("embed", [*base, f"out={tmp_path / 'one'}"]))
    mp.spawn(_embed_rank, args=(2, free_port, [*base, f"out={tmp_path / 'two'}"]), nprocs=2)
    assert _store_files(tmp_path / "two") == _store_files(tmp_path / "one")
    # both ranks indexed (3 shards between them) into the shared cache
    assert len(list((tmp_path / "two" / INDEX_FOLDER).glob("*.json"))) == 3


def _one_error_line(proc, *expected: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_bad_shards_give_one_error_line(tmp_path, cli):
    make_shards(tmp_path / "shards")
    run = ["-m", "curate.embed", *PIXELS, f"out={tmp_path / 'out'}"]
    bad = tmp_path / "corrupt" / "shard-000000.tar"
    bad.parent.mkdir()
    bad.write_bytes(b"this is no tar archive" * 40)
    _one_error_line(cli(*run, f"data.path={bad.parent}", check=False), "data.path", str(bad))
    pattern = tmp_path / "shards" / "shard-{000000..000003}.tar"
    # a brace pattern is quoted for Hydra's override parser, which reads a bare { as a dict
    _one_error_line(cli(*run, f"data.path='{pattern}'", check=False), "shard-000003.tar", "not found")
    write_tar(tmp_path / "badcls" / "a.tar", [("k1", {"png": encode(COLOURS[0]), "cls": b"cat"})])
    _one_error_line(cli(*run, f"data.path={tmp_path / 'badcls'}", check=False), "a.tar", "'k1'", "cls")
    write_tar(tmp_path / "dup" / "a.tar", [("k1", {"png": encode(COLOURS[0])})])
    write_tar(tmp_path / "dup" / "b.tar", [("k1", {"png": encode(COLOURS[1])})])
    _one_error_line(cli(*run, f"data.path={tmp_path / 'dup'}", check=False), "'k1'", "a.tar", "b.tar")
    _one_error_line(cli(*run, f"data.path={tmp_path / 'empty'}", check=False), "data.path")


def test_pipeline_and_trainer_read_the_shards(tmp_path, fmnist_folders):
    """curate.pipeline embeds, clusters and samples a pool of webdataset shards; the trainer reads
    the sampled items out of the same shards by key (its index cached in its own folder)."""
    from test_pipeline import TINY

    from curate.pipeline import run_pipeline

    pool = sorted((fmnist_folders / "pool").rglob("*.png"))
    classes = sorted({p.parent.name for p in pool})
    samples = [(p.stem, {"png": p.read_bytes(), "cls": str(classes.index(p.parent.name)).encode()}) for p in pool]
    for s in range(3):
        write_tar(tmp_path / "shards" / f"pool-{s:06d}.tar", samples[s * 50 : (s + 1) * 50])
    cfg = compose_config(
        "pipeline",
        [
            "data=webdataset",
            f"data.path={tmp_path / 'shards'}",
            f"eval.train_root={fmnist_folders / 'train'}",
            f"eval.test_root={fmnist_folders / 'test'}",
            "name=tiny",
            *TINY,
            "stages=[embed,cluster,sample,train]",
        ],
    )
    summary = run_pipeline(cfg, tmp_path / "tiny")
    root = tmp_path / "tiny"
    assert {s for s, e in summary["stages"].items() if e["ran"]} == {"embed", "cluster", "sample", "train"}
    _, ids = load_embeddings(root / "embed")
    assert list(ids) == [key for key, _ in samples]
    np.testing.assert_array_equal(np.load(root / "embed" / "labels.npy"), [int(m["cls"]) for _, m in samples])
    sampled = (root / "sample" / "ids.txt").read_text().split()
    assert (root / "train" / "train_ids.txt").read_text().split() == sampled and len(sampled) == 40
    assert len(list((root / "embed" / INDEX_FOLDER).glob("*.json"))) == 3
    assert len(list((root / "train" / INDEX_FOLDER).glob("*.json"))) == 3
