"""Alert lines that cannot flood the log: at most one per interval, with a count of the rest."""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    """``warning()`` logs at most once per ``interval`` seconds and says how many it held back."""

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0, got {interval}")
        self._log = logger
        self._interval = interval
        self._last = -float("inf")
        self.suppressed = 0

    def warning(self, message: str, *args: Any) -> bool:
        """Log the warning unless one was logged less than ``interval`` ago; True if logged."""
        now = time.monotonic()
        if now - self._last < self._interval:
            self.suppressed += 1
            return False
        if self.suppressed:
            message += " (and %d similar alert(s) since the last one)"
            args = (*args, self.suppressed)
        self._log.warning(message, *args)
        self._last, self.suppressed = now, 0
        return True
