"""The project's SQS fixes to moto, measured over HTTP against the emulator the project launches."""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import pytest

BODY = "x" * 1000


@pytest.fixture
def sqs(raw_client):
    return raw_client("sqs")


@pytest.fixture
def new_queue(sqs):
    made = []

    def make(**attributes):
        url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}",
                               Attributes={k: str(v) for k, v in attributes.items()})["QueueUrl"]
        made.append(url)
        return url
    yield make
    for url in made:
        sqs.delete_queue(QueueUrl=url)


def fill(sqs, url, count):
    for start in range(0, count, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"n": start + i, "pad": BODY})}
            for i in range(min(10, count - start))])


def test_concurrent_consumers_receive_each_message_exactly_once(sqs, new_queue, raw_client):
    url = new_queue(VisibilityTimeout=60)
    fill(sqs, url, 1000)
    received: list[str] = []
    lock = threading.Lock()

    def consume():
        client = raw_client("sqs")
        empty_polls = 0
        while empty_polls < 2:
            messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                              VisibilityTimeout=60).get("Messages", [])
            empty_polls = 0 if messages else empty_polls + 1
            with lock:
                received.extend(json.loads(m["Body"])["n"] for m in messages)
            for m in messages:
                client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    counts = Counter(received)
    duplicates = {n: c for n, c in counts.items() if c > 1}
    assert duplicates == {}
    assert sorted(counts) == list(range(1000))


def receive_delete_rate(sqs, url, messages):
    started, done = time.perf_counter(), 0
    while done < messages:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        assert batch, "queue ran dry"
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
        done += len(batch)
    return done / (time.perf_counter() - started)


def test_receive_rate_does_not_collapse_with_queue_depth(sqs, new_queue):
    """Same-run comparison (best of 3 each, interleaved): depth 3000 keeps at least half the depth-100 rate."""
    shallow, deep = new_queue(), new_queue()
    fill(sqs, shallow, 100 + 3 * 60)
    fill(sqs, deep, 3000 + 3 * 60)
    rates = {"shallow": [], "deep": []}
    for _ in range(3):
        rates["shallow"].append(receive_delete_rate(sqs, shallow, 60))
        rates["deep"].append(receive_delete_rate(sqs, deep, 60))
    assert max(rates["deep"]) >= 0.5 * max(rates["shallow"]), rates


def test_redrive_to_dead_letter_queue_after_max_receives(sqs, new_queue):
    dlq = new_queue()
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = new_queue(RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}))
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    counts = []
    for _ in range(3):
        [message] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=1,
                                        AttributeNames=["ApproximateReceiveCount"])["Messages"]
        counts.append(message["Attributes"]["ApproximateReceiveCount"])
    assert counts == ["1", "2", "3"]
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
    [moved] = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1)["Messages"]
    assert moved["Body"] == "poison"


def test_visibility_timeout_redelivers_and_can_be_extended(sqs, new_queue):
    url = new_queue()
    sqs.send_message(QueueUrl=url, MessageBody="work")
    [first] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=3)
    time.sleep(1.5)
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == [], "extension keeps it hidden"
    [again] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
    assert again["MessageId"] == first["MessageId"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])  # a second delete is harmless
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == \
        ("0", "0")


def test_long_poll_wakes_on_send(sqs, new_queue, raw_client):
    url = new_queue()
    threading.Timer(0.5, lambda: raw_client("sqs").send_message(QueueUrl=url, MessageBody="late")).start()
    started = time.monotonic()
    [message] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)["Messages"]
    assert message["Body"] == "late"
    assert time.monotonic() - started < 5


def test_unknown_receipt_handle_is_rejected(sqs, new_queue):
    from botocore.exceptions import ClientError

    url = new_queue()
    with pytest.raises(ClientError, match="ReceiptHandleIsInvalid"):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")


def test_purge_empties_the_queue(sqs, new_queue):
    url = new_queue()
    fill(sqs, url, 20)
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=5)
    sqs.purge_queue(QueueUrl=url)
    sqs.purge_queue(QueueUrl=url)  # allowed again at once in the emulator
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []
