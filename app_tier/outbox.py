"""Natural batching for a worker's replies, and a future that waits for several.

``Outbox`` sends items (replies to a queue) in batch calls, one lane per destination: an item goes out at once when
its lane is idle, and items that become ready while a call is in flight go together in the next one.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable


MAX_PER_CALL = 10  # SQS takes at most 10 entries per batch call


def all_of(futures: list[Future]) -> Future:
    """A future done when all of ``futures`` are: with the first error among them, else with None."""
    combined: Future = Future()
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        errors = [future.exception() for future in futures if future.exception() is not None]
        if errors:
            combined.set_exception(errors[0])
        else:
            combined.set_result(None)

    if not futures:
        combined.set_result(None)
    for future in futures:
        future.add_done_callback(one_done)
    return combined


class Outbox:
    """Items on their way out by a batch call (replies to a queue), one lane per destination. An
    item goes out at once when its lane is idle; items that become ready while a call is in flight wait and go
    together in the lane's next call (up to 10 at a time): natural batching, with no waiting window.

    ``post`` returns a future that is done when the item's call returned (or holds the call's error)."""

    def __init__(self, pool: ThreadPoolExecutor, call: Callable[[str, list[str]], None]) -> None:
        self._pool, self._call = pool, call
        self._lock = threading.Lock()
        self._waiting: dict[str, list[tuple[str, Future]]] = {}
        self._busy: set[str] = set()

    def post(self, lane: str, item: str) -> Future:
        sent: Future = Future()
        with self._lock:
            self._waiting.setdefault(lane, []).append((item, sent))
            if lane in self._busy:
                return sent
            self._busy.add(lane)
        self._pool.submit(self._drain, lane)
        return sent

    def _drain(self, lane: str) -> None:
        """Calls with the lane's waiting items until none is left, then marks the lane idle."""
        while chunk := self._next_chunk(lane):
            self._call_with(lane, chunk)

    def _next_chunk(self, lane: str) -> list[tuple[str, Future]]:
        with self._lock:
            waiting = self._waiting[lane]
            chunk, self._waiting[lane] = waiting[:MAX_PER_CALL], waiting[MAX_PER_CALL:]
            if not chunk:
                self._busy.discard(lane)
            return chunk

    def _call_with(self, lane: str, chunk: list[tuple[str, Future]]) -> None:
        try:
            self._call(lane, [item for item, _ in chunk])
        except Exception as exc:  # noqa: BLE001 - handed to the waiting futures, judged by the worker
            for _, sent in chunk:
                sent.set_exception(exc)
        else:
            for _, sent in chunk:
                sent.set_result(None)
