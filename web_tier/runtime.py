"""What one server process runs: its reply queue, the dispatcher thread, the request sender thread, the result
cache and the service.

Built after gunicorn forks (threads do not survive a fork) and closed when the process exits: the sender and the
dispatcher stop and the cache is flushed.

The reply queue is named by the process's slot on this host (``web_tier.slots``), not by its pid, and it is never
deleted by the web tier: a process that replaces a dead one (gunicorn restarts a killed worker) claims the free slot
and adopts its queue, so replies to the dead process's requests are not lost (they fill the cache as late replies)
and no worker finds its reply queue gone. If the queue disappears under a live process (the stack was taken down and
set up again), the dispatcher creates it again. Reply queues carry the stack's tag and go with `hybrid aws down`.
Queues named by pid, of an earlier version, are deleted at start once their process is gone.

``readiness()`` is what `/readyz` reports: the threads run, and the queues and buckets answer.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

from hybrid.aws.channels import S3Store, SqsQueue
from hybrid.aws.compute import Ec2Fleet
from hybrid.aws.session import AwsClients
from hybrid.aws.stack import stack_names
from hybrid.aws.storage import QueueDriver
from hybrid.core import procs
from hybrid.core.contracts import Fleet, MessageQueue, Resource
from hybrid.core.errors import HybridError, NotFoundError
from hybrid.core.naming import ROLE_RESPONSES
from hybrid.core.settings import Settings
from web_tier.cache import ResultCache
from web_tier.dispatch import ReplyDispatcher
from web_tier.metrics import GaugeFigure, WebMetrics
from web_tier.sender import BatchingSender
from web_tier.service import ClassifyService
from web_tier.slots import claim_slot

log = logging.getLogger(__name__)
REPLY_RETENTION_SECONDS = 3600
CACHE_FLUSH_SECONDS = 2.0  # the cache appends what changed at most this often (and on exit)
Check = tuple[str, Callable[[], Any]]  # (what, a call that raises HybridError when it is not usable)


@dataclass
class WebRuntime:
    service: ClassifyService
    dispatcher: ReplyDispatcher
    sender: BatchingSender
    cache: ResultCache
    requests: MessageQueue
    replies: MessageQueue
    fleet: Fleet | None
    metrics: WebMetrics
    on_close: Any = None
    checks: tuple[Check, ...] = ()

    def status(self) -> dict[str, Any]:
        return {"queues": {"requests": _depth(self.requests), "replies": _depth(self.replies)},
                "fleet": _fleet_summary(_fleet(self.fleet)),
                "cache": {"entries": self.cache.entries, "hit_rate": round(self.cache.hit_rate, 4),
                          "hits": self.cache.hits, "misses": self.cache.misses,
                          "model": self.cache.current_model},
                "in_flight": {"requests": self.dispatcher.waiting, "images": self.service.inflight},
                "counters": vars(self.service.counters), "late_replies": self.dispatcher.late_replies,
                "request_sends": vars(self.sender.counters)}

    def gauges(self) -> list[GaugeFigure]:
        """What ``/metrics`` reads at scrape time: the request queue's depth and the fleet by state, as ``/status``
        has them (left out, with ``hybrid_web_cloud_up`` 0, when the cloud does not answer), and the cache's size."""
        depth, fleet = _depth(self.requests), _fleet(self.fleet)
        figures = [GaugeFigure("hybrid_web_cache_entries", "Entries in the result cache, as the answering process "
                               "holds it.", values={"": self.cache.entries}),
                   GaugeFigure("hybrid_web_cloud_up", "1 when the cloud answered this scrape's question (what: "
                               "request_queue, fleet), else 0.", "what",
                               {"request_queue": float(isinstance(depth, dict)),
                                "fleet": float(isinstance(fleet, dict))})]
        if isinstance(depth, dict):
            figures.append(GaugeFigure("hybrid_web_request_queue_messages", "Messages in the request queue, by state "
                                       "(visible: waiting for a worker; in_flight: taken by one).", "state", depth))
        if isinstance(fleet, dict):
            figures.append(GaugeFigure("hybrid_app_tier_instances", "The stack's app-tier instances, by state.",
                                       "state", fleet))
        return figures

    def problems(self) -> list[str]:
        """Why this process cannot answer a cache miss, or [] when it can: both of its threads must run."""
        dead = [("reply dispatcher", self.dispatcher.alive), ("request sender", self.sender.alive)]
        return [f"{name} stopped" for name, alive in dead if not alive]

    def readiness(self) -> list[str]:
        """Why this process cannot serve now, or [] when it can: ``problems()``, then the first queue or bucket
        that does not answer (the local AWS server is down, or the stack is not set up). The checks stop there: with
        the server down each one would spend the client's retries on it."""
        for what, call in self.checks:
            problem = _check(what, call)
            if problem:
                return self.problems() + [problem]
        return self.problems()

    def close(self) -> None:
        self.sender.close()
        self.dispatcher.stop()
        self.cache.close()
        if self.on_close:
            self.on_close()


def _depth(queue: MessageQueue) -> dict[str, int] | str:
    try:
        depth = queue.depth()
    except HybridError as exc:
        return f"unavailable: {exc}"
    return {"visible": depth.visible, "in_flight": depth.in_flight}


def _check(what: str, call: Callable[[], Any]) -> str:
    try:
        call()
    except HybridError as exc:
        return f"{what}: {exc}"
    return ""


def _fleet(fleet: Fleet | None) -> dict[str, int] | str:
    """The fleet's instances by state (pending and running always named), or why they are not known."""
    if fleet is None:
        return "unknown"
    try:
        states = [i.state for i in fleet.instances()]
    except HybridError as exc:
        return f"unavailable: {exc}"
    return {state: states.count(state) for state in ("pending", "running", *sorted(set(states)))}


def _fleet_summary(by_state: dict[str, int] | str) -> dict[str, int] | str:
    """What ``/status`` shows of the fleet: running, pending and the total."""
    if isinstance(by_state, str):
        return by_state
    return {"running": by_state["running"], "pending": by_state["pending"], "total": sum(by_state.values())}


def assemble(inputs, requests, replies: MessageQueue, cache: ResultCache, request_timeout: float,
             fleet: Fleet | None = None, on_close: Any = None, wait_seconds: int = 2,
             reopen_replies: Callable[[], Any] | None = None, checks: tuple[Check, ...] = ()) -> WebRuntime:
    """A runtime from its parts (fakes in unit tests, SQS/S3 adapters in production); starts the dispatcher and the
    request sender. ``reopen_replies`` creates the reply queue again when it is found missing."""
    holder: dict[str, ClassifyService] = {}
    metrics = WebMetrics()

    def late_reply(reply: Any) -> None:
        metrics.late_replies.inc()
        holder["service"].remember(reply)

    dispatcher = ReplyDispatcher(replies, late_reply, wait_seconds, on_missing=reopen_replies)
    sender = BatchingSender(requests)
    service = ClassifyService(inputs, sender, replies.name, dispatcher, cache, request_timeout,
                              on_lookup=metrics.count_lookup)
    holder["service"] = service
    dispatcher.start()
    sender.start()
    return WebRuntime(service, dispatcher, sender, cache, requests, replies, fleet, metrics, on_close, checks)


def build_runtime(settings: Settings) -> WebRuntime:
    clients, names = AwsClients(settings), stack_names(settings)
    queues = QueueDriver(clients.sqs, settings.stack)
    require_stack(queues, settings)
    delete_stale_reply_queues(queues, names.reply_queue_prefix + host_tag() + "-")
    slot = claim_slot(settings.result_cache_path.parent, settings.stack)
    reply_name = names.reply_queue(f"{host_tag()}-{slot.owner}")
    ensure_reply_queue(queues, reply_name, settings)
    log.info("process %s holds reply slot %s: queue %s", os.getpid(), slot.number, reply_name)
    cache = ResultCache(settings.result_cache_path, settings.web.cache_max_entries, flush_interval=CACHE_FLUSH_SECONDS)
    requests, replies = SqsQueue(clients.sqs, names.request_queue), SqsQueue(clients.sqs, reply_name)
    return assemble(S3Store(clients.s3, names.input_bucket), requests, replies, cache, settings.web.request_timeout,
                    Ec2Fleet(clients.ec2, settings.stack), slot.release,
                    reopen_replies=lambda: ensure_reply_queue(queues, reply_name, settings),
                    checks=readiness_checks(clients, names, requests, replies))


def readiness_checks(clients: AwsClients, names: Any, requests: SqsQueue, replies: SqsQueue) -> tuple[Check, ...]:
    """The queues and buckets a cache miss needs: the request and reply queues, the input bucket (the web tier
    writes the image there) and the output bucket (the workers store the result there)."""
    return (("request queue", requests.depth), ("reply queue", replies.depth),
            ("input bucket", lambda: clients.s3.head_bucket(Bucket=names.input_bucket)),
            ("output bucket", lambda: clients.s3.head_bucket(Bucket=names.output_bucket)))


def require_stack_exists(settings: Settings) -> None:
    """``require_stack`` from the settings alone, for `hybrid web` to call before it starts serving."""
    require_stack(QueueDriver(AwsClients(settings).sqs, settings.stack), settings)


def require_stack(queues: QueueDriver, settings: Settings) -> None:
    """A clear error before serving, instead of a 503 on every request, when the stack is not set up."""
    name = stack_names(settings).request_queue
    if queues.url(name) is None:
        raise NotFoundError(f"stack {settings.stack} is not set up (no queue {name}): run `hybrid aws up` first")


def ensure_reply_queue(queues: QueueDriver, name: str, settings: Settings):
    resource = Resource("queue", name, ROLE_RESPONSES, {
        "MaximumMessageSize": str(settings.aws.response_message_bytes), "VisibilityTimeout": "30",
        "MessageRetentionPeriod": str(REPLY_RETENTION_SECONDS)}, stack_names(settings).tags(ROLE_RESPONSES, name))
    return queues.observe(resource) or queues.create(resource)


def delete_stale_reply_queues(queues: QueueDriver, prefix: str) -> None:
    """Reply queues of this host named by the pid of a process that is gone (as an earlier version named them; a
    slot's queue, ``<host>-s<n>``, is adopted instead)."""
    for queue in queues.discover(prefix):
        pid = queue.name.rsplit("-", 1)[-1]
        if queue.owned and pid.isdigit() and not procs.is_alive(int(pid)):
            log.info("deleting reply queue %s of a process that is gone", queue.name)
            queues.delete(queue)


def host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
