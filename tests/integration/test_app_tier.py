"""App-tier workers as real local instances: the emulator's runner starts `hybrid worker` processes that talk to
the local AWS server over HTTP and classify with the real model."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from hybrid.aws.stack import build_aws_stack
from hybrid.messages import ClassifyReply, ClassifyRequest

pytestmark = pytest.mark.timeout(240)


def photo_bytes(name: str, size: tuple[int, int] | None = None, fmt: str = "JPEG") -> bytes:
    from PIL import Image
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    if size:
        image = image.resize(size)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {"compress_level": 0}))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def expected_labels():
    from app_tier.classifier import load_classifier

    classifier = load_classifier("auto", 1)
    return {name: classifier.classify([photo_bytes(name)])[0].label for name in ("coffee", "chelsea", "rocket")}


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


@pytest.fixture
def stack(settings_for, stack_name, raw_client):
    def make(**overrides):
        made.append(Stack(settings_for(stack_name, **overrides), raw_client))
        return made[-1]
    made = []
    yield make
    for each in made:
        each.aws.down(report=lambda line: None)


def worker_pid(state_dir: Path, instance_id: str) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if instance_id.encode() in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError(f"no worker process for {instance_id}")


def test_workers_answer_with_the_models_labels(stack, expected_labels, state_dir):
    rig = stack(worker__idle_timeout="30")
    [instance] = rig.launch()
    ids = {rig.submit(name, photo_bytes(name)): name for name in expected_labels}
    replies = rig.collect(len(ids), timeout=120)
    assert {ids[r.id]: r.label for r in replies} == expected_labels
    assert all(r.ok and len(r.top5) == 5 and r.model.startswith("efficientnet-lite0") for r in replies)
    label = rig.s3.get_object(Bucket=f"{rig.settings.stack}-output", Key="coffee")["Body"].read().decode()
    assert label == expected_labels["coffee"]
    assert (state_dir / "instances" / instance / "worker.log").exists()


def test_bad_images_get_error_replies_and_malformed_messages_reach_the_dead_letter_queue(stack):
    rig = stack(worker__idle_timeout="30")
    rig.launch()
    rig.sqs.send_message(QueueUrl=rig.requests, MessageBody="this is not a request")
    truncated = photo_bytes("coffee")[:3000]
    bad = {rig.submit("text", b"hello, I am not an image"): "text", rig.submit("cut", truncated): "cut"}
    good = rig.submit("coffee", photo_bytes("coffee"))
    replies = {r.id: r for r in rig.collect(3, timeout=120)}
    assert set(replies) == set(bad) | {good}
    assert all(not replies[i].ok and replies[i].error for i in bad) and replies[good].ok
    deadline = time.monotonic() + 60
    while rig.depth(rig.dead_letters)[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    [moved] = rig.sqs.receive_message(QueueUrl=rig.dead_letters)["Messages"]
    assert moved["Body"] == "this is not a request"
    assert rig.depth(rig.requests) == (0, 0)


def test_a_worker_killed_mid_batch_loses_nothing(stack, state_dir):
    rig = stack(worker__idle_timeout="60", aws__visibility_timeout="4", worker__batch_size="8")
    [first] = rig.launch()
    slow = [photo_bytes("coffee", (5000 + i, 3500), fmt="PNG") for i in range(8)]
    time.sleep(1)
    ids = [rig.submit(f"big{i}", image) for i, image in enumerate(slow)]
    deadline = time.monotonic() + 120
    while rig.depth(rig.requests)[1] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(worker_pid(state_dir, first), signal.SIGKILL)
    rig.wait_state(first, "terminated", timeout=10)
    early = rig.collect(len(ids), timeout=1)
    [second] = rig.launch()
    replies = early + rig.collect(len(ids) - len(early), timeout=150)
    assert sorted(r.id for r in replies) == sorted(ids), "every request answered exactly once"
    assert rig.collect(1, timeout=5) == [], "and no duplicate arrives later"
    assert all(r.ok for r in replies)
    assert second != first


def test_an_idle_worker_terminates_its_instance_on_time(stack):
    rig = stack(worker__idle_timeout="3")
    [instance] = rig.launch()
    request = rig.submit("coffee", photo_bytes("coffee"))
    [reply] = rig.collect(1, timeout=120)
    answered = time.monotonic()
    assert reply.id == request
    terminated = rig.wait_state(instance, "terminated", timeout=30)
    assert terminated - answered <= 3 + 1, f"terminated {terminated - answered:.2f} s after the last answer"
