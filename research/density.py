"""Centroid density against data density in 1-D: where k-means puts its centroids.

Zador's theorem: for many centroids the centroid density follows ``p^(d / (d + 2))``, ``p^(1/3)`` in
1-D (the paper's Fig. 1a). :func:`lloyd_1d` runs exact float64 Lloyd iterations in 1-D;
:func:`bin_densities` bins centroids and a known data density; :func:`fit_alpha` fits the exponent;
:func:`total_variation` measures the distance to ``p^a`` (:func:`power_density`) or to the uniform on
the support (:func:`support_uniform`); :func:`plot_centroid_density` draws both views.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from curate.analysis.plots import pyplot, save_figure

__all__ = [
    "bin_densities",
    "fit_alpha",
    "lloyd_1d",
    "plot_centroid_density",
    "power_density",
    "support_uniform",
    "total_variation",
]


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


def bin_densities(
    centroids: np.ndarray,
    width: float,
    density: Callable[[np.ndarray], np.ndarray],
    span: tuple[float, float],
    sub: int = 21,
) -> dict[str, np.ndarray]:
    """Bin the centroids and the data density over ``span``.

    Args:
        centroids: ``(k,)`` positions.
        width: bin width.
        density: the data density, vectorised (``(m, s)`` points -> ``(m, s)`` values).
        span: ``(low, high)`` of the bins.
        sub: density samples per bin for the bin averages.

    Returns:
        ``edges (b + 1,)``, ``centers (b,)``, ``count (b,)``, ``c (b,)`` centroid density (integrates to 1),
        ``p (b,)`` bin-averaged data density and ``inside (b,)`` bool (the bin lies inside the support).
    """
    edges = np.arange(span[0], span[1] + width / 2, width)
    count, _ = np.histogram(centroids, edges)
    dens = density(edges[:-1, None] + width * (np.arange(sub) + 0.5)[None, :] / sub)
    return {
        "edges": edges,
        "centers": (edges[1:] + edges[:-1]) / 2,
        "count": count,
        "c": count / (len(centroids) * width),
        "p": dens.mean(axis=1),
        "inside": dens.min(axis=1) > 0,
    }


def fit_alpha(bins: dict[str, np.ndarray], p_min_rel: float = 1e-3) -> dict[str, Any]:
    """Least squares ``log c = alpha log p + b`` over the bins inside the support where
    ``p >= p_min_rel * max p`` and the centroid count is positive.

    Returns:
        ``alpha``, ``intercept``, ``n_bins`` and ``used`` (``(b,)`` bool, the bins of the fit).

    Raises:
        ValueError: fewer than 3 usable bins.
    """
    p, c = bins["p"], bins["c"]
    use = bins["inside"] & (p >= p_min_rel * p.max()) & (bins["count"] > 0)
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


def plot_centroid_density(bins: dict[str, np.ndarray], fit: dict[str, Any], k: int, path: Path) -> None:
    """Left: centroid histogram vs p and p^(1/3); right: log c vs log p with the fitted line."""
    plt = pyplot()
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
    save_figure(fig, path, dpi=110, tight=True)
