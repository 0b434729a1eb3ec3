"""Reproduce the 2-D simulation of the paper (Fig. 3): how uniform are the 300 centroids of each clustering?

    python scripts/reproduce_fig3.py --out outputs/fig3                 # 5 seeds, 2 worker processes
    python scripts/reproduce_fig3.py --out /tmp/fig3 --quick            # 1 seed (smoke test)
    python scripts/reproduce_fig3.py --out /tmp/fig3 --quick --n-scale 0.2 --workers 1   # tiny (tests)

Data: :func:`curate.datasets.toy.toy_2d` (9,000 points). Every method ends with 300 centroids:

- ``kmeans``: ``KMeans(k=300, n_iter=50)`` (k-means++ init), best inertia of 10 restarts (as the paper's
  k-means baseline); restart ``i`` of seed ``s`` uses seed ``10 s + i``.
- ``hkmeans_2``: hierarchical k-means (1500, 300), no resampling.
- ``hkmeans_3``: (3000, 1000, 300), no resampling.
- ``hkmeans_3_resampling``: (3000, 1000, 300), ``r = 2`` at every level, 10 resampling steps each.
- ``dbscan``: scikit-learn ``DBSCAN(min_samples=5, eps=...)`` with the paper's companion setting: ``eps`` is
  the 1001st-largest 5-nearest-neighbour distance of the data (:func:`dbscan_eps`; the 5 neighbours
  count the point itself, as ``min_samples`` does; in reduced runs the rank scales with ``n_scale``).
  Centroid = mean of a cluster, noise points (label -1) excluded; the cluster and noise counts are
  reported (far fewer than 300 clusters: DBSCAN does not take a cluster count).
  Note, the setting this script used before (not in the paper): DBSCAN's KL depends strongly on the
  setting (mean over seeds 0-4): eps 0.02 / min_samples 4 (~300 clusters) 1.41, 0.02 / 3 (~450) 1.17,
  0.025 / 3 (~345) 0.92, 0.03 / 3 (~300) 0.78, 0.05 / 2 (~345) 0.46.
- ``agglomerative``: scikit-learn ``AgglomerativeClustering(300, linkage="ward")``; centroid = cluster mean
  (deterministic given the data: no restarts to take).
- ``data``: the 9,000 points themselves.
- ``uniform_reference``: 300 i.i.d. Uniform([-3, 3]^2) points (the paper's "lower bound" row). A reference,
  not a bound: a random sample has its own clumps, and a single resampling seed can score below it.
- ``lattice``: the 17 x 17 = 289 cell centres of a regular lattice on the box, shown beside it; it scores
  far lower (0.019), so the KL does go below the uniform reference.

Metric: :func:`curate.metrics.kl_to_uniform` (isotropic Gaussian KDE, kernel std 0.5, grid [-3, 3)^2
step 0.02, KL to the uniform). Seed ``s`` (0 .. seeds-1) seeds the data, every clustering and the
uniform points; the table gives mean and sample standard deviation (ddof=1) over the seeds.

Writes ``OUT/fig3_kl.json`` (``{method: {mean, std, values, n_centroids}}``), ``OUT/fig3_run.json``
(settings, timings), ``OUT/fig3_voronoi.png``, ``OUT/fig3_kl.png`` and ``OUT/fig3_kde.png`` (seed 0
pictures), and prints a markdown table beside the paper's values.

Work is split into (method, seed) tasks run by ``--workers`` processes (one torch thread each).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from curate.analysis.machine import machine_info
from curate.analysis.plots import save_figure
from curate.datasets.toy import toy_2d
from curate.io.atomic import atomic_write_json
from curate.metrics import kde_grid, kl_to_uniform

K = 300
N_ITER = 50
BOX = (-3.0, 3.0)
KMEANS_RESTARTS = 10
DBSCAN_MIN_SAMPLES = 5
DBSCAN_EPS_RANK = 1000  # eps = the (rank + 1)-th largest min_samples-NN distance (paper's companion code)
LATTICE_SIDE = 17
RESAMPLE_STEPS = 10
RESAMPLE_SIZE = 2

# name -> levels as (k, resample_steps, sample_size), finest first
HIERARCHIES: dict[str, list[tuple[int, int, int]]] = {
    "hkmeans_2": [(1500, 0, 1), (K, 0, 1)],
    "hkmeans_3": [(3000, 0, 1), (1000, 0, 1), (K, 0, 1)],
    "hkmeans_3_resampling": [(k, RESAMPLE_STEPS, RESAMPLE_SIZE) for k in (3000, 1000, K)],
}
METHODS = ("data", "kmeans", "hkmeans_2", "hkmeans_3", "hkmeans_3_resampling", "dbscan", "agglomerative")
KEYS = (*METHODS, "uniform_reference", "lattice")
PAPER: dict[str, float] = {
    "data": 0.942,
    "kmeans": 0.340,
    "hkmeans_2": 0.132,
    "hkmeans_3": 0.081,
    "hkmeans_3_resampling": 0.042,
    "dbscan": 0.853,
    "agglomerative": 0.374,
    "uniform_reference": 0.040,
}
LABELS: dict[str, str] = {
    "data": "data (9,000 points)",
    "kmeans": "k-means (300, best of 10 restarts)",
    "hkmeans_2": "2-level (1500, 300)",
    "hkmeans_3": "3-level (3000, 1000, 300)",
    "hkmeans_3_resampling": "3-level + resampling (r=2, 10 steps)",
    "dbscan": "DBSCAN (min_samples 5, eps = 1001st-largest 5-NN distance)",
    "agglomerative": "agglomerative (Ward, 300)",
    "uniform_reference": "uniform reference (300 i.i.d. uniform points)",
    "lattice": "17 x 17 lattice (289 points)",
}
# rough relative cost, to start the slow tasks first
COST = {"hkmeans_3_resampling": 100, "kmeans": 10, "agglomerative": 8, "hkmeans_3": 8, "hkmeans_2": 6}


def scaled_k(k: int, n_scale: float) -> int:
    """``k`` for a reduced run (``n_scale`` times fewer points): ``max(2, round(k * n_scale))``."""
    return max(2, round(k * n_scale))


def method_points(method: str, x: np.ndarray, seed: int, n_scale: float = 1.0) -> tuple[np.ndarray, dict[str, Any]]:
    """The point set a method produces on the toy ``x``.

    Args:
        method: one of ``KEYS``.
        x: ``(n, 2)`` float32 toy data.
        seed: clustering seed.
        n_scale: size factor of a reduced run (scales every ``k``).

    Returns:
        ``points: (m, 2)`` float and extra information (e.g. DBSCAN's cluster count).
    """
    k = scaled_k(K, n_scale)
    if method == "data":
        return x, {}
    if method == "uniform_reference":
        rng = np.random.default_rng([seed, 1])
        return rng.uniform(*BOX, size=(k, 2)), {}
    if method == "lattice":
        return lattice_points(LATTICE_SIDE), {}
    if method == "kmeans":
        from curate.kmeans import KMeans

        fits = [KMeans(k=k, n_iter=N_ITER, seed=KMEANS_RESTARTS * seed + i).fit(x) for i in range(KMEANS_RESTARTS)]
        inertias = [fit.inertia for fit in fits]
        best = int(np.argmin(inertias))
        return fits[best].centroids.cpu().numpy(), {"inertias": inertias, "best_restart": best}
    if method in HIERARCHIES:
        from curate.hierarchy import HierarchicalKMeans

        levels = [
            {"k": scaled_k(kt, n_scale), "resample_steps": m, "sample_size": r} for kt, m, r in HIERARCHIES[method]
        ]
        hkm = HierarchicalKMeans(levels, n_iter=N_ITER, seed=seed).fit(x)
        return hkm.levels_[-1].centroids, {"level_seconds": [lv.stats["seconds"] for lv in hkm.levels_]}
    if method == "dbscan":
        from sklearn.cluster import DBSCAN

        eps = dbscan_eps(x, DBSCAN_MIN_SAMPLES, max(1, round(DBSCAN_EPS_RANK * n_scale)))
        labels = DBSCAN(eps=eps, min_samples=DBSCAN_MIN_SAMPLES).fit(x).labels_
        info = {"eps": eps, "n_clusters": int(labels.max() + 1), "n_noise": int((labels < 0).sum())}
        return _cluster_means(x, labels), info
    if method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit(x).labels_
        return _cluster_means(x, labels), {}
    raise ValueError(f"unknown method {method!r}; choose from {KEYS}")


def lattice_points(side: int) -> np.ndarray:
    """``(side**2, 2)`` cell centres of a regular ``side x side`` lattice on the box."""
    g = BOX[0] + (np.arange(side) + 0.5) * (BOX[1] - BOX[0]) / side
    gx, gy = np.meshgrid(g, g)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def dbscan_eps(x: np.ndarray, min_samples: int, rank: int) -> float:
    """The ``(rank + 1)``-th largest ``min_samples``-nearest-neighbour distance of ``x: (n, d)``.

    The neighbours count the point itself (as DBSCAN's ``min_samples`` does), so this is the distance to
    the ``min_samples - 1``-th other point; ``rank`` is clipped to ``n - 1``.
    """
    from sklearn.neighbors import NearestNeighbors

    dist = NearestNeighbors(n_neighbors=min_samples).fit(x).kneighbors(x)[0][:, -1]
    return float(np.sort(dist)[::-1][min(rank, len(dist) - 1)])


def _cluster_means(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(c, 2)`` mean of every cluster ``0 .. c-1`` (label -1 = noise, excluded)."""
    keep = labels >= 0
    n_clusters = int(labels.max()) + 1
    if n_clusters < 1:
        raise ValueError("the clustering found no cluster (all points are noise)")
    sums = np.zeros((n_clusters, x.shape[1]))
    np.add.at(sums, labels[keep], x[keep].astype(np.float64))
    return sums / np.bincount(labels[keep], minlength=n_clusters)[:, None]


def run_task(task: tuple[str, int, float]) -> dict[str, Any]:
    """One (method, seed): build the points, score them. Returns the KL, timings and (seed 0) the points."""
    method, seed, n_scale = task
    x, _ = toy_2d(seed, n_scale=n_scale)
    started, cpu_started = time.perf_counter(), time.process_time()
    points, info = method_points(method, x, seed, n_scale)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "method": method,
        "seed": seed,
        "kl": kl_to_uniform(points),
        "n_points": int(len(points)),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "info": info,
        "points": np.asarray(points, dtype=np.float64) if seed == 0 else None,
    }


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def run_all(seeds: int, n_scale: float, workers: int) -> list[dict[str, Any]]:
    """Run every (method, seed) task, the slow ones first, in ``workers`` processes (1: in this process)."""
    tasks = [(m, s, n_scale) for m in KEYS for s in range(seeds)]
    tasks.sort(key=lambda t: -COST.get(t[0], 0))
    if workers <= 1:
        return [run_task(t) for t in tasks]
    with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init) as pool:
        return list(pool.imap_unordered(run_task, tasks))


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{method: {mean, std (ddof=1; 0 for one seed), values (by seed), n_points, seconds (mean)}}``."""
    table: dict[str, dict[str, Any]] = {}
    for method in KEYS:
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["seed"])
        values = np.array([r["kl"] for r in rows])
        table[method] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "values": values.tolist(),
            "n_points": [r["n_points"] for r in rows],
            "seconds": float(np.mean([r["seconds"] for r in rows])),
            "cpu_seconds": float(np.mean([r["cpu_seconds"] for r in rows])),
        }
    return table


def unloaded_estimate(results: list[dict[str, Any]], workers: int) -> float:
    """Clustering time on an idle machine, estimated from the tasks' CPU times.

    Each task's CPU time (its process's, one torch thread per worker) is what it would take alone on an
    idle core; the tasks are scheduled longest first on ``workers`` cores. Timings on a busy machine
    are otherwise dominated by the other jobs.
    """
    loads = [0.0] * max(1, workers)
    for cpu in sorted((r["cpu_seconds"] for r in results), reverse=True):
        loads[loads.index(min(loads))] += cpu
    return max(loads)


def markdown_table(table: dict[str, dict[str, Any]], seeds: int) -> str:
    """The table ours vs paper, as markdown."""
    lines = [
        f"| set of points | paper | ours (mean +- std, {seeds} seed{'s' if seeds > 1 else ''}) | CPU s / seed |",
        "|---|---|---|---|",
    ]
    for method in KEYS:
        row = table[method]
        paper = f"{PAPER[method]:.3f}" if method in PAPER else "-"
        paper += " +- 0.007" if method == "uniform_reference" else ""
        lines.append(
            f"| {LABELS[method]} | {paper} | {row['mean']:.3f} +- {row['std']:.3f} | {row['cpu_seconds']:.2f} |"
        )
    return "\n".join(lines)


def check_ordering(table: dict[str, dict[str, Any]]) -> list[str]:
    """The paper's expected relations that do *not* hold (empty list = all hold)."""
    m = {key: row["mean"] for key, row in table.items()}
    relations = [
        ("data > dbscan", m["data"] > m["dbscan"]),
        ("dbscan > kmeans", m["dbscan"] > m["kmeans"]),
        ("dbscan > agglomerative", m["dbscan"] > m["agglomerative"]),
        ("kmeans > hkmeans_2", m["kmeans"] > m["hkmeans_2"]),
        ("agglomerative > hkmeans_2", m["agglomerative"] > m["hkmeans_2"]),
        ("hkmeans_2 > hkmeans_3", m["hkmeans_2"] > m["hkmeans_3"]),
        ("hkmeans_3 > hkmeans_3_resampling", m["hkmeans_3"] > m["hkmeans_3_resampling"]),
        (
            "hkmeans_3_resampling within 0.015 of uniform_reference",
            abs(m["hkmeans_3_resampling"] - m["uniform_reference"]) <= 0.015,
        ),
    ]
    return [name for name, ok in relations if not ok]


# ----------------------------------------------------------------------------------------------
# Pictures (seed 0)
# ----------------------------------------------------------------------------------------------
def _panels(n: int) -> tuple[Any, np.ndarray]:
    import matplotlib.pyplot as plt

    cols = 4
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat[:n]


def voronoi_raster(centroids: np.ndarray, n: int = 600) -> np.ndarray:
    """``(n, n)`` bool raster of Voronoi cell borders over the box (row = y, column = x).

    Each pixel gets its nearest centroid (a k-d tree query); a pixel is a border when its right or
    lower neighbour belongs to another cell.
    """
    from scipy.spatial import cKDTree

    g = BOX[0] + (np.arange(n) + 0.5) * (BOX[1] - BOX[0]) / n
    gx, gy = np.meshgrid(g, g)
    cell = cKDTree(centroids).query(np.stack([gx.ravel(), gy.ravel()], axis=1))[1].reshape(n, n)
    border = np.zeros((n, n), dtype=bool)
    border[:, :-1] |= cell[:, :-1] != cell[:, 1:]
    border[:-1, :] |= cell[:-1, :] != cell[1:, :]
    return border


def plot_voronoi(points: dict[str, np.ndarray], table: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per method: Voronoi cells of its centroids with the centroids as dots (data: the points)."""
    fig, axes = _panels(len(points))
    extent = (BOX[0], BOX[1], BOX[0], BOX[1])
    for ax, (method, pts) in zip(axes, points.items()):
        if method == "data":
            ax.scatter(pts[:, 0], pts[:, 1], s=0.5, c="k", alpha=0.4, linewidths=0)
        else:
            border = voronoi_raster(pts)
            ax.imshow(np.where(border, 0.55, 1.0), cmap="gray", vmin=0, vmax=1, origin="lower", extent=extent)
            ax.scatter(pts[:, 0], pts[:, 1], s=5, c="tab:red", linewidths=0)
        ax.set_xlim(*BOX)
        ax.set_ylim(*BOX)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{method}\n{len(pts)} pts, KL {table[method]['values'][0]:.3f}", fontsize=9)
    fig.suptitle("Voronoi cells of the centroids over [-3, 3]^2 (seed 0)")
    save_figure(fig, path, dpi=110, tight=True)


def plot_kde(points: dict[str, np.ndarray], table: dict[str, dict[str, Any]], path: Path) -> None:
    """KDE surfaces (density relative to uniform, ``p * n_cells``; 1 = uniform) on a shared colour scale."""
    import matplotlib.pyplot as plt

    fig, axes = _panels(len(points))
    image = None
    for ax, (method, pts) in zip(axes, points.items()):
        p, g = kde_grid(pts)
        image = ax.imshow(
            (p * p.size).T, origin="lower", extent=(g[0], g[-1], g[0], g[-1]), cmap="viridis", vmin=0, vmax=3
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{method}\nKL {table[method]['values'][0]:.3f}", fontsize=9)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="KDE density / uniform density (clipped at 3)")
    fig.suptitle("Gaussian KDE (std 0.5) of each point set (seed 0)")
    save_figure(fig, path, dpi=110, tight=True)
    plt.close("all")


def plot_kl(table: dict[str, dict[str, Any]], path: Path) -> None:
    """KL bars (mean, std error bars), the paper's values as markers, the uniform reference as a band and
    the lattice as a line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    pos = np.arange(len(METHODS))
    means = [table[m]["mean"] for m in METHODS]
    stds = [table[m]["std"] for m in METHODS]
    ax.bar(pos, means, yerr=stds, capsize=4, color="tab:blue", label="ours (mean +- std over seeds)")
    ax.scatter(pos, [PAPER[m] for m in METHODS], marker="D", s=30, c="tab:red", zorder=3, label="paper")
    lb = table["uniform_reference"]
    ax.axhspan(lb["mean"] - lb["std"], lb["mean"] + lb["std"], color="tab:green", alpha=0.3)
    ax.axhline(lb["mean"], color="tab:green", lw=1, label="300 i.i.d. uniform points (reference)")
    ax.axhline(table["lattice"]["mean"], color="tab:purple", lw=1, ls="--", label="17 x 17 lattice")
    ax.set_xticks(pos, METHODS, rotation=25, ha="right")
    ax.set_ylabel("KL(KDE || uniform)")
    ax.legend(fontsize=8)
    ax.set_title(f"Fig. 3: uniformity of 300 centroids ({len(lb['values'])} seeds)")
    save_figure(fig, path, dpi=110, tight=True)


# ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0 .. seeds-1)")
    parser.add_argument("--quick", action="store_true", help="1 seed (smoke test)")
    parser.add_argument(
        "--n-scale", type=float, default=1.0, help="scale the toy and every k by this (tests: 0.2); 1 = the paper"
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if not 0 < args.n_scale <= 1:
        parser.error("--n-scale must be in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the simulation; returns the summary table (also written to ``OUT/fig3_kl.json``)."""
    import matplotlib

    matplotlib.use("Agg")
    args = parse_args(argv)
    started = time.perf_counter()
    results = run_all(args.seeds, args.n_scale, args.workers)
    compute_seconds = time.perf_counter() - started
    table = summarise(results)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "fig3_kl.json", table)
    first = sorted((r for r in results if r["seed"] == 0), key=lambda r: KEYS.index(r["method"]))
    points = {r["method"]: r["points"] for r in first}
    plot_voronoi(points, table, out / "fig3_voronoi.png")
    plot_kde(points, table, out / "fig3_kde.png")
    plot_kl(table, out / "fig3_kl.png")
    wall = time.perf_counter() - started
    failed = check_ordering(table)
    estimate = unloaded_estimate(results, args.workers)
    dbscan = [r["info"] for r in sorted(results, key=lambda r: r["seed"]) if r["method"] == "dbscan"]
    kmeans = [r["info"] for r in sorted(results, key=lambda r: r["seed"]) if r["method"] == "kmeans"]
    run = {
        "seeds": args.seeds,
        "n_scale": args.n_scale,
        "workers": args.workers,
        "compute_seconds": compute_seconds,
        "wall_seconds": wall,
        "cpu_seconds_total": float(sum(r["cpu_seconds"] for r in results)),
        "estimated_idle_seconds": estimate,
        "dbscan": {"min_samples": DBSCAN_MIN_SAMPLES, "eps_rank": DBSCAN_EPS_RANK, "by_seed": dbscan},
        "kmeans": {"restarts": KMEANS_RESTARTS, "by_seed": kmeans},
        "ordering_failures": failed,
        "machine": machine_info(),
    }
    atomic_write_json(out / "fig3_run.json", run)
    print(markdown_table(table, args.seeds))
    print(
        f"\nwall time {wall:.1f}s (clustering + KL {compute_seconds:.1f}s) with {args.workers} worker(s), "
        f"load average {run['machine']['load_avg'][0]:.1f} on {run['machine']['cores']} CPUs; CPU time of the tasks "
        f"{run['cpu_seconds_total']:.1f}s, i.e. about {estimate:.0f}s of clustering on {args.workers} idle core(s)"
    )
    if args.n_scale != 1:
        print(f"reduced run: {args.n_scale} x the points and every k (labels show the full sizes)")
    print(
        f"DBSCAN clusters by seed: {[d['n_clusters'] for d in dbscan]}, noise points "
        f"{[d['n_noise'] for d in dbscan]}, eps {[round(d['eps'], 4) for d in dbscan]}"
    )
    print("expected ordering: " + ("all relations hold" if not failed else "NOT holding: " + "; ".join(failed)))
    return table


if __name__ == "__main__":
    from curate.errors import cli_entry

    cli_entry(main)
