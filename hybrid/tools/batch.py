"""Batch mode: drop a folder of images into the input bucket, collect the labels later.

Uploads go to ``batch/<sha256>/<name>``; the input bucket's event notification puts one message per upload on the
request queue (the workers skip S3's test event), and the workers write ``results/<sha256>.json`` and the label under
the image name to the output bucket, replying to no one. The same bytes are never uploaded or classified twice: an
image whose hash is already submitted or answered is skipped.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from hybrid.aws.session import AwsClients
from hybrid.aws.stack import stack_names
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
        self.s3, self.sqs = clients.s3, clients.sqs
        self.input_bucket, self.output_bucket, self.queue = names.input_bucket, names.output_bucket, \
            names.request_queue

    def init(self) -> None:
        """Makes uploads under batch/ notify the request queue (idempotent)."""
        url = self.sqs.get_queue_url(QueueName=self.queue)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(_s3_may_send(arn,
                                                                                                  self.input_bucket))})
        wanted = _notification(arn)
        current = self.s3.get_bucket_notification_configuration(Bucket=self.input_bucket)
        if current.get("QueueConfigurations") != wanted["QueueConfigurations"]:
            self.s3.put_bucket_notification_configuration(Bucket=self.input_bucket, NotificationConfiguration=wanted)

    def upload(self, path: Path) -> Submission:
        """Uploads one image unless the same bytes were submitted or answered before."""
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        key = batch_key(digest, Path(path).name)
        if self._known(digest):
            return Submission(Path(path), key, digest, uploaded=False)
        self.s3.put_object(Bucket=self.input_bucket, Key=key, Body=data)
        return Submission(Path(path), key, digest, uploaded=True)

    def _known(self, digest: str) -> bool:
        listed = self.s3.list_objects_v2(Bucket=self.input_bucket, Prefix=f"{BATCH_PREFIX}{digest}/", MaxKeys=1)
        return bool(listed.get("KeyCount")) or self._result(digest) is not None

    def _result(self, digest: str) -> ClassifyReply | None:
        try:
            body = self.s3.get_object(Bucket=self.output_bucket, Key=f"{RESULTS_PREFIX}{digest}.json")["Body"]
        except NotFoundError:
            return None
        return ClassifyReply.from_body(body.read().decode())

    def list_results(self) -> list[BatchResult]:
        """Every submitted image with its label (or error) once a worker has answered it."""
        results = []
        for digest, name in self._submitted():
            reply = self._result(digest)
            results.append(BatchResult(name, digest, reply.label if reply else "", reply.error if reply else ""))
        return results

    def _submitted(self) -> Iterable[tuple[str, str]]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.input_bucket, Prefix=BATCH_PREFIX):
            for item in page.get("Contents", []):
                _, digest, filename = item["Key"].split("/", 2)
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
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "InputBucketNotifies", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": queue_arn,
        "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}}}]}
