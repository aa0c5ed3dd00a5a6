"""When and how long the client waits before trying a failed call again.

:class:`RetryPolicy` is the configuration (immutable, shared); :class:`Retrying` is the state of
one operation that may take several attempts. Backoff is exponential with full jitter (a random
delay between 0 and ``initial * multiplier**n`` capped at ``max_backoff``), never shorter than
the ``retry-after`` the gateway asked for. Only retriable errors (``ClientError.retriable``: see
``RETRIABLE_CODES``) are retried; any other error is raised at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from sluice.client.exceptions import ClientError

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class RetryPolicy:
    """How many attempts, for how long, and how far apart.

    ``max_attempts`` counts the first attempt too (1 = never retry); ``max_elapsed`` is the
    time in seconds after the first failure beyond which no retry starts. None means no limit;
    both None means retry for ever (an agent). ``sleep``, ``clock`` and ``random`` are for tests.
    """

    def __init__(
        self,
        *,
        max_attempts: int | None = 10,
        max_elapsed: float | None = 60.0,
        initial_backoff: float = 0.1,
        max_backoff: float = 10.0,
        multiplier: float = 2.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random.random,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {max_attempts}")
        if max_elapsed is not None and max_elapsed < 0:
            raise ValueError(f"max_elapsed must be >= 0 or None, got {max_elapsed}")
        if initial_backoff <= 0:
            raise ValueError(f"initial_backoff must be > 0, got {initial_backoff}")
        if max_backoff < initial_backoff:
            raise ValueError(f"max_backoff must be >= initial_backoff ({initial_backoff}), got {max_backoff}")
        if multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {multiplier}")
        self.max_attempts = max_attempts
        self.max_elapsed = max_elapsed
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.multiplier = multiplier
        self.sleep = sleep
        self.clock = clock
        self._random = random

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that makes one attempt only."""
        return cls(max_attempts=1)

    def backoff(self, retry: int) -> float:
        """The jittered delay before retry number ``retry`` (0 = the first retry)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** min(retry, 64))
        return ceiling * self._random()

    def delay(self, retry: int, error: ClientError) -> float:
        """The backoff, but at least what the gateway asked for in ``retry-after``."""
        return max(self.backoff(retry), error.retry_after or 0.0)

    def start(self) -> Retrying:
        """The retry state of a new operation."""
        return Retrying(self)


class Retrying:
    """The attempts of one operation: call :meth:`failed` after each failure, :meth:`progressed`
    when the operation moved on (a stream was acknowledged, a watch got an update)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.retries = 0
        self._first_failure: float | None = None

    def progressed(self) -> None:
        """Start counting attempts and time afresh."""
        self.retries = 0
        self._first_failure = None

    async def failed(self, error: ClientError) -> None:
        """Wait before the next attempt; raise ``error`` if it may not be retried.

        Non-retriable errors are raised at once; a retriable one is raised once the attempts
        or the time are used up, with a hint saying so.
        """
        policy = self.policy
        if not error.retriable:
            raise error
        now = policy.clock()
        if self._first_failure is None:
            self._first_failure = now
        elapsed = now - self._first_failure
        delay = policy.delay(self.retries, error)
        attempts = self.retries + 1
        if policy.max_attempts is not None and attempts >= policy.max_attempts:
            raise _gave_up(error, f"gave up after {attempts} attempts") if attempts > 1 else error
        if policy.max_elapsed is not None and elapsed + delay > policy.max_elapsed:
            raise _gave_up(error, f"gave up after {attempts} attempt(s) in {elapsed:.1f}s")
        log.info("%s; retrying in %.2fs (attempt %d)", error, delay, attempts + 1)
        self.retries += 1
        await policy.sleep(delay)


def _gave_up(error: ClientError, why: str) -> ClientError:
    error.hint = why if error.hint is None else f"{why}; {error.hint}"
    return error
