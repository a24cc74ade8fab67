"""The worker against state-holding fakes of the queue, bucket and classifier contracts, on a fake clock."""
import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app_tier.idle import poll_wait, should_terminate
from app_tier.outbox import Outbox
from app_tier.worker import RECEIVE_BACKOFF, RESULTS_PREFIX, Worker, WorkerConfig
from hybrid.core.clock import FakeClock
from hybrid.core.errors import CloudError, NotFoundError
from hybrid.core.messages import ClassifyReply, ClassifyRequest
from tests.fakes import (BrokenKeysStore, FakeClassifier, GatedClassifier, HoldableQueue, InMemoryQueue, InMemoryStore,
                         Journaled, eventually)


class Rig:
    def __init__(self, idle_timeout=5.0, visibility=30, classifier=None, replies=None, outputs=None):
        self.clock = FakeClock(1000.0)
        self.dlq = InMemoryQueue("requests-dlq", self.clock)
        self.requests = InMemoryQueue("requests", self.clock, max_receive=3, dead_letters=self.dlq)
        self.replies = replies or InMemoryQueue("replies", self.clock)
        self.inputs, self.outputs = InMemoryStore("in"), outputs or InMemoryStore("out")
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


def test_a_batch_is_classified_image_by_image_stored_replied_then_deleted():
    rig = Rig()
    for name, image in (("a", b"cat-1"), ("b", b"dog-2"), ("c", b"cat-3")):
        rig.submit(name, image)
    rig.drain()
    assert rig.worker.classifier.batches == [1, 1, 1]
    assert {(r.id, r.label, r.ok) for r in rig.replies_sent()} == {("a", "cat", True), ("b", "dog", True),
                                                                     ("c", "cat", True)}
    assert rig.outputs.objects["b"] == b"dog"
    stored = json.loads(rig.outputs.objects[f"{RESULTS_PREFIX}{hashlib.sha256(b'dog-2').hexdigest()}.json"])
    assert stored["label"] == "dog" and stored["model"] == "fake-model@1"
    assert rig.requests.messages == {}
    deleted = [receipt for op, receipts in rig.requests.log if op == "delete" for receipt in receipts]
    assert sorted(deleted) == ["m1#1", "m2#1", "m3#1"] and rig.replies.log[0][0] == "send"
    assert (rig.worker.stats.batches, rig.worker.stats.answered) == (1, 3)


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


def test_a_store_error_is_not_retried_on_top_of_the_sdk_and_the_request_comes_back():
    """botocore's standard mode retries S3 and SQS calls; the worker adds no loop of its own: a get that failed
    even so leaves its request for later, and it is answered when it comes back."""
    rig = Rig()
    rig.submit("a", b"cat-1")
    rig.inputs.failures["get"] = 1
    rig.drain()
    assert rig.inputs.failures["get"] == 0, "one try only"
    assert rig.replies_sent() == [] and len(rig.requests.messages) == 1
    rig.clock.advance(31)
    rig.drain()
    assert [r.label for r in rig.replies_sent()] == ["cat"] and rig.requests.messages == {}


def test_a_failing_receive_backs_off_with_growing_jittered_waits_then_polls_again():
    rig = Rig(idle_timeout=60)  # longer than the three waits can add up to (at most 1 + 2 + 4 s)
    rig.submit("a", b"cat-1")
    receive, failures = rig.requests.receive, [CloudError("injected receive failure", "InternalError")] * 3

    def flaky_receive(*args):
        if failures:
            raise failures.pop()
        return receive(*args)
    rig.requests.receive = flaky_receive
    assert rig.worker.run() == "idle"
    ceilings = [RECEIVE_BACKOFF.ceiling(n) for n in (1, 2, 3)]
    assert ceilings == [1.0, 2.0, 4.0] and all(0 <= s <= c for s, c in zip(rig.clock.sleeps[:3], ceilings))
    assert [r.label for r in rig.replies_sent()] == ["cat"]
    assert (rig.worker.stats.errors, rig.worker.receive_failures) == (3, 0), "reset by the receive that worked"


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


class InBackground:
    """Runs a call on its own thread; ``join`` waits for it and raises what it raised."""

    def __init__(self, call):
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call):
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread by join
            self.error = exc

    def join(self):
        self.thread.join(10)
        assert not self.thread.is_alive(), "the batch never finished"
        if self.error is not None:
            raise self.error


def reply_ids(sends):
    return [[ClassifyReply.from_body(body).id for body in bodies] for bodies in sends]


def test_the_first_answer_goes_out_while_the_rest_of_its_batch_is_still_being_classified():
    classifier = GatedClassifier()
    rig = Rig(classifier=classifier, replies=HoldableQueue("replies"))
    for name, image in (("a", b"cat-1"), ("b", b"dog-2"), ("c", b"cow-3")):
        rig.submit(name, image)
    batch = InBackground(rig.drain)
    classifier.let_through(1)
    rig.replies.wait_until(lambda: rig.replies.sends())
    assert reply_ids(rig.replies.sends()) == [["a"]]
    assert classifier.batches == [1], "b and c are not classified yet"
    classifier.let_through(2)
    batch.join()
    assert sorted(r.id for r in rig.replies_sent()) == ["a", "b", "c"]
    assert rig.requests.messages == {}


def test_replies_that_become_ready_while_a_send_is_in_flight_go_out_together_in_the_next_send():
    classifier, replies = GatedClassifier(), HoldableQueue("replies")
    rig = Rig(classifier=classifier, replies=replies)
    for name in "abcde":
        rig.submit(name, f"cat-{name}".encode())
    batch = InBackground(rig.drain)
    replies.hold()
    classifier.let_through(1)
    replies.wait_until(lambda: replies.started == 1)
    classifier.let_through(3)
    classifier.wait_until_asked(5)
    replies.release()
    replies.wait_until(lambda: len(replies.sends()) == 2)
    classifier.let_through(1)
    batch.join()
    assert reply_ids(replies.sends()) == [["a"], ["b", "c", "d"], ["e"]], "no waiting window: e goes out alone"


def test_a_send_takes_at_most_ten_waiting_replies():
    replies = HoldableQueue("replies")
    with ThreadPoolExecutor(2) as pool:
        outbox = Outbox(pool, lambda lane, bodies: replies.send(bodies))
        replies.hold()
        pending = [outbox.post("replies", "r0")]
        replies.wait_until(lambda: replies.started == 1)
        pending += [outbox.post("replies", f"r{n}") for n in range(1, 13)]
        replies.release()
        assert all(future.result(10) is None for future in pending)
    assert [len(bodies) for bodies in replies.sends()] == [1, 10, 2]


def test_a_request_is_deleted_only_after_its_reply_was_sent_and_its_results_stored():
    rig = Rig()
    images = {"a": b"cat-1", "b": b"dog-2", "c": b"bad-3"}
    for name, image in images.items():
        rig.submit(name, image)
    journal = []
    rig.worker.requests = Journaled(rig.requests, "requests", journal)
    rig.worker.outputs = Journaled(rig.outputs, "outputs", journal, delays={"put": 0.02})
    replies = Journaled(rig.replies, "replies", journal, delays={"send": 0.02})
    rig.worker.replies_to = lambda name: replies
    messages = rig.requests.receive(8, 0, 30)
    rig.worker.process(messages)
    receipts = {ClassifyRequest.from_body(m.body).id: m.receipt for m in messages}

    def when(name, method, phase, holds):
        return [i for i, (who, what, how, args) in enumerate(journal) if (who, what, how) == (name, method, phase)
                and holds(args)]
    for name, image in images.items():
        [deleted] = when("requests", "delete", "called", lambda args: receipts[name] in args[0])
        [replied] = when("replies", "send", "returned",
                         lambda args: name in [ClassifyReply.from_body(b).id for b in args[0]])
        stored = when("outputs", "put", "returned",
                      lambda args: args[0] in (name, f"{RESULTS_PREFIX}{hashlib.sha256(image).hexdigest()}.json"))
        assert len(stored) == (0 if name == "c" else 2), "a bad image's result is not stored"
        assert all(done < deleted for done in [replied, *stored])
    assert rig.requests.messages == {}


def test_a_result_that_cannot_be_stored_leaves_its_request_to_come_back_and_be_answered_again():
    rig = Rig(outputs=BrokenKeysStore("out", broken={"b"}))
    rig.submit("a", b"cat-1")
    rig.submit("b", b"dog-2")
    rig.drain()
    assert [json.loads(m["body"])["id"] for m in rig.requests.messages.values()] == ["b"]
    assert (rig.worker.stats.answered, rig.worker.stats.errors) == (1, 1)
    rig.outputs.broken.clear()
    rig.clock.advance(30)
    rig.drain()
    assert rig.requests.messages == {} and rig.outputs.objects["b"] == b"dog"
    assert sorted(r.id for r in rig.replies_sent()) == ["a", "b", "b"], "b's first reply had gone out: a duplicate"


def test_a_reply_that_cannot_be_sent_leaves_its_request_to_come_back():
    class Unreachable:
        def send(self, bodies):
            raise CloudError("injected lasting send failure", "InternalError")

    rig = Rig()
    rig.submit("a", b"cat-1")
    rig.worker.replies_to = lambda name: Unreachable()
    rig.drain()
    assert len(rig.requests.messages) == 1 and rig.worker.stats.answered == 0
    assert rig.outputs.objects["a"] == b"cat", "the idempotent stores are done; they are redone on the next delivery"


def s3_event(*keys):
    return json.dumps({"Records": [{"s3": {"object": {"key": key}}} for key in keys]})


def test_a_batch_event_is_deleted_only_when_every_image_it_names_is_stored():
    rig = Rig(outputs=BrokenKeysStore("out", broken={"two"}))
    keys = []
    for name, image in (("one", b"cat-1"), ("two", b"dog-2")):
        keys.append(f"batch/{hashlib.sha256(image).hexdigest()}/{name}.jpg")
        rig.inputs.objects[keys[-1]] = image
    rig.requests.send([s3_event(*keys), json.dumps({"Event": "s3:TestEvent"})])
    rig.drain()
    assert rig.outputs.objects["one"] == b"cat" and rig.replies_sent() == []
    assert [m["body"] for m in rig.requests.messages.values()] == [s3_event(*keys)], "the test event is deleted"
    rig.outputs.broken.clear()
    rig.clock.advance(30)
    rig.drain()
    assert rig.requests.messages == {} and rig.outputs.objects["two"] == b"dog"


def test_answered_messages_stay_hidden_until_the_batch_is_settled_then_go_in_one_delete():
    classifier = GatedClassifier()
    rig = Rig(visibility=1, classifier=classifier)
    for name, image in (("a", b"cat-1"), ("b", b"dog-2"), ("c", b"cow-3")):
        rig.submit(name, image)
    batch = InBackground(rig.drain)
    classifier.let_through(1)
    eventually(lambda: [r.id for r in rig.replies_sent()] == ["a"])
    eventually(lambda: [op for op, _ in rig.requests.log].count("hide") >= 2)
    assert "delete" not in [op for op, _ in rig.requests.log], "a is answered, but nothing is deleted mid-batch"
    hides = [args[0] for op, args in rig.requests.log if op == "hide"]
    assert hides[-1] == ["m1#1", "m2#1", "m3#1"], "a answered, b and c waiting: all are kept hidden"
    classifier.let_through(2)
    batch.join()
    assert [receipts for op, receipts in rig.requests.log if op == "delete"] == [["m1#1", "m2#1", "m3#1"]]
    assert rig.requests.messages == {}


def test_a_delete_that_keeps_failing_leaves_the_answered_batch_to_come_back():
    class Undeletable(InMemoryQueue):
        def delete(self, receipts):
            raise CloudError("injected lasting delete failure", "InternalError")

    rig = Rig()
    rig.requests = Undeletable("requests", rig.clock)
    rig.worker.requests = rig.requests
    rig.submit("a", b"cat-1")
    rig.submit("b", b"dog-2")
    rig.drain()
    assert sorted(r.id for r in rig.replies_sent()) == ["a", "b"], "answered all the same"
    assert len(rig.requests.messages) == 2, "not deleted: both come back after their visibility timeout"
    assert (rig.worker.stats.answered, rig.worker.stats.errors) == (2, 1)


class GoneQueue(InMemoryQueue):
    """A reply queue that was deleted (its web process died and a replacement removed it): every call fails as
    SQS fails it."""

    def send(self, bodies):
        raise NotFoundError("sqs.send_message_batch: The specified queue does not exist. "
                            "[AWS.SimpleQueueService.NonExistentQueue].", "AWS.SimpleQueueService.NonExistentQueue")


def test_a_reply_to_a_queue_that_is_gone_is_dropped_once_the_result_is_stored_and_never_loops():
    rig = Rig(replies=GoneQueue("replies", FakeClock(0.0)))
    rig.submit("a", b"cat-1")
    rig.drain()
    assert rig.requests.messages == {} and rig.dlq.messages == {}, "deleted at once: nothing comes back"
    assert rig.outputs.objects["a"] == b"cat", "the result is stored for a client that asks again"
    assert (rig.worker.stats.dropped_replies, rig.worker.stats.answered, rig.worker.stats.errors) == (1, 1, 0)


def test_a_dropped_reply_whose_result_cannot_be_stored_keeps_its_request():
    rig = Rig(replies=GoneQueue("replies", FakeClock(0.0)), outputs=BrokenKeysStore("out", broken={"a"}))
    rig.submit("a", b"cat-1")
    rig.drain()
    assert len(rig.requests.messages) == 1 and rig.worker.stats.dropped_replies == 1
