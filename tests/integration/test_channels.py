"""The SQS and S3 adapters (MessageQueue, ObjectStore contracts) against the local server over HTTP."""
import pytest

from hybrid.aws.channels import S3Store, SqsQueue
from hybrid.aws.session import AwsClients
from hybrid.core.errors import NotFoundError, TooLargeError


@pytest.fixture
def clients(settings_for, stack_name):
    return AwsClients(settings_for(stack_name))


def test_queue_contract(clients, stack_name):
    clients.sqs.create_queue(QueueName=f"{stack_name}-q")
    queue = SqsQueue(clients.sqs, f"{stack_name}-q")
    queue.send([f"body-{i}" for i in range(13)])
    assert (queue.depth().visible, queue.depth().in_flight) == (13, 0)
    first = queue.receive(10, 1, visibility=30)
    assert len(first) == 10 and all(m.receive_count == 1 for m in first)
    queue.hide([first[0].receipt], 0)
    queue.delete([m.receipt for m in first[1:]])
    rest = queue.receive(10, 1, visibility=30)
    assert sorted(m.body for m in rest) == sorted([first[0].body, "body-10", "body-11", "body-12"])
    assert [m.receive_count for m in rest if m.body == first[0].body] == [2]
    queue.delete([m.receipt for m in rest])
    assert queue.depth().visible == queue.depth().in_flight == 0


def test_store_contract(clients, stack_name):
    clients.s3.create_bucket(Bucket=f"{stack_name}-b")
    store = S3Store(clients.s3, f"{stack_name}-b")
    assert store.put_if_absent("a", b"first") is True
    assert store.put_if_absent("a", b"second") is False
    assert store.get("a") == b"first" and store.exists("a") and not store.exists("b")
    store.put("a", b"overwritten")
    assert store.get("a") == b"overwritten"
    with pytest.raises(NotFoundError):
        store.get("missing")
    with pytest.raises(TooLargeError):
        store.get("a", max_bytes=3)
