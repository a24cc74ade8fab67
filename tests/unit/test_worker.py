"""The worker against state-holding fakes of the queue, bucket and classifier contracts, on a fake clock."""
import hashlib
import json

import pytest

from app_tier.idle import poll_wait, should_terminate
from app_tier.worker import RESULTS_PREFIX, Worker, WorkerConfig
from hybrid.clock import FakeClock
from hybrid.messages import ClassifyReply, ClassifyRequest
from tests.fakes import FakeClassifier, InMemoryQueue, InMemoryStore


class Rig:
    def __init__(self, idle_timeout=5.0, visibility=30, classifier=None):
        self.clock = FakeClock(1000.0)
        self.dlq = InMemoryQueue("requests-dlq", self.clock)
        self.requests = InMemoryQueue("requests", self.clock, max_receive=3, dead_letters=self.dlq)
        self.replies = InMemoryQueue("replies", self.clock)
        self.inputs, self.outputs = InMemoryStore("in"), InMemoryStore("out")
        self.terminated = []
        self.worker = Worker(WorkerConfig(batch_size=8, max_wait=1, visibility=visibility, idle_timeout=idle_timeout),
                             self.requests, lambda name: self.replies, self.inputs, self.outputs,
                             classifier or FakeClassifier(), lambda: self.terminated.append(self.clock.now()),
                             clock=self.clock)

    def submit(self, name, image, request_id=None):
        key = f"sha256/{hashlib.sha256(image).hexdigest()}"
        self.inputs.objects[key] = image
        self.requests.send([ClassifyRequest(request_id or name, key, name, "replies").to_body()])

    def replies_sent(self):
        return [ClassifyReply.from_body(b) for op, bodies in self.replies.log if op == "send" for b in bodies]

    def drain(self):
        messages = self.requests.receive(8, 0, 30)
        self.worker.process(messages)


def test_a_batch_is_classified_together_stored_replied_then_deleted():
    rig = Rig()
    for name, image in (("a", b"cat-1"), ("b", b"dog-2"), ("c", b"cat-3")):
        rig.submit(name, image)
    rig.drain()
    assert rig.worker.classifier.batches == [3]
    assert {(r.id, r.label, r.ok) for r in rig.replies_sent()} == {("a", "cat", True), ("b", "dog", True),
                                                                     ("c", "cat", True)}
    assert rig.outputs.objects["b"] == b"dog"
    stored = json.loads(rig.outputs.objects[f"{RESULTS_PREFIX}{hashlib.sha256(b'dog-2').hexdigest()}.json"])
    assert stored["label"] == "dog" and stored["model"] == "fake-model@1"
    assert rig.requests.messages == {}
    operations = [op for op, _ in rig.requests.log if op in ("delete",)]
    assert operations == ["delete"] and rig.replies.log[0][0] == "send"


def test_bad_and_missing_images_get_error_replies_and_are_deleted():
    rig = Rig()
    rig.submit("good", b"cat-1")
    rig.submit("bad", b"bad-bytes")
    rig.requests.send([ClassifyRequest("gone", "sha256/none", "gone", "replies").to_body()])
    rig.drain()
    replies = {r.id: r for r in rig.replies_sent()}
    assert replies["good"].label == "cat"
    assert "not a usable image" in replies["bad"].error and replies["bad"].label == ""
    assert "not in the input bucket" in replies["gone"].error
    assert rig.requests.messages == {}
    assert "bad" not in rig.outputs.objects


def test_a_malformed_message_reaches_the_dead_letter_queue_while_work_goes_on():
    rig = Rig()
    rig.requests.send(["{not json"])
    rig.submit("fine", b"cat-1")
    for _ in range(4):
        messages = rig.requests.receive(8, 0, 30)
        if messages:
            rig.worker.process(messages)
    assert [m["body"] for m in rig.dlq.messages.values()] == ["{not json"]
    assert [r.id for r in rig.replies_sent()] == ["fine"]
    assert rig.worker.stats.malformed == 3
    assert rig.requests.messages == {}


def test_a_transient_store_error_is_retried():
    rig = Rig()
    rig.submit("a", b"cat-1")
    rig.inputs.failures["get"] = 2
    rig.outputs.failures["put"] = 1
    rig.drain()
    assert [r.label for r in rig.replies_sent()] == ["cat"]
    assert rig.clock.sleeps, "backoff slept on the injected clock"


def test_a_store_that_keeps_failing_leaves_the_request_for_later():
    rig = Rig()
    rig.submit("a", b"cat-1")
    rig.inputs.failures["get"] = 100
    rig.drain()
    assert rig.replies_sent() == []
    assert len(rig.requests.messages) == 1, "not deleted: it comes back after its visibility timeout"


def test_duplicate_deliveries_are_harmless():
    rig = Rig()
    rig.submit("a", b"cat-1")
    messages = rig.requests.receive(8, 0, 0)
    duplicate = rig.requests.receive(8, 0, 30)
    rig.worker.process(messages)
    rig.worker.process(duplicate)
    assert [r.label for r in rig.replies_sent()] == ["cat", "cat"]
    assert rig.outputs.objects["a"] == b"cat" and rig.requests.messages == {}


def test_poll_wait_reaches_the_idle_deadline_and_is_always_a_long_poll():
    assert poll_wait(idle_since=0, now=0, idle_timeout=5, max_wait=20) == 5
    assert poll_wait(idle_since=0, now=4.2, idle_timeout=5, max_wait=20) == 1
    assert poll_wait(idle_since=0, now=9, idle_timeout=5, max_wait=20) == 1
    assert poll_wait(idle_since=0, now=0, idle_timeout=60, max_wait=20) == 20


@pytest.mark.parametrize("idle_for, holding, empty, expected", [
    (4.9, 0, True, False), (5.0, 0, True, True), (50, 1, True, False), (50, 0, False, False)])
def test_should_terminate(idle_for, holding, empty, expected):
    assert should_terminate(100, 100 + idle_for, 5, holding, empty) is expected


def test_an_idle_worker_terminates_after_a_final_empty_long_poll():
    rig = Rig(idle_timeout=5)
    assert rig.worker.run() == "idle"
    assert rig.terminated == [1005.0]
    receives = [n for op, n in rig.requests.log if op == "receive"]
    assert receives[-1] == 0


def test_work_resets_the_idle_timer():
    rig = Rig(idle_timeout=5)
    original = rig.requests.receive
    calls = []

    def receive(max_messages, wait_seconds, visibility=None):
        calls.append(rig.clock.now())
        if len(calls) == 3:
            rig.submit("late", b"cat-9")
        return original(max_messages, wait_seconds, visibility)
    rig.requests.receive = receive
    assert rig.worker.run() == "idle"
    assert [r.id for r in rig.replies_sent()] == ["late"]
    assert rig.terminated[0] - calls[2] >= 5


def test_visibility_is_extended_while_a_slow_batch_runs():
    rig = Rig(visibility=1, classifier=FakeClassifier(delay=1.3))
    rig.submit("slow", b"cat-1")
    rig.drain()
    hides = [args for op, args in rig.requests.log if op == "hide"]
    assert hides and all(seconds == 1 for _, seconds in hides)
    assert rig.worker.stats.extensions >= 1
