"""One jittered backoff for the project's own retries (HTTP to the web tier, the worker's poll loop).

Calls through the AWS SDK are not retried here: botocore's standard retry mode retries them (throttling, 5xx,
dropped connections; see hybrid/aws/session.py), and a loop around it would multiply its attempts.

The wait after failed try n (1-based) is "full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"):
uniform in [0, min(cap, base * 2 ** (n - 1))], so clients that failed together do not come back together.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from hybrid.core.errors import (CloudError, ConfigError, CredentialsError, EmulatorNotRunning,
                               NameTakenError, NotFoundError)

log = logging.getLogger(__name__)
T = TypeVar("T")
PERMANENT = (NotFoundError, NameTakenError, CredentialsError, ConfigError)
Random = Callable[[], float]  # uniform in [0, 1), like random.random


def is_transient(exc: BaseException) -> bool:
    """A cloud error worth another try: throttling, a 5xx, a dropped connection; not a missing object."""
    return isinstance(exc, (CloudError, EmulatorNotRunning)) and not isinstance(exc, PERMANENT)


def never(exc: BaseException) -> bool:
    return False


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: ``delay(n)`` is uniform in [0, ``ceiling(n)``]."""

    base: float = 0.2
    cap: float = 5.0

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed try ``attempt`` (1-based): base, 2 base, 4 base, ... capped at ``cap``."""
        return min(self.cap, self.base * 2 ** max(0, attempt - 1))

    def delay(self, attempt: int, rand: Random = random.random) -> float:
        return self.ceiling(attempt) * rand()


def retry(action: Callable[[], T], what: str, attempts: int, *, done: Callable[[T], bool] = lambda _: True,
          retryable: Callable[[BaseException], bool] = never, backoff: Backoff = Backoff(),
          sleep: Callable[[float], None] = time.sleep, rand: Random = random.random) -> T:
    """Calls ``action`` at most ``attempts`` times and returns its first outcome that is ``done``; an exception
    that is ``retryable`` counts as a try that was not done, any other is raised at once. Sleeps ``backoff.delay(n)``
    after failed try n. After the last try, returns its outcome (done or not) or raises its exception."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            outcome = action()
        except Exception as exc:  # noqa: BLE001 - only retryable errors are tried again, the rest re-raised
            if not retryable(exc) or attempt == attempts:
                raise
            _wait(what, exc, attempt, attempts, backoff, sleep, rand)
            continue
        if done(outcome) or attempt == attempts:
            return outcome
        _wait(what, outcome, attempt, attempts, backoff, sleep, rand)
    raise AssertionError("unreachable")


def _wait(what: str, why: object, attempt: int, attempts: int, backoff: Backoff, sleep: Callable[[float], None],
          rand: Random) -> None:
    delay = backoff.delay(attempt, rand)
    log.debug("%s: try %d/%d got %s; next in %.2f s", what, attempt, attempts, why, delay)
    sleep(delay)
