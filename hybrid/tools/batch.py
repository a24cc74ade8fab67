"""Batch mode: drop a folder of images into the input bucket, collect the labels later.

Uploads go to ``batch/<sha256>/<name>``; the input bucket's event notification puts one message per upload on the
request queue (the workers skip S3's test event), and the workers write ``results/<sha256>.json`` and the label under
the image name to the output bucket, replying to no one. The same bytes are never uploaded or classified twice: an
image whose hash is already submitted or answered is skipped.
"""
from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from hybrid.aws.objects import S3Objects
from hybrid.aws.session import AwsClients
from hybrid.aws.stack import stack_names
from hybrid.aws.storage import BucketDriver, QueueDriver
from hybrid.core.errors import ConfigError, NotFoundError
from hybrid.core.messages import BATCH_PREFIX, ClassifyReply, batch_key
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
NOTIFICATION_ID = "hybrid-batch"
RESULTS_PREFIX = "results/"


@dataclass(frozen=True)
class Submission:
    path: Path
    key: str
    digest: str
    uploaded: bool


@dataclass(frozen=True)
class BatchResult:
    name: str
    digest: str
    label: str = ""
    error: str = ""

    @property
    def ready(self) -> bool:
        return bool(self.label or self.error)


class BatchClient:
    def __init__(self, settings: Settings) -> None:
        clients, names = AwsClients(settings), stack_names(settings)
        self.objects = S3Objects(clients.s3)
        self.buckets = BucketDriver(clients.s3, settings.stack, settings.aws.region)
        self.queues = QueueDriver(clients.sqs, settings.stack)
        self.input_bucket, self.output_bucket, self.queue = names.input_bucket, names.output_bucket, \
            names.request_queue

    def init(self) -> None:
        """Makes uploads under batch/ notify the request queue (idempotent)."""
        url = self.queues.url(self.queue)
        if url is None:
            raise NotFoundError(f"queue {self.queue} does not exist: run `hybrid aws up` first")
        arn = self.queues.arn_at(url)
        self.queues.set_policy(url, _s3_may_send(arn, self.input_bucket))
        wanted = _notification(arn)
        if self.buckets.queue_notifications(self.input_bucket) != wanted["QueueConfigurations"]:
            self.buckets.set_notifications(self.input_bucket, wanted)

    def upload(self, path: Path) -> Submission:
        """Uploads one image unless the same bytes were submitted or answered before."""
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        key = batch_key(digest, Path(path).name)
        if self._known(digest):
            return Submission(Path(path), key, digest, uploaded=False)
        self.objects.put(self.input_bucket, key, data)
        return Submission(Path(path), key, digest, uploaded=True)

    def _known(self, digest: str) -> bool:
        return self.objects.any_under(self.input_bucket, f"{BATCH_PREFIX}{digest}/") or \
            self._result(digest) is not None

    def _result(self, digest: str) -> ClassifyReply | None:
        try:
            body = self.objects.read(self.output_bucket, f"{RESULTS_PREFIX}{digest}.json")
        except NotFoundError:
            return None
        return ClassifyReply.from_body(body.decode())

    def list_results(self) -> list[BatchResult]:
        """Every submitted image with its label (or error) once a worker has answered it."""
        results = []
        for digest, name in self._submitted():
            reply = self._result(digest)
            results.append(BatchResult(name, digest, reply.label if reply else "", reply.error if reply else ""))
        return results

    def _submitted(self) -> Iterable[tuple[str, str]]:
        for key in self.objects.keys(self.input_bucket, BATCH_PREFIX):
            _, digest, filename = key.split("/", 2)
            yield digest, filename.rsplit(".", 1)[0] if "." in filename else filename

    def wait(self, timeout: float, on_poll: Callable[[Poll[list[BatchResult]]], None] | None = None) \
            -> list[BatchResult]:
        """Waits until every submitted image has a result."""
        def probe() -> Poll[list[BatchResult]]:
            results = self.list_results()
            ready = sum(r.ready for r in results)
            return Poll(results, done=ready == len(results), progress=ready / len(results) if results else 1.0,
                        state=f"{ready}/{len(results)} ready")
        return wait_for("batch results", probe, timeout=timeout, interval=1.0, on_poll=on_poll)

    def download(self, out_dir: Path) -> Path:
        """Writes results.csv (name,label,error,sha256) and one <name>.txt label file per ready image."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        results = self.list_results()
        with open(out_dir / "results.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["name", "label", "error", "sha256"])
            writer.writerows([r.name, r.label, r.error, r.digest] for r in results)
        for result in results:
            if result.label:
                (out_dir / f"{result.name}.txt").write_text(result.label + "\n")
        return out_dir / "results.csv"


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def _notification(queue_arn: str) -> dict:
    return {"QueueConfigurations": [{
        "Id": NOTIFICATION_ID, "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": BATCH_PREFIX}]}}}]}


def _s3_may_send(queue_arn: str, bucket: str) -> dict:
    """S3 may send to the request queue for the stack's input bucket only, and only while that bucket belongs to this
    account (``aws:SourceAccount``: a bucket name, unlike an ARN with an account, can pass to another account once
    deleted). The stack's bucket and queue are made by one account, so the queue ARN's account is the owner's."""
    account = queue_arn.split(":")[4]
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "InputBucketNotifies", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": queue_arn,
        "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                      "StringEquals": {"aws:SourceAccount": account}}}]}
