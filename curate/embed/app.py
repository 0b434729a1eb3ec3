"""Hydra entry point of the embed stage: ``python -m curate.embed data=... encoder=... out=...``."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import curate.embed.config  # noqa: F401  (registers embed_schema and the group schemas)
from curate.dist import setup_logging
from curate.embed.run import run_embed
from curate.errors import hydra_entry
from curate.stage import run_stage

# An absolute path: with `python -m`, Hydra would read a relative config_path as the Python package
# `pkg://configs`, which does not exist (configs/ is a plain folder of the repository).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="embed")
def main(cfg: DictConfig) -> None:
    """Run the embed stage on the composed config."""
    setup_logging()
    run_stage(run_embed, cfg)


if __name__ == "__main__":
    hydra_entry(main, outputs={"out": ("data.root", "data.path")})
