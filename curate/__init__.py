"""ssl-curate: clustering-based automatic data curation for self-supervised learning.

Stages (each a Hydra app, coupled only through files): embed -> cluster -> sample -> train -> eval.
"""

from pathlib import Path

__version__ = "0.1.0"

# configs/ of this repository, as an absolute path for every stage's @hydra.main: Hydra reads a
# relative config_path against the task function's *package* when it is not ``__main__`` (and as
# ``pkg://configs`` under ``python -m``), so "../configs" only works for some ways of starting a stage.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
