"""A test rig for a stack on the local AWS server: set it up, launch instances, submit requests, collect replies."""
from __future__ import annotations

import hashlib
import io
import time
import uuid

from hybrid.aws.stack import build_aws_stack
from hybrid.core.messages import ClassifyReply, ClassifyRequest


def photo_bytes(name: str, size: tuple[int, int] | None = None, fmt: str = "JPEG") -> bytes:
    from PIL import Image
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    if size:
        image = image.resize(size)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {"compress_level": 0}))
    return buffer.getvalue()


class Stack:
    def __init__(self, settings, raw_client):
        self.settings = settings
        self.aws = build_aws_stack(settings)
        self.s3, self.sqs, self.ec2 = raw_client("s3"), raw_client("sqs"), raw_client("ec2")
        self.aws.up(report=lambda line: None)
        names = self.aws.desired
        self.requests = self.sqs.get_queue_url(QueueName=f"{settings.stack}-requests")["QueueUrl"]
        self.responses = self.sqs.get_queue_url(QueueName=f"{settings.stack}-responses")["QueueUrl"]
        self.dead_letters = self.sqs.get_queue_url(QueueName=f"{settings.stack}-requests-dlq")["QueueUrl"]
        assert names

    def launch(self, count=1):
        image = next(r["id"] for r in self.aws.status() if r["kind"] == "image")
        tags = [{"Key": "hybrid:stack", "Value": self.settings.stack}, {"Key": "hybrid:role", "Value": "app-tier"}]
        reply = self.ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count, InstanceType="t3.micro",
                                       UserData=self.settings.to_json(),
                                       TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        return [i["InstanceId"] for i in reply["Instances"]]

    def submit(self, name: str, image: bytes) -> str:
        key = f"sha256/{hashlib.sha256(image).hexdigest()}"
        self.s3.put_object(Bucket=f"{self.settings.stack}-input", Key=key, Body=image)
        request_id = uuid.uuid4().hex
        self.sqs.send_message(QueueUrl=self.requests,
                              MessageBody=ClassifyRequest(request_id, key, name, f"{self.settings.stack}-responses")
                              .to_body())
        return request_id

    def collect(self, count: int, timeout: float) -> list[ClassifyReply]:
        replies, deadline = [], time.monotonic() + timeout
        while len(replies) < count and time.monotonic() < deadline:
            for message in self.sqs.receive_message(QueueUrl=self.responses, MaxNumberOfMessages=10,
                                                    WaitTimeSeconds=1).get("Messages", []):
                replies.append(ClassifyReply.from_body(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.responses, ReceiptHandle=message["ReceiptHandle"])
        return replies

    def state(self, instance_id: str) -> str:
        reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return reservations[0]["Instances"][0]["State"]["Name"]

    def wait_state(self, instance_id: str, state: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(instance_id) == state:
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"{instance_id} not {state} after {timeout} s (is {self.state(instance_id)})")

    def depth(self, url: str) -> tuple[int, int]:
        a = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])
