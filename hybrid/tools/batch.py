"""Batch mode: drop images into the input bucket under ``batch/``, collect the labels later.

**Input.** Any object under ``batch/`` of the input bucket is a batch image: a flat ``batch/cat.jpg``, a folder copied
with ``aws s3 cp --recursive photos s3://<stack>-input/batch/photos/``, any name. ``hybrid aws up`` (and ``local up``)
sets the bucket's event notification (prefix ``batch/``) to the request queue, so every upload is one request
(``BatchClient.init`` sets it again, for a stack made before). ``hybrid submit`` uploads a folder to
``batch/<sha256>/<name>`` and skips bytes it submitted before (they are listed already).

**Answer.** The worker reads the object (refusing one over its size limit before reading it), hashes the bytes it read
and writes a ``BatchRecord`` (``hybrid.core.messages``) under ``result_key(input key)`` in the output bucket, which is
the input key plus ``.json``: ``{"key", "sha256", "label", "top5", "model", "error"}``. Classification is shared by
content: bytes that already have ``results/<sha256>.json`` (from the web tier or another key) are answered from it, so
several keys with the same bytes have one classification and each its own record. An object that cannot be
classified (not an image, too large, gone) gets a record with the reason in ``error``, never a silent drop.

**Reconciling.** ``list_results`` joins the input objects under ``batch/`` (folder markers, keys ending in ``/``, are
left out) with their records; each is in one state:

- ``done``: a label; ``failed``: the reason it could not be classified;
- ``pending``: no record yet, and a request may still be on its way: the request queue holds messages (visible, in
  flight or delayed), or the object is younger than ``NOTIFY_GRACE_S`` (S3 notifies asynchronously);
- ``not queued``: no record, an empty request queue and an older object: nothing will answer it
  (uploaded before the notification existed, or its message was lost). ``requeue`` sends, for each, a message of
  the S3 event's shape.

``wait`` returns when no object is pending, or at its timeout with the states as they are.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from hybrid.aws.channels import SqsQueue
from hybrid.aws.objects import S3Objects
from hybrid.aws.session import AwsClients
from hybrid.aws.stack import batch_notification_resource, stack_names
from hybrid.aws.storage import NotificationDriver
from hybrid.core.errors import ConfigError, NotFoundError, WaitTimeout
from hybrid.core.messages import BATCH_PREFIX, BatchRecord, MalformedMessage, batch_key, requeue_body, result_key
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
NOTIFY_GRACE_S = 30.0
READERS = 8
DONE, FAILED, PENDING, NOT_QUEUED = "done", "failed", "pending", "not queued"
SUBMITTED_KEY = re.compile(rf"^{BATCH_PREFIX}[0-9a-f]{{64}}/(?P<name>[^/]+)$")


@dataclass(frozen=True)
class Submission:
    path: Path
    key: str
    digest: str
    uploaded: bool


@dataclass(frozen=True)
class BatchResult:
    """One input object: ``name`` is its key under ``batch/`` (only the file name for ``hybrid submit``'s
    ``batch/<sha256>/<name>``), ``state`` one of done, failed, pending, not queued."""

    name: str
    digest: str
    label: str = ""
    error: str = ""
    key: str = ""
    state: str = PENDING

    @property
    def ready(self) -> bool:
        """It has its answer: a label or the reason it has none."""
        return self.state in (DONE, FAILED)


class BatchClient:
    def __init__(self, settings: Settings) -> None:
        clients, names = AwsClients(settings), stack_names(settings)
        self.names = names
        self.objects = S3Objects(clients.s3)
        self.notification = NotificationDriver(clients.s3, clients.sqs, settings.stack)
        self.requests = SqsQueue(clients.sqs, names.request_queue)
        self.input_bucket, self.output_bucket, self.queue = names.input_bucket, names.output_bucket, \
            names.request_queue
        self.notify_grace = NOTIFY_GRACE_S

    def init(self) -> None:
        """Makes uploads under batch/ notify the request queue, as `hybrid aws up` does (idempotent)."""
        resource = batch_notification_resource(self.names)
        found = self.notification.observe(resource)
        if found is None or dict(found.properties) != dict(resource.properties):
            self.notification.update(resource, found)

    def upload(self, path: Path, data: bytes | None = None) -> Submission:
        """Uploads one image unless the same bytes were submitted before (then they are listed already). Bytes the
        web tier answered are uploaded: the worker answers them from the stored result, and they are listed.
        ``data``: the image's bytes when they come from elsewhere (a zip entry, ``hybrid.tools.archives``)."""
        data = Path(path).read_bytes() if data is None else data
        digest = hashlib.sha256(data).hexdigest()
        key = batch_key(digest, Path(path).name)
        if self.objects.any_under(self.input_bucket, f"{BATCH_PREFIX}{digest}/"):
            return Submission(Path(path), key, digest, uploaded=False)
        self.objects.put(self.input_bucket, key, data)
        return Submission(Path(path), key, digest, uploaded=True)

    def list_results(self) -> list[BatchResult]:
        """Every input object under batch/ with its state (see the module docstring)."""
        inputs = [(key, modified) for key, modified in self.objects.entries(self.input_bucket, BATCH_PREFIX)
                  if not key.endswith("/")]
        recorded = set(self.objects.keys(self.output_bucket, BATCH_PREFIX))
        depth = self.requests.depth()
        queue_busy = bool(depth.visible or depth.in_flight or depth.delayed)
        with ThreadPoolExecutor(READERS, "batch-results") as pool:
            return list(pool.map(lambda entry: self._result(*entry, recorded, queue_busy), inputs))

    def _result(self, key: str, modified: datetime, recorded: set[str], queue_busy: bool) -> BatchResult:
        name = display_name(key)
        if result_key(key) not in recorded:
            young = time.time() - modified.timestamp() < self.notify_grace
            return BatchResult(name, "", key=key, state=PENDING if queue_busy or young else NOT_QUEUED)
        try:
            record = BatchRecord.from_body(self.objects.read(self.output_bucket, result_key(key)).decode())
        except NotFoundError:
            return BatchResult(name, "", key=key, state=PENDING)
        except (MalformedMessage, UnicodeDecodeError) as exc:
            return BatchResult(name, "", error=f"unreadable result record: {exc}", key=key, state=FAILED)
        return BatchResult(name, record.sha256, record.label, record.error, key, FAILED if record.error else DONE)

    def requeue(self, results: list[BatchResult] | None = None) -> list[BatchResult]:
        """Sends a request for every object that is not queued; returns those."""
        lost = [r for r in (results if results is not None else self.list_results()) if r.state == NOT_QUEUED]
        self.requests.send([requeue_body(r.key) for r in lost])
        return lost

    def wait(self, timeout: float, on_poll: Callable[[Poll[list[BatchResult]]], None] | None = None) \
            -> list[BatchResult]:
        """Waits until no object is pending; at the timeout, returns the states as they are."""
        def probe() -> Poll[list[BatchResult]]:
            results = self.list_results()
            settled = sum(r.state != PENDING for r in results)
            return Poll(results, done=settled == len(results), progress=settled / len(results) if results else 1.0,
                        state=summary(results))
        try:
            return wait_for("batch results", probe, timeout=timeout, interval=1.0, on_poll=on_poll)
        except WaitTimeout as exc:
            log.info("%s", exc)
            return self.list_results()

    def download(self, out_dir: Path, results: list[BatchResult] | None = None) -> Path:
        """Writes results.csv (name,key,state,label,error,sha256) and one <name>.txt label file per labelled image
        (a name with folders gets those folders under ``out_dir``)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        results = self.list_results() if results is None else results
        with open(out_dir / "results.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["name", "key", "state", "label", "error", "sha256"])
            writer.writerows([r.name, r.key, r.state, r.label, r.error, r.digest] for r in results)
        for result in results:
            if result.label:
                path = label_path(out_dir, result.name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(result.label + "\n")
        return out_dir / "results.csv"


def display_name(key: str) -> str:
    """``hybrid submit``'s ``batch/<sha256>/<file>`` shows as the file's stem; any other key as its path under
    ``batch/``."""
    submitted = SUBMITTED_KEY.match(key)
    if submitted:
        filename = submitted["name"]
        return filename.rsplit(".", 1)[0] if "." in filename else filename
    return key[len(BATCH_PREFIX):]


def label_path(out_dir: Path, name: str) -> Path:
    """``<out_dir>/<name>.txt``, with every ``..``, ``.`` or empty folder part made ``_``: never outside out_dir."""
    parts = [part if part not in ("", ".", "..") else "_" for part in name.split("/")]
    return out_dir.joinpath(*parts[:-1], parts[-1] + ".txt")


def summary(results: list[BatchResult]) -> str:
    counts = {state: sum(r.state == state for r in results) for state in (DONE, FAILED, PENDING, NOT_QUEUED)}
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files

