"""Metrics (KL of a KDE to the uniform, balance over labels and clusters) and the synthetic toys."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from curate.analysis.metrics import (
    cluster_balance,
    kde_grid,
    kl_to_uniform,
    label_entropy,
    label_shares,
    share_of_rarest,
)
from curate.data.datasets.toy import (
    MIXTURE_1D,
    mixture_1d,
    mixture_1d_density,
    rings_2d,
    toy_2d,
    write_toy,
)


# -- KL to uniform -----------------------------------------------------------------------------
def test_kl_of_uniform_points_is_the_papers_lower_bound():
    values = [kl_to_uniform(np.random.default_rng(s).uniform(-3, 3, (300, 2))) for s in range(5)]
    assert 0.03 < np.mean(values) < 0.05  # paper: 0.040 +- 0.007
    assert np.std(values) < 0.01


def test_kl_of_the_toy_data_matches_the_paper():
    x, _ = toy_2d(0)
    assert kl_to_uniform(x) == pytest.approx(0.942, abs=0.02)  # ours ~0.951


def test_kl_of_a_point_mass_is_large_and_a_dense_uniform_set_is_near_zero():
    assert kl_to_uniform(np.zeros((1, 2))) == pytest.approx(kl_to_uniform(np.zeros((50, 2))))
    assert kl_to_uniform(np.zeros((1, 2))) > 2.0
    g = -3 + 0.1 * np.arange(60) + 0.05
    lattice = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    assert kl_to_uniform(lattice) < 0.02  # only the edge loss of the kernels remains


def test_kde_grid_matches_a_brute_force_sum_and_is_order_free():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(37, 2))
    p, g = kde_grid(pts, bandwidth=0.5, lo=-1, hi=1, step=0.1)
    assert len(g) == 20 and g[0] == -1 and g[-1] == pytest.approx(0.9)
    gx, gy = np.meshgrid(g, g, indexing="ij")
    brute = np.exp(-((gx[..., None] - pts[:, 0]) ** 2 + (gy[..., None] - pts[:, 1]) ** 2) / (2 * 0.25)).sum(-1)
    np.testing.assert_allclose(p, brute / brute.sum(), rtol=1e-10)
    assert p.sum() == pytest.approx(1.0)
    assert kde_grid(pts[::-1])[0] == pytest.approx(kde_grid(pts)[0])
    assert kde_grid(pts)[0].shape == (300, 300)  # the paper's grid: [-3, 3) step 0.02


@pytest.mark.parametrize(
    "points, message",
    [
        (np.zeros((3, 3)), "shape"),
        (np.zeros((0, 2)), "empty"),
        (np.full((2, 2), np.nan), "NaN"),
        (np.full((2, 2), 100.0), "no mass"),
    ],
)
def test_kl_rejects_bad_points(points, message):
    with pytest.raises(ValueError, match=message):
        kl_to_uniform(points)


# -- balance metrics ------------------------------------------------------------------------------
def test_label_entropy_and_shares():
    assert label_entropy([0, 1, 2, 3], 4) == pytest.approx(math.log(4))
    assert label_entropy([0, 1, 2, 3], 4, normalize=True) == pytest.approx(1.0)
    assert label_entropy([2, 2, 2], 4) == 0.0
    assert label_entropy([0, 0, 1, 1], 4, normalize=True) == pytest.approx(0.5)
    assert label_entropy([], 3) == 0.0
    np.testing.assert_allclose(label_shares([0, 0, 2, 1], 4), [0.5, 0.25, 0.25, 0.0])
    with pytest.raises(ValueError, match="n_classes"):
        label_shares([0, 5], 3)
    with pytest.raises(ValueError, match="integer"):
        label_entropy(np.array([0.5]), 2)


def test_share_of_rarest_picks_the_rare_classes_of_the_pool():
    pool = np.repeat([0, 1, 2, 3], [70, 20, 7, 3])
    assert share_of_rarest(pool, pool, 1) == pytest.approx(0.03)
    assert share_of_rarest(pool, pool, 2) == pytest.approx(0.10)
    sample = np.array([0, 1, 2, 3, 3])
    assert share_of_rarest(sample, pool, 1) == pytest.approx(0.4)
    assert share_of_rarest([], pool) == 0.0
    with pytest.raises(ValueError, match="n_rarest"):
        share_of_rarest(sample, pool, 5)


def test_cluster_balance():
    even = cluster_balance(np.repeat(np.arange(4), 5), 4)
    assert even["normalized_entropy"] == pytest.approx(1.0) and even["cv"] == 0.0 and even["max_share"] == 0.25
    skewed = cluster_balance(np.array([0, 0, 0, 1]), 4)
    assert skewed["n_touched"] == 2 and skewed["min_count"] == 0 and skewed["max_count"] == 3
    assert skewed["max_share"] == 0.75 and skewed["normalized_entropy"] < 0.5
    assert cluster_balance(np.array([], dtype=np.int64), 3)["n"] == 0


# -- toys -----------------------------------------------------------------------------------------
def test_toy_2d_counts_and_modes():
    x, labels = toy_2d(0)
    assert x.shape == (9000, 2) and x.dtype == np.float32 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [7000, 1000, 500, 500]
    np.testing.assert_allclose(x[labels == 0].mean(0), [-1, -1], atol=0.03)
    np.testing.assert_allclose(x[labels == 1].std(0), [0.5, 0.5], atol=0.04)
    assert np.abs(x[labels == 3]).max() <= 3
    np.testing.assert_array_equal(toy_2d(0)[0], x)
    assert not np.array_equal(toy_2d(1)[0], x)
    assert np.bincount(toy_2d(0, n_scale=0.1)[1]).tolist() == [700, 100, 50, 50]


def test_rings_2d():
    x, labels = rings_2d(0)
    assert x.shape == (30000, 2) and np.bincount(labels).tolist() == [20000, 7000, 2500, 500]
    radius = np.linalg.norm(x, axis=1)
    assert np.all(np.diff([np.median(radius[labels == j]) for j in range(4)]) > 0.5)
    assert np.abs(x).max() < 3


def test_mixture_1d_exact_counts_and_truncation():
    x, labels = mixture_1d(0)
    assert x.shape == (250_000, 1) and x.dtype == np.float32
    assert np.bincount(labels).tolist() == [c[0] for c in MIXTURE_1D]
    for j, (_, _, _, lo, hi) in enumerate(MIXTURE_1D):
        assert lo <= x[labels == j].min() and x[labels == j].max() <= hi
    # the sample follows the exact density
    edges = np.linspace(-15, 24, 79)
    hist, _ = np.histogram(x[:, 0], edges, density=True)
    fine = np.linspace(-15, 24, 390001)
    assert np.trapezoid(mixture_1d_density(fine), fine) == pytest.approx(1.0, abs=1e-3)
    inside = mixture_1d_density(edges[:-1] + 1e-9) * mixture_1d_density(edges[1:] - 1e-9) > 0
    avg = np.array([mixture_1d_density(np.linspace(a, b, 101)).mean() for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(hist[inside], avg[inside], rtol=0.1, atol=2e-3)
    assert mixture_1d_density(np.array([-20.0, -5.0, 14.0, 30.0])).tolist() == [0, 0, 0, 0]


def test_write_toy(tmp_path):
    path = write_toy("toy_2d", tmp_path / "toy")
    assert path == tmp_path / "toy" / "x.npy"
    x, labels = np.load(path), np.load(tmp_path / "toy" / "labels.npy")
    np.testing.assert_array_equal(x, toy_2d(0)[0])
    assert labels.shape == (9000,)
    manifest = json.loads((tmp_path / "toy" / "manifest.json").read_text())
    assert manifest["toy"] == "toy_2d" and manifest["label_counts"] == [7000, 1000, 500, 500]
    assert not list((tmp_path / "toy").glob(".*tmp*"))
    with pytest.raises(ValueError, match="unknown toy 'moons'"):
        write_toy("moons", tmp_path)


def test_rarest_against_a_brute_force_ranking():
    """rarest: fewest items first, ties by smaller id; empty groups only when asked (the eval's tail)."""
    from curate.analysis.metrics import rarest, rarest_classes

    rng = np.random.default_rng(0)
    for _ in range(20):
        counts = rng.integers(0, 4, size=12)
        for n in (1, 3, 12, 20):
            for with_empty in (False, True):
                ranked = sorted((int(c), i) for i, c in enumerate(counts) if with_empty or c > 0)
                assert rarest(counts, n, with_empty).tolist() == [i for _, i in ranked[:n]]
    labels = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 4])  # class 5 absent, 1 and 4 have one item
    assert rarest_classes(labels, num_classes=6, count=3) == [1, 4, 5]
    assert rarest(np.bincount(labels), 2).tolist() == [1, 4]
