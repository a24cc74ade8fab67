"""The reply dispatcher's deletions, against a blocking in-memory queue: batched, never lost, flushed on stop."""
import pytest

from hybrid.core.clock import FakeClock
from hybrid.core.messages import ClassifyReply
from tests.fakes import BlockingQueue, eventually
from web_tier.dispatch import DELETE_AFTER, ReplyDispatcher


class RecordingQueue(BlockingQueue):
    def __init__(self, name):
        super().__init__(name)
        self.deletes = []

    def delete(self, receipts):
        self.deletes.append(list(receipts))


def replies(*ids):
    return [ClassifyReply(i, f"img-{i}", "cat", model="m@1").to_body() for i in ids]


@pytest.fixture
def dispatcher_for():
    started = []

    def start(queue, wait_seconds, clock=None):
        late = []
        dispatcher = ReplyDispatcher(queue, late.append, wait_seconds, clock).start()
        started.append((dispatcher, queue))
        return dispatcher, late

    yield start
    for dispatcher, queue in started:
        dispatcher._stop.set()
        queue.send(replies("wake"))
        dispatcher.stop()


def test_replies_are_deleted_ten_per_call_and_the_rest_once_a_poll_comes_back_empty(dispatcher_for):
    queue = RecordingQueue("replies")
    queue.send(replies(*(f"q{n}" for n in range(12))))
    dispatcher, late = dispatcher_for(queue, wait_seconds=1)
    eventually(lambda: len(queue.deletes) == 2)
    assert queue.deletes == [[f"r{n}" for n in range(1, 11)], ["r11", "r12"]]
    assert len(late) == 12, "every reply was delivered before its deletion"


def test_a_reply_waits_at_most_delete_after_seconds_for_its_deletion(dispatcher_for):
    queue, clock = RecordingQueue("replies"), FakeClock(100.0)
    dispatcher, late = dispatcher_for(queue, wait_seconds=20, clock=clock)  # no empty poll during the test
    queue.send(replies("a"))
    eventually(lambda: len(late) == 1)
    queue.send(replies("b"))
    eventually(lambda: len(late) == 2)
    assert queue.deletes == [], "two replies, young, and no empty poll yet: nothing deleted"
    clock.advance(DELETE_AFTER)
    queue.send(replies("c"))
    eventually(lambda: queue.deletes)
    assert queue.deletes == [["r1", "r2", "r3"]]


def test_stopping_deletes_the_replies_still_waiting(dispatcher_for):
    queue = RecordingQueue("replies")
    dispatcher, late = dispatcher_for(queue, wait_seconds=20)
    queue.send(replies("a"))
    eventually(lambda: len(late) == 1)
    dispatcher._stop.set()
    queue.send(replies("b"))  # ends the receive in progress
    dispatcher.stop()
    assert not dispatcher.alive and queue.deletes == [["r1", "r2"]]


class VanishingQueue(RecordingQueue):
    """A reply queue that can be deleted under the dispatcher and created again, as SQS does it."""

    def __init__(self, name):
        super().__init__(name)
        self.exists, self.created = True, 0

    def receive(self, max_messages, wait_seconds, visibility=None):
        from hybrid.core.errors import NotFoundError

        if not self.exists:
            raise NotFoundError("sqs.receive_message: The specified queue does not exist.", "QueueDoesNotExist")
        return super().receive(max_messages, wait_seconds, visibility)

    def create(self):
        self.exists, self.created = True, self.created + 1


def test_a_reply_queue_deleted_under_the_dispatcher_is_created_again_and_replies_flow(dispatcher_for):
    queue = VanishingQueue("replies")
    late = []
    dispatcher = ReplyDispatcher(queue, late.append, 1, on_missing=queue.create).start()
    try:
        queue.exists = False
        eventually(lambda: queue.created == 1)
        future = dispatcher.expect("a")
        queue.send(replies("a"))
        assert future.result(timeout=5).label == "cat"
        assert (dispatcher.reopened, dispatcher.alive) == (1, True)
    finally:
        dispatcher._stop.set()
        queue.send(replies("wake"))
        dispatcher.stop()
