"""The request sender: many callers, one sender thread, batch sends of at most 10; errors reach their batch only."""
from __future__ import annotations

import threading

import pytest

from hybrid.core.errors import CloudError
from hybrid.core.wait import Poll, wait_for
from tests.fakes import GatedQueue
from web_tier.sender import MAX_BATCH, BatchingSender, SenderStopped


class Caller(threading.Thread):
    """One request thread: sends its body, then records that it returned, or the error it got."""

    def __init__(self, sender: BatchingSender, body: str, log: list[str] | None = None) -> None:
        super().__init__(daemon=True)
        self.sender, self.body, self.log = sender, body, log
        self.returned = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.sender.send(self.body)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc
            return
        self.returned = True
        if self.log is not None:
            self.log.append(f"returned {self.body}")


@pytest.fixture
def rig():
    made = []

    def make():
        queue = GatedQueue("requests")
        sender = BatchingSender(queue).start()
        made.append(sender)
        return queue, sender
    yield make
    for sender in made:
        sender.close()


def start_callers(sender, bodies, log=None) -> list[Caller]:
    callers = [Caller(sender, body, log) for body in bodies]
    for caller in callers:
        caller.start()
    return callers


def join_all(callers) -> None:
    for caller in callers:
        caller.join(timeout=10)
        assert not caller.is_alive(), f"caller {caller.body} is still blocked"


def wait_until_sending(queue: GatedQueue) -> None:
    assert queue.started.acquire(timeout=10), "no send began"


def wait_until_pending(sender: BatchingSender, count: int) -> None:
    wait_for(f"{count} bodies pending", lambda: Poll(None, sender.pending == count, state=str(sender.pending)),
             timeout=10, interval=0.01)


def one_in_flight_then_queued(queue, sender, bodies, log=None) -> tuple[Caller, list[Caller]]:
    """Holds the queue, gets a first body's send in flight, then queues ``bodies`` behind it."""
    queue.hold()
    first = start_callers(sender, ["first"], log)[0]
    wait_until_sending(queue)
    queued = start_callers(sender, bodies, log)
    wait_until_pending(sender, len(bodies))
    return first, queued


def test_bodies_that_arrive_while_a_send_is_in_flight_go_out_together_in_batches_of_ten(rig):
    queue, sender = rig()
    bodies = [f"b{i}" for i in range(29)]
    first, queued = one_in_flight_then_queued(queue, sender, bodies)
    queue.release()
    join_all([first, *queued])
    assert [len(batch) for batch in queue.batches] == [1, MAX_BATCH, MAX_BATCH, 9]
    assert sorted(queue.sent) == sorted(["first", *bodies])
    assert all(caller.returned for caller in [first, *queued])
    assert (sender.counters.batches, sender.counters.messages) == (4, 30)


def test_thirty_callers_released_together_each_send_exactly_once_in_batches_of_at_most_ten(rig):
    queue, sender = rig()
    barrier = threading.Barrier(30)
    bodies = [f"b{i}" for i in range(30)]

    class TogetherCaller(Caller):
        def run(self) -> None:
            barrier.wait()
            super().run()
    callers = [TogetherCaller(sender, body) for body in bodies]
    for caller in callers:
        caller.start()
    join_all(callers)
    assert sorted(queue.sent) == sorted(bodies)
    assert all(0 < len(batch) <= MAX_BATCH for batch in queue.batches)
    assert len(queue.batches) >= 3 and all(caller.returned for caller in callers)


def test_an_idle_sender_sends_a_lone_body_at_once(rig):
    queue, sender = rig()
    sender.send("alone")
    assert queue.batches == [["alone"]]


def test_a_caller_returns_only_after_its_body_was_sent(rig):
    queue, sender = rig()
    log: list[str] = []
    queue.hold()
    caller = start_callers(sender, ["mine"], log)[0]
    wait_until_sending(queue)
    caller.join(timeout=0.2)
    assert caller.is_alive() and not caller.returned, "the caller must wait for the send"
    queue.release()
    join_all([caller])
    assert caller.returned and queue.batches == [["mine"]] and log == ["returned mine"]


def test_a_failed_send_fails_exactly_the_callers_in_that_batch_and_later_sends_still_work(rig):
    queue, sender = rig()
    bodies = [f"b{i}" for i in range(12)]
    queue.fail_bodies = {"b11"}  # in the second batch behind "first": b10 and b11
    first, queued = one_in_flight_then_queued(queue, sender, bodies)
    queue.release()
    join_all([first, *queued])
    failed = {caller.body for caller in queued if caller.error is not None}
    assert failed == {"b10", "b11"}
    assert all(isinstance(c.error, CloudError) and "injected failure" in str(c.error)
               for c in queued if c.body in failed)
    assert first.returned and all(c.returned for c in queued if c.body not in failed)
    assert queue.failed_batches == [["b10", "b11"]] and sender.counters.failed_batches == 1

    sender.send("later")
    assert queue.batches[-1] == ["later"]


def test_close_stops_the_thread_and_later_sends_are_refused(rig):
    queue, sender = rig()
    sender.send("before")
    assert sender.alive
    sender.close()
    assert not sender.alive
    with pytest.raises(SenderStopped):
        sender.send("after")
    assert queue.sent == ["before"]


def test_a_sender_not_started_refuses_at_once():
    with pytest.raises(SenderStopped, match="not running"):
        BatchingSender(GatedQueue("requests")).send("body")


def test_close_does_not_wait_for_a_stuck_send_and_fails_the_callers_still_queued(rig):
    queue, sender = rig()
    first, queued = one_in_flight_then_queued(queue, sender, ["waiting"])
    sender.close(timeout=0.1)
    join_all(queued)
    assert isinstance(queued[0].error, SenderStopped)
    stuck = [t for t in threading.enumerate() if t.name == "request-sender"]
    assert stuck and all(t.daemon for t in stuck), "a stuck send must not keep the process alive"

    queue.release()
    join_all([first])
    wait_for("the sender thread to end", lambda: Poll(None, not sender.alive), timeout=10, interval=0.01)
    assert first.returned
    assert queue.sent == ["first"], "a refused body is never sent"
