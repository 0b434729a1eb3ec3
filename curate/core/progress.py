"""One throttled progress reporter for long loops: a text line on rank 0 at most every few seconds.

SLURM logs are read as text, so there are no bars: ``what: i/total (x%), ETA mm:ss``, through
``logging``. A step costs one clock read (and nothing on other ranks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from curate.core import dist

log = logging.getLogger("curate.core.progress")

#: seconds between two lines of one reporter
EVERY_S = 10.0


def format_duration(seconds: float) -> str:
    """``mm:ss`` below an hour, ``h:mm:ss`` above."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Count steps of a loop of known length and log ``what: i/total (x%), ETA mm:ss`` (rank 0).

    The first line comes ``every_s`` seconds after the start, then at most one every ``every_s``
    seconds; the ETA extrapolates the rate since the start (or since ``done``, for a resumed loop).

    Args:
        total: steps of the whole loop.
        what: what is counted, the start of each line (``"k-means++ k=1000"``).
        every_s: seconds between lines (0: a line per update; None: ``EVERY_S``).
        done: steps already done before this reporter started (a resumed loop).
        enabled: log at all (default: on the main process only).
        clock: a monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        total: int,
        what: str,
        every_s: float | None = None,
        done: int = 0,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.what = int(total), what
        self.every_s = float(EVERY_S if every_s is None else every_s)
        self.done = self._first = int(done)
        self.enabled = dist.is_main_process() if enabled is None else bool(enabled)
        self._clock = clock
        self._started = self._last = clock() if self.enabled else 0.0

    def update(self, n: int = 1, note: str | Callable[[], str] = "") -> None:
        """Count ``n`` more steps; log a line when ``every_s`` has passed since the last one.

        ``note`` (e.g. ``"objective 1.2e3"``, or a function returning it, called only when a line
        is logged) is appended to the line.
        """
        self.done += n
        if not self.enabled:
            return
        now = self._clock()
        if now - self._last < self.every_s:
            return
        self._last = now
        log.info("%s", self.line(now, note() if callable(note) else note))

    def line(self, now: float, note: str = "") -> str:
        """The progress line at time ``now`` (of ``clock``)."""
        total = max(self.total, 1)
        text = f"{self.what}: {self.done}/{self.total} ({100.0 * self.done / total:.0f}%)"
        ran, elapsed = self.done - self._first, now - self._started
        if 0 < ran and self.done < self.total:
            text += f", ETA {format_duration(elapsed / ran * (self.total - self.done))}"
        elif self.done >= self.total:
            text += f", took {format_duration(elapsed)}"
        return f"{text}, {note}" if note else text
