"""Initialisation: k-means++ against a float64 reference with the same draws, weighted
k-means++, k-means|| quality and world-size independence of its draws."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from curate.kmeans import KMeans, TooFewDistinctPoints
from curate.kmeans.init import _row_uniforms, kmeans_parallel, kmeans_plusplus
from curate.kmeans.shard import LocalRows
from curate.kmeans.source import RowSource


def _rows(x: np.ndarray, cached: bool = True) -> LocalRows:
    rows = LocalRows(RowSource(torch.from_numpy(x)), torch.device("cpu"), 700, cosine=False, cache_bytes=1 << 40)
    rows._cache_allowed = cached
    rows.scan()
    return rows


def _mixture(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(12, d))
    return (centers[rng.integers(0, 12, n)] + rng.normal(size=(n, d))).astype(np.float32)


def reference_kmeanspp(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ in float64 numpy, one row at a time, drawing from the same generator."""
    g = torch.Generator().manual_seed(seed)
    t = 2 + int(math.log(k))
    chosen = [int(torch.randint(len(x), (1,), generator=g))]
    u = torch.rand(k - 1, t, generator=g, dtype=torch.float64).numpy()
    x = x.astype(np.float64)
    pot = ((x - x[chosen[0]]) ** 2).sum(1)
    for j in range(k - 1):
        cum = np.cumsum(pot)
        cand = np.minimum(np.searchsorted(cum, u[j] * cum[-1], side="right"), len(x) - 1)
        trial = np.minimum(pot[:, None], ((x[:, None, :] - x[cand][None]) ** 2).sum(2))
        best = int(trial.sum(0).argmin())
        chosen.append(int(cand[best]))
        pot = trial[:, best]
    return np.array(chosen)


@pytest.mark.parametrize("d", [2, 24], ids=["direct", "matmul"])
def test_kmeanspp_draws_match_a_float64_reference(d):
    x = _mixture(600, d)
    rows = _rows(x)
    for seed in range(3):
        got = kmeans_plusplus(rows, 25, torch.Generator().manual_seed(seed)).numpy()
        ref = x[reference_kmeanspp(x - x.mean(0), 25, seed)] - x.mean(0)
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_kmeanspp_streamed_equals_in_memory():
    x = _mixture(2500, 40)
    a = kmeans_plusplus(_rows(x, cached=True), 30, torch.Generator().manual_seed(1))
    b = kmeans_plusplus(_rows(x, cached=False), 30, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_kmeanspp_duplicates_are_at_exactly_zero():
    x = np.repeat(_mixture(7, 40) + 50.0, 30, axis=0)  # far from the origin: the expansion cancels
    with pytest.raises(TooFewDistinctPoints, match="only 7 distinct points found, fewer than k=8"):
        kmeans_plusplus(_rows(x), 8, torch.Generator().manual_seed(0))
    c = kmeans_plusplus(_rows(x), 7, torch.Generator().manual_seed(0))
    assert len(torch.unique(c, dim=0)) == 7


def test_weighted_kmeanspp_never_picks_a_zero_weight_row():
    x = _mixture(800, 16)
    w = torch.zeros(len(x))
    w[::3] = 1.0 + torch.rand(len(range(0, 800, 3)), generator=torch.Generator().manual_seed(0))
    rows = _rows(x)
    c = kmeans_plusplus(rows, 40, torch.Generator().manual_seed(2), weights=w)
    d2 = torch.cdist(c.double(), rows._cache.double())
    picked = d2.argmin(1)
    assert (d2.min(1).values < 1e-6).all() and (picked % 3 == 0).all()


def test_row_uniforms_do_not_depend_on_the_sharding():
    whole = _row_uniforms(SimpleNamespace(n=200_000, offset=0, device="cpu"), seed=5, round_=1)
    a = _row_uniforms(SimpleNamespace(n=70_001, offset=0, device="cpu"), seed=5, round_=1)
    b = _row_uniforms(SimpleNamespace(n=129_999, offset=70_001, device="cpu"), seed=5, round_=1)
    assert torch.equal(torch.cat([a, b]), whole)
    other = _row_uniforms(SimpleNamespace(n=1000, offset=0, device="cpu"), seed=5, round_=2)
    assert not torch.equal(other, whole[:1000])
    assert 0.45 < float(whole.mean()) < 0.55


def _skewed(n: int = 4000, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = (np.array([0.6, 0.2, 0.1, 0.05, 0.03, 0.02]) * n).astype(int)
    centers = rng.normal(scale=4.0, size=(len(sizes), d))
    scales = [2.0, 1.0, 0.5, 0.5, 0.3, 0.3]
    return np.concatenate([c + s * rng.normal(size=(m, d)) for c, m, s in zip(centers, sizes, scales)]).astype(
        np.float32
    )


def test_kmeans_parallel_as_good_as_kmeanspp():
    x = _skewed()
    pot = {
        init: [KMeans(k=40, n_iter=0, seed=s, init=init).fit(x).inertia for s in range(4)]
        for init in ("k-means++", "k-means||", "random")
    }
    assert np.mean(pot["k-means||"]) <= 1.1 * np.mean(pot["k-means++"])
    assert np.mean(pot["k-means||"]) < 0.8 * np.mean(pot["random"])
    after = {
        init: np.mean([KMeans(k=40, n_iter=15, seed=s, init=init).fit(x).inertia for s in range(3)])
        for init in ("k-means++", "k-means||")
    }
    assert after["k-means||"] <= 1.03 * after["k-means++"]


def test_kmeans_parallel_is_seeded_and_picks_data_rows():
    x = _skewed(1500)
    rows = _rows(x)
    a = kmeans_parallel(rows, 30, torch.Generator().manual_seed(3))
    b = kmeans_parallel(rows, 30, torch.Generator().manual_seed(3))
    c = kmeans_parallel(rows, 30, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(torch.unique(a, dim=0)) == 30
    assert torch.cdist(a.double(), rows._cache.double()).min(1).values.max() < 1e-5


def test_kmeans_parallel_more_rounds_when_short_and_too_few_points():
    x = _mixture(300, 8)
    c = kmeans_parallel(_rows(x), 200, torch.Generator().manual_seed(0), rounds=1, oversampling=0.5)
    assert len(torch.unique(c, dim=0)) == 200  # one round of ~100 could not give 200 candidates
    dup = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    with pytest.raises(TooFewDistinctPoints, match="only 3 distinct points found, fewer than k=5"):
        KMeans(k=5, init="k-means||").fit(dup)


def test_scaling_model_of_the_inits(load_script):
    from research.bench import costmodel as cm

    scaling = load_script("scaling")
    cfg = cm.ScalingConfig()
    par = cm.kmeans_parallel(cfg.n, cfg.level1_k, cfg.d, cfg.gpus[0], cfg)
    ell = cfg.kpar_oversampling * cfg.level1_k
    assert par["candidates"] == cfg.kpar_rounds * ell + 1 and par["l"] == ell
    assert par["flops"] == pytest.approx(
        cfg.kpar_rounds * 2 * cfg.n * ell * cfg.d
        + 2 * cfg.level1_k * (2 + int(math.log(cfg.level1_k))) * par["candidates"] * cfg.d
    )
    # k-means|| replaces k sequential passes over 743M rows by 5: far cheaper than k-means++ on all rows
    base = cm.compute(cfg)
    par_cfg = cm.ScalingConfig(inits=("k-means||", "k-means++", "k-means++", "k-means++"))
    with_par = cm.compute(par_cfg)
    assert with_par["levels"][0]["t_kpp"] < base["levels"][0]["t_kpp"] / 3
    # ... but its local k-means++ on the candidates is slower when k is large against n (level 2)
    lv2 = base["levels"][1]
    assert cm.kmeans_parallel(lv2["n_in"], lv2["k"], cfg.d, lv2["world"], cfg)["t_total"] > lv2["kpp"]["t_total"]
    # the split's k-means++ init costs n_splits passes; random members cost nothing
    assert base["levels"][0]["split"]["t_init"] > 0
    assert cm.compute(cm.ScalingConfig(split_init="random"))["levels"][0]["split"]["t_init"] == 0
    # regrouped split: no all-reduce per iteration, one exchange of the shard, a rank's own slots only
    sp, ar = base["levels"][0]["split"], cm.compute(cm.ScalingConfig(split_regroup=False))["levels"][0]["split"]
    assert sp["regroup"] and sp["allreduce_bytes"] == 0 and ar["allreduce_bytes"] > 0
    n_local = math.ceil(cfg.n / cfg.gpus[0])
    assert sp["t_regroup"] >= 4.0 * n_local * cfg.d / (cfg.hw.net_gbps * 1e9)
    assert sp["t_iter"] < ar["t_iter"] and sp["memory"]["sums_f64"] < ar["memory"]["sums_f64"] * ar["batches"]
    with pytest.raises(ValueError, match="inits"):
        cm.compute(cm.ScalingConfig(inits=("k-means||",)))
    assert "Init of each level's first k-means" in scaling.main(["--init-max-points", "25.6e6"])


def test_bench_init_rows(load_script, tmp_path):
    bench = load_script("bench_init")
    out = tmp_path / "rows.json"
    rows = bench.main(["init", "--size", "tiny", "--lloyd-iters", "2", "--json", str(out)])
    assert [r["what"] for r in rows] == ["machine", "bound", "init", "init", "init"]
    bound, inits = rows[1], {r["impl"].split(" (")[0]: r for r in rows[2:]}
    assert set(inits) == {"ours k-means++", "ours k-means|| 5 rounds", "sklearn kmeans_plusplus"}
    assert bound["kmeanspp_bound_s"] == pytest.approx(32 * bound["sum_pass_s"])
    for r in inits.values():  # Lloyd from an init never ends above the init's potential
        assert 0 < r["inertia_after_2"] <= r["potential"] * (1 + 1e-6)
    assert len(json.loads(out.read_text())) == len(rows)


@pytest.mark.slow
@pytest.mark.long
def test_bench_init_repo_runs_the_other_checkouts_engine(cli, tmp_path):
    """``--repo`` re-runs the benchmark with that checkout first on the path: its rows name it."""
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "rows.json"
    cmd = [str(repo / "scripts" / "bench_init.py"), "curation", "--repo", str(repo), "--lloyd-iters", "1"]
    proc = cli(*cmd, "--json", str(out))
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["what"] for r in rows] == ["machine", "curation"] and rows[1]["code"] == str(repo)
    assert json.loads(out.read_text()) == rows
