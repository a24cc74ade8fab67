"""Group commit for request messages: many request threads, one sender thread, one SendMessageBatch per round.

A request thread calls ``send(body)``: the body joins the pending list and the caller blocks until the sender thread
has sent it, or raises the error that send raised (a ``HybridError`` from the adapter: HTTP 503, as before). The
sender thread takes everything pending, at most ``MAX_BATCH`` bodies, and sends them with one ``MessageQueue.send``
call; while that call is in flight, new bodies pile up for the next round. So batches grow with the load by
themselves, and an idle server adds no wait: there is no timer and no collection window.

A failed send fails exactly the callers whose bodies were in that call. ``SqsQueue.send`` raises for the whole call
when any entry fails (it does not say which), so every caller of that batch gets the error, even one whose message
did go out. Nothing is lost: the caller answers 503 and the client can retry, and a reply to a message that did go
out is handled as a late reply (it fills the cache).

The sender thread is a daemon, so a stuck send never blocks the process's exit; ``close`` stops it and fails the
callers still waiting for a round with ``SenderStopped``.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from hybrid.core.contracts import MessageQueue
from hybrid.core.errors import HybridError

log = logging.getLogger(__name__)
MAX_BATCH = 10  # entries per SendMessageBatch (SQS's limit); request bodies are far below the 1 KB message limit


class SenderStopped(HybridError):
    """The sender is not running (not started yet, or closed): the request was not sent."""


class RequestSender(Protocol):
    """Sends one request body to the app tier; returns once it is on the queue, raises if it could not be sent."""

    def send(self, body: str) -> None:
        ...


@dataclass
class _Pending:
    body: str
    sent: Future[None] = field(default_factory=Future)


@dataclass
class SenderCounters:
    batches: int = 0
    messages: int = 0
    failed_batches: int = 0


class BatchingSender:
    """A ``RequestSender`` that sends the bodies of concurrent callers together, on its own thread."""

    def __init__(self, queue: MessageQueue, max_batch: int = MAX_BATCH) -> None:
        self.queue, self.max_batch = queue, max_batch
        self.counters = SenderCounters()
        self._pending: deque[_Pending] = deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="request-sender", daemon=True)

    def start(self) -> "BatchingSender":
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Bodies waiting for the next round (not counting the send in flight)."""
        with self._changed:
            return len(self._pending)

    def send(self, body: str) -> None:
        """Blocks until ``body`` was sent in some batch; raises that batch's error, or ``SenderStopped``."""
        pending = _Pending(body)
        with self._changed:
            if self._stopping or not self._thread.is_alive():
                raise SenderStopped(f"the sender to {self.queue.name} is not running")
            self._pending.append(pending)
            self._changed.notify()
        pending.sent.result()

    def close(self, timeout: float = 5.0) -> None:
        """Stops the thread after the send in flight (waiting at most ``timeout``); callers still waiting for a
        round get ``SenderStopped``."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        self._fail_unsent()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._send(batch)

    def _next_batch(self) -> list[_Pending] | None:
        """Waits for pending bodies and takes up to ``max_batch`` of them; None once the sender is stopping."""
        with self._changed:
            self._changed.wait_for(lambda: self._pending or self._stopping)
            if self._stopping:
                return None
            return [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch))]

    def _send(self, batch: list[_Pending]) -> None:
        try:
            self.queue.send([pending.body for pending in batch])
        except Exception as exc:  # noqa: BLE001 - it goes to the callers, whose requests fail with it
            self.counters.failed_batches += 1
            log.debug("sending %d requests to %s failed: %s", len(batch), self.queue.name, exc)
            for pending in batch:
                pending.sent.set_exception(exc)
            return
        self.counters.batches += 1
        self.counters.messages += len(batch)
        for pending in batch:
            pending.sent.set_result(None)

    def _fail_unsent(self) -> None:
        with self._changed:
            unsent, self._pending = list(self._pending), deque()
        for pending in unsent:
            pending.sent.set_exception(SenderStopped(f"the web tier is shutting down: request not sent to "
                                                     f"{self.queue.name}"))
