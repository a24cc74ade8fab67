"""The control loop around the policy, against fakes of the queue and fleet contracts and a fake clock."""
import json
import logging
import threading

from hybrid.autoscale.loop import Autoscaler, Timeline, read_timeline
from hybrid.core.clock import FakeClock
from hybrid.core.errors import CloudError
from hybrid.core.settings import load
from tests.fakes import FakeFleet, InMemoryQueue


def make(tmp_path, max_workers="20"):
    clock = FakeClock(1_000_000.0)
    queue = InMemoryQueue("requests", clock)
    fleet = FakeFleet(now=clock.now)
    scaling = load(None, {}, {"scaling.max_workers": max_workers}).scaling
    return Autoscaler(scaling, queue, fleet, clock, Timeline(tmp_path / "timeline.jsonl")), queue, fleet, clock


def test_a_burst_launches_up_to_the_maximum_in_one_call(tmp_path, caplog):
    scaler, queue, fleet, _ = make(tmp_path)
    queue.send([f"m{i}" for i in range(100)])
    with caplog.at_level(logging.INFO, logger="hybrid.autoscale"):
        decision = scaler.tick()
        assert scaler.tick().to_launch == 0, "pending instances count as capacity"
    assert decision.to_launch == 20
    assert len(fleet.launch_calls) == 1 and fleet.launch_calls[0][0] == 20 and fleet.launch_calls[0][1]
    assert len(fleet.live) == 20
    assert len([r for r in caplog.records if r.message.startswith("tick ")]) == 2


def test_each_tick_is_one_timeline_row(tmp_path):
    scaler, queue, fleet, _ = make(tmp_path, max_workers="3")
    queue.send(["a", "b"])
    scaler.tick()
    scaler.tick()
    rows = read_timeline(tmp_path / "timeline.jsonl")
    assert [(r["visible"], r["pending"], r["desired"], r["launch"]) for r in rows] == [(2, 0, 2, 2), (2, 2, 2, 0)]
    assert all(r["reason"] for r in rows)
    json.dumps(rows)


def test_cloud_errors_are_logged_and_the_loop_goes_on(tmp_path):
    scaler, queue, fleet, clock = make(tmp_path)
    queue.send(["a"])
    fleet.fail_launches = 1
    first = scaler.tick()
    assert first.to_launch == 1 and fleet.live == {}
    assert "launch" in read_timeline(tmp_path / "timeline.jsonl")[0]["error"]
    assert scaler.tick().to_launch == 1 and len(fleet.live) == 1, "the next tick tries again"

    def broken_depth():
        raise CloudError("throttled", "Throttling")
    queue.depth = broken_depth
    assert scaler.tick() is None


def test_run_ticks_on_the_injected_clock(tmp_path):
    scaler, _, _, clock = make(tmp_path)
    import threading

    scaler.run(threading.Event(), max_ticks=5)
    assert scaler.ticks == 5
    assert clock.sleeps == [1.0] * 5


def test_the_loop_survives_any_error_of_a_tick_counts_it_and_goes_on(tmp_path, caplog):
    scaler, queue, fleet, clock = make(tmp_path)
    queue.send(["a"])
    failures = iter([RuntimeError("an unmapped error from deep inside a tick"), CloudError("server gone", "")])
    real_instances = fleet.instances

    def flaky_instances():
        error = next(failures, None)
        if error:
            raise error
        return real_instances()

    fleet.instances = flaky_instances
    with caplog.at_level(logging.INFO, logger="hybrid.autoscale"):
        scaler.run(threading.Event(), max_ticks=3)
    assert (scaler.ticks, scaler.failed_ticks) == (3, 2)
    assert len(fleet.live) == 1, "the third tick scaled as usual"
    assert any("tick 1 failed" in r.message and r.exc_info for r in caplog.records)


def test_a_fleet_whose_launch_specification_is_gone_reads_it_again_and_launches():
    from hybrid.autoscale.service import FollowingFleet
    from hybrid.core.errors import NotFoundError

    class StackSetUpAgain(FakeFleet):
        """The launch specification names a security group of the stack before it was set up again."""

        spec = "old"

        def launch(self, count, token):
            if self.spec == "old":
                raise NotFoundError("ec2.run_instances: security group sg-1 does not exist", "InvalidGroup.NotFound")
            return super().launch(count, token)

    reads = []
    fleet = FollowingFleet(StackSetUpAgain(), lambda: reads.append("read") or "new")
    assert len(fleet.launch(2, "t")) == 2 and reads == ["read"] and fleet.fleet.spec == "new"
    assert len(fleet.launch(1, "u")) == 1 and reads == ["read"], "read again only when it is found gone"
