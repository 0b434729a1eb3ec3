"""Figures shared by the report, ``curate.inspect``, the sample stage and the demos (matplotlib, PNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.analysis.balance import mean_counts
from curate.core.atomic import atomic_path

__all__ = [
    "COLORS",
    "image_grid",
    "log_axis",
    "plot_density_shares",
    "plot_label_shares",
    "plot_pool_vs_samples",
    "plot_ref_shares",
    "pyplot",
    "save_figure",
]


COLORS = {"pool": "0.6", "random": "tab:orange", "curated": "tab:blue"}


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures go to files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_axis(ax: Any, axis: str = "y", base: int = 10) -> None:
    """Log scale with plain tick labels (0.01, 0.1, 100) and at least two of them.

    Call it after plotting (it reads the data limits). Over less than two decades the ticks are
    ``1, 2, 5 x 10^n`` so that a narrow range still carries several labels; minor ticks stay
    unlabelled.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{axis}scale")("log", base=base)
    target = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    decades = math.log(hi / lo, base) if lo > 0 and hi > lo else 0.0
    if base == 10 and decades < 2:
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    elif base != 10 and decades < 2:
        target.set_major_locator(LogLocator(base=base, subs=(1.0, 1.5)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def plot_label_shares(
    ax: Any, result: dict[str, Any], names: Sequence[str] | None = None, title: str = "", log: bool = True
) -> None:
    """Grouped bars: share of every label in the pool, the random and the curated samples.

    Labels are sorted by pool share (largest first); error bars are the std over seeds; the
    ``n_rarest`` rarest labels are shaded.
    """
    pool = np.asarray(result["pool"]["label_counts"], dtype=np.float64)
    pool = pool / pool.sum()
    order = np.argsort(-pool, kind="stable")
    order = order[pool[order] > 0]
    xs = np.arange(len(order))
    width = 0.28
    ax.bar(xs - width, pool[order], width, color=COLORS["pool"], label="pool")
    for shift, name in ((0.0, "random"), (width, "curated")):
        mean, std = mean_counts(result["runs"], name, "label_counts")
        ax.bar(xs + shift, mean[order], width, yerr=std[order], color=COLORS[name], label=name, error_kw={"lw": 0.6})
    rare = set(result["pool"]["rarest_labels"])
    for i, label in enumerate(order):
        if label in rare:
            ax.axvspan(i - 0.5, i + 0.5, color="0.93", zorder=-1)
    ax.set_xticks(xs)
    ax.set_xticklabels([names[i] if names else str(i) for i in order], rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(order) - 0.4)
    if log:
        log_axis(ax)
    ax.set_ylabel("share of the set")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def _decile_bars(ax: Any, pool: np.ndarray, curves: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str) -> None:
    xs = np.arange(1, len(pool) + 1)
    w = 0.28
    ax.bar(xs - w, pool, w, color=COLORS["pool"], label="pool")
    for shift, name in ((0.0, "random"), (w, "curated")):
        mean, std = curves[name]
        ax.bar(xs + shift, mean, w, yerr=std, color=COLORS[name], label=name, error_kw={"lw": 0.6})
    ax.axhline(0.1, color="k", ls=":", lw=0.8)
    ax.set_xticks(xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of the set")
    ax.legend(fontsize=8)


def plot_ref_shares(ax: Any, result: dict[str, Any], title: str = "") -> None:
    """Share of the set held by each tenth of the reference clusters, sorted from largest to smallest in the pool.

    A random sample follows the pool (decreasing bars); a sample that favours the sparse regions
    moves mass to the right-hand tenths (the smallest reference clusters).
    """
    pool_counts = np.asarray(result["pool"]["ref_counts"], dtype=np.float64)
    order = np.argsort(-pool_counts, kind="stable")
    groups = np.array_split(order, 10)

    def deciles(counts: np.ndarray) -> np.ndarray:
        return np.array([counts[g].sum() for g in groups]) / max(counts.sum(), 1)

    curves = {}
    for name in ("random", "curated"):
        per_seed = np.array([deciles(np.asarray(r[name]["ref_counts"], dtype=np.float64)) for r in result["runs"]])
        curves[name] = (per_seed.mean(0), per_seed.std(0, ddof=1) if len(per_seed) > 1 else np.zeros(10))
    _decile_bars(
        ax,
        deciles(pool_counts),
        curves,
        f"tenth of the {len(order)} reference clusters (1 = largest in the pool, 10 = smallest)",
    )
    ax.set_title(title, fontsize=10)


def plot_density_shares(ax: Any, result: dict[str, Any], title: str = "") -> None:
    """Share of the set in each density decile of the pool (10-NN radius; 1 = densest, 10 = sparsest)."""
    curves = {}
    for name in ("random", "curated"):
        per_seed = np.array([r[name]["density_deciles"] for r in result["runs"]], dtype=np.float64)
        curves[name] = (per_seed.mean(0), per_seed.std(0, ddof=1) if len(per_seed) > 1 else np.zeros(10))
    pool = np.asarray(result["pool"]["density_deciles"], dtype=np.float64)
    _decile_bars(ax, pool, curves, "density decile of the pool by 10-NN radius (1 = densest, 10 = sparsest)")
    ax.set_title(title, fontsize=10)


def save_figure(fig: Any, path: Path, dpi: int = 90, tight: bool = False) -> None:
    """Save a matplotlib figure atomically as PNG and close it (``tight``: crop to what is drawn)."""
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)


def plot_pool_vs_samples(x: np.ndarray, curated: np.ndarray, random: np.ndarray, path: Path, dpi: int = 90) -> Path:
    """2-D inputs: two panels over the pool (grey), the uniform random sample and the curated one.

    Args:
        x: ``(N, 2)`` pool points.
        curated: ``(m,)`` curated item ids.
        random: ``(m',)`` item ids of the random baseline.
        path: the PNG to write.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4), sharex=True, sharey=True)
    for ax, idx, name in ((axes[0], random, "random"), (axes[1], curated, "curated")):
        ax.scatter(x[:, 0], x[:, 1], s=1, c="0.85", rasterized=True)
        ax.scatter(x[idx, 0], x[idx, 1], s=3, c=COLORS[name])
        title = "uniform random sample" if name == "random" else "curated sample"
        ax.set_title(f"{title}\n{len(idx):,} of {len(x):,} pool points", fontsize=10)
        ax.set_aspect("equal")
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi)
    return path


def image_grid(images: list[Any], path: Path, cell: int = 84, cols: int = 8, selected: Sequence[bool] = ()) -> Path:
    """Tile images into a grid PNG (``cell`` px per image); selected items get a blue frame."""
    from PIL import Image, ImageDraw

    cols = max(1, min(cols, len(images)))
    rows = max(1, math.ceil(len(images) / cols))
    pad = 4
    canvas = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, image in enumerate(images):
        x0, y0 = pad + (i % cols) * (cell + pad), pad + (i // cols) * (cell + pad)
        if image is None:
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], outline="red")
            continue
        thumb = image.convert("RGB")
        thumb.thumbnail((cell, cell), Image.Resampling.NEAREST if max(thumb.size) < cell else Image.Resampling.LANCZOS)
        if max(thumb.size) < cell:
            scale = cell / max(thumb.size)
            thumb = thumb.resize((round(thumb.width * scale), round(thumb.height * scale)), Image.Resampling.NEAREST)
        canvas.paste(thumb, (x0 + (cell - thumb.width) // 2, y0 + (cell - thumb.height) // 2))
        if i < len(selected) and selected[i]:
            draw.rectangle([x0 - 2, y0 - 2, x0 + cell + 1, y0 + cell + 1], outline=(31, 119, 180), width=3)
    with atomic_path(path, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG", optimize=True)
    return path
