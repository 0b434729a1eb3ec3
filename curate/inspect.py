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
:mod:`curate.analysis.clusters`; ``python -m curate.report`` shows them as a web page. A Hydra app
like every stage (``--help``, ``--cfg job``, ``-m``); the earlier ``DIR --labels X`` spelling still
works and says it is deprecated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hydra
import numpy as np
from omegaconf import MISSING, DictConfig, OmegaConf

from curate.analysis.cli import register_tool, translate_legacy_args
from curate.analysis.clusters import (
    format_labels,
    format_levels,
    format_shares,
    label_report,
    level_report,
    log2_histogram,
    top_cluster_shares,
)
from curate.analysis.data import check_output, load_report_data
from curate.conf import register_help
from curate.core.entry import hydra_entry
from curate.core.errors import InputError, run_guarded

__all__ = ["InspectConfig", "entry", "inspect", "log2_histogram", "main"]


@dataclass
class InspectConfig:
    """``python -m curate.inspect`` settings (``key=value``; ``--help`` shows them)."""

    cluster: str = MISSING  # clustering output folder (manifest.json, level<t>/)
    sample: str | None = None  # sample folder holding indices.npy (or the .npy)
    labels: str | None = None  # (N,) integer labels .npy or a store (e.g. true modes)
    out: str | None = None  # write a PNG here


register_tool("inspect", InspectConfig, "per-level cluster sizes, sample and label shares in the terminal.")
register_help()


def inspect(args: InspectConfig | DictConfig) -> dict[str, Any]:
    """Print the report of ``args``; returns it (``levels``, and ``shares`` / ``labels`` when asked for)."""
    missing = sorted(OmegaConf.missing_keys(args)) if isinstance(args, DictConfig) else []
    if missing:
        raise InputError(f"{missing[0]}= is required: python -m curate.inspect cluster=DIR ... ({missing[0]})")
    data = load_report_data(args.cluster, args.sample, input_path=None, target=None, labels_path=args.labels)
    if args.out is not None:
        check_output(args.out, data, args.sample)  # before anything is printed or written
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


@hydra.main(version_base="1.3", config_path=None, config_name="inspect")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: ``python -m curate.inspect cluster=DIR [sample=DIR] [labels=FILE] [out=PNG]``."""
    run_guarded(inspect, cfg, hydra=True)  # one error line and exit 2 for a user's mistake


def entry() -> None:
    """``python -m curate.inspect``: an earlier spelling (a bare folder, ``--labels X``) rewritten
    (one deprecation line), then the Hydra app with the stages' error handling."""
    translate_legacy_args(positional="cluster", prog="python -m curate.inspect")
    hydra_entry(main)


if __name__ == "__main__":
    entry()
