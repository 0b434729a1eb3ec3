"""The bottom layer: the user's errors (``errors``) and how a command starts (``entry``), atomic
writes, output guards, distributed setup (``dist``), tracking, progress and launcher checks. It
imports nothing else of ``curate``."""
