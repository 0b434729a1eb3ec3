"""curate.analysis: balance numbers against brute force, pixel PCA against an SVD, figure legibility, key=value."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from curate.analysis import cluster_purity, label_balance, mean_std, sample_balance
from curate.analysis.cli import MISSING, parse_keyvalues
from curate.analysis.plots import log_axis, plot_pool_vs_samples, pyplot
from curate.hierarchy import HierarchicalKMeans, item_clusters
from research.features import pixel_pca


def test_label_balance_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(5, size=500, p=[0.5, 0.3, 0.1, 0.07, 0.03])
    indices = rng.choice(500, size=60)
    out = label_balance(labels, indices, n_rarest=2)
    share = np.array([np.mean(labels[indices] == c) for c in range(5)])
    pool = np.array([np.mean(labels == c) for c in range(5)])
    rare = sorted(range(5), key=lambda c: (pool[c], c))[:2]
    np.testing.assert_allclose(out["share"], share.round(6))
    np.testing.assert_allclose(out["pool_share"], pool.round(6))
    assert out["entropy"] == pytest.approx(-sum(p * math.log(p) for p in share if p > 0))
    assert out["max_entropy"] == pytest.approx(math.log(5))
    assert out["rarest_labels"] == rare
    assert out["rarest_share"] == pytest.approx(share[rare].sum())
    assert out["rarest_pool_share"] == pytest.approx(pool[rare].sum())
    # the same counts as the report's sample_balance (one implementation)
    assert sample_balance(indices, labels, 2)["label_entropy"] == pytest.approx(out["entropy"])


def test_mean_std_skips_missing_values() -> None:
    out = mean_std([1.0, None, 3.0])
    assert out["mean"] == pytest.approx(2.0) and out["std"] == pytest.approx(math.sqrt(2.0))
    assert out["values"] == [1.0, None, 3.0]
    assert mean_std([4.0])["std"] == 0.0 and math.isnan(mean_std([None])["mean"])


def test_item_clusters_and_purity(blobs: np.ndarray) -> None:
    model = HierarchicalKMeans([{"k": 30}, {"k": 6}], n_iter=5, seed=0, distance="l2").fit(blobs)
    per_level = item_clusters(model.levels_)
    for i in (0, 17, 2999):  # follow one item up by hand
        c = i
        for t, level in enumerate(model.levels_):
            c = int(level.assign[c])
            assert per_level[t][i] == c
    items = np.array([5, 2999, 5])
    assert all(np.array_equal(a[items], b) for a, b in zip(per_level, item_clusters(model.levels_, items)))
    labels = np.repeat(np.arange(6), [1200, 800, 500, 300, 150, 50])
    top = per_level[-1]
    brute = sum(np.bincount(labels[top == c]).max() for c in np.unique(top)) / len(labels)
    assert cluster_purity(top, labels) == pytest.approx(brute)


def test_pixel_pca_matches_an_svd(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(4, 28 * 28))
    coeff = rng.normal(size=(300, 4)) * np.array([40.0, 20.0, 10.0, 5.0])
    images = np.clip(128 + coeff @ basis, 0, 255).astype(np.uint8).reshape(300, 28, 28)
    feats = pixel_pca(images, 3, tmp_path / "pca", fit_items=None)
    x = images.reshape(300, -1).astype(np.float64) / 255.0
    x -= x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    ref = x @ vt[:3].T
    assert feats.shape == (300, 3) and feats.dtype == np.float32
    np.testing.assert_allclose(np.abs(feats), np.abs(ref), atol=2e-3)  # equal up to each axis's sign
    assert (tmp_path / "pca" / "pca-components.npy").is_file()
    np.testing.assert_array_equal(pixel_pca(images, 3, tmp_path / "pca", fit_items=None), feats)  # reused


@pytest.mark.parametrize("limits", [(0.3, 0.6), (0.02, 0.9), (1e-4, 10.0)])
def test_log_axis_has_several_tick_labels(limits: tuple[float, float]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], list(limits))
    log_axis(ax)
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    shown = [t.get_text() for t in ax.get_yticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi]
    plt.close(fig)
    assert len(shown) >= 2, shown


def test_sample_figure_titles_are_inside_the_image(tmp_path: Path) -> None:
    plt = pyplot()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 2)) * np.array([5.0, 1.0])  # wide data: equal aspect shrinks the axes
    captured = {}
    real_close = plt.close
    plt.close = lambda fig: captured.setdefault("fig", fig)  # keep the figure to measure it
    try:
        plot_pool_vs_samples(x, np.arange(0, 2000, 3), np.arange(0, 2000, 5), tmp_path / "s.png")
    finally:
        plt.close = real_close
    fig = captured["fig"]
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for ax in fig.axes:
        title = ax.title.get_window_extent(renderer)
        assert box.x0 <= title.x0 and title.x1 <= box.x1 and box.y0 <= title.y0 and title.y1 <= box.y1
    real_close(fig)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


@dataclass
class _Args:
    cluster: str = MISSING
    seed: int = 0


def test_keyvalues_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_keyvalues(_Args, ["cluster=a", "seed=3"], "prog") == _Args("a", 3)
    assert parse_keyvalues(_Args, ["--cluster", "a", "--seed=4"], "prog") == _Args("a", 4)
    assert parse_keyvalues(_Args, ["a"], "prog", positional="cluster") == _Args("a", 0)
    for argv, where in ((["cluster=a", "seed=x"], "seed"), (["cluster=a", "sed=1"], "sed"), ([], "cluster")):
        with pytest.raises(SystemExit) as err:
            parse_keyvalues(_Args, argv, "prog")
        assert err.value.code == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith("error: ") and where in line and "\n" not in line, line
