"""The app-tier worker: long-poll requests in batches, classify them together, store labels, reply, then delete.

Order per batch, so that a crash at any point loses nothing (the request comes back after its visibility timeout)
and a duplicate delivery is harmless (every write is an idempotent overwrite):

1. parse each request; a malformed one is made visible again at once and reaches the dead-letter queue after
   ``max_receive_count`` receives, while the worker goes on;
2. fetch each image from the input bucket;
3. classify the good images in one batch, extending the batch's visibility while it runs (images are fetched and
   results stored by a small thread pool, so bucket calls overlap);
4. write the label to the output bucket under the image name, and the full result under the content hash;
5. send the replies; 6. only then delete the requests.

A bad image (not an image, truncated, a decompression bomb, too large) gets an error reply and is deleted.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from app_tier.idle import poll_wait, should_terminate
from hybrid.clock import Clock, SystemClock
from hybrid.contracts import ImageClassifier, MessageQueue, ObjectStore, QueueMessage
from hybrid.errors import HybridError, NotFoundError, TooLargeError
from hybrid.messages import ClassifyReply, ClassifyRequest, MalformedMessage, requests_from_body
from hybrid.retry import is_transient, retry

log = logging.getLogger(__name__)
MAX_IMAGE_BYTES = 64 * 1024 * 1024
RESULTS_PREFIX = "results/"


@dataclass(frozen=True)
class WorkerConfig:
    batch_size: int
    max_wait: int
    visibility: int
    idle_timeout: float

    @classmethod
    def from_settings(cls, settings: Any) -> "WorkerConfig":
        return cls(settings.worker.batch_size, settings.worker.wait_seconds, settings.aws.visibility_timeout,
                   settings.worker.idle_timeout)


@dataclass
class Job:
    """One request on its way through a batch."""

    message: QueueMessage
    request: ClassifyRequest
    image: bytes = b""
    reply: ClassifyReply | None = None


@dataclass
class WorkerStats:
    batches: int = 0
    answered: int = 0
    bad_images: int = 0
    malformed: int = 0
    errors: int = 0
    extensions: int = 0


@dataclass
class Worker:
    config: WorkerConfig
    requests: MessageQueue
    replies_to: Callable[[str], MessageQueue]
    inputs: ObjectStore
    outputs: ObjectStore
    classifier: ImageClassifier
    terminate_self: Callable[[], None]
    clock: Clock = field(default_factory=SystemClock)
    stats: WorkerStats = field(default_factory=WorkerStats)
    stop: threading.Event = field(default_factory=threading.Event)
    io_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8, "worker-io"))

    def run(self) -> str:
        """Works until idle for ``idle_timeout`` (then terminates its instance) or until ``stop`` is set."""
        idle_since = self.clock.now()
        while not self.stop.is_set():
            wait = poll_wait(idle_since, self.clock.now(), self.config.idle_timeout, self.config.max_wait)
            messages = self._receive(wait)
            if messages:
                self.process(messages)
                idle_since = self.clock.now()
            elif should_terminate(idle_since, self.clock.now(), self.config.idle_timeout, 0, last_poll_empty=True):
                log.info("idle for %.1f s with an empty final poll: terminating this instance",
                         self.clock.now() - idle_since)
                self.terminate_self()
                return "idle"
        return "stopped"

    def _receive(self, wait: int) -> list[QueueMessage]:
        try:
            return self.requests.receive(self.config.batch_size, wait, self.config.visibility)
        except HybridError as exc:
            if not is_transient(exc):
                raise
            self.stats.errors += 1
            log.warning("receive failed (%s); backing off", exc)
            self.clock.sleep(min(5.0, 0.5 * 2 ** min(self.stats.errors, 4)))
            return []

    def process(self, messages: Sequence[QueueMessage]) -> None:
        """Handles one received batch end to end."""
        self.stats.batches += 1
        parsed = [(message, self._parse(message)) for message in messages]
        jobs = [job for _, message_jobs in parsed for job in message_jobs or []]
        with VisibilityExtender(self.requests, [j.message.receipt for j in jobs], self.config.visibility,
                                self.stats):
            fetched = [job for job, ok in zip(jobs, self.io_pool.map(self._fetch, jobs)) if ok]
            self._classify([job for job in fetched if job.reply is None])
            done = [job for job in fetched if job.reply is not None]
            self._store([job for job in done if job.reply.ok])
        self._reply([job for job in done if job.request.reply_to])
        self.requests.delete(_finished(parsed, done))
        self.stats.answered += len(done)

    def _parse(self, message: QueueMessage) -> list[Job] | None:
        """The message's jobs ([] for an S3 test event), or None for a malformed one (released for redelivery)."""
        try:
            return [Job(message, request) for request in requests_from_body(message.body)]
        except MalformedMessage as exc:
            self.stats.malformed += 1
            log.warning("malformed request %s (receive %d): %s", message.message_id, message.receive_count, exc)
            retry(lambda: self.requests.hide([message.receipt], 0), "releasing a malformed message", clock=self.clock)
            return None

    def _fetch(self, job: Job) -> bool:
        """Reads the image; a missing one gets an error reply; a failing store leaves the request for later."""
        try:
            job.image = retry(lambda: self.inputs.get(job.request.key, MAX_IMAGE_BYTES),
                              f"fetching {job.request.key}", clock=self.clock)
        except NotFoundError:
            job.reply = self._error_reply(job, f"image {job.request.key} is not in the input bucket")
        except TooLargeError as exc:
            job.reply = self._error_reply(job, str(exc))
        except HybridError as exc:
            self.stats.errors += 1
            log.warning("cannot fetch %s now (%s): the request will come back", job.request.key, exc)
            return False
        return True

    def _classify(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        results = self.classifier.classify([job.image for job in jobs])
        for job, result in zip(jobs, results):
            if isinstance(result, Exception):
                self.stats.bad_images += 1
                job.reply = self._error_reply(job, f"not a usable image: {result}")
            else:
                job.reply = ClassifyReply(job.request.id, job.request.name, result.label, tuple(result.top5),
                                          self.classifier.model_id, key=job.request.key)

    def _error_reply(self, job: Job, error: str) -> ClassifyReply:
        log.info("request %s (%s): %s", job.request.id, job.request.name, error)
        return ClassifyReply(job.request.id, job.request.name, model=self.classifier.model_id, error=error,
                             key=job.request.key)

    def _store(self, jobs: list[Job]) -> None:
        list(self.io_pool.map(self._store_one, jobs))

    def _store_one(self, job: Job) -> None:
        digest = hashlib.sha256(job.image).hexdigest()
        retry(lambda: self.outputs.put(job.request.name, job.reply.label.encode(), "text/plain; charset=utf-8"),
              f"storing the label of {job.request.name}", clock=self.clock)
        retry(lambda: self.outputs.put(f"{RESULTS_PREFIX}{digest}.json", job.reply.to_body().encode(),
                                       "application/json"), f"storing result {digest}", clock=self.clock)

    def _reply(self, jobs: list[Job]) -> None:
        by_queue: dict[str, list[str]] = {}
        for job in jobs:
            by_queue.setdefault(job.request.reply_to, []).append(job.reply.to_body())
        for queue_name, bodies in by_queue.items():
            self._send_replies(queue_name, bodies)

    def _send_replies(self, queue_name: str, bodies: list[str]) -> None:
        retry(lambda: self.replies_to(queue_name).send(bodies), f"replying to {queue_name}", clock=self.clock)


def _finished(parsed: list[tuple[QueueMessage, list[Job] | None]], done: list[Job]) -> list[str]:
    """Receipts of well-formed messages all of whose requests are answered (an S3 test event has none)."""
    answered = {id(job) for job in done}
    return [message.receipt for message, jobs in parsed
            if jobs is not None and all(id(job) in answered for job in jobs)]


class VisibilityExtender:
    """While a batch runs, pushes its messages' visibility timeout out again every third of it."""

    def __init__(self, queue: MessageQueue, receipts: list[str], visibility: int, stats: WorkerStats) -> None:
        self.queue, self.receipts, self.visibility, self.stats = queue, receipts, visibility, stats
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._extend, name="visibility-extender", daemon=True)

    def __enter__(self) -> "VisibilityExtender":
        if self.receipts and self.visibility > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _extend(self) -> None:
        while not self._done.wait(max(0.5, self.visibility / 3)):
            try:
                self.queue.hide(self.receipts, self.visibility)
                self.stats.extensions += 1
            except HybridError as exc:
                log.warning("could not extend visibility (%s)", exc)
