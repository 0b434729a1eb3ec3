"""The point sets of the 2-D simulation (Fig. 3, METHOD.md section 4): what each method leaves of
the toy :func:`curate.data.datasets.toy.toy_2d`, all scored by :func:`curate.analysis.metrics.kl_to_uniform`.

Every method ends with :data:`K` = 300 centroids (DBSCAN with what it finds); ``data`` is the toy
itself, ``uniform_reference`` 300 i.i.d. uniform points, ``lattice`` a 17 x 17 lattice.
``scripts/reproduce_fig3.py`` runs them over seeds and writes the table and figures.

    >>> x, _ = toy_2d(0)
    >>> centroids, info = method_points("hkmeans_3_resampling", x, seed=0)   # (300, 2)
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import numpy as np

from curate.analysis.balance import mean_std
from curate.analysis.metrics import kl_to_uniform
from curate.data.datasets.toy import TOY_2D_BOX, toy_2d

__all__ = [
    "BOX",
    "HIERARCHIES",
    "K",
    "KEYS",
    "METHODS",
    "check_ordering",
    "cluster_means",
    "dbscan_eps",
    "lattice_points",
    "method_points",
    "run_all",
    "run_task",
    "scaled_k",
    "summarise",
    "unloaded_estimate",
    "voronoi_raster",
]

K = 300
N_ITER = 50
BOX = TOY_2D_BOX
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
        return cluster_means(x, labels), info
    if method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit(x).labels_
        return cluster_means(x, labels), {}
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


def cluster_means(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(c, 2)`` mean of every cluster ``0 .. c-1`` (label -1 = noise, excluded)."""
    keep = labels >= 0
    n_clusters = int(labels.max()) + 1
    if n_clusters < 1:
        raise ValueError("the clustering found no cluster (all points are noise)")
    sums = np.zeros((n_clusters, x.shape[1]))
    np.add.at(sums, labels[keep], x[keep].astype(np.float64))
    return sums / np.bincount(labels[keep], minlength=n_clusters)[:, None]


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
        table[method] = {
            **mean_std([r["kl"] for r in rows]),
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
