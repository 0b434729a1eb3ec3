"""Inspect a saved hierarchy (and optionally a sample of it) in the terminal.

    python -m curate.inspect cluster=outputs/cluster/toy_2d
    python -m curate.inspect cluster=outputs/cluster/toy_2d sample=outputs/sample/toy_2d \\
        labels=outputs/data/toy_2d/labels.npy out=inspect.png

Prints, per level: the number of clusters, a histogram of the cluster sizes over power-of-two bins
(``[1, 2), [2, 4), ...``; sizes counted in level inputs and in items), and the number of empty and
singleton clusters. With ``sample=`` (a folder holding ``indices.npy``, or the ``.npy`` itself): the
share of every top-level cluster in the pool and in the sample (the 10 largest and the 10 smallest
clusters of the pool) and the balance over the top-level clusters. With ``labels=`` (``(N,)`` int
``.npy`` or a store, e.g. the toy's true modes): the share of every label in the pool (and the
sample). ``out=`` writes a PNG with the size histograms and the share bars. The numbers come from
:mod:`curate.analysis.clusters`; ``python -m curate.report`` shows them as a web page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.analysis.cli import MISSING, parse_keyvalues
from curate.analysis.clusters import (
    format_labels,
    format_levels,
    format_shares,
    label_report,
    level_report,
    log2_histogram,
    top_cluster_shares,
)
from curate.analysis.data import load_report_data
from curate.core.errors import run_guarded

__all__ = ["InspectConfig", "log2_histogram", "main"]


@dataclass
class InspectConfig:
    """``python -m curate.inspect`` arguments (``key=value``; a bare first argument is ``cluster``)."""

    cluster: str = field(default=MISSING, metadata={"help": "clustering output folder (manifest.json, level<t>/)"})
    sample: str | None = field(default=None, metadata={"help": "sample folder holding indices.npy (or the .npy)"})
    labels: str | None = field(default=None, metadata={"help": "(N,) integer labels .npy or a store (e.g. true modes)"})
    out: str | None = field(default=None, metadata={"help": "write a PNG here"})


def inspect(args: InspectConfig) -> dict[str, Any]:
    """Print the report of ``args``; returns it (``levels``, and ``shares`` / ``labels`` when asked for)."""
    data = load_report_data(args.cluster, args.sample, input_path=None, target=None, labels_path=args.labels)
    report = level_report(data.levels)
    print(f"{args.cluster}: {data.n_items} items, {len(data.levels)} level(s)")
    print(format_levels(report))
    shares = labels = None
    if data.sample is not None:
        shares = top_cluster_shares(data.levels, data.sample)
        print(f"\nsample {args.sample}: {len(data.sample)} items ({len(np.unique(data.sample))} distinct)")
        print(format_shares(shares))
    if args.labels is not None:
        labels = label_report(data.labels, data.sample)
        print()
        print(format_labels(labels))
    if args.out is not None:
        from curate.analysis.figures import figure_inspect

        figure_inspect(report, shares, labels, args.out)
        print(f"\nwrote {args.out}")
    return {"levels": report, "shares": shares, "labels": labels}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m curate.inspect cluster=DIR [sample=DIR] [labels=FILE] [out=PNG]``; errors exit 2."""
    prog = "python -m curate.inspect"
    args = parse_keyvalues(InspectConfig, argv, prog, __doc__.split("\n\n")[0], positional="cluster")
    return run_guarded(inspect, args)  # one error line and exit 2 for a user's mistake


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
