"""The SSL stage of ssl-curate: DINOv2-style pre-training (DINO + iBOT + KoLeo) and frozen evaluation.

The design document calls this stage ``ssl/``. The package is named ``selfsup`` on purpose: a
top-level package named ``ssl`` would shadow Python's standard-library :mod:`ssl` module and break
every HTTPS client in the process (wandb, urllib3, pip, ``huggingface_hub``).

Entry points (Hydra apps):

- ``python -m selfsup.train``: student/teacher ViT pre-training on a (curated) image set,
  writing ``<out>/checkpoint.pt``, ``<out>/metrics.jsonl``, ``<out>/backbone.pt``, ``<out>/manifest.json``.
- ``python -m selfsup.eval``: weighted k-NN and linear-probe accuracy of a frozen backbone,
  writing ``<out>/eval.json``.

Library: :mod:`selfsup.models`, :mod:`selfsup.losses`, :mod:`selfsup.augment`,
:mod:`selfsup.masking`, :mod:`selfsup.data`, :mod:`selfsup.schedules`, :mod:`selfsup.meta_arch`,
:mod:`selfsup.export` (``load_backbone``, ``embed_images``), :mod:`selfsup.eval`
(``knn_classify``, ``linear_probe``).
"""
