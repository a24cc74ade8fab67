"""SQS queues and S3 buckets as the project's ``MessageQueue`` and ``ObjectStore`` contracts."""
from __future__ import annotations

from typing import Sequence

from hybrid.aws.session import MappedClient
from hybrid.core.contracts import QueueDepth, QueueMessage
from hybrid.core.errors import CloudError, NotFoundError, TooLargeError

BATCH = 10


class SqsQueue:
    def __init__(self, sqs: MappedClient, name: str) -> None:
        self.sqs, self.name = sqs, name
        self._url = ""

    @property
    def url(self) -> str:
        if not self._url:
            self._url = self.sqs.get_queue_url(QueueName=self.name)["QueueUrl"]
        return self._url

    def send(self, bodies: Sequence[str]) -> None:
        for start in range(0, len(bodies), BATCH):
            entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start:start + BATCH])]
            failed = self.sqs.send_message_batch(QueueUrl=self.url, Entries=entries).get("Failed", [])
            if failed:
                raise CloudError(f"sending to {self.name} failed: {failed[0].get('Message')} "
                                 f"[{failed[0].get('Code')}]", failed[0].get("Code", ""))

    def receive(self, max_messages: int, wait_seconds: int, visibility: int | None = None) -> list[QueueMessage]:
        extra = {} if visibility is None else {"VisibilityTimeout": visibility}
        reply = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=max_messages,
                                         WaitTimeSeconds=wait_seconds,
                                         MessageSystemAttributeNames=["ApproximateReceiveCount"], **extra)
        return [QueueMessage(m["MessageId"], m["ReceiptHandle"], m["Body"],
                             int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)))
                for m in reply.get("Messages", [])]

    def delete(self, receipts: Sequence[str]) -> None:
        for start in range(0, len(receipts), BATCH):
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts[start:start + BATCH])]
            self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)

    def hide(self, receipts: Sequence[str], seconds: int) -> None:
        for start in range(0, len(receipts), BATCH):
            entries = [{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": seconds}
                       for i, r in enumerate(receipts[start:start + BATCH])]
            self.sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)

    def depth(self) -> QueueDepth:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)["Attributes"]
        return QueueDepth(*(int(attributes.get(n, 0)) for n in names))


class S3Store:
    def __init__(self, s3: MappedClient, name: str) -> None:
        self.s3, self.name = s3, name

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.s3.put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self.s3.put_object(Bucket=self.name, Key=key, Body=data, IfNoneMatch="*")
        except CloudError as exc:
            if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        reply = self.s3.get_object(Bucket=self.name, Key=key)
        if max_bytes is not None and reply["ContentLength"] > max_bytes:
            reply["Body"].close()
            raise TooLargeError(f"object {key} is {reply['ContentLength']} bytes, over the {max_bytes}-byte limit")
        return reply["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.name, Key=key)
        except NotFoundError:
            return False
        return True

