"""The app-tier worker: long-poll requests in batches, classify them one image at a time, and let each answer go out
as soon as its image is done; the batch's answered requests are deleted together, in one call, at its end.

Order per request, so that a crash at any point loses nothing (a request not yet deleted comes back after its
visibility timeout) and a duplicate delivery is harmless (every write is an idempotent overwrite, and the web tier
ignores a second reply to a request it has already answered):

1. parse each request of the received batch; a malformed one is made visible again at once and reaches the
   dead-letter queue after ``max_receive_count`` receives, while the worker goes on;
2. fetch the batch's images from the input bucket together, on a small thread pool; an image that cannot be fetched
   now leaves its request for later, a missing or too large one gets an error reply at once;
3. classify the images one at a time, in order, each as soon as its fetch is done (the first image does not wait for
   the batch's last); as soon as one is classified, hand its reply and its two writes to
   the output bucket (the label under the image name, the full result under the content hash) to the pool, so that
   they run while the next image is classified. The reply may go out before or while its writes run: a crash in
   between leaves the request undeleted, so it comes back and is answered again;
4. once every job of the batch is settled, delete, in one ``DeleteMessageBatch``, each message whose requests all had
   their replies sent and their writes done. A reply or write that still fails after botocore's retries leaves its
   message for later (it comes back, and is answered again). Deleting per batch rather than per message saves a call per
   image (one in six of the worker's calls); a deletion has no one waiting for it, and a crash before it only means
   that the batch's answered requests come back and are answered a second time.

Replies to one queue go out at once when no send to that queue is in flight; those that become ready while one is
go together in the next call (up to 10): natural batching, with no waiting window. The batch's visibility is extended
until it is deleted. A bad image (not an image, truncated, a decompression bomb, too large) gets an error reply and
is deleted.

A batch request (an object under ``batch/`` of the input bucket, from its event notification; no reply queue) is
answered in the output bucket: its ``BatchRecord`` under ``result_key(key)`` (label, or the reason it failed: not in
the bucket, too large, not an image), and, when classified, the label under the image name and the full result under
the content hash. Classification is shared by content: a batch object whose SHA-256 already has a result (from the web
tier or another key) is answered from it, and same bytes twice in one batch are classified once.

A reply whose queue is gone (its web process ended, or the stack's reply queues were removed) is dropped and
counted (``dropped_replies``): no one is left to read it, and a request that kept its message for it would come back
until it reached the dead-letter queue. Its result is stored as usual, and the message is deleted only once that
is done, so a client that asks again is answered from the output bucket's result or by a fresh request.
"""
from __future__ import annotations

import hashlib
import logging
import resource
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from app_tier.idle import poll_wait, should_terminate
from app_tier.outbox import Outbox, all_of
from hybrid.core.clock import Clock, SystemClock
from hybrid.core.contracts import ImageClassifier, MessageQueue, ObjectStore, QueueMessage
from hybrid.core.errors import HybridError, NotFoundError, TooLargeError
from hybrid.core.logs import in_request_scope, request_scope
from hybrid.core.messages import (BatchRecord, ClassifyReply, ClassifyRequest, MalformedMessage, requests_from_body,
                                  result_key)
from hybrid.core.retry import Backoff, is_transient

log = logging.getLogger(__name__)
MAX_IMAGE_BYTES = 64 * 1024 * 1024
RESULTS_PREFIX = "results/"
# After a receive that failed even after botocore's own retries: a jittered wait of up to 1, 2, 4, then 5 s.
RECEIVE_BACKOFF = Backoff(base=1.0, cap=5.0)


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
    digest: str = ""
    reply: ClassifyReply | None = None
    shared: bool = False  # answered from the stored result of the same bytes

    @property
    def batch(self) -> bool:
        return not self.request.reply_to


@dataclass
class WorkerStats:
    batches: int = 0
    answered: int = 0
    bad_images: int = 0
    malformed: int = 0
    dropped_replies: int = 0
    errors: int = 0
    extensions: int = 0
    peak_rss_mb: float = 0.0  # the process's peak resident memory, recorded when run() ends


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports ``ru_maxrss`` in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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
    receive_failures: int = 0  # receives failed in a row

    def run(self) -> str:
        """Works until idle for ``idle_timeout`` (then terminates its instance) or until ``stop`` is set."""
        try:
            return self._work()
        finally:
            self.stats.peak_rss_mb = peak_rss_mb()

    def _work(self) -> str:
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
        """One long poll; a transient failure (botocore has already retried it) backs off, jittered, and yields no
        messages, so the loop polls again."""
        try:
            messages = self.requests.receive(self.config.batch_size, wait, self.config.visibility)
        except HybridError as exc:
            if not is_transient(exc):
                raise
            self.stats.errors += 1
            self.receive_failures += 1
            delay = RECEIVE_BACKOFF.delay(self.receive_failures)
            log.warning("receive failed %d times in a row (%s); polling again in %.1f s", self.receive_failures, exc,
                        delay)
            self.clock.sleep(delay)
            return []
        self.receive_failures = 0
        return messages

    def process(self, messages: Sequence[QueueMessage]) -> None:
        """Handles one received batch end to end: each request is answered as soon as it can be, and the answered
        messages are deleted together once the batch is settled."""
        self.stats.batches += 1
        parsed = [(message, self._parse(message)) for message in messages]
        jobs = [job for _, message_jobs in parsed for job in message_jobs or []]
        with VisibilityExtender(self.requests, [j.message.receipt for j in jobs], self.config.visibility,
                                self.stats):
            self._delete_answered(self._answer(parsed, jobs))

    def _answer(self, parsed: list[tuple[QueueMessage, list[Job] | None]], jobs: list[Job]) -> list[QueueMessage]:
        """Starts fetching every image of the batch, then classifies image by image as each arrives (in order) and
        hands each answer off at once. Returns, once all are settled, the messages that may be deleted: those whose
        every image was fetched, answered and stored."""
        fetches = {id(job): self.io_pool.submit(in_request_scope, job.request.log_id, self._fetch, job) for job in jobs}
        replies = Outbox(self.io_pool, self._send_replies)
        handed: list[tuple[Job, Future]] = []
        whole: list[tuple[QueueMessage, list[Future]]] = []
        by_digest: dict[str, ClassifyReply] = {}
        for message, message_jobs in parsed:
            if message_jobs is None:
                continue  # malformed: already released for redelivery
            fetched = [job for job in message_jobs if fetches[id(job)].result()]
            done = []
            for job in fetched:
                if job.reply is None:
                    with request_scope(job.request.log_id):
                        job.reply = self._classify_batch_one(job, by_digest) if job.batch else self._classify_one(job)
                done.append(self._hand_off(job, replies))
                handed.append((job, done[-1]))
            if len(fetched) == len(message_jobs):  # an image left for later keeps its message (it comes back)
                whole.append((message, done))
        self.stats.answered += sum(self._completed(job, done) for job, done in handed)
        return [message for message, done in whole if all(future.exception() is None for future in done)]

    def _parse(self, message: QueueMessage) -> list[Job] | None:
        """The message's jobs ([] for an S3 test event), or None for a malformed one (released for redelivery)."""
        try:
            return [Job(message, request) for request in requests_from_body(message.body)]
        except MalformedMessage as exc:
            self.stats.malformed += 1
            log.warning("malformed request %s (receive %d): %s", message.message_id, message.receive_count, exc)
            self._release(message)
            return None

    def _release(self, message: QueueMessage) -> None:
        """Makes a malformed message visible again at once; if that fails, it comes back after its visibility
        timeout anyway."""
        try:
            self.requests.hide([message.receipt], 0)
        except HybridError as exc:
            log.warning("cannot release malformed message %s now (%s)", message.message_id, exc)

    def _fetch(self, job: Job) -> bool:
        """Reads the image and hashes it (here, off the path from answer to delete; the result is stored under the
        hash); a missing image gets an error reply; a failing input bucket leaves the request for later."""
        try:
            job.image = self.inputs.get(job.request.key, MAX_IMAGE_BYTES)
            job.digest = hashlib.sha256(job.image).hexdigest()
            if job.batch:
                self._answer_from_stored(job)
        except NotFoundError:
            job.reply = self._error_reply(job, f"image {job.request.key} is not in the input bucket")
        except TooLargeError as exc:
            job.reply = self._error_reply(job, str(exc))
        except HybridError as exc:
            self.stats.errors += 1
            log.warning("cannot fetch %s now (%s): the request will come back", job.request.key, exc)
            return False
        return True

    def _answer_from_stored(self, job: Job) -> None:
        """A batch object whose bytes already have a result is answered from it (a failed look-up only means the
        image is classified again)."""
        try:
            stored = ClassifyReply.from_body(self.outputs.get(f"{RESULTS_PREFIX}{job.digest}.json").decode())
        except NotFoundError:
            return
        except (HybridError, UnicodeDecodeError) as exc:
            log.info("no stored result for %s (%s): classifying it", job.request.key, exc)
            return
        if stored.ok:
            job.reply, job.shared = replace(stored, id=job.request.id, name=job.request.name, key=job.request.key), True

    def _classify_batch_one(self, job: Job, by_digest: dict[str, ClassifyReply]) -> ClassifyReply:
        """Same bytes twice in one received batch are classified once."""
        earlier = by_digest.get(job.digest)
        if earlier is not None:
            job.shared = True
            return replace(earlier, id=job.request.id, name=job.request.name, key=job.request.key)
        reply = self._classify_one(job)
        if reply.ok:
            by_digest[job.digest] = reply
        return reply

    def _classify_one(self, job: Job) -> ClassifyReply:
        [result] = self.classifier.classify([job.image])
        if isinstance(result, Exception):
            self.stats.bad_images += 1
            return self._error_reply(job, f"not a usable image: {result}")
        return ClassifyReply(job.request.id, job.request.name, result.label, tuple(result.top5),
                             self.classifier.model_id, key=job.request.key)

    def _error_reply(self, job: Job, error: str) -> ClassifyReply:
        log.info("request %s (%s): %s", job.request.id, job.request.name, error)
        return ClassifyReply(job.request.id, job.request.name, model=self.classifier.model_id, error=error,
                             key=job.request.key)

    def _hand_off(self, job: Job, replies: Outbox) -> Future:
        """Starts the job's reply and stores on the io pool; the future is done when they are."""
        pending = []
        if job.request.reply_to:
            pending.append(replies.post(job.request.reply_to, job.reply.to_body()))
        if job.batch:
            pending.append(self.io_pool.submit(in_request_scope, job.request.log_id, self._store_batch_one, job))
        elif job.reply.ok:
            pending.append(self.io_pool.submit(in_request_scope, job.request.log_id, self._store_one, job))
        return all_of(pending)

    def _completed(self, job: Job, done: Future) -> bool:
        """Waits for the job's reply and stores; False if one failed for now (its request comes back later)."""
        error = done.exception()
        if error is not None and not isinstance(error, HybridError):
            raise error
        if error is not None:
            self.stats.errors += 1
            log.warning("request %s (%s) not finished (%s): it will come back", job.request.id, job.request.name,
                        error, extra={"request_id": job.request.log_id})
        else:
            log.info("answered %s (%s): %s", job.request.name, job.request.key, job.reply.label or job.reply.error,
                     extra={"request_id": job.request.log_id})
        return error is None

    def _store_one(self, job: Job) -> None:
        self._store_label(job)
        self._store_result(job)

    def _store_label(self, job: Job) -> None:
        self.outputs.put(job.request.name, job.reply.label.encode(), "text/plain; charset=utf-8")

    def _store_result(self, job: Job) -> None:
        self.outputs.put(f"{RESULTS_PREFIX}{job.digest}.json", job.reply.to_body().encode(), "application/json")

    def _store_batch_one(self, job: Job) -> None:
        """A batch object's record (label or error), after its label under the image name and (when classified
        here) its result under the content hash."""
        if job.reply.ok:
            self._store_label(job)
        if job.reply.ok and not job.shared:
            self._store_result(job)
        record = BatchRecord.of(job.request.key, job.digest, job.reply)
        self.outputs.put(result_key(job.request.key), record.to_body().encode(), "application/json")

    def _send_replies(self, queue_name: str, bodies: list[str]) -> None:
        """Sends replies to one queue; drops them if that queue is gone (see the module docstring)."""
        try:
            self.replies_to(queue_name).send(bodies)
        except NotFoundError as exc:
            self.stats.dropped_replies += len(bodies)
            log.warning("reply queue %s is gone (%s): dropped %d replies, their results are stored", queue_name,
                        exc, len(bodies))

    def _delete_answered(self, messages: list[QueueMessage]) -> None:
        """Deletes the answered messages of a batch in one call (the queue splits it at SQS's limit of 10); if that
        still fails after botocore's retries, they come back and are answered again."""
        if not messages:
            return
        receipts = [message.receipt for message in messages]
        try:
            self.requests.delete(receipts)
        except HybridError as exc:
            self.stats.errors += 1
            log.warning("cannot delete %d answered messages (%s): they will come back and be answered again",
                        len(receipts), exc)


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
