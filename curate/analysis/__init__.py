"""What a curation did, measured: the library behind ``python -m curate.report`` (the HTML page),
``python -m curate.inspect`` (the terminal view) and the sample stage's ``stats.json``:

- :mod:`~curate.analysis.metrics`: KL-to-uniform, entropy, the rarest classes, cluster balance.
- :mod:`~curate.analysis.balance`: balance of a sample over labels / reference clusters / density
  (:func:`sample_balance`, :func:`label_balance`), :func:`mean_std` over seeds, purity.
- :mod:`~curate.analysis.clusters`: sizes per level, top-level shares, example clusters.
- :mod:`~curate.analysis.data`: loading a clustering, its input, labels and a sample once.
- :mod:`~curate.analysis.plots` / :mod:`~curate.analysis.figures`: matplotlib panels and PNGs.

Studies, paper figures and benchmarks built on it live in the top-level ``research`` package,
outside the library. Submodules import matplotlib and torch lazily; importing this package is cheap.
"""

from curate.analysis.balance import (
    SCALARS,
    cluster_purity,
    label_balance,
    label_gains,
    mean_std,
    sample_balance,
    top_level_purity,
)

__all__ = [
    "SCALARS",
    "cluster_purity",
    "label_balance",
    "label_gains",
    "mean_std",
    "sample_balance",
    "top_level_purity",
]
