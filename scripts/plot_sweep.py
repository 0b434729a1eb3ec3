"""Collect a sweep's ``metrics.json`` files into a markdown table and a bar chart.

    python scripts/plot_sweep.py outputs/multirun/cluster/ablation_toy --out ablation_toy.png
    python scripts/plot_sweep.py outputs/multirun/sample/ablation_toy --out sample.png --metrics kl_sample rarest_share
    python scripts/plot_sweep.py outputs/multirun/cluster/ablation_toy --mean-over seed   # mean +- std over seeds

Keys that take several values across the runs become the table's first columns, then every metric
(lists are shown as ``a/b/c``). The table is printed and written next to the PNG (``.md``); the
PNG has one horizontal bar chart per metric in ``--metrics`` (default: the balance metrics that
are present), runs labelled by factor (``levels 3 · steps 10 · init random``) and coloured by the
last factor, each panel saying which way is better and drawing its reference line (the raw data's
KL-to-uniform for ``kl_*``, the pool's share for ``rarest_share``, the maximum 1 for normalised
entropies). ``--mean-over KEY`` pools the runs that differ only in ``KEY`` (e.g. ``seed``): each
numeric metric becomes ``mean +- std`` over them (error bars in the PNG). The reading and drawing
live in :mod:`research.sweep`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from research.sweep import collect, default_metrics, markdown_table, mean_over, numeric_metrics, plot_sweep


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="the sweep folder (hydra.sweep.dir), e.g. outputs/multirun/cluster/<name>")
    parser.add_argument("--out", default=None, help="PNG to write (default: <sweep_dir>/sweep.png)")
    parser.add_argument("--metrics", nargs="+", default=None, help="metrics to plot (default: balance metrics)")
    parser.add_argument("--mean-over", default=None, help="pool runs differing only in this key (e.g. seed)")
    args = parser.parse_args(argv)
    swept, rows = collect(args.sweep_dir)
    if args.mean_over:
        try:
            swept, rows = mean_over(swept, rows, args.mean_over)
        except ValueError as err:
            raise SystemExit(f"error: --mean-over {err}") from None
    table = markdown_table(swept, rows)
    out = Path(args.out) if args.out else Path(args.sweep_dir) / "sweep.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table)
    print(table, end="")
    metrics = args.metrics or default_metrics(rows)
    unknown = [m for m in metrics if m not in numeric_metrics(rows)]
    if unknown:
        raise SystemExit(f"error: no numeric metric {unknown} in the runs; present: {numeric_metrics(rows)}")
    plot_sweep(swept, rows, metrics, out, Path(args.sweep_dir))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return table


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
