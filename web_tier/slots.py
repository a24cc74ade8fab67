"""Reply-queue slots: each server process of a host holds one numbered slot, and its reply queue is named by the
slot, not by its process id.

A slot is an exclusive ``flock`` on ``<folder>/<stack>-slot-<n>.lock``. The kernel releases it when the process
ends, however it ends (SIGKILL included), so the process that replaces a dead one claims the free slot and adopts
its reply queue instead of deleting it: replies to the dead process's requests then arrive there as late replies
and fill the new process's result cache, and a client that retries is answered from it. Nothing is deleted, so
nothing a worker is about to reply to disappears because a web process died.

The lock file is only the mutual exclusion between the processes of one host; the queue itself is found by name
and carries the stack's tags (``hybrid aws down`` removes it).
"""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from hybrid.core.errors import HybridError

MAX_SLOTS = 256  # far above any --processes (64 at most)


@dataclass
class Slot:
    """A claimed slot; held until ``release`` or the end of the process."""

    number: int
    fd: int

    @property
    def owner(self) -> str:
        """The reply queue's owner part: ``s<n>``."""
        return f"s{self.number}"

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the lock
            self.fd = -1


def claim_slot(folder: Path, stack: str, limit: int = MAX_SLOTS) -> Slot:
    """The lowest free slot of ``stack`` on this host (lowest, so a replacement takes the slot its predecessor left)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(limit):
        fd = _try_lock(folder / f"{stack}-slot-{number}.lock")
        if fd is not None:
            return Slot(number, fd)
    raise HybridError(f"all {limit} reply-queue slots of stack {stack} in {folder} are held by live processes")


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
