"""``python -m curate.embed``: see ``curate.embed.app``."""

from curate.embed.app import cli

if __name__ == "__main__":
    cli()
