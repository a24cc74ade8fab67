"""S3 buckets and SQS queues of a stack: idempotent create, converge, tolerant delete."""
from __future__ import annotations

import json
import logging
from typing import Any

from hybrid.aws.session import MappedClient
from hybrid.core.contracts import Observed, QueueDepth, Resource
from hybrid.core.errors import CloudError, NotFoundError
from hybrid.core.naming import STACK_TAG

log = logging.getLogger(__name__)
PUBLIC_ACCESS_BLOCKED = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                         "RestrictPublicBuckets": True}
FOREIGN_BUCKET_CODES = {"403", "Forbidden", "AccessDenied"}


class BucketDriver:
    """Private buckets: all public access blocked, default encryption, the stack's tags."""

    kind = "bucket"

    def __init__(self, s3: MappedClient, stack: str, region: str) -> None:
        self.s3, self.stack, self.region = s3, stack, region

    def observe(self, resource: Resource) -> Observed | None:
        name = resource.name
        try:
            self.s3.head_bucket(Bucket=name)
        except NotFoundError:
            return None
        except CloudError as exc:
            if exc.code in FOREIGN_BUCKET_CODES:
                return Observed(self.kind, name, name, owned=False, state="owned by another account")
            raise
        owned = self._tags(name).get(STACK_TAG) == self.stack
        return Observed(self.kind, name, name, owned, {"public_access": self._public_access(name),
                                                       "encryption": self._encryption(name)})

    def create(self, resource: Resource) -> Observed:
        config = {} if self.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": self.region}}
        self.s3.create_bucket(Bucket=resource.name, **config)
        tags = [{"Key": k, "Value": v} for k, v in resource.tags.items()]
        self.s3.put_bucket_tagging(Bucket=resource.name, Tagging={"TagSet": tags})
        self.update(resource, Observed(self.kind, resource.name, resource.name, True))
        return Observed(self.kind, resource.name, resource.name, True, dict(resource.properties))

    def update(self, resource: Resource, observed: Observed) -> None:
        self.s3.put_public_access_block(Bucket=resource.name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCKED)
        self.s3.put_bucket_encryption(Bucket=resource.name, ServerSideEncryptionConfiguration={"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": resource.properties["encryption"]}}]})

    def delete(self, observed: Observed) -> bool:
        try:
            self.empty(observed.name)
            self.s3.delete_bucket(Bucket=observed.name)
        except NotFoundError:
            return False
        return True

    def count_objects(self, bucket: str, limit: int = 100_000) -> tuple[int, bool]:
        """How many objects (and object versions, and delete markers) the bucket holds, counting up to ``limit``;
        and whether there are more."""
        count = 0
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            count += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
            if count >= limit:
                return count, bool(page.get("IsTruncated"))
        return count, False

    def empty(self, bucket: str) -> int:
        """Deletes every object (and object version) in the bucket; returns how many.

        Always lists from the start: paging on past a marker whose objects were just deleted can skip the rest.
        """
        deleted = 0
        while True:
            page = self.s3.list_object_versions(Bucket=bucket, MaxKeys=1000)
            keys = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if not keys:
                return deleted
            errors = self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True}).get("Errors")
            if errors:
                raise CloudError(f"could not empty bucket {bucket}: {errors[0].get('Key')}: "
                                 f"{errors[0].get('Message')} [{errors[0].get('Code')}]", errors[0].get("Code", ""))
            deleted += len(keys)

    def queue_notifications(self, bucket: str) -> list[dict[str, Any]]:
        """The bucket's event notifications to SQS queues (``QueueConfigurations``)."""
        return self.s3.get_bucket_notification_configuration(Bucket=bucket).get("QueueConfigurations", [])

    def set_notifications(self, bucket: str, configuration: dict[str, Any]) -> None:
        """Replaces the bucket's whole notification configuration."""
        self.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=configuration)

    def _tags(self, bucket: str) -> dict[str, str]:
        try:
            tag_set = self.s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
        except NotFoundError:
            return {}
        return {t["Key"]: t["Value"] for t in tag_set}

    def _public_access(self, bucket: str) -> str:
        try:
            config = self.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        except NotFoundError:
            return "open"
        return "blocked" if all(config.get(k) for k in PUBLIC_ACCESS_BLOCKED) else "partly open"

    def _encryption(self, bucket: str) -> str:
        try:
            rules = self.s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        except NotFoundError:
            return "none"
        return rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] if rules else "none"


NOTIFICATION_ID = "hybrid-batch"
NOTIFIED_EVENTS = "s3:ObjectCreated:*"


class NotificationDriver:
    """The input bucket's event notification for batch mode: every object created under a prefix sends an S3 event to
    the request queue, whose policy lets that bucket (of this account) send. Only the notification with Id
    ``hybrid-batch`` is the stack's; the bucket's other notifications are kept. Properties: ``queue`` and
    ``prefix``; ``inputs``: ``bucket``.

    Setting it makes S3 send a test event to the queue; the driver takes it off again, so that a fresh stack's
    autoscaler sees no backlog (one that arrives later, as on AWS it may, is skipped by the worker that takes it)."""

    kind = "notification"

    def __init__(self, s3: MappedClient, sqs: MappedClient, stack: str) -> None:
        self.buckets, self.queues = BucketDriver(s3, stack, ""), QueueDriver(sqs, stack)

    def observe(self, resource: Resource) -> Observed | None:
        try:
            found = [c for c in self.buckets.queue_notifications(resource.inputs["bucket"])
                     if c.get("Id") == NOTIFICATION_ID]
        except NotFoundError:
            return None
        if not found:
            return None
        rules = found[0].get("Filter", {}).get("Key", {}).get("FilterRules", [])
        prefix = next((r["Value"] for r in rules if r.get("Name", "").lower() == "prefix"), "")
        return Observed(self.kind, resource.name, NOTIFICATION_ID, True,
                        {"queue": found[0]["QueueArn"].rsplit(":", 1)[-1], "prefix": prefix})

    def create(self, resource: Resource) -> Observed:
        self.update(resource, None)
        return Observed(self.kind, resource.name, NOTIFICATION_ID, True, dict(resource.properties))

    def update(self, resource: Resource, observed: Observed | None) -> None:
        """Lets the bucket send to the queue, then sets the stack's notification beside the bucket's others."""
        bucket, queue = resource.inputs["bucket"], resource.properties["queue"]
        url = self.queues.url(queue)
        if url is None:
            raise NotFoundError(f"queue {queue} does not exist: run `hybrid aws up` first")
        arn = self.queues.arn_at(url)
        self.queues.set_policy(url, s3_may_send(arn, bucket))
        mine = batch_notification(arn, resource.properties["prefix"])
        self._set(bucket, [mine] + self._others(bucket))
        self._take_test_events(url)

    def delete(self, observed: Observed) -> bool:
        return False  # it goes with its bucket, deleted right after it

    def _take_test_events(self, url: str) -> None:
        """Deletes S3's test events among the messages visible now; gives any other back at once."""
        sqs = self.queues.sqs
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       VisibilityTimeout=30).get("Messages", [])
        for message in messages:
            if _is_test_event(message["Body"]):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            else:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                              VisibilityTimeout=0)

    def _others(self, bucket: str) -> list[dict[str, Any]]:
        return [c for c in self.buckets.queue_notifications(bucket) if c.get("Id") != NOTIFICATION_ID]

    def _set(self, bucket: str, queue_configurations: list[dict[str, Any]]) -> None:
        current = self.buckets.s3.get_bucket_notification_configuration(Bucket=bucket)
        current.pop("ResponseMetadata", None)
        self.buckets.set_notifications(bucket, {**current, "QueueConfigurations": queue_configurations})


def _is_test_event(body: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("Event") == "s3:TestEvent"


def batch_notification(queue_arn: str, prefix: str) -> dict[str, Any]:
    """One object-created notification to the queue, filtered to ``prefix``."""
    return {"Id": NOTIFICATION_ID, "QueueArn": queue_arn, "Events": [NOTIFIED_EVENTS],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}}


def s3_may_send(queue_arn: str, bucket: str) -> dict[str, Any]:
    """S3 may send to the request queue for the stack's input bucket only, and only while that bucket belongs to this
    account (``aws:SourceAccount``: a bucket name, unlike an ARN with an account, can pass to another account once
    deleted). The stack's bucket and queue are made by one account, so the queue ARN's account is the owner's."""
    account = queue_arn.split(":")[4]
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "InputBucketNotifies", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": queue_arn,
        "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                      "StringEquals": {"aws:SourceAccount": account}}}]}


QUEUE_ATTRIBUTES = ("MaximumMessageSize", "VisibilityTimeout", "MessageRetentionPeriod", "SqsManagedSseEnabled")


class QueueDriver:
    """Standard queues with a dead-letter queue (``dead_letter_queue`` / ``max_receive_count`` properties)."""

    kind = "queue"

    def __init__(self, sqs: MappedClient, stack: str) -> None:
        self.sqs, self.stack = sqs, stack

    def url(self, name: str) -> str | None:
        try:
            return self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except NotFoundError:
            return None

    def observe(self, resource: Resource) -> Observed | None:
        url = self.url(resource.name)
        if url is None:
            return None
        try:
            attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            tags = self.sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
        except NotFoundError:
            return None
        return Observed(self.kind, resource.name, url, tags.get(STACK_TAG) == self.stack,
                        _queue_properties(attributes))

    def create(self, resource: Resource) -> Observed:
        url = self.sqs.create_queue(QueueName=resource.name, Attributes=self._attributes(resource.properties),
                                    tags=dict(resource.tags))["QueueUrl"]
        return Observed(self.kind, resource.name, url, True, dict(resource.properties))

    def update(self, resource: Resource, observed: Observed) -> None:
        self.sqs.set_queue_attributes(QueueUrl=observed.id, Attributes=self._attributes(resource.properties))

    def delete(self, observed: Observed) -> bool:
        try:
            self.sqs.delete_queue(QueueUrl=observed.id)
        except NotFoundError:
            return False
        return True

    def discover(self, prefix: str) -> list[Observed]:
        """Queues whose name starts with ``prefix`` (the web processes' own reply queues)."""
        urls = []
        for page in self.sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix):
            urls += page.get("QueueUrls", [])
        found = [self.observe(Resource(self.kind, url.rsplit("/", 1)[-1], "")) for url in urls]
        return [f for f in found if f is not None]

    def depth(self, url: str) -> QueueDepth:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return QueueDepth(*(int(attributes.get(n, 0)) for n in names))

    def arn_at(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def set_policy(self, url: str, policy: dict[str, Any]) -> None:
        """Replaces the queue's access policy."""
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})

    def _attributes(self, properties: Any) -> dict[str, str]:
        attributes = {k: properties[k] for k in QUEUE_ATTRIBUTES if k in properties}
        if properties.get("dead_letter_queue"):
            attributes["RedrivePolicy"] = json.dumps({
                "deadLetterTargetArn": self._arn(properties["dead_letter_queue"]),
                "maxReceiveCount": int(properties["max_receive_count"])})
        return attributes

    def _arn(self, queue_name: str) -> str:
        url = self.url(queue_name)
        if url is None:
            raise CloudError(f"dead-letter queue {queue_name} does not exist")
        return self.arn_at(url)


def _queue_properties(attributes: dict[str, str]) -> dict[str, str]:
    properties = {k: str(attributes.get(k, "")).lower() if k == "SqsManagedSseEnabled" else str(attributes.get(k, ""))
                  for k in QUEUE_ATTRIBUTES}
    redrive = json.loads(attributes["RedrivePolicy"]) if attributes.get("RedrivePolicy") else {}
    properties["dead_letter_queue"] = redrive.get("deadLetterTargetArn", ":").rsplit(":", 1)[-1]
    properties["max_receive_count"] = str(redrive.get("maxReceiveCount", ""))
    return properties
