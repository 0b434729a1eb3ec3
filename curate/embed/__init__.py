"""The embed stage: images or texts -> a sharded embedding store (``curate.io.store``).

``python -m curate.embed data=<source> encoder=<encoder> out=<dir>``; see ``curate.embed.config``
for the options and ``curate.embed.run`` for how the work is split, written and resumed.
"""

from curate.data.sources import Source, build_source
from curate.embed.config import EmbedConfig, validate
from curate.embed.run import run_embed
from curate.encoders import Encoder, build_encoder

__all__ = ["EmbedConfig", "Encoder", "Source", "build_encoder", "build_source", "run_embed", "validate"]
