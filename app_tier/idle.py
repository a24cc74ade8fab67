"""When an idle worker stops: a pure function of times and counts, tested with a fake clock.

A worker that holds no message keeps long-polling. Each poll waits at most until the idle deadline (but at least
one second, so the last poll before stopping is always a real long poll). When a poll comes back empty at or past
``idle_timeout`` seconds without work, that poll was the final empty long-poll: the worker terminates its instance.
"""
from __future__ import annotations

import math


def poll_wait(idle_since: float, now: float, idle_timeout: float, max_wait: int) -> int:
    """Seconds the next receive may long-poll: up to the idle deadline, between 1 and ``max_wait``."""
    remaining = idle_timeout - (now - idle_since)
    return max(1, min(max_wait, math.ceil(remaining))) if max_wait > 0 else 0


def should_terminate(idle_since: float, now: float, idle_timeout: float, holding: int, last_poll_empty: bool) -> bool:
    """True once the worker has held nothing for ``idle_timeout`` and its latest long-poll found nothing."""
    return holding == 0 and last_poll_empty and now - idle_since >= idle_timeout
