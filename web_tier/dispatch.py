"""One dispatcher thread per server process: long-polls the process's own reply queue in batches and completes the
requests waiting for those replies. Nothing busy-waits: a waiting request blocks on its future.

Each server process has its own reply queue, so no process ever sees another's replies. A reply that arrives after
its request gave up (504) is not lost: it goes to ``on_late_reply`` (the result cache).

Delivered replies are deleted in batches, not after each receive: once ``DELETE_BATCH`` (10) receipts wait, once a
poll comes back empty, once the oldest has waited ``DELETE_AFTER`` seconds, and when the dispatcher stops. Under load
replies arrive one or two per receive, so this saves most of a call per request. No one waits on a deletion, and a
reply not deleted in time (the receive hides it for ``VISIBILITY`` seconds) comes back as a late reply, which only
refills the cache.

A reply queue found missing (the stack was taken down and set up again under the running process) is created again
through ``on_missing``, and the dispatcher goes on receiving from it.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any, Callable

from hybrid.core.clock import Clock, SystemClock
from hybrid.core.contracts import MessageQueue
from hybrid.core.errors import HybridError, NotFoundError
from hybrid.core.messages import ClassifyReply, MalformedMessage

log = logging.getLogger(__name__)
VISIBILITY = 30  # seconds a received reply stays hidden
DELETE_BATCH = 10  # receipts per DeleteMessageBatch (SQS's limit)
DELETE_AFTER = 5.0  # seconds a delivered reply may wait for its deletion; well inside VISIBILITY


class ReplyDispatcher:
    def __init__(self, queue: MessageQueue, on_late_reply: Callable[[ClassifyReply], None],
                 wait_seconds: int = 2, clock: Clock | None = None,
                 on_missing: Callable[[], Any] | None = None) -> None:
        self.queue, self.on_late_reply, self.wait_seconds = queue, on_late_reply, wait_seconds
        self.on_missing = on_missing
        self.clock = clock or SystemClock()
        self._delivered: list[str] = []  # receipts of delivered replies, not deleted yet
        self._oldest = 0.0  # when the first of them was delivered
        self._waiting: dict[str, Future[ClassifyReply]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reply-dispatcher", daemon=True)
        self.late_replies = 0
        self.reopened = 0  # times the reply queue was found missing and created again

    def start(self) -> "ReplyDispatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.wait_seconds + 5)

    def expect(self, request_id: str) -> Future[ClassifyReply]:
        """A future the reply with this id will complete. Call before sending the request."""
        future: Future[ClassifyReply] = Future()
        with self._lock:
            self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        """The request gave up: a reply arriving later goes to ``on_late_reply``."""
        with self._lock:
            self._waiting.pop(request_id, None)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self.queue.receive(10, self.wait_seconds, VISIBILITY)
            except HybridError as exc:
                log.warning("reply queue %s: receive failed (%s); retrying", self.queue.name, exc)
                if isinstance(exc, NotFoundError):
                    self._reopen()
                self._stop.wait(1.0)
                continue
            for message in messages:
                self._deliver(message.body)
            self._delete_in_batches([m.receipt for m in messages])
        self._delete(self._take_delivered())

    def _reopen(self) -> None:
        """Creates the missing reply queue again; a failure is logged, and the next receive tries again."""
        if self.on_missing is None:
            return
        try:
            self.on_missing()
        except HybridError as exc:
            log.warning("reply queue %s: cannot create it again (%s)", self.queue.name, exc)
            return
        self.reopened += 1
        log.info("reply queue %s was missing: created it again", self.queue.name)

    def _delete_in_batches(self, receipts: list[str]) -> None:
        """Adds the receipts of replies just delivered; deletes those waiting once there are enough of them, once a
        poll came back empty (``receipts`` is empty), or once the oldest has waited ``DELETE_AFTER`` seconds."""
        now = self.clock.now()
        if receipts and not self._delivered:
            self._oldest = now
        self._delivered += receipts
        if len(self._delivered) >= DELETE_BATCH or not receipts or now - self._oldest >= DELETE_AFTER:
            self._delete(self._take_delivered())  # nothing to delete is no call

    def _take_delivered(self) -> list[str]:
        taken, self._delivered = self._delivered, []
        return taken

    def _deliver(self, body: str) -> None:
        try:
            reply = ClassifyReply.from_body(body)
        except MalformedMessage as exc:
            log.warning("dropping a malformed reply: %s", exc)
            return
        with self._lock:
            future = self._waiting.pop(reply.id, None)
        if future is not None:
            future.set_result(reply)
            return
        self.late_replies += 1
        try:
            self.on_late_reply(reply)
        except Exception:  # noqa: BLE001 - a late reply must never stop the dispatcher
            log.exception("handling late reply %s failed", reply.id)

    def _delete(self, receipts: list[str]) -> None:
        if not receipts:
            return
        try:
            self.queue.delete(receipts)
        except HybridError as exc:
            log.warning("could not delete %d replies (%s): they will be delivered again", len(receipts), exc)
