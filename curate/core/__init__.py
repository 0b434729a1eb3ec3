"""The bottom layer: errors, config helpers, the stage protocol, distributed setup, tracking and
progress. It imports nothing else of ``curate``."""
