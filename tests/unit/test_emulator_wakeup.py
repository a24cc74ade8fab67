"""The local server wakes the instance runner on launches and terminations: both ends, and the runner's loop."""
from __future__ import annotations

import threading

import boto3
import pytest

from hybrid.local import instances
from hybrid.local.awsserver import wakeup


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "emulator"


def test_a_wake_up_ends_the_wait_and_those_that_came_meanwhile_are_consumed(folder):
    wakeups = wakeup.Wakeups(folder)
    try:
        assert wakeups.enabled
        assert wakeups.wait(0.01) is False
        for _ in range(3):
            wakeup.wake(folder)
        assert wakeups.wait(5) is True
        assert wakeups.wait(0.01) is False
    finally:
        wakeups.close()


def test_one_folder_has_one_listener_and_waking_nobody_is_fine(folder, tmp_path):
    first = wakeup.Wakeups(folder)
    second = wakeup.Wakeups(folder)
    try:
        assert first.enabled and not second.enabled
        assert second.wait(5) is False  # at once: its caller waits its own way
    finally:
        first.close()
        second.close()
    wakeup.wake(tmp_path / "no-runner-here")


def test_moto_launches_and_terminations_wake_the_runner(folder, monkeypatch):
    from moto import mock_aws
    from moto.ec2.models.instances import InstanceBackend

    for name in ("run_instances", "terminate_instances"):
        monkeypatch.setattr(InstanceBackend, name, getattr(InstanceBackend, name))  # undone after the test
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    wakeup.apply(folder)
    wakeups = wakeup.Wakeups(folder)
    try:
        with mock_aws():
            ec2 = boto3.client("ec2", region_name="us-east-1")
            image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
            assert wakeups.wait(0.01) is False
            instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
            assert wakeups.wait(5) is True
            ec2.terminate_instances(InstanceIds=[instance])
            assert wakeups.wait(5) is True
    finally:
        wakeups.close()


class CountingEc2:
    """Answers the runner's DescribeInstances with no instances and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = threading.Condition()

    def describe_instances(self, **_):
        with self.called:
            self.calls += 1
            self.called.notify_all()
        return {"Reservations": []}

    def reached(self, calls: int, timeout: float) -> bool:
        with self.called:
            return self.called.wait_for(lambda: self.calls >= calls, timeout)


@pytest.fixture
def runner_at_rest(folder, tmp_path, monkeypatch):
    """A runner with wake-ups and a 60 s poll, in a thread, after its first reconciliation: (ec2, stop, thread)."""
    monkeypatch.setattr(instances, "WOKEN_POLL_INTERVAL", 60.0)
    ec2, stop = CountingEc2(), threading.Event()
    runner = instances.LocalInstanceRunner(ec2, tmp_path, spawn=lambda *a: None, prepared=True,
                                           wakeups=wakeup.Wakeups(folder))
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    assert ec2.reached(1, timeout=10)
    yield ec2, stop, thread
    stop.set()
    wakeup.wake(folder)
    thread.join(timeout=10)


def test_a_woken_runner_reconciles_without_waiting_for_its_poll(folder, runner_at_rest):
    ec2, stop, thread = runner_at_rest
    wakeup.wake(folder)
    assert ec2.reached(2, timeout=10), "the runner kept sleeping through its 60 s poll"
    stop.set()
    wakeup.wake(folder)
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_asking_the_runner_to_stop_does_not_wait_for_its_poll(folder, runner_at_rest):
    _, stop, thread = runner_at_rest
    instances.stop_soon(stop, folder)
    thread.join(timeout=10)
    assert not thread.is_alive(), "the runner kept sleeping through its 60 s poll after being asked to stop"
