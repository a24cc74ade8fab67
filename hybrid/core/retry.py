"""Retry with exponential backoff for transient cloud errors, on an injected clock."""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from hybrid.core.clock import Clock, SystemClock
from hybrid.core.errors import (CloudError, ConfigError, CredentialsError, EmulatorNotRunning,
                               NameTakenError, NotFoundError)

log = logging.getLogger(__name__)
T = TypeVar("T")
PERMANENT = (NotFoundError, NameTakenError, CredentialsError, ConfigError)


def is_transient(exc: BaseException) -> bool:
    """A cloud error worth another try: throttling, a 5xx, a dropped connection; not a missing object."""
    return isinstance(exc, (CloudError, EmulatorNotRunning)) and not isinstance(exc, PERMANENT)


def retry(action: Callable[[], T], what: str, attempts: int = 4, base_delay: float = 0.2, max_delay: float = 5.0,
          clock: Clock | None = None) -> T:
    """Runs ``action``; on a transient error waits base_delay * 2**n (capped) and tries again, up to ``attempts``."""
    clock = clock or SystemClock()
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - only transient errors are retried, the rest re-raised
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            delay = min(max_delay, base_delay * 2 ** attempt)
            log.warning("%s failed (%s); retry %d/%d in %.1f s", what, exc, attempt + 1, attempts - 1, delay)
            clock.sleep(delay)
    raise AssertionError("unreachable")
