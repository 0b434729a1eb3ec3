"""Research code built on the ``curate`` library: paper figures, studies and benchmarks.

Nothing in ``curate`` or ``selfsup`` imports this package; ``scripts/`` and ``tests/`` do.

- :mod:`~research.compare`: curated vs random over clustering seeds, its markdown table.
- :mod:`~research.study`: one labelled embedding, curated vs random, its figure and notes.
- :mod:`~research.neighbours`: k-NN radius (density), k-NN label agreement, diagnostics.
- :mod:`~research.simulation`: the 2-D simulation's methods (Fig. 3), KL summary, Voronoi rasters.
- :mod:`~research.density`: centroid density vs data density in 1-D (Zador's exponent, Fig. 1a).
- :mod:`~research.sweep`: a Hydra sweep's ``metrics.json`` files as a table and a figure.
- :mod:`~research.features`: raw-pixel PCA; :mod:`~research.machine`: machine facts.
- :mod:`~research.bench`: benchmark workers, measurements and the cost model at web scale.
"""
