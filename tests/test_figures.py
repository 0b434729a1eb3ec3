"""The figure reproductions in reduced mode: fig3 (2-D, KL to uniform) and fig1a (1-D, centroid density)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curate.data.datasets.toy import toy_2d
from research import simulation

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def fig3(load_script):
    return load_script("reproduce_fig3")


@pytest.fixture(scope="module")
def fig1a(load_script):
    return load_script("reproduce_fig1a")


def test_fig3_reduced_run_writes_everything_and_orders_the_methods(fig3, tmp_path, capsys):
    table = fig3.main(["--out", str(tmp_path), "--quick", "--n-scale", "0.1", "--workers", "1"])
    written = json.loads((tmp_path / "fig3_kl.json").read_text())
    assert set(written) == {
        "data",
        "kmeans",
        "hkmeans_2",
        "hkmeans_3",
        "hkmeans_3_resampling",
        "dbscan",
        "agglomerative",
        "uniform_reference",
        "lattice",
    }
    for row in written.values():
        assert set(row) >= {"mean", "std"} and row["std"] == 0.0 and len(row["values"]) == 1
    for png in ("fig3_voronoi.png", "fig3_kl.png", "fig3_kde.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written["kmeans"]["mean"] > written["hkmeans_3_resampling"]["mean"]
    assert written["data"]["mean"] > written["kmeans"]["mean"]
    assert written["hkmeans_3"]["n_points"] == [30]  # k scaled with the data
    assert table["data"]["mean"] == pytest.approx(written["data"]["mean"])
    out = capsys.readouterr().out
    assert "| k-means (300, best of 10 restarts) | 0.340 |" in out and "wall time" in out
    run = json.loads((tmp_path / "fig3_run.json").read_text())
    assert run["seeds"] == 1 and run["dbscan"]["by_seed"][0]["n_clusters"] > 0
    restarts = run["kmeans"]["by_seed"][0]
    assert len(restarts["inertias"]) == 10 and restarts["best_restart"] == int(np.argmin(restarts["inertias"]))
    assert written["lattice"]["n_points"] == [289] and written["lattice"]["mean"] == pytest.approx(0.0188, abs=1e-3)
    assert written["lattice"]["mean"] < written["uniform_reference"]["mean"]


def test_fig3_dbscan_eps_is_the_ranked_knn_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    fifth = np.sort(d, axis=1)[:, 4]  # column 0 is the point itself, as DBSCAN's min_samples counts it
    assert simulation.dbscan_eps(x, 5, 10) == pytest.approx(np.sort(fifth)[::-1][10])
    assert simulation.dbscan_eps(x, 5, 10_000) == pytest.approx(fifth.min())


def test_fig3_lattice_is_regular_and_centred():
    pts = simulation.lattice_points(17)
    assert pts.shape == (289, 2)
    xs = np.unique(pts[:, 0])
    np.testing.assert_allclose(np.diff(xs), 6 / 17)
    assert xs[0] == pytest.approx(-3 + 3 / 17) and xs[-1] == pytest.approx(3 - 3 / 17)


def test_fig3_ordering_check(fig3):
    good = {k: {"mean": v} for k, v in fig3.PAPER.items()}
    assert simulation.check_ordering(good) == []
    bad = {**good, "hkmeans_3_resampling": {"mean": 0.2}}
    assert "hkmeans_3 > hkmeans_3_resampling" in simulation.check_ordering(bad)


def test_fig3_cluster_means_exclude_noise():
    x = np.array([[0, 0], [2, 2], [4, 4], [9, 9]], dtype=np.float32)
    np.testing.assert_allclose(simulation.cluster_means(x, np.array([0, 0, 1, -1])), [[1, 1], [4, 4]])


def test_fig3_voronoi_borders_match_brute_force_nearest_centroid():
    rng = np.random.default_rng(1)
    c = rng.uniform(-3, 3, size=(7, 2))
    n = 40
    g = -3 + (np.arange(n) + 0.5) * 6 / n
    gx, gy = np.meshgrid(g, g)
    pixels = np.stack([gx.ravel(), gy.ravel()], axis=1)
    cell = ((pixels[:, None] - c[None]) ** 2).sum(-1).argmin(1).reshape(n, n)  # row = y, column = x
    border = simulation.voronoi_raster(c, n)
    expected = np.zeros((n, n), dtype=bool)
    expected[:, :-1] |= cell[:, :-1] != cell[:, 1:]
    expected[:-1, :] |= cell[:-1, :] != cell[1:, :]
    np.testing.assert_array_equal(border, expected)
    assert 0 < border.sum() < n * n / 2  # 7 cells: some borders, mostly interior


def test_fig3_summary_is_mean_and_sample_std_over_seeds_and_the_idle_estimate_packs_longest_first():
    results = [
        {"method": m, "seed": s, "kl": 0.1 * s + i, "n_points": 3, "seconds": 1.0, "cpu_seconds": 2.0}
        for i, m in enumerate(simulation.KEYS)
        for s in (2, 0, 1)
    ]
    table = simulation.summarise(results)
    assert table["kmeans"]["values"] == pytest.approx([1.0, 1.1, 1.2])  # by seed
    assert table["kmeans"]["mean"] == pytest.approx(1.1) and table["kmeans"]["std"] == pytest.approx(0.1)
    jobs = [{"cpu_seconds": t} for t in (5, 4, 3, 3, 1)]  # longest first on 2 cores: 5+3 | 4+3+1 -> 8
    assert simulation.unloaded_estimate(jobs, 2) == 8 and simulation.unloaded_estimate(jobs, 1) == 16


def test_fig3_methods_end_with_k_points():
    x, _ = toy_2d(0, n_scale=0.05)
    k = simulation.scaled_k(simulation.K, 0.05)
    for method in ("kmeans", "hkmeans_3", "agglomerative", "uniform_reference"):
        points, _ = simulation.method_points(method, x, seed=0, n_scale=0.05)
        assert points.shape == (k, 2), method
    with pytest.raises(ValueError, match="unknown method"):
        simulation.method_points("kmedoids", x, seed=0)


def test_fig1a_reduced_run_finds_the_one_third_exponent(fig1a, tmp_path):
    result = fig1a.main(["--out", str(tmp_path), "--n-scale", "0.05"])
    assert 0.2 < result["alpha"] < 0.5  # d / (d + 2) = 1/3 in 1-D
    assert result["tv_to_p_one_third"] < result["tv_to_p"]
    assert result["k"] == 250 and result["n"] == 12_500
    assert json.loads((tmp_path / "fig1a.json").read_text())["alpha"] == pytest.approx(result["alpha"])
    assert (tmp_path / "fig1a.png").read_bytes()[:4] == b"\x89PNG"


def test_fig1a_alpha_fit_recovers_known_exponents(fig1a):
    from curate.data.datasets.toy import mixture_1d_density
    from research.density import bin_densities, fit_alpha

    t = np.linspace(-15, 24, 200_001)
    for a in (1 / 3, 1.0):
        cdf = np.cumsum(mixture_1d_density(t) ** a)
        centroids = np.interp((np.arange(5000) + 0.5) / 5000, cdf / cdf[-1], t)
        bins = bin_densities(centroids, 0.25, mixture_1d_density, fig1a.SPAN)
        assert fit_alpha(bins)["alpha"] == pytest.approx(a, abs=0.01)


def test_fig1a_exact_lloyd_matches_the_engine_where_float32_suffices(fig1a):
    """Small k (wide cells): the float64 1-D Lloyd and curate's KMeans reach the same centroids."""
    from curate.kmeans import KMeans
    from research.density import lloyd_1d

    x, _ = fig1a.scaled_mixture(0, 0.02)
    init = KMeans(k=100, n_iter=0, seed=0).fit(x).centroids.numpy()[:, 0]
    engine = np.sort(KMeans(k=100, n_iter=30, seed=0).fit(x).centroids.numpy()[:, 0])
    exact, info = lloyd_1d(x, init, 30)
    gap = np.abs(exact - engine)
    assert np.median(gap) < 1e-4 and gap.max() < 0.05  # float32 rounding may move a few ties
    assert info["empty"] == 0 and info["iterations"] <= 30
