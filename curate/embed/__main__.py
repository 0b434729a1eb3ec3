"""``python -m curate.embed``: see ``curate.embed.app``."""

from curate.embed.app import main

if __name__ == "__main__":
    main()
