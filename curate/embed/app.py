"""Hydra entry point of the embed stage: ``python -m curate.embed data=... encoder=... out=...``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import curate.embed.config  # noqa: F401  (registers embed_schema and the group schemas)
from curate import CONFIG_DIR
from curate.core.dist import setup_logging
from curate.core.entry import hydra_entry
from curate.embed.run import run_embed
from curate.stage import run_stage


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="embed")
def main(cfg: DictConfig) -> None:
    """Run the embed stage on the composed config."""
    setup_logging()
    run_stage(run_embed, cfg)


def cli() -> None:
    """The command: Hydra's composition and override errors as one ``error:`` line, like every stage."""
    hydra_entry(main, outputs={"out": ("data.root", "data.path")})


if __name__ == "__main__":
    cli()
