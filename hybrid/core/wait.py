"""The one wait helper: poll a probe until it says done, fails, or time runs out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from hybrid.core.clock import Clock, SystemClock
from hybrid.core.errors import HybridError, WaitTimeout

T = TypeVar("T")


@dataclass(frozen=True)
class Poll(Generic[T]):
    """What one look found: ``done`` ends the wait, ``failed`` (a reason) aborts it, ``progress`` is 0..1 or None."""

    value: T
    done: bool
    failed: str = ""
    progress: float | None = None
    state: str = ""


def wait_for(what: str, probe: Callable[[], Poll[T]], timeout: float, interval: float = 0.5,
             clock: Clock | None = None, on_poll: Callable[[Poll[T]], None] | None = None) -> T:
    """Calls ``probe`` every ``interval`` seconds until it reports done; returns its value.

    Raises ``WaitTimeout`` naming ``what`` and the last state seen, or ``HybridError`` with the probe's failure reason.
    ``on_poll`` sees every poll (progress bars hang off it).
    """
    clock = clock or SystemClock()
    deadline = clock.now() + timeout
    while True:
        poll = probe()
        if on_poll:
            on_poll(poll)
        if poll.failed:
            raise HybridError(f"{what} failed: {poll.failed}")
        if poll.done:
            return poll.value
        if clock.now() >= deadline:
            last = f" (last state: {poll.state})" if poll.state else ""
            raise WaitTimeout(f"gave up waiting for {what} after {timeout:g} s{last}")
        clock.sleep(min(interval, max(0.0, deadline - clock.now())))
