"""Embed stage: sources, WordNet parser, Hydra app runs, resume, unreadable images, configs."""

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import CONFIGS, compose_config
from PIL import Image

import curate.embed.config  # noqa: F401  (registers the schemas)
from curate.data.sources import ImageFolderSource, ImageListSource, jsonl_source, text_lines_source
from curate.embed import run_embed
from curate.io.store import StoreWriter, load_embeddings, load_labels, read_manifest

TEXTS = [
    "a small cat sleeps on the warm windowsill",
    "",
    "the stock market fell sharply on monday",
    "a kitten naps in the sun by the window",
    "   ",
    "interest rates rose and shares dropped",
    "photosynthesis turns light into chemical energy",
]


compose_embed = functools.partial(compose_config, "embed")


def _installed(package: str) -> bool:
    try:
        return subprocess.run(["dpkg", "-s", package], capture_output=True).returncode == 0
    except OSError:
        return False


needs_wordnet = pytest.mark.skipif(not _installed("wordnet-base"), reason="Debian package wordnet-base not installed")
needs_fashion = pytest.mark.skipif(
    not _installed("dataset-fashion-mnist"), reason="Debian package dataset-fashion-mnist not installed"
)


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


# ---- sources ---------------------------------------------------------------------------------
def test_text_lines_source(text_file):
    src = text_lines_source(text_file)
    assert len(src) == 5 and src.modality == "text" and src.ids_format == "npy"
    assert src.load(1) == TEXTS[2]
    assert src.ids(np.array([0, 1, 4])) == [0, 2, 6]  # ids are line numbers
    assert src.labels() is None
    assert len(text_lines_source(text_file, skip_empty=False)) == 7
    assert len(text_lines_source(text_file, limit=2)) == 2
    empty = text_file.parent / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="no non-empty line"):
        text_lines_source(empty)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        text_lines_source(text_file.parent / "missing.txt")


def test_jsonl_source(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [
        {"text": "alpha", "id": "a1", "topic": "x"},
        {"text": "beta", "id": "b2", "topic": "y"},
        {"text": "gamma", "id": "c3", "topic": "x"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    src = jsonl_source(path, id_field="id", label_field="topic")
    assert [src.load(i) for i in range(3)] == ["alpha", "beta", "gamma"]
    assert src.ids(np.arange(3)) == ["a1", "b2", "c3"] and src.ids_format == "txt"
    np.testing.assert_array_equal(src.labels(), [0, 1, 0])
    assert src.label_names == ["x", "y"]
    assert jsonl_source(path).ids(np.arange(3)) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"d.jsonl:1: no field 'body'"):
        jsonl_source(path, field="body")
    path.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: field 'text' is not a string"):
        jsonl_source(path)


@needs_wordnet
def test_wordnet_parser_on_real_package():
    from curate.data.datasets.wordnet import LEXNAMES, load_wordnet, parse_data_line

    wn = load_wordnet()
    assert len(wn) == 117659  # WordNet 3.0: 82115 nouns, 13767 verbs, 18156 adjectives, 3621 adverbs
    assert wn.ids[0] == "n00001740" and wn.lemmas[0] == ["entity"]
    assert wn.texts[0].startswith("that which is perceived or known or inferred")
    assert len(set(wn.ids)) == len(wn)
    assert wn.labels.dtype == np.int64 and sorted(np.unique(wn.labels)) == list(range(45))
    assert len(wn.label_names) == 45 and wn.label_names == list(LEXNAMES)
    assert wn.label_names[5] == "noun.animal" and wn.label_names[38] == "verb.motion"
    dog = wn.ids.index("n02084071")
    assert "domestic dog" in wn.lemmas[dog] and wn.label_names[wn.labels[dog]] == "noun.animal"
    assert wn.texts[dog].startswith("a member of the genus Canis")
    verbs = load_wordnet("verb")
    assert len(verbs) == 13767 and set(np.unique(verbs.labels)) == set(range(29, 44))
    assert all(i.startswith("v") for i in verbs.ids)
    adj = load_wordnet(["adj"], with_lemmas=True)
    assert adj.texts[0].startswith("able: (usually followed by")
    line = "00002312 00 a 02 abaxial 0 dorsal(p) 4 002 ;c 06037666 n 0000 | facing away from the axis  \n"
    assert parse_data_line(line) == ("00002312", 0, ["abaxial", "dorsal"], "facing away from the axis")
    assert parse_data_line("  1 This software and database is being provided\n") is None
    with pytest.raises(ValueError, match="unknown part of speech"):
        load_wordnet("pronoun")


def test_wordnet_missing_package_error(tmp_path, monkeypatch):
    from curate.data.datasets import wordnet

    wordnet.wordnet_dir.cache_clear()
    monkeypatch.setenv("WORDNET_DIR", str(tmp_path))
    try:
        with pytest.raises(FileNotFoundError, match="holds no data.noun"):
            wordnet.load_wordnet()
    finally:
        wordnet.wordnet_dir.cache_clear()


def _write_images(root: Path) -> None:
    rng = np.random.default_rng(0)
    for folder, count in (("cats", 3), ("dogs", 2)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(12 + i, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8)).save(root / "dogs" / "grey.bmp")
    (root / "dogs" / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    data = (root / "cats" / "0.png").read_bytes()
    (root / "cats" / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "cats" / "notes.txt").write_text("not an image extension: ignored")


def test_image_sources(tmp_path):
    _write_images(tmp_path / "imgs")
    src = ImageFolderSource(tmp_path / "imgs", labels_from_dirs=True)
    assert src.paths == [
        "cats/0.png",
        "cats/1.png",
        "cats/2.png",
        "cats/truncated.png",
        "dogs/0.png",
        "dogs/1.png",
        "dogs/corrupt.jpg",
        "dogs/grey.bmp",
    ]
    assert src.label_names == ["cats", "dogs"] and src.labels().tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert src.load(0).size == (10, 12)
    with pytest.raises(OSError):
        src.load(3)
    (tmp_path / "list.txt").write_text("# images\nimgs/cats/1.png\n\nimgs/dogs/0.png\n")
    listed = ImageListSource(tmp_path / "list.txt")
    assert len(listed) == 2 and listed.ids(np.arange(2)) == ["imgs/cats/1.png", "imgs/dogs/0.png"]
    assert listed.load(1).size == (10, 12)
    with pytest.raises(ValueError, match="no image"):
        ImageFolderSource(tmp_path / "imgs", extensions=[".tga"])


# ---- the app ---------------------------------------------------------------------------------
def test_embed_text_with_minilm(tmp_path, text_file, monkeypatch):
    import curate.embed.run as run_module

    built = []
    real_build = run_module.build_encoder
    monkeypatch.setattr(run_module, "build_encoder", lambda *a: built.append(real_build(*a)) or built[-1])
    out = tmp_path / "store"
    cfg = compose_embed(
        ["data=text_lines", f"data.path={text_file}", "encoder=minilm", f"out={out}", "num_workers=0",
         "progress=false", "shard_size=3", "batch_size=2"]
    )  # fmt: skip
    manifest = run_embed(cfg)
    assert manifest["dim"] == 384 and manifest["count"] == 5 and manifest["normalised"] is True
    assert manifest["model"] == "all-MiniLM-L6-v2" and manifest["source"]["kind"] == "text_lines"
    assert manifest["meta"]["encoder"]["path"].endswith("model")  # the bundled package's folder
    array, ids = load_embeddings(out, check=True)
    assert array.shape == (5, 384) and list(ids) == [0, 2, 3, 5, 6]
    x = array[0:5]
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sim = x @ x.T
    assert sim[0, 2] > 0.5 > sim[0, 1]  # cat/kitten closer than cat/stock market
    assert sim[1, 3] > sim[1, 4]  # two finance lines closer than finance/photosynthesis
    # rows are back in item order after the length-sorted batches
    reference = built[0].model.encode([TEXTS[i] for i in ids], normalize_embeddings=True)
    np.testing.assert_allclose(x, reference, atol=1e-4)


@needs_fashion
def test_embed_fashion_mnist_pixels_through_hydra_main(tmp_path, monkeypatch):
    from curate.data.datasets.fashion_mnist import CLASSES, load_fashion_mnist
    from curate.embed.app import main

    out = tmp_path / "fm"
    argv = [
        "curate.embed",
        "data=fashion_mnist",
        "data.split=test",
        "data.limit=40",
        "encoder=pixels",
        f"out={out}",
        "num_workers=0",
        "shard_size=16",
        "batch_size=8",
        "progress=false",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    manifest = read_manifest(out)
    assert manifest["count"] == 40 and manifest["dim"] == 784 and len(manifest["shards"]) == 3
    images, labels = load_fashion_mnist("test")
    array, ids = load_embeddings(out)
    assert list(ids) == list(range(40))
    raw = images[:40].reshape(40, -1).astype(np.float32) / 255
    np.testing.assert_allclose(array[0:40], raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    got, names = load_labels(out)
    np.testing.assert_array_equal(got, labels[:40])
    assert names == list(CLASSES)
    assert (out / ".hydra" / "config.yaml").exists()  # Hydra's run dir is the store


@needs_fashion
def test_embed_fashion_long_tailed_pixels_pca(tmp_path):
    cfg = compose_embed(
        [
            "data=fashion_mnist",
            "data.split=test",
            "data.long_tailed=true",
            "data.lt_max_per_class=30",
            "data.lt_min_per_class=3",
            "encoder=pixels",
            "encoder.pca_dim=8",
            "encoder.pca_fit_items=60",
            "encoder.image_size=14",
            f"out={tmp_path / 'lt'}",
            "num_workers=0",
            "progress=false",
            "normalize=false",
        ]
    )
    manifest = run_embed(cfg)
    labels, _ = load_labels(tmp_path / "lt")
    counts = np.bincount(labels, minlength=10)
    assert counts.max() == 30 and counts.min() == 3 and manifest["count"] == counts.sum()
    assert manifest["dim"] == 8 and manifest["normalised"] is False
    comps = np.load(tmp_path / "lt" / "pca-components.npy")
    np.testing.assert_allclose(comps @ comps.T, np.eye(8), atol=1e-5)  # orthonormal axes of 14x14 pixels
    assert comps.shape == (8, 196)


def _files(folder: Path) -> dict[str, bytes]:
    keep = ("emb-", "ids-", "labels", "label_names", "manifest", "skipped")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith(keep)}


def test_resume_after_kill(tmp_path, text_file, monkeypatch):
    base = [
        "data=text_lines",
        f"data.path={text_file}",
        "encoder=random_projection",
        "encoder.dim=16",
        "num_workers=0",
        "progress=false",
        "shard_size=2",
        "batch_size=1",
    ]
    reference = run_embed(compose_embed([*base, f"out={tmp_path / 'ref'}"]))
    assert len(reference["shards"]) == 3

    written: list[int] = []
    real_write = StoreWriter.write_shard

    def killed_after_two(self, index, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")  # what a SIGINT / preemption looks like
        written.append(index)
        return real_write(self, index, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(StoreWriter, "write_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_embed(compose_embed([*base, f"out={out}"]))
    assert written == [0, 1] and not (out / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match="never finalised"):
        load_embeddings(out)

    resumed: list[int] = []

    def spy(self, index, *args, **kwargs):
        resumed.append(index)
        return real_write(self, index, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "write_shard", spy)
    run_embed(compose_embed([*base, f"out={out}"]))
    assert resumed == [2]  # only the missing shard is embedded again
    assert _files(out) == _files(tmp_path / "ref")  # byte-identical store

    # a finished store is reused; changed settings are refused unless overwrite=true
    resumed.clear()
    run_embed(compose_embed([*base, f"out={out}"]))
    assert resumed == []
    with pytest.raises(ValueError, match="other settings"):
        run_embed(compose_embed([*base, f"out={out}", "encoder.dim=8"]))
    manifest = run_embed(compose_embed([*base, f"out={out}", "encoder.dim=8", "overwrite=true"]))
    assert manifest["dim"] == 8 and resumed == [0, 1, 2]
    # a partial store that lost a shard (its record deleted) redoes that shard and the missing ones
    shutil.rmtree(out)
    written.clear()
    monkeypatch.setattr(StoreWriter, "write_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_embed(compose_embed([*base, f"out={out}"]))
    (out / ".parts" / "shard-00000.json").unlink()
    resumed.clear()
    monkeypatch.setattr(StoreWriter, "write_shard", spy)
    run_embed(compose_embed([*base, f"out={out}"]))
    assert resumed == [0, 2] and _files(out) == _files(tmp_path / "ref")


def _embed_rank(rank: int, world: int, port: int, overrides: list[str]) -> None:
    import torch.distributed as torch_dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    try:
        run_embed(compose_embed(overrides))
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def test_two_ranks_write_the_same_store_as_one(tmp_path, text_file, free_port):
    """Each rank embeds its slice of shards; the store does not depend on the world size."""
    base = [
        "data=text_lines",
        f"data.path={text_file}",
        "encoder=random_projection",
        "encoder.dim=16",
        "num_workers=0",
        "progress=false",
        "shard_size=2",
        "batch_size=2",
    ]
    run_embed(compose_embed([*base, f"out={tmp_path / 'one'}"]))
    mp.spawn(_embed_rank, args=(2, free_port, [*base, f"out={tmp_path / 'two'}"]), nprocs=2)
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    assert len(read_manifest(tmp_path / "two")["shards"]) == 3


def test_image_folder_with_corrupt_files(tmp_path):
    _write_images(tmp_path / "imgs")
    out = tmp_path / "store"
    cfg = compose_embed(
        [
            "data=image_folder",
            f"data.root={tmp_path / 'imgs'}",
            "data.labels_from_dirs=true",
            "encoder=random_projection",
            "encoder.dim=8",
            "encoder.image_size=8",
            f"out={out}",
            "num_workers=2",
            "progress=false",
            "shard_size=3",
            "batch_size=2",
        ]
    )
    manifest = run_embed(cfg)
    assert manifest["count"] == 6 and manifest["skipped"] == 2
    skipped = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())
    assert sorted(skipped) == ["cats/truncated.png", "dogs/corrupt.jpg"]
    assert all(reason for reason in skipped.values())
    array, ids = load_embeddings(out)
    assert list(ids) == [
        "cats/0.png",
        "cats/1.png",
        "cats/2.png",
        "dogs/0.png",
        "dogs/1.png",
        "dogs/grey.bmp",
    ]
    assert np.isfinite(array[0:6]).all()
    labels, names = load_labels(out)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1] and names == ["cats", "dogs"]


def test_image_list_with_pixels_needs_a_size(tmp_path):
    _write_images(tmp_path / "imgs")
    (tmp_path / "list.txt").write_text("imgs/cats/0.png\nimgs/cats/1.png\nimgs/missing.png\n")
    base = [
        "data=image_list",
        f"data.path={tmp_path / 'list.txt'}",
        "encoder=pixels",
        "num_workers=0",
        "progress=false",
    ]
    with pytest.raises(ValueError, match="different shapes.*image_size"):
        run_embed(compose_embed([*base, f"out={tmp_path / 'a'}"]))
    manifest = run_embed(compose_embed([*base, f"out={tmp_path / 'b'}", "encoder.image_size=6", "encoder.channels=3"]))
    assert manifest["count"] == 2 and manifest["dim"] == 108 and manifest["skipped"] == 1
    assert (tmp_path / "b" / "skipped.txt").read_text().startswith("imgs/missing.png\tFileNotFoundError")


# ---- configs ---------------------------------------------------------------------------------
def test_every_source_and_encoder_config_composes():
    sources = sorted(p.stem for p in Path(CONFIGS, "data").glob("*.yaml"))
    encoders = sorted(p.stem for p in Path(CONFIGS, "encoder").glob("*.yaml"))
    assert sources == [
        "fashion_mnist",
        "fashion_mnist_test",
        "image_folder",
        "image_list",
        "jsonl",
        "npy",
        "text_lines",
        "wordnet",
    ]
    assert encoders == ["minilm", "pixels", "random_projection", "selfsup", "timm"]
    for source in sources:
        for encoder in encoders:
            cfg = compose_embed([f"data={source}", f"encoder={encoder}", "out=x"])
            assert cfg.data.kind == source.removesuffix("_test") and cfg.out == "x"
    default = compose_embed([])
    assert default.data.kind == "fashion_mnist" and default.encoder.kind == "pixels" and default.shard_size == 50000


@pytest.mark.parametrize(
    "override",
    ["data.pth=x.txt", "encoder.nme=resnet18", "shardsize=10", "data.split=train"],
)
def test_misspelled_key_is_an_error(override):
    base = ["data=text_lines", "encoder=minilm"]  # text_lines has no `split`
    with pytest.raises(Exception, match=override.split("=")[0].split(".")[-1]):
        compose_embed([*base, override])


def test_invalid_values(tmp_path, text_file):
    with pytest.raises(Exception, match="shard_size"):
        compose_embed(["shard_size=many"])
    with pytest.raises(Exception, match="dtype=int8") as refused:
        compose_embed(["dtype=int8"])  # a choice: refused when composing
    assert "expected one of [float32, float16]" in str(refused.value.__cause__)
    base = ["data=text_lines", f"data.path={text_file}", f"out={tmp_path / 'store'}", "encoder=random_projection"]
    for override, field in [
        ("shard_size=0", "shard_size"),
        ("num_workers=-1", "num_workers"),
        ("device=tpu", "device"),
    ]:
        with pytest.raises(ValueError, match=field):
            run_embed(compose_embed([*base, override]))
    with pytest.raises(ValueError, match="encoder.checkpoint"):
        run_embed(compose_embed([*base, "encoder=timm", "encoder.name=resnet18"]))
    with pytest.raises(ValueError, match="embeds images; the source gives text"):
        run_embed(compose_embed([*base, "encoder=pixels"]))
