"""The local server tells the instance runner at once when instances are launched or terminated.

The runner polled the server for app-tier instances every 0.25 s, so a launch waited up to that long, plus a
``DescribeInstances`` call, before its worker process was forked: 0.34 s of a demo's cold burst. Now the server
sends a datagram after every ``RunInstances`` and ``TerminateInstances``, and the runner, which waits for one between
polls, reconciles at once; its poll, now every 2 s, only catches a worker that died without terminating its instance
and a lost datagram. Fewer polls also spare the server: ``DescribeInstances`` is its dearest call to answer.

The socket is a Linux abstract Unix socket named after the emulator's folder: no file to clean up, no path length
limit, and it is gone when the runner is. Where it cannot be bound (not Linux, or another runner of the same folder
holds it) the runner only polls. Both ends are processes of the local emulator; nothing of this exists on AWS.
"""
from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path
from typing import Any, Callable

from hybrid.local.awsserver.sqs_fixes import require_pinned_moto

log = logging.getLogger(__name__)


def address(emulator_folder: Path) -> str:
    """The abstract socket name of one emulator folder's runner."""
    digest = hashlib.sha256(str(Path(emulator_folder).resolve()).encode()).hexdigest()[:24]
    return f"\0hybrid-runner-{digest}"


class Wakeups:
    """The runner's end. ``wait`` returns True when woken, False after ``timeout`` (or at once if ``enabled`` is
    False: then the caller waits its own way)."""

    def __init__(self, emulator_folder: Path) -> None:
        self._socket: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.bind(address(emulator_folder))
        except OSError as exc:
            log.info("no launch wake-ups (%s): the runner only polls", exc)
            self._socket.close()
            self._socket = None

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def wait(self, timeout: float) -> bool:
        if self._socket is None:
            return False
        self._socket.settimeout(timeout)
        try:
            self._socket.recv(64)
        except TimeoutError:
            return False
        self._drain()
        return True

    def _drain(self) -> None:
        """Consumes the wake-ups that came meanwhile: one reconciliation answers them all."""
        self._socket.setblocking(False)  # type: ignore[union-attr]
        try:
            while True:
                self._socket.recv(64)  # type: ignore[union-attr]
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def wake(emulator_folder: Path) -> None:
    """The server's end: one datagram, never blocking; no runner listening is not an error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        try:
            sender.sendto(b"instances", address(emulator_folder))
        except OSError:
            pass


def apply(emulator_folder: Path) -> None:
    """Makes moto's EC2 backend wake the folder's runner after each launch and termination (this reaches into moto's
    internals: the pinned version only)."""
    from moto.ec2.models.instances import InstanceBackend  # the server's side only: the runner never loads moto

    require_pinned_moto("the runner wake-up hooks")
    for name in ("run_instances", "terminate_instances"):
        original = getattr(InstanceBackend, name)
        setattr(InstanceBackend, name, _waking(getattr(original, "__wrapped__", original), emulator_folder))


def _waking(method: Callable[..., Any], emulator_folder: Path) -> Callable[..., Any]:
    def waking(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        wake(emulator_folder)
        return result

    waking.__wrapped__ = method  # type: ignore[attr-defined]
    waking.__name__ = method.__name__
    return waking
