"""Reproduce the 1-D simulation of the paper (Fig. 1a): k-means centroids follow p^(1/3), not the uniform.

    python scripts/reproduce_fig1a.py --out outputs/fig1a                    # k = 5000 on 250,000 points
    python scripts/reproduce_fig1a.py --out /tmp/fig1a --n-scale 0.1         # k = 500 on 25,000 (tests)

Data: :func:`curate.datasets.toy.mixture_1d` (five truncated Gaussians, exact density
:func:`~curate.datasets.toy.mixture_1d_density`). Clustering: k = 5000, 50 Lloyd iterations, greedy
k-means++ initialisation by ``curate.kmeans.KMeans`` on **all** 250,000 points (``--init-max-points`` to
subsample), then 50 Lloyd iterations in the engine (``--lloyd engine``, the default). ``--lloyd exact``
runs the Lloyd iterations instead in float64 with the exact 1-D assignment (sorted centroids,
midpoints, ``searchsorted``) as a cross-check; both give alpha = 0.340 at k = 5000.

(An earlier engine computed every distance as ``|x|^2 - 2 x.c + |c|^2`` in float32; with 5,000
centroids ~0.005 apart that expansion mis-assigned 19% of the points and alpha drifted to 0.22. The
engine now sums squared differences coordinate by coordinate when d <= 8.)

The initialisation decides the answer in 1-D. Lloyd iterations move the *global* distribution of 5,000
centroids extremely slowly in 1-D (mass moves by diffusion from cell to cell): 50 or even 1,000
iterations leave the fitted exponent where the initialisation put it. ``init="random"`` (centroids =
random data points, density ~ p) therefore ends with alpha ~ 1.0; D^2 sampling (k-means++) adds
centroids at a rate ~ p * D^2 ~ p / c^2, whose stationary profile is c ~ p^(1/3), i.e. Zador's
d / (d + 2) for d = 1. On a 50,000-row init subset (10 rows per centroid) the exponent comes out
higher (~0.37-0.39) because sparse regions run out of candidate rows.

Alpha: histogram of the centroids in bins of ``--bin-width`` (0.25); the centroid density
``c = count / (k * width)`` is regressed on the bin-averaged data density ``p`` in log space (least
squares, ``log c = alpha log p + b``) over the bins that lie inside the support and where
``p >= 1e-3 max p`` and the count is positive.

Writes ``OUT/fig1a.json`` (alpha, intercept, bins used, total-variation distances of the centroid
histogram to p and to p^(1/3), settings, seconds) and ``OUT/fig1a.png`` (histogram vs p and p^(1/3),
and the log-log fit).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from curate.analysis.machine import machine_info  # noqa: E402
from curate.datasets.toy import mixture_1d, mixture_1d_density  # noqa: E402
from curate.io.atomic import atomic_path, atomic_write_json  # noqa: E402

K = 5000
SPAN = (-15.0, 24.0)  # the plotted and binned range (support: [-14, -7], [0, 12], [17, 23])
P_MIN_REL = 1e-3
SUB = 21  # density samples per bin for the bin averages


def scaled_mixture(seed: int, n_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The mixture, or a uniform subset of ``round(n_scale * N)`` of its rows (same density)."""
    x, labels = mixture_1d(seed)
    if n_scale >= 1:
        return x, labels
    keep = np.sort(np.random.default_rng([seed, 7]).choice(len(x), round(n_scale * len(x)), replace=False))
    return x[keep], labels[keep]


def lloyd_1d(x: np.ndarray, centroids: np.ndarray, n_iter: int) -> tuple[np.ndarray, dict[str, int]]:
    """Exact Lloyd iterations in 1-D, float64: assignment by the midpoints between sorted centroids.

    Args:
        x: ``(n,)`` points.
        centroids: ``(k,)`` initial centroids.
        n_iter: maximum iterations; stops early at a fixed point (no centroid moves).

    Returns:
        ``(k,)`` sorted centroids and ``{"iterations", "empty"}`` (empty clusters met; they keep their centroid).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    c = np.sort(np.asarray(centroids, dtype=np.float64).reshape(-1))
    k, empty, iterations = len(c), 0, 0
    while iterations < n_iter:
        iterations += 1
        labels = np.searchsorted((c[1:] + c[:-1]) / 2, x)
        counts = np.bincount(labels, minlength=k)
        sums = np.bincount(labels, weights=x, minlength=k)
        empty += int((counts == 0).sum())
        new = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), c))
        if np.array_equal(new, c):
            break
        c = new
    return c, {"iterations": iterations, "empty": empty}


def bin_densities(centroids: np.ndarray, width: float) -> dict[str, np.ndarray]:
    """Bin the centroids and the data density.

    Args:
        centroids: ``(k,)`` positions.
        width: bin width.

    Returns:
        ``edges (b + 1,)``, ``centers (b,)``, ``count (b,)``, ``c (b,)`` centroid density (integrates to 1),
        ``p (b,)`` bin-averaged data density and ``inside (b,)`` bool (the bin lies inside the support).
    """
    edges = np.arange(SPAN[0], SPAN[1] + width / 2, width)
    count, _ = np.histogram(centroids, edges)
    sub = edges[:-1, None] + width * (np.arange(SUB) + 0.5)[None, :] / SUB
    dens = mixture_1d_density(sub)
    return {
        "edges": edges,
        "centers": (edges[1:] + edges[:-1]) / 2,
        "count": count,
        "c": count / (len(centroids) * width),
        "p": dens.mean(axis=1),
        "inside": dens.min(axis=1) > 0,
    }


def fit_alpha(bins: dict[str, np.ndarray]) -> dict[str, Any]:
    """Least squares ``log c = alpha log p + b`` over the usable bins (see the module docstring)."""
    p, c = bins["p"], bins["c"]
    use = bins["inside"] & (p >= P_MIN_REL * p.max()) & (bins["count"] > 0)
    if use.sum() < 3:
        raise ValueError(f"only {int(use.sum())} usable bins for the fit: lower --bin-width or raise k")
    design = np.stack([np.log(p[use]), np.ones(int(use.sum()))], axis=1)
    (alpha, intercept), *_ = np.linalg.lstsq(design, np.log(c[use]), rcond=None)
    return {"alpha": float(alpha), "intercept": float(intercept), "n_bins": int(use.sum()), "used": use}


def power_density(bins: dict[str, np.ndarray], a: float) -> np.ndarray:
    """``p^a`` normalised to a density on the bins."""
    q = bins["p"] ** a
    return q / (q.sum() * (bins["edges"][1] - bins["edges"][0]))


def support_uniform(bins: dict[str, np.ndarray]) -> np.ndarray:
    """The uniform density on the bins where ``p > 0``."""
    on = (bins["p"] > 0).astype(np.float64)
    return on / (on.sum() * (bins["edges"][1] - bins["edges"][0]))


def total_variation(bins: dict[str, np.ndarray], target: np.ndarray) -> float:
    """Total variation between the centroid histogram and a binned density."""
    width = bins["edges"][1] - bins["edges"][0]
    return float(0.5 * np.abs(bins["c"] - target).sum() * width)


def plot(bins: dict[str, np.ndarray], fit: dict[str, Any], k: int, path: Path) -> None:
    """Left: centroid histogram vs p and p^(1/3); right: log c vs log p with the fitted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    width = bins["edges"][1] - bins["edges"][0]
    ax.bar(bins["centers"], bins["c"], width=width, color="tab:blue", alpha=0.5, label=f"{k} k-means centroids")
    ax.plot(bins["centers"], power_density(bins, 1.0), c="k", lw=1, label="data density p")
    ax.plot(bins["centers"], power_density(bins, 1 / 3), c="tab:red", lw=1.5, label="p^(1/3) (normalised)")
    ax.plot(bins["centers"], support_uniform(bins), c="tab:green", lw=1, ls="--", label="uniform on the support")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("Fig. 1a: centroid density vs data density")
    use = fit["used"]
    lp, lc = np.log(bins["p"][use]), np.log(bins["c"][use])
    ax2.scatter(lp, lc, s=6, c="tab:blue")
    grid = np.linspace(lp.min(), lp.max(), 2)
    ax2.plot(grid, fit["alpha"] * grid + fit["intercept"], c="tab:red", label=f"fit alpha = {fit['alpha']:.3f}")
    ax2.plot(grid, grid / 3 + (lc - lp / 3).mean(), c="k", ls=":", label="slope 1/3")
    ax2.set_xlabel("log p (bin average)")
    ax2.set_ylabel("log centroid density")
    ax2.legend(fontsize=8)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="data and clustering seed")
    parser.add_argument("--n-scale", type=float, default=1.0, help="use this fraction of the points and of k")
    parser.add_argument("--k", type=int, default=None, help="clusters (default 5000 * n-scale)")
    parser.add_argument("--n-iter", type=int, default=50, help="Lloyd iterations")
    parser.add_argument("--init", choices=("k-means++", "random"), default="k-means++")
    parser.add_argument(
        "--lloyd", choices=("exact", "engine"), default="engine", help="curate KMeans (default) or float64 1-D Lloyd"
    )
    parser.add_argument("--init-max-points", type=int, default=None, help="k-means++ on a subset (default: all)")
    parser.add_argument("--bin-width", type=float, default=None, help="default 0.25 / sqrt(n-scale)")
    args = parser.parse_args(argv)
    if not 0 < args.n_scale <= 1:
        parser.error("--n-scale must be in (0, 1]")
    args.k = args.k or max(10, round(K * args.n_scale))
    args.bin_width = args.bin_width or 0.25 / np.sqrt(args.n_scale)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the simulation; returns what ``OUT/fig1a.json`` holds."""
    from curate.kmeans import KMeans

    args = parse_args(argv)
    started = time.perf_counter()
    x, _ = scaled_mixture(args.seed, args.n_scale)
    engine_iters = args.n_iter if args.lloyd == "engine" else 0
    km = KMeans(k=args.k, n_iter=engine_iters, init=args.init, seed=args.seed, init_max_points=args.init_max_points)
    km.fit(x)
    init_seconds = time.perf_counter() - started
    centroids = km.centroids.cpu().numpy()[:, 0].astype(np.float64)
    alpha_init = None
    if args.lloyd == "exact":
        alpha_init = fit_alpha(bin_densities(centroids, args.bin_width))["alpha"]
        centroids, lloyd = lloyd_1d(x, centroids, args.n_iter)
    else:
        lloyd = {"iterations": len(km.stats), "empty": sum(int(s["empty_reseeded"]) for s in km.stats)}
    fit_seconds = time.perf_counter() - started
    bins = bin_densities(centroids, args.bin_width)
    fit = fit_alpha(bins)
    result = {
        "alpha": fit["alpha"],
        "alpha_init": alpha_init,
        "alpha_expected": 1 / 3,
        "intercept": fit["intercept"],
        "n_bins_fit": fit["n_bins"],
        "tv_to_p": total_variation(bins, power_density(bins, 1.0)),
        "tv_to_p_one_third": total_variation(bins, power_density(bins, 1 / 3)),
        "tv_to_uniform": total_variation(bins, support_uniform(bins)),
        "n": int(len(x)),
        "k": args.k,
        "n_iter": args.n_iter,
        "iterations_run": lloyd["iterations"],
        "empty_clusters": lloyd["empty"],
        "lloyd": args.lloyd,
        "init": args.init,
        "init_max_points": args.init_max_points,
        "bin_width": args.bin_width,
        "seed": args.seed,
        "init_seconds": init_seconds if args.lloyd == "exact" else None,
        "fit_seconds": fit_seconds,
        "machine": machine_info(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(bins, fit, args.k, args.out / "fig1a.png")
    result["wall_seconds"] = time.perf_counter() - started
    atomic_write_json(args.out / "fig1a.json", result)
    after_init = f" (after the init: {alpha_init:.3f})" if alpha_init is not None else ""
    print(
        f"k={args.k} on n={len(x)} ({args.init}, init on {args.init_max_points or 'all'} rows, "
        f"{result['iterations_run']} {args.lloyd} Lloyd iterations, {lloyd['empty']} empty clusters): "
        f"alpha = {fit['alpha']:.3f}{after_init} over {fit['n_bins']} bins, expected 1/3 = d/(d+2) in 1-D; "
        f"TV to p^(1/3) {result['tv_to_p_one_third']:.3f}, to p {result['tv_to_p']:.3f}, "
        f"to uniform {result['tv_to_uniform']:.3f}; wall {result['wall_seconds']:.1f}s "
        f"(load average {result['machine']['load_avg'][0]:.1f} on {result['machine']['cores']} CPUs)"
    )
    return result


if __name__ == "__main__":
    main()
