"""How many bytes of decoded pixels one process holds at once, and giving that memory back afterwards.

A decode that would take more than what is left of the budget waits until enough is given back (one larger than the
whole budget runs alone), so a process holds at most about ``limit`` bytes of pixels however many threads decode:
its peak memory for pixels is bounded by the budget, not by its thread count times the image size. Work that needs
no pixels (a PNG checked as a stream) holds nothing and never waits, but is counted for the trim below.

Giving it back, large allocations: PIL allocates a large image in blocks of up to 16 MB with ``malloc``. glibc's
dynamic mmap threshold rises to the size of the first such block freed, so later blocks come from per-thread heaps,
which keep them after they are freed (measured: 16 threads decoding 4096 x 4096 greyscale PNGs left 281 MB held, and
``malloc_trim(0)`` freed none of it). :func:`map_large_allocations` fixes the threshold instead, so every allocation
of ``MMAP_THRESHOLD`` or more is its own mapping, returned when freed (the same run: 36 MB after, 70 MB peak instead
of 312 MB).

Small ones: what is left (the inflated pieces of PNG checks, upload copies, the decoders' buffers) is spread over
glibc's per-thread arenas, which keep freed chunks; each burst of 128 uploads left the web process 70-80 MB larger
(measured twice in a row). So when the last hold ends and ``trim_after`` bytes of work were done since the last
trim, ``malloc_trim(0)`` hands the arenas' free pages back (the same burst in one process: 168 MB after three bursts,
116 MB after the trim). Elsewhere than glibc both do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

MMAP_THRESHOLD = 4 * 1024 * 1024  # bytes; a 1 Mpx RGB image, a quarter of one of PIL's blocks
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


class DecodeBudget:
    """A byte budget shared by the threads of one process; thread-safe."""

    def __init__(self, limit: int, trim_after: int) -> None:
        if limit < 1:
            raise ValueError(f"the decode budget must be at least 1 byte, not {limit}")
        self.limit = limit
        self._trim_after = trim_after
        self._used = 0
        self._holders = 0
        self._work_since_trim = 0
        self._changed = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    @contextmanager
    def hold(self, size: int, work: int | None = None) -> Iterator[None]:
        """Holds ``size`` bytes of the budget for the block, waiting until they are free (0 never waits); ``work``
        (``size`` unless given) counts toward the next trim."""
        with self._changed:
            self._changed.wait_for(lambda: size == 0 or self._used == 0 or self._used + size <= self.limit)
            self._used += size
            self._holders += 1
            self._work_since_trim += size if work is None else work
        try:
            yield
        finally:
            self._give_back(size)

    def _give_back(self, size: int) -> None:
        with self._changed:
            self._used -= size
            self._holders -= 1
            self._changed.notify_all()
            trim = self._holders == 0 and self._work_since_trim >= self._trim_after
            if trim:
                self._work_since_trim = 0
        if trim:
            release_free_memory()


def release_free_memory() -> bool:
    """Hands the C heap's free pages back to the system (glibc ``malloc_trim(0)``); False where there is none."""
    trim = _libc_function("malloc_trim", (ctypes.c_size_t,))
    if trim is None:
        return False
    trim(0)
    return True


def map_large_allocations(threshold: int = MMAP_THRESHOLD) -> bool:
    """Makes glibc serve every allocation of ``threshold`` bytes or more from its own mapping, returned to the system
    when freed (see the module's docstring). Process-wide; True when it was set."""
    mallopt = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    return mallopt is not None and mallopt(_M_MMAP_THRESHOLD, threshold) == 1


@functools.cache
def _libc_function(name: str, argtypes: tuple) -> Callable[..., int] | None:
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        logger.debug("no %s in this C library: freed decode memory stays with its allocator", name)
        return None
    function.argtypes, function.restype = list(argtypes), ctypes.c_int
    return function
