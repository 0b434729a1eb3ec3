"""What a curation did, measured: balance statistics, pool vs sample, k-NN views, figures.

The analysis library behind ``python -m curate.report`` (the HTML page), ``python -m curate.inspect``
(the terminal view), the sample stage's ``stats.json`` and the demo scripts:

- :mod:`~curate.analysis.balance`: balance of a sample over labels / reference clusters / density
  (:func:`sample_balance`, :func:`label_balance`), :func:`mean_std` over seeds, purity.
- :mod:`~curate.analysis.neighbours`: k-NN radius (density), k-NN label agreement, diagnostics.
- :mod:`~curate.analysis.compare`: curated vs random over clustering seeds, its markdown table.
- :mod:`~curate.analysis.clusters`: sizes per level, top-level shares, example clusters.
- :mod:`~curate.analysis.data`: loading a clustering, its input, labels and a sample once.
- :mod:`~curate.analysis.plots` / :mod:`~curate.analysis.figures`: matplotlib panels and PNGs.
- :mod:`~curate.analysis.features`: raw-pixel PCA; :mod:`~curate.analysis.machine`: machine facts.
- :mod:`~curate.analysis.sweep`: a Hydra sweep's ``metrics.json`` files as a table and a figure.
- :mod:`~curate.analysis.study`: one labelled embedding, curated vs random, its figure and notes.
- :mod:`~curate.analysis.density`: centroid density vs data density in 1-D (Zador's exponent).
- :mod:`~curate.analysis.simulation`: the 2-D simulation's methods (Fig. 3), their point sets, KL
  summary over seeds and Voronoi rasters.

Submodules import matplotlib and torch lazily; importing this package is cheap.
"""

from curate.analysis.balance import (
    SCALARS,
    cluster_purity,
    label_balance,
    label_gains,
    mean_std,
    random_baseline,
    sample_balance,
    top_level_purity,
)
from curate.analysis.compare import (
    CurationSettings,
    compare_over_seeds,
    fit_hierarchy,
    reference_clustering,
    summary_table,
)
from curate.analysis.machine import machine_info, machine_line
from curate.analysis.neighbours import cached_knn_radius, embedding_diagnostics, knn_agreement, knn_radius

__all__ = [
    "SCALARS",
    "CurationSettings",
    "cached_knn_radius",
    "cluster_purity",
    "compare_over_seeds",
    "embedding_diagnostics",
    "fit_hierarchy",
    "knn_agreement",
    "knn_radius",
    "label_balance",
    "label_gains",
    "machine_info",
    "machine_line",
    "mean_std",
    "random_baseline",
    "reference_clustering",
    "sample_balance",
    "summary_table",
    "top_level_purity",
]
