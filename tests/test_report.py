"""curate.report: balance numbers, and the HTML report on a 2-D toy, a text store and an image store."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from curate.analysis import sample_balance
from curate.core.atomic import atomic_save_npy
from curate.hierarchy import HierarchicalKMeans
from curate.io.store import write_store
from curate.report import build_report, main
from research.neighbours import knn_agreement, knn_radius


class _Page(HTMLParser):
    """Collects <img src>, section ids, list items and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.sections: list[str] = []
        self.items = 0
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"] or "")
        if tag == "section":
            self.sections.append(a.get("id") or "")
        if tag == "li":
            self.items += 1
        if tag in ("script", "link") or (a.get("src") or "").startswith(("http:", "https:", "//")):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert page.images, "the report shows no image"
    for src in page.images:
        assert not src.startswith(("http", "/")), src
        assert (path.parent / src).is_file(), f"{src} referenced but missing"
    assert not page.external, "the report must not load scripts or external resources"
    return page


def _fit(x: np.ndarray, folder: Path, input_desc: dict, levels: list[dict]) -> Path:
    model = HierarchicalKMeans(levels, n_iter=5, seed=0, distance="l2").fit(x)
    model.save(folder, extra={"input": input_desc})
    return folder


# ----------------------------------------------------------------------------------------------
def test_sample_balance_numbers() -> None:
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    ref = np.array([0] * 50 + [1] * 30 + [2] * 20)
    radius = np.arange(100, dtype=np.float32)
    out = sample_balance(np.array([0, 1, 80, 95, 96, 99]), labels, n_rarest=1, ref_assign=ref, radius=radius)
    assert out["n"] == 6
    assert out["label_counts"] == [2, 1, 3]
    assert out["rarest_labels"] == [2] and out["rarest_share"] == pytest.approx(0.5)
    assert out["ref_counts"] == [2, 0, 4] and out["ref_touched"] == 2
    assert out["ref_smallest_share"] == pytest.approx(4 / 6)  # ref cluster 2 is the smallest (ceil(0.1 * 3) = 1)
    assert out["ref_largest_share"] == pytest.approx(2 / 6)
    assert out["sparsest_share"] == pytest.approx(3 / 6)  # items 95, 96, 99 have radius >= q90 = 89.1
    pool = sample_balance(np.arange(100), labels, 1, ref)
    assert pool["label_normalized_entropy"] < 1.0 and pool["rarest_share"] == pytest.approx(0.05)


def test_knn_radius_is_larger_in_sparse_regions() -> None:
    rng = np.random.default_rng(0)
    dense = rng.normal(scale=0.1, size=(400, 4))
    sparse = rng.normal(scale=3.0, size=(40, 4)) + 10
    r = knn_radius(np.concatenate([dense, sparse]).astype(np.float32), k=5, distance="l2", n_ref=300)
    assert r.shape == (440,) and np.median(r[400:]) > 5 * np.median(r[:400])


def test_knn_agreement() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 100)
    x = np.eye(3, dtype=np.float32)[labels] + 0.01 * rng.normal(size=(300, 3)).astype(np.float32)
    agree, queries = knn_agreement(x, labels, k=5)
    assert agree.shape == (300,) and agree.mean() == pytest.approx(1.0)
    shuffled = rng.permutation(labels)
    agree, queries = knn_agreement(x, shuffled, k=5, n_queries=50)
    assert queries.shape == (50,) and agree.mean() < 0.6


def test_report_on_2d_toy(tmp_path: Path) -> None:
    from curate.data.datasets.toy import toy_2d

    x, labels = toy_2d(0, n_scale=0.3)
    atomic_save_npy(tmp_path / "data" / "x.npy", x.astype(np.float32))
    atomic_save_npy(tmp_path / "data" / "labels.npy", labels.astype(np.int64))
    cluster = _fit(
        x.astype(np.float32),
        tmp_path / "cluster",
        {"kind": "npy", "path": str(tmp_path / "data" / "x.npy")},
        [{"k": 50}, {"k": 10}],
    )
    # without a sample: the report draws one and says so
    html_path = build_report(cluster, out=tmp_path / "r1", target=0.1)
    page = _parse(html_path)
    assert {"summary", "cluster-sizes", "top-clusters", "examples", "labels", "scatter"} <= set(page.sections)
    assert "drawn by the report" in "".join(page.text)
    # with a sample folder (as curate.sample writes it), through the CLI
    indices = np.sort(np.random.default_rng(1).choice(len(x), 500, replace=False))
    atomic_save_npy(tmp_path / "sample" / "indices.npy", indices)
    html_path = main([f"cluster={cluster}", f"sample={tmp_path / 'sample'}"])
    assert html_path == tmp_path / "sample" / "report" / "report.html"
    page = _parse(html_path)
    assert "500 items" in "".join(page.text)
    assert {"scatter.png", "labels.png", "cluster_sizes.png", "top_clusters.png"} <= set(page.images)


def test_report_on_text_store(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sizes = [120, 60, 15]
    texts = [f"topic {t} sentence number {i}" for t, s in enumerate(sizes) for i in range(s)]
    (tmp_path / "lines.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centers = rng.normal(scale=5.0, size=(len(sizes), 8))
    emb = (centers[labels] + rng.normal(size=(len(labels), 8))).astype(np.float32)
    source = {"kind": "text_lines", "path": str(tmp_path / "lines.txt"), "skip_empty": True}
    write_store(
        tmp_path / "store", emb, ids=list(range(len(texts))), labels=labels, label_names=["a", "b", "c"], source=source
    )
    cluster = _fit(emb, tmp_path / "cluster", {"kind": "store", "path": str(tmp_path / "store")}, [{"k": 20}, {"k": 4}])
    page = _parse(build_report(cluster, out=tmp_path / "report", target=40, n_examples=5))
    text = "".join(page.text)
    assert {"summary", "cluster-sizes", "top-clusters", "examples", "labels"} <= set(page.sections)
    assert "scatter" not in page.sections
    assert page.items >= 5 and "sentence number" in text  # example texts were read back by line number
    assert "(text not found)" not in text


def test_report_on_fashion_mnist_store(tmp_path: Path) -> None:
    import curate.data.datasets.fashion_mnist as fm

    try:
        _, train_labels = fm.load_fashion_mnist("train")
    except FileNotFoundError:
        pytest.skip("dataset-fashion-mnist is not installed")
    ids = np.arange(0, 600, 2, dtype=np.int64)
    emb = np.random.default_rng(0).normal(size=(len(ids), 6)).astype(np.float32)
    source = {"kind": "fashion_mnist", "split": "train", "long_tailed": False, "count": len(ids)}
    write_store(tmp_path / "store", emb, ids=ids, labels=train_labels[ids], label_names=list(fm.CLASSES), source=source)
    cluster = _fit(emb, tmp_path / "cluster", {"kind": "store", "path": str(tmp_path / "store")}, [{"k": 30}, {"k": 6}])
    page = _parse(build_report(cluster, out=tmp_path / "report", target=60, n_examples=8))
    grids = [src for src in page.images if src.startswith("examples_")]
    assert set(grids) == {"examples_largest.png", "examples_median.png", "examples_smallest.png"}


def test_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        main([f"cluster={tmp_path / 'nowhere'}"])
    assert err.value.code == 2
    assert "nowhere" in capsys.readouterr().err
    for argv, key in (([f"cluster={tmp_path}", "targt=5"], "targt"), ([f"cluster={tmp_path}", "seed=x"], "seed")):
        with pytest.raises(SystemExit) as err:
            main(argv)  # refused before anything is read
        line = capsys.readouterr().err.strip()
        assert err.value.code == 2 and line.startswith("error: ") and key in line and "\n" not in line
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    atomic_save_npy(tmp_path / "x.npy", x)
    cluster = _fit(x, tmp_path / "cluster", {"kind": "npy", "path": str(tmp_path / "x.npy")}, [{"k": 10}])
    atomic_save_npy(tmp_path / "bad" / "indices.npy", np.array([0, 5000]))
    with pytest.raises(ValueError, match="outside"):
        build_report(cluster, tmp_path / "bad")
    manifest = json.loads((cluster / "manifest.json").read_text())
    assert manifest["input"]["kind"] == "npy"
    # the input moved away: the report still shows the clusters and says why the rest is missing
    (tmp_path / "x.npy").rename(tmp_path / "moved.npy")
    page = _parse(build_report(cluster, out=tmp_path / "r_moved", target=20))
    assert "is gone" in "".join(page.text) and "scatter" not in page.sections
    page = _parse(build_report(cluster, out=tmp_path / "r_input", input_path=tmp_path / "moved.npy", target=20))
    with pytest.raises(ValueError, match="rows"):
        atomic_save_npy(tmp_path / "short.npy", x[:50])
        build_report(cluster, out=tmp_path / "r_short", input_path=tmp_path / "short.npy")


def test_load_texts_wordnet_and_jsonl(tmp_path: Path) -> None:
    from curate.analysis.data import load_texts

    try:
        from curate.data.datasets.wordnet import load_wordnet

        wn = load_wordnet("verb")
    except FileNotFoundError:
        pytest.skip("wordnet-base is not installed")
    source = {"kind": "wordnet", "pos": ["verb"], "with_lemmas": False}
    assert load_texts(source, [wn.ids[5], "v99999999"]) == [wn.texts[5], None]
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "first", "key": "a"}\n\n{"text": "second", "key": "b"}\n')
    assert load_texts({"kind": "jsonl", "path": str(path), "field": "text", "id_field": "key"}, ["b", "a"]) == [
        "second",
        "first",
    ]
    assert load_texts({"kind": "jsonl", "path": str(path), "field": "text", "id_field": None}, [2]) == ["second"]


def test_report_in_a_real_browser(tmp_path: Path, headless_page) -> None:
    """The page loads in headless Chromium with every image decoded and no console error."""
    from curate.data.datasets.toy import toy_2d

    x, labels = toy_2d(0, n_scale=0.1)
    atomic_save_npy(tmp_path / "data" / "x.npy", x.astype(np.float32))
    atomic_save_npy(tmp_path / "data" / "labels.npy", labels.astype(np.int64))
    cluster = _fit(
        x.astype(np.float32),
        tmp_path / "cluster",
        {"kind": "npy", "path": str(tmp_path / "data" / "x.npy")},
        [{"k": 20}, {"k": 5}],
    )
    html_path = build_report(cluster, out=tmp_path / "report", target=0.2)
    shown = headless_page.load(html_path.resolve().as_uri())
    assert not shown["errors"], shown["errors"]
    assert {img["src"] for img in shown["images"]} == set(_parse(html_path).images)
    for img in shown["images"]:
        assert img["complete"] and img["width"] > 50 and img["height"] > 50, img
    # the check sees a broken page: a missing image is reported
    broken = html_path.with_name("broken.html")
    broken.write_text(html_path.read_text().replace("labels.png", "nowhere.png"))
    shown = headless_page.load(broken.resolve().as_uri())
    assert shown["errors"] and any(img["width"] == 0 for img in shown["images"])
