"""``python -m selfsup.eval`` as a user runs it: labels matched by class name, outputs never
inside inputs, one error line for a bad backbone file."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_errors import _one_error_line
from timm.models.vision_transformer import VisionTransformer

from selfsup.export import backbone_payload, save_backbone

GREY = {"c0": 20, "c1": 128, "c2": 235}  # well separated grey levels: pixels alone tell the classes apart
KWARGS = {"img_size": 8, "patch_size": 4, "in_chans": 1, "embed_dim": 8, "depth": 1, "num_heads": 2, "num_classes": 0}


def _folder(root: Path, classes: dict[str, int], seed: int) -> Path:
    """``root/<class>/<i>.png``: 6 grey 8x8 images per class around its level (noise +-6)."""
    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(GREY[name] + rng.integers(-6, 7, size=(8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A tiny ViT ``backbone.pt`` (untrained: the tests score the pixels reference with it)."""
    path = tmp_path_factory.mktemp("backbone") / "backbone.pt"
    torch.manual_seed(0)
    save_backbone(path, backbone_payload(VisionTransformer(**KWARGS).state_dict(), KWARGS, [0.5], [0.25]))
    return path


def _eval_args(backbone: Path, train: Path, test: Path, out: Path) -> list[str]:
    return [
        "-m",
        "selfsup.eval",
        f"backbone={backbone}",
        f"out={out}",
        "data@data.train=image_folder",
        f"data.train.root={train}",
        "data.train.labels_from_dirs=true",
        "data@data.test=image_folder",
        f"data.test.root={test}",
        "data.test.labels_from_dirs=true",
        "eval.reference=pixels",
        "eval.knn_k=3",
        "eval.linear_epochs=30",
        "eval.linear_lrs=[0.1]",
        "eval.num_workers=0",
        "eval.device=cpu",
    ]


@pytest.mark.parametrize(
    "train_classes, test_classes",
    [
        (("c0", "c1"), ("c1",)),  # the test folder lacks a train class: its only folder is numbered 0
        (("c0", "c1", "c2"), ("c0", "c2")),  # the train folder has an extra class
    ],
)
def test_labels_are_matched_by_class_name(tmp_path, cli, backbone, train_classes, test_classes):
    train = _folder(tmp_path / "train", dict.fromkeys(train_classes, 6), seed=0)
    test = _folder(tmp_path / "test", dict.fromkeys(test_classes, 4), seed=1)
    cli(*_eval_args(backbone, train, test, tmp_path / "ev"))
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    # well separated grey levels: the pixels reference is right on every test image
    assert report["knn"]["top1"] == 1.0 and report["linear"]["top1"] == 1.0
    assert report["classes"] == list(train_classes)  # the train folder's ids are kept
    assert report["classes_matched_by"] == "name"
    assert report["train_classes"] == list(train_classes) and report["test_classes"] == list(test_classes)


def test_a_test_class_the_train_set_lacks_is_scored_wrong_not_shifted(tmp_path, cli, backbone):
    train = _folder(tmp_path / "train", {"c0": 6, "c2": 6}, seed=0)
    test = _folder(tmp_path / "test", {"c0": 4, "c1": 4, "c2": 4}, seed=1)
    cli(*_eval_args(backbone, train, test, tmp_path / "ev"), "eval.tail_classes=[2]")
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["classes"] == ["c0", "c2", "c1"]  # the train folder's ids first, then the test's others
    assert report["train_classes"] == ["c0", "c2"] and report["test_classes"] == ["c0", "c2", "c1"]
    assert report["train_class_counts"] == [6, 6, 0]
    for probe in ("knn", "linear"):  # c0 and c2 right; c1 can never be predicted
        assert report[probe]["top1"] == pytest.approx(8 / 12)
        assert report[probe]["per_class"] == [1.0, 1.0, 0.0]
        assert report[probe]["tail_mean"] == 0.0  # tail class 2 is c1


def test_eval_output_inside_an_input_is_refused_before_anything_is_written(tmp_path, cli, backbone):
    train = _folder(tmp_path / "train", {"c0": 2, "c1": 2}, seed=0)
    test = _folder(tmp_path / "test", {"c0": 2, "c1": 2}, seed=1)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out, key in ((train, "data.train.root"), (train / "eval", "data.train.root"), (test, "data.test.root")):
        _one_error_line(cli(*_eval_args(backbone, train, test, out), check=False), "overlaps the input", key)
    _one_error_line(cli(*_eval_args(backbone, train, test, backbone.parent), check=False), "backbone=")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no .hydra/, no eval.json


def test_a_bad_backbone_file_is_one_error_line(tmp_path, cli):
    train = _folder(tmp_path / "train", {"c0": 2, "c1": 2}, seed=0)
    empty = tmp_path / "empty.pt"
    empty.touch()
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "selfsup.backbone/1", "payload": Fraction(1, 3)}, pickled)  # not a tensor: a pickle
    for path, why in ((empty, "it is empty"), (pickled, "pickled Python objects")):
        _one_error_line(cli(*_eval_args(path, train, train, tmp_path / f"ev_{path.stem}"), check=False), str(path), why)
