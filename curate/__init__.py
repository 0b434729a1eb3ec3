"""ssl-curate: clustering-based automatic data curation for self-supervised learning.

Stages (each a Hydra app, coupled only through files): embed -> cluster -> sample -> train -> eval.
"""

__version__ = "0.1.0"
