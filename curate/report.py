"""The curation report: a static HTML page of what a curation did, for a data team.

    python -m curate.report cluster=outputs/cluster/web [sample=outputs/sample/web] [out=DIR]

Writes ``DIR/report.html`` with its PNGs beside it (no JavaScript, no external CSS, no network):
per level the cluster-size distribution, pool vs curated share of the top-level clusters, example
items of a few top-level clusters (images for Fashion-MNIST / image-folder / image-list stores,
texts for WordNet / text-lines / JSONL stores), pool / random / curated label histograms when the
store has labels, and for 2-D ``.npy`` inputs a scatter of pool vs sample. ``DIR`` defaults to
``<sample>/report`` (or ``<cluster>/report`` without ``sample=``). Without ``sample=`` the report
draws a hierarchical sample of ``target`` items itself and says so: an int count, or a float
fraction in (0, 1] (``target=2.5`` is refused, not truncated). ``out`` never overlaps what the
report reads (the embeddings, the files of their source); it may lie inside the clustering or the
sample folder, never be or hold one. A Hydra app like every stage: ``--help``, ``--cfg job``, ``-m``.

The numbers and figures come from :mod:`curate.analysis`; this module lays them out, one function
per section.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import MISSING, DictConfig, OmegaConf

from curate.analysis.cli import register_tool, translate_legacy_args
from curate.analysis.clusters import cluster_members, example_clusters, top_counts
from curate.analysis.data import ReportData, check_output, load_images, load_report_data, load_texts
from curate.conf import register_help
from curate.core.atomic import atomic_write_text
from curate.core.entry import hydra_entry
from curate.core.errors import InputError, as_int, run_guarded
from curate.sampling import resolve_target

log = logging.getLogger(__name__)

__all__ = ["ReportConfig", "build_report", "entry", "main", "report"]

PROG = "python -m curate.report"

IMAGE_KINDS = ("fashion_mnist", "image_folder", "image_list")
TEXT_KINDS = ("wordnet", "text_lines", "jsonl")


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #666; font-size: 0.9em; } .cur { color: #1f77b4; font-weight: 600; }
ul.ex { margin: 4px 0 12px; padding-left: 20px; } ul.ex li { margin: 2px 0; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if x == 0 or x >= 0.001 else f"{100 * x:.2g}%"


def _img(name: str, alt: str) -> str:
    return f'<p><img src="{html.escape(name)}" alt="{html.escape(alt)}"></p>'


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{html.escape(title)}</h2>{body}</section>'


def _kind(data: ReportData) -> str:
    """The input's source kind (``wordnet``, ``fashion_mnist``, ...), ``npy`` or ``unknown``."""
    if data.source:
        return str(data.source.get("kind", "unknown"))
    return "npy" if data.input_path is not None and data.input_path.suffix == ".npy" else "unknown"


def summary_section(data: ReportData, seed: int) -> str:
    """Where the clustering, input and sample come from; pool and sample sizes."""
    n, m = data.n_items, len(data.sample)
    rows = [
        ("clustering", str(data.cluster_dir.resolve())),
        ("input", str(data.input_path) if data.input_path is not None else "unknown"),
        ("source", json.dumps(data.source) if data.source else _kind(data)),
        ("pool items", f"{n:,}"),
        ("dimension", data.manifest.get("dim", "?")),
        ("distance", data.manifest.get("config", {}).get("distance", "?")),
        ("levels (k)", " / ".join(str(level.k) for level in data.levels)),
        ("curated sample", f"{m:,} items ({_pct(m / n)} of the pool), unique {len(np.unique(data.sample)):,}"),
        ("sample from", data.sample_origin),
        ("random baseline", f"{len(data.random):,} items drawn uniformly without replacement, seed {seed}"),
    ]
    notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in data.notes)
    return _section("summary", "Summary", _table(("", "value"), rows, left=2) + notes)


def cluster_sizes_section(data: ReportData, out: Path) -> str:
    """Per level: the size histogram, sizes, and the clusters the curated / random samples touch."""
    from curate.analysis.figures import figure_cluster_sizes
    from curate.sampling import cluster_item_counts, sample_stats

    figure_cluster_sizes(data, out / "cluster_sizes.png")
    cur = sample_stats(data.levels, data.sample)["levels"]
    rnd = sample_stats(data.levels, data.random)["levels"]
    specs = data.manifest.get("config", {}).get("levels") or [{}] * len(data.levels)
    rows = [
        (
            t + 1,
            level.k,
            f"{specs[t].get('resample_steps', '?')} / {specs[t].get('sample_size', '?')}",
            int(sizes.min()),
            int(np.median(sizes)),
            int(sizes.max()),
            f"{cur[t]['n_touched']} / {rnd[t]['n_touched']}",
            f"{cur[t]['normalized_entropy']:.3f} / {rnd[t]['normalized_entropy']:.3f}",
        )
        for t, (level, sizes) in enumerate(zip(data.levels, cluster_item_counts(data.levels)))
    ]
    header = (
        "level",
        "k",
        "resampling steps / r",
        "min items",
        "median",
        "max",
        "clusters touched: curated / random",
        "sample entropy / log k: curated / random",
    )
    intro = (
        "<p>How many pool items each cluster holds (log-log histogram). k-means puts most clusters where the "
        "data are dense; the hierarchy's upper levels group them so that sampling can cap dense regions.</p>"
    )
    body = intro + _img("cluster_sizes.png", "cluster size histograms") + _table(header, rows)
    return _section("cluster-sizes", "Cluster sizes per level", body)


def top_clusters_section(data: ReportData, out: Path) -> str:
    """Pool / random / curated share of the top-level clusters (figure and the 10 largest and smallest)."""
    from curate.analysis.figures import figure_top_shares

    figure_top_shares(data, out / "top_clusters.png")
    tc = top_counts(data)
    order = np.argsort(-tc["pool"], kind="stable")
    show = list(order[:10]) + [c for c in order[-10:] if c not in set(order[:10])]
    sizes = {"pool": data.n_items, "random": max(len(data.random), 1), "curated": max(len(data.sample), 1)}
    rows = [(int(c), *(v for name in sizes for v in (int(tc[name][c]), _pct(tc[name][c] / sizes[name])))) for c in show]
    intro = (
        "<p>A uniform random sample keeps every cluster at its pool share; the curated sample caps the large "
        "clusters and takes the small ones (nearly) whole, so its shares move towards uniform (dotted line).</p>"
    )
    header = ("cluster", "pool items", "pool share", "random", "random share", "curated", "curated share")
    body = (
        intro
        + _img("top_clusters.png", "top-level cluster shares")
        + "<p>The 10 largest and 10 smallest top-level clusters:</p>"
        + _table(header, rows)
    )
    return _section("top-clusters", "Top-level clusters: pool share vs curated share", body)


def _example_title(data: ReportData, role: str, c: int) -> str:
    tc = top_counts(data)
    pool, cur = int(tc["pool"][c]), int(tc["curated"][c])
    return (
        f"<h3>{role} top-level cluster #{c}: {pool} item{'s' if pool != 1 else ''}, {cur} curated "
        f"({_pct(cur / max(pool, 1))} kept), {int(tc['random'][c])} in the random sample</h3>"
    )


def _example_texts(data: ReportData, items: np.ndarray, texts: dict[str, str | None], chosen: np.ndarray) -> str:
    lis = []
    for i in items:
        item_id = str(data.ids[int(i)])
        cls = ' class="cur"' if chosen[i] else ""
        text = texts.get(item_id) or "(text not found)"
        lis.append(f"<li{cls}><code>{html.escape(item_id)}</code> {html.escape(text)}</li>")
    return '<ul class="ex">' + "".join(lis) + "</ul>"


def examples_section(data: ReportData, out: Path, n_examples: int, seed: int) -> str:
    """Example items of the largest, median and smallest top-level clusters (images or texts)."""
    from curate.analysis.plots import image_grid

    title = "Example items of a few top-level clusters"
    kind = _kind(data)
    if data.ids is None or data.source is None:
        why = "a plain .npy input has no item ids" if kind == "npy" else "the input's source is unknown"
        return _section("examples", title, f'<p class="note">No examples: {why}.</p>')
    chosen = np.zeros(data.n_items, dtype=bool)
    chosen[data.sample] = True
    members = {c: (role, cluster_members(data, c, n_examples, seed)) for role, c in example_clusters(data)}
    texts: dict[str, str | None] = {}
    if kind in TEXT_KINDS:
        all_ids = [str(data.ids[int(i)]) for _, items in members.values() for i in items]
        texts = dict(zip(all_ids, load_texts(data.source, all_ids)))
    parts = [
        f"<p>{n_examples} random members (seed {seed}) of the largest, median and smallest top-level cluster; "
        '<span class="cur">blue</span> = kept in the curated sample.</p>'
    ]
    for c, (role, items) in members.items():
        parts.append(_example_title(data, role, c))
        if kind in IMAGE_KINDS:
            images = load_images(data.source, [data.ids[int(i)] for i in items])
            image_grid(images, out / f"examples_{role}.png", selected=chosen[items].tolist())
            parts.append(_img(f"examples_{role}.png", f"{role} cluster examples"))
        elif kind in TEXT_KINDS:
            parts.append(_example_texts(data, items, texts, chosen))
        else:
            ids = ", ".join(str(data.ids[int(i)]) for i in items)
            parts.append(f'<p class="note">Source kind {html.escape(kind)}: ids only: {html.escape(ids)}</p>')
    return _section("examples", title, "".join(parts))


def labels_section(data: ReportData, out: Path) -> str:
    """Pool / random / curated label shares: figure, summary numbers, one row per label."""
    from curate.analysis.balance import sample_balance
    from curate.analysis.figures import figure_labels

    figure_labels(data, out / "labels.png")
    n_rarest = min(3, int(data.labels.max()) + 1)
    sets = {"pool": np.arange(data.n_items), "random": data.random, "curated": data.sample}
    bal = {name: sample_balance(idx, data.labels, n_rarest) for name, idx in sets.items()}
    names = data.label_names or []
    label_rows = [
        (
            names[lab] if lab < len(names) else str(lab),
            *(
                f"{bal[s]['label_counts'][lab]} ({_pct(bal[s]['label_counts'][lab] / max(bal[s]['n'], 1))})"
                for s in sets
            ),
        )
        for lab in np.argsort(-np.asarray(bal["pool"]["label_counts"]), kind="stable")
    ]
    summary_rows = [
        ("label entropy / log(#labels)", *(f"{bal[s]['label_normalized_entropy']:.3f}" for s in sets)),
        (f"share of the {n_rarest} rarest labels", *(_pct(bal[s]["rarest_share"]) for s in sets)),
    ]
    body = (
        '<p class="note">Labels were never shown to the clustering. The method balances concepts as the '
        "embedding sees them: labels gain balance only where the embedding separates them.</p>"
        + _img("labels.png", "label histograms")
        + _table(("", "pool", "random", "curated"), summary_rows)
        + _table(("label", "pool", "random", "curated"), label_rows)
    )
    return _section("labels", "Labels: pool / random / curated", body)


def scatter_section(data: ReportData, out: Path) -> str:
    """2-D inputs: the pool with the random and the curated sample."""
    from curate.analysis.figures import figure_scatter

    figure_scatter(data, out / "scatter.png")
    return _section("scatter", "Pool vs samples (2-D input)", _img("scatter.png", "scatter"))


def page(data: ReportData, sections: Sequence[str]) -> str:
    """The whole HTML document around the sections."""
    name = html.escape(data.cluster_dir.name)
    where = html.escape(str(data.cluster_dir.resolve()))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Curation report: {name}</title><style>{_CSS}</style></head><body>"
        f'<h1>Curation report</h1><p class="note">{where} &middot; '
        f"generated by <code>python -m curate.report</code></p>" + "".join(sections) + "</body></html>\n"
    )


def build_report(
    cluster_dir: str | os.PathLike,
    sample_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    input_path: str | os.PathLike | None = None,
    target: int | float = 0.1,
    seed: int = 0,
    n_examples: int = 16,
) -> Path:
    """Write ``report.html`` and its PNGs; return the path of ``report.html``.

    Args:
        cluster_dir: the clustering folder (``python -m curate.cluster`` output, or a saved
            :class:`curate.hierarchy.HierarchicalKMeans`).
        sample_dir: the sample-stage folder (``indices.npy``), or None to draw a sample here.
        out: output folder (default ``<sample_dir>/report`` or ``<cluster_dir>/report``).
        input_path: the clustered embeddings when the clustering manifest does not name them.
        target: sample size drawn when ``sample_dir`` is None.
        seed: seed of the random baseline (and of a drawn sample, and of the example picks).
        n_examples: example items shown per cluster.
    """
    data = load_report_data(cluster_dir, sample_dir, input_path, target, seed)
    out = Path(out) if out is not None else Path(sample_dir or cluster_dir) / "report"
    check_output(out, data, sample_dir)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    sections = [
        summary_section(data, seed),
        cluster_sizes_section(data, out),
        top_clusters_section(data, out),
        examples_section(data, out, n_examples, seed),
    ]
    if data.labels is not None:
        sections.append(labels_section(data, out))
    if data.array is not None and data.array.shape[1] == 2:
        sections.append(scatter_section(data, out))
    atomic_write_text(out / "report.html", page(data, sections))
    return out / "report.html"


@dataclass
class ReportConfig:
    """``python -m curate.report`` settings (``key=value``; ``--help`` shows them)."""

    cluster: str = MISSING  # clustering folder (manifest.json + level<t>/)
    sample: str | None = None  # sample folder (indices.npy); None: draw one of `target` items
    out: str | None = None  # output folder (default <sample or cluster>/report)
    input: str | None = None  # the clustered embeddings, if the manifest lacks them
    target: Any = 0.1  # size of the drawn sample: a count (int) or a fraction in (0, 1]
    seed: int = 0  # seed of the random baseline, of a drawn sample and of the examples
    examples: int = 16  # example items per cluster


register_tool("report", ReportConfig, "a static HTML page of what a curation did.")
register_help()


def report(cfg: ReportConfig | DictConfig) -> Path:
    """Check the settings, write the report; returns the path of ``report.html``."""
    missing = sorted(OmegaConf.missing_keys(cfg)) if isinstance(cfg, DictConfig) else []
    if missing:
        raise InputError(f"{missing[0]}= is required: python -m curate.report cluster=DIR ... ({missing[0]})")
    try:
        resolve_target(cfg.target, None)  # the sampler's rule: an int count, or a float fraction in (0, 1]
    except ValueError as err:
        raise InputError(f"target={cfg.target!r}: {err} (target)") from None
    as_int(cfg.examples, "examples", minimum=1)
    as_int(cfg.seed, "seed", minimum=0)
    path = build_report(cfg.cluster, cfg.sample, cfg.out, cfg.input, cfg.target, cfg.seed, cfg.examples)
    print(f"report written to {path}")
    return path


@hydra.main(version_base="1.3", config_path=None, config_name="report")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: ``python -m curate.report cluster=DIR [sample=DIR] [out=DIR] ...``."""
    run_guarded(report, cfg, hydra=True)


def entry() -> None:
    """``python -m curate.report``: an earlier ``--key value`` spelling rewritten (one deprecation
    line), then the Hydra app with the stages' error handling."""
    translate_legacy_args(prog=PROG)
    hydra_entry(main)


if __name__ == "__main__":
    entry()
