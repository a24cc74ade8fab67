"""How many bytes of decoded pixels one process holds at once, and giving that memory back afterwards.

A decode that would take more than what is left of the budget waits until enough is given back (one larger than the
whole budget runs alone), so a process holds at most about ``limit`` bytes of pixels however many threads decode:
its peak memory for pixels is bounded by the budget, not by its thread count times the image size.

Giving it back: PIL allocates a large image in blocks of up to 16 MB with ``malloc``. glibc's dynamic mmap
threshold rises to the size of the first such block freed, so later blocks come from per-thread heaps, whose free
top ``malloc_trim`` does not return (measured: 16 threads decoding 4096 x 4096 greyscale PNGs left 281 MB held, and
``malloc_trim(0)`` freed none of it). :func:`map_large_allocations` fixes the threshold instead, so every allocation
of ``MMAP_THRESHOLD`` or more is its own mapping, returned when freed (the same run: 36 MB after, 70 MB peak instead
of 312 MB). Elsewhere than glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

MMAP_THRESHOLD = 4 * 1024 * 1024  # bytes; a 1 Mpx RGB image, a quarter of one of PIL's blocks
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


class DecodeBudget:
    """A byte budget shared by the threads of one process; thread-safe."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the decode budget must be at least 1 byte, not {limit}")
        self.limit = limit
        self._used = 0
        self._changed = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        """Holds ``size`` bytes of the budget for the block, waiting until they are free."""
        with self._changed:
            self._changed.wait_for(lambda: self._used == 0 or self._used + size <= self.limit)
            self._used += size
        try:
            yield
        finally:
            with self._changed:
                self._used -= size
                self._changed.notify_all()


def map_large_allocations(threshold: int = MMAP_THRESHOLD) -> bool:
    """Makes glibc serve every allocation of ``threshold`` bytes or more from its own mapping, returned to the system
    when freed (see the module's docstring). Process-wide; True when it was set."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        logger.debug("no mallopt in this C library: freed decode memory stays with its allocator")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, threshold) == 1
