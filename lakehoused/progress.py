"""A progress bar on a terminal while a large file ingests; silent anywhere else."""

from __future__ import annotations

import time
from typing import TextIO

_MIN_INTERVAL_S = 0.1
_WIDTH = 30


class ProgressBar:
    """Draws `[#####     ]  45% name` on `stream` if it is a terminal."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.enabled = stream.isatty()
        self._drawn = 0.0
        self._shown = False

    def update(self, fraction: float) -> None:
        """Show `fraction` (0..1) done; redraws at most ten times a second."""
        now = time.monotonic()
        if not self.enabled or (now - self._drawn < _MIN_INTERVAL_S and fraction < 1.0):
            return
        self._drawn, self._shown = now, True
        filled = int(_WIDTH * fraction)
        bar = "#" * filled + " " * (_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {fraction:4.0%} {self.label}")
        self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._shown:
            self.stream.write("\r" + " " * (_WIDTH + len(self.label) + 8) + "\r")
            self.stream.flush()
