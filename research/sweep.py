"""A Hydra sweep's runs as one table and one figure (``scripts/plot_sweep.py``).

Every run of a sweep (``-m``) writes ``metrics.json`` in its folder (or one per budget folder for
the sample stage); the run's overrides come from its ``.hydra/overrides.yaml``. :func:`collect`
reads them into rows, the keys that take several values across the runs being the swept ones;
:func:`mean_over` pools runs that differ only in one key (e.g. ``seed``) into ``mean +- std``;
:func:`markdown_table` and :func:`plot_sweep` show them: runs labelled by factor
(``levels 3 · steps 10 · init random``), each panel saying which way is better and drawing its
:func:`reference` line.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from curate.analysis.plots import pyplot, save_figure

__all__ = [
    "collect",
    "default_metrics",
    "factor_label",
    "markdown_table",
    "mean_over",
    "metric_names",
    "numeric_metrics",
    "plot_sweep",
    "reference",
    "run_label",
]

PREFERRED = (
    "kl_top",
    "kl_sample",
    "normalized_entropy_finest",
    "normalized_entropy_top",
    "rarest_share",
    "top_size_cv",
)


# which way is better, per metric
LOWER_IS_BETTER = {"kl_top", "kl_sample", "top_size_cv"}
HIGHER_IS_BETTER = {"normalized_entropy_finest", "normalized_entropy_top", "rarest_share"}
# override key -> factor name in the figure
FACTORS = {
    "cluster": "levels",
    "cluster.resample_steps_override": "steps",
    "cluster.resample_steps": "steps",
    "cluster.init": "init",
}


def factor_label(key: str, value: str) -> str:
    """``cluster=toy_levels3`` -> ``levels 3``; ``cluster.init=random`` -> ``init random``."""
    name = FACTORS.get(key, key.rsplit(".", 1)[-1])
    if key == "cluster":
        match = re.search(r"levels?(\d+)$", value)
        value = match.group(1) if match else value
    return f"{name} {value}"


def run_label(swept: list[str], row: dict[str, Any]) -> str:
    """A run's label in the figure: its swept values, by factor."""
    if not swept:
        return row["run"]
    return " · ".join(factor_label(k, str(row["overrides"].get(k, ""))) for k in swept)


def _run_config(row: dict[str, Any], root: Path) -> dict[str, Any]:
    """The run's composed config (nearest ``.hydra/config.yaml``), or ``{}``."""
    from omegaconf import OmegaConf

    name = row.get("_run0", row["run"])
    run = root / name if (root / name).is_dir() else root
    for folder in (run, *run.parents):
        path = folder / ".hydra" / "config.yaml"
        if path.exists():
            return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if folder == root:
            break
    return {}


def _input_points(config: dict[str, Any]) -> Path | None:
    """The ``.npy`` a cluster run (``input``) or a sample run (``cluster_dir``'s manifest) read."""
    if config.get("cluster_dir"):
        manifest = Path(config["cluster_dir"]) / "manifest.json"
        if manifest.exists():
            path = json.loads(manifest.read_text()).get("input", {}).get("path")
            return Path(path) if path else None
        return None
    source = config.get("input") or {}
    if source.get("path"):
        return Path(source["path"])
    if source.get("toy") and config.get("out_dir"):
        return Path(config["out_dir"]) / "data" / source["toy"] / "x.npy"
    return None


def reference(metric: str, rows: list[dict[str, Any]], root: Path | None) -> tuple[float, str] | None:
    """The value a panel's runs are read against, with its name, or None.

    ``kl_*``: the KL-to-uniform of the raw 2-D input (what no curation gives); ``rarest_share``:
    the pool's share (what a uniform random sample gives); normalised entropies: 1, the maximum.
    """
    if metric.startswith("normalized_entropy"):
        return 1.0, "maximum (uniform over clusters)"
    if metric == "rarest_share":
        pool = [row["rarest_pool_share"] for row in rows if isinstance(row.get("rarest_pool_share"), int | float)]
        return (sum(pool) / len(pool), "pool share (random sample)") if pool else None
    if metric in ("kl_top", "kl_sample") and root is not None and rows:
        path = _input_points(_run_config(rows[0], root))
        if path is None or not path.exists():
            return None
        import numpy as np

        from curate.analysis.metrics import kl_to_uniform
        from curate.io.shards import open_npy

        try:
            x = open_npy(path)
        except ValueError:  # not an (n, d) .npy: no raw-data reference
            return None
        return (kl_to_uniform(np.asarray(x, dtype=np.float64)), "raw data") if x.shape[1] == 2 else None
    return None


def _run_overrides(run: Path, root: Path) -> dict[str, str]:
    """``{key: value}`` of the run's command-line overrides (nearest ``.hydra/overrides.yaml``)."""
    from omegaconf import OmegaConf

    for folder in (run, *run.parents):
        path = folder / ".hydra" / "overrides.yaml"
        if path.exists():
            pairs = [str(o).split("=", 1) for o in OmegaConf.load(path)]
            return {k.lstrip("+~"): v for k, v in (p for p in pairs if len(p) == 2)}
        if folder == root:
            break
    return {}


def collect(sweep_dir: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows of a sweep: ``(swept keys, rows)``; a row holds the run's overrides, ``run`` (its folder
    relative to ``sweep_dir``) and its metrics."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {root}")
    rows = []
    for path in sorted(root.rglob("metrics.json")):
        if ".submitit" in path.parts:
            continue
        run = path.parent
        rows.append(
            {"overrides": _run_overrides(run, root), "run": str(run.relative_to(root)), **json.loads(path.read_text())}
        )
    if not rows:
        raise FileNotFoundError(f"no metrics.json under {root}: has the sweep run?")
    keys = sorted({k for row in rows for k in row["overrides"]})
    swept = [k for k in keys if len({row["overrides"].get(k) for row in rows}) > 1]
    rows.sort(key=lambda row: [str(row["overrides"].get(k, "")) for k in swept] + [row["run"]])
    return swept, rows


def mean_over(swept: list[str], rows: list[dict[str, Any]], key: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Pool the rows that differ only in ``key``: numeric metrics -> their mean, with the
    (population) std in ``row["_std"]`` and the number of runs in ``row["_n"]``."""
    if key not in swept:
        raise ValueError(f"{key}: not a swept key; swept: {swept}")
    rest = [k for k in swept if k != key]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row["overrides"].get(k, "") for k in rest), []).append(row)
    pooled = []
    for values, members in groups.items():
        row: dict[str, Any] = {"overrides": dict(zip(rest, values)), "run": f"{len(members)} runs", "_std": {}}
        row["_run0"] = members[0]["run"]  # where its config is
        row["_n"] = len(members)
        for name in metric_names(members):
            numbers = [m[name] for m in members if isinstance(m.get(name), int | float)]
            if len(numbers) == len(members):
                mean = sum(numbers) / len(numbers)
                row[name] = mean
                if max(numbers) - min(numbers) > 1e-12 * max(1.0, abs(mean)):  # else: constant, no ±
                    row["_std"][name] = math.sqrt(sum((v - mean) ** 2 for v in numbers) / len(numbers))
            elif all(m.get(name) == members[0].get(name) for m in members):  # e.g. the same k list
                row[name] = members[0].get(name)
        pooled.append(row)
    return rest, pooled


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return "/".join(_fmt(v) for v in value)
    return str(value)


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """Metric keys present in the rows, in first-seen order (nested dicts are left out)."""
    names: list[str] = []
    for row in rows:
        for key, value in row.items():
            if (
                key not in ("overrides", "run", "_std", "_n", "_run0")
                and not isinstance(value, dict)
                and key not in names
            ):
                names.append(key)
    return names


def markdown_table(swept: list[str], rows: list[dict[str, Any]]) -> str:
    """A markdown table: swept keys, then every metric; one line per run."""
    metrics = [m for m in metric_names(rows) if m not in swept]
    head = (swept or ["run"]) + metrics + (["runs"] if rows and "_n" in rows[0] else [])

    def cell(row: dict[str, Any], m: str) -> str:
        std = row.get("_std", {}).get(m)
        return _fmt(row.get(m, "")) + ("" if std is None else f" ± {std:.2g}")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        first = [row["overrides"].get(k, "") for k in swept] if swept else [row["run"]]
        runs = [str(row["_n"])] if "_n" in row else []
        lines.append("| " + " | ".join([*first, *(cell(row, m) for m in metrics), *runs]) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(
    swept: list[str], rows: list[dict[str, Any]], metrics: list[str], path: str | Path, root: Path | None = None
) -> None:
    """One horizontal bar chart per metric, one bar per run (labelled by factor, coloured by the last
    factor), with which way is better and the metric's :func:`reference` line."""
    plt = pyplot()
    labels = [run_label(swept, row) for row in rows]
    last = swept[-1] if swept else None
    levels = list(dict.fromkeys(str(row["overrides"].get(last, "")) for row in rows)) if last else [""]
    colors = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(levels)}
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.5 + 3.8 * len(metrics), 1.6 + 0.32 * len(rows)), sharey=True, squeeze=False
    )
    for ax, metric in zip(axes[0], metrics):
        values = [float(row[metric]) if isinstance(row.get(metric), int | float) else math.nan for row in rows]
        errors = [row.get("_std", {}).get(metric, 0.0) for row in rows]
        bar_colors = [colors[str(row["overrides"].get(last, ""))] if last else "tab:blue" for row in rows]
        ax.barh(range(len(rows)), values, xerr=errors if any(errors) else None, color=bar_colors)
        better = " (lower is better)" if metric in LOWER_IS_BETTER else ""
        better = " (higher is better)" if metric in HIGHER_IS_BETTER else better
        ax.set_title(metric + better, fontsize=10)
        ref = reference(metric, rows, root)
        if ref is not None:
            ax.axvline(ref[0], color="k", ls="--", lw=1)
            ax.text(ref[0], -0.9, f"{ref[1]}: {ref[0]:.3g} ", fontsize=7, va="bottom", ha="right")
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylim(len(rows) - 0.4, -1.4)  # top-down, with room for the reference's label
    if last and len(levels) > 1:
        handles = [plt.Rectangle((0, 0), 1, 1, color=colors[v]) for v in levels]
        fig.legend(handles, [factor_label(last, v) for v in levels], loc="lower center", ncol=len(levels), fontsize=8)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=100)


def numeric_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The metrics with a number in at least one row."""
    return [m for m in metric_names(rows) if any(isinstance(row.get(m), int | float) for row in rows)]


def default_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """What to plot when not told: the balance metrics present (:data:`PREFERRED`), else the first
    three numeric ones."""
    numeric = numeric_metrics(rows)
    return [m for m in PREFERRED if m in numeric] or numeric[:3]
