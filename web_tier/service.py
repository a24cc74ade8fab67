"""How one request travels: cache, single flight, image to the input bucket, request to the queue, wait for reply.

- A cache hit answers without touching queues or buckets.
- Identical images in flight at the same time share one request message (single flight): the first caller leads,
  the others wait on its future.
- The image goes to the input bucket under its content hash, and only if it is not there yet.
- The request message carries the key, a correlation id and the upload's request id (for log lines, see
  ``hybrid.core.logs``; a follower shares its leader's message, so the worker logs the leader's id); it goes out
  through the process's sender, which sends the requests of concurrent callers together (``web_tier.sender``); the
  reply arrives through the process's dispatcher.
- No reply within ``request_timeout``: ``RequestTimeout`` (HTTP 504); a reply that comes later still fills the cache.
- An outcome's ``timings`` (ms): ``store_ms`` the S3 put, ``send_ms`` from then until the request is on the queue
  (waiting for the sender's next round, then its batch send), ``queue_and_classify_ms`` from the same point until the
  reply (the send included), ``total_ms`` the whole call.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable

from hybrid.core.contracts import ObjectStore
from hybrid.core.errors import HybridError
from hybrid.core.messages import ClassifyReply, ClassifyRequest
from web_tier.cache import CachedResult, ResultCache, is_digest
from web_tier.dispatch import ReplyDispatcher
from web_tier.sender import RequestSender
from web_tier.uploads import Upload

log = logging.getLogger(__name__)
INPUT_PREFIX = "sha256/"


class RequestTimeout(HybridError):
    """No reply came within the request timeout."""


class ImageRejected(HybridError):
    """The worker could not classify the image."""


@dataclass(frozen=True)
class Outcome:
    label: str
    top5: tuple[tuple[str, float], ...]
    model: str
    cached: bool
    shared: bool = False
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Counters:
    requests: int = 0
    hits: int = 0
    misses: int = 0
    shared: int = 0
    timeouts: int = 0
    rejected: int = 0


class ClassifyService:
    def __init__(self, inputs: ObjectStore, sender: RequestSender, reply_queue_name: str,
                 dispatcher: ReplyDispatcher, cache: ResultCache, request_timeout: float,
                 on_lookup: Callable[[bool], None] = lambda hit: None) -> None:
        self.inputs, self.sender, self.reply_queue_name = inputs, sender, reply_queue_name
        self.dispatcher, self.cache, self.request_timeout = dispatcher, cache, request_timeout
        self.on_lookup = on_lookup  # told of each cache look-up: hit or not (the metrics count them)
        self._inflight: dict[str, Future[Outcome]] = {}
        self._lock = threading.Lock()
        self.counters = Counters()

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def classify(self, upload: Upload, check: Callable[[bytes], None] = lambda data: None,
                 request_id: str = "") -> Outcome:
        """The label of an uploaded image, from the cache or from the app tier. ``check`` vets the bytes of a miss
        (a hit's bytes were classified before); it raises to refuse them. ``request_id`` goes into the request
        message (the worker's log lines for it carry it)."""
        started = time.perf_counter()
        self.counters.requests += 1
        cached = self.cache.get(upload.digest)
        self.on_lookup(cached is not None)
        if cached is not None:
            self.counters.hits += 1
            return Outcome(cached.label, cached.top5, cached.model, cached=True,
                           timings={"total_ms": _ms(started)})
        check(upload.data)
        self.counters.misses += 1
        future, leader = self._join_flight(upload.digest)
        if leader:
            self._lead(upload, future, request_id)
        else:
            self.counters.shared += 1
        outcome = self._result(future)
        timings = {**outcome.timings, "total_ms": _ms(started)}
        return Outcome(outcome.label, outcome.top5, outcome.model, False, not leader, timings)

    def _join_flight(self, digest: str) -> tuple[Future[Outcome], bool]:
        with self._lock:
            if digest in self._inflight:
                return self._inflight[digest], False
            future: Future[Outcome] = Future()
            self._inflight[digest] = future
            return future, True

    def _lead(self, upload: Upload, future: Future[Outcome], request_id: str) -> None:
        try:
            future.set_result(self._ask_app_tier(upload, request_id))
        except BaseException as exc:  # noqa: BLE001 - followers must see the same failure
            future.set_exception(exc)
        finally:
            with self._lock:
                self._inflight.pop(upload.digest, None)

    def _ask_app_tier(self, upload: Upload, request_id: str) -> Outcome:
        started = time.perf_counter()
        key = f"{INPUT_PREFIX}{upload.digest}"
        self.inputs.put_if_absent(key, upload.data)
        stored = time.perf_counter()
        request = ClassifyRequest(uuid.uuid4().hex, key, upload.name, self.reply_queue_name, request_id)
        reply_future = self.dispatcher.expect(request.id)
        self._send(request)
        sent = time.perf_counter()
        reply = self._wait(reply_future, request.id)
        timings = {"store_ms": _ms(started, stored), "send_ms": _ms(stored, sent),
                   "queue_and_classify_ms": _ms(stored)}
        if not reply.ok:
            self.counters.rejected += 1
            raise ImageRejected(reply.error)
        self.remember(reply)
        return Outcome(reply.label, reply.top5, reply.model, cached=False, timings=timings)

    def _send(self, request: ClassifyRequest) -> None:
        try:
            self.sender.send(request.to_body())
        except BaseException:
            # A batch fails as a whole, so this message may have gone out: its reply is then a late reply (cached).
            self.dispatcher.forget(request.id)
            raise

    def _wait(self, future: Future[ClassifyReply], request_id: str) -> ClassifyReply:
        try:
            return future.result(timeout=self.request_timeout)
        except FutureTimeout:
            self.dispatcher.forget(request_id)
            self.counters.timeouts += 1
            raise RequestTimeout(f"no answer from the app tier within {self.request_timeout:g} s; the request "
                                 "stays queued and its result will be cached when it comes") from None

    def _result(self, future: Future[Outcome]) -> Outcome:
        return future.result()

    def remember(self, reply: ClassifyReply) -> None:
        """Puts a successful reply into the cache (also called for replies that came too late)."""
        digest = reply.key[len(INPUT_PREFIX):] if reply.key.startswith(INPUT_PREFIX) else ""
        if reply.ok and reply.model and is_digest(digest):
            self.cache.put(digest, CachedResult(reply.label, tuple(reply.top5), reply.model))


def _ms(start: float, end: float | None = None) -> float:
    return round(((end if end is not None else time.perf_counter()) - start) * 1000, 2)
