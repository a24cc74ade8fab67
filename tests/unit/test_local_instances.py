"""The local instance runner: what the parent does before a worker process exists, and how worker pids are found
(hybrid.local.instance_folders) and forgotten."""
from __future__ import annotations

import gc
import json
import os
from dataclasses import asdict

import pytest

from hybrid.core.localserver import EmulatorInfo, emulator_dir
from hybrid.local import instance_folders, instances


def test_the_runner_freezes_its_objects_before_it_forks_a_worker(tmp_path, monkeypatch):
    frozen_at_fork = []

    def fake_fork():
        frozen_at_fork.append(gc.get_freeze_count())
        return 4242  # the parent's side of fork(): nothing else runs

    monkeypatch.setattr(os, "fork", fake_fork)
    gc.unfreeze()
    try:
        worker = instances.fork_worker("i-1", tmp_path / "user-data.json", tmp_path / "worker.log", tmp_path)
    finally:
        gc.unfreeze()
    assert worker.pid == 4242 and worker.returncode is None
    assert frozen_at_fork and frozen_at_fork[0] > 0


def write_pid(state, instance_id, pid):
    folder = state / "instances" / instance_id
    folder.mkdir(parents=True)
    (folder / "pid").write_text(str(pid))


def test_a_pid_file_counts_only_for_a_live_process_started_for_this_state_folder(tmp_path, children):
    state = (tmp_path / "state").resolve()
    worker = children("-m", "sleeper", "--state-dir", str(state))
    runner = children("-m", "sleeper", "--state-dir", str(state))
    elsewhere = children("-m", "sleeper", "--state-dir", str(tmp_path / "other"))
    gone = children("-m", "sleeper", "--state-dir", str(state))
    gone.kill()
    gone.wait()
    write_pid(state, "i-worker", worker.pid)
    write_pid(state, "i-runner-reused-its-pid", runner.pid)
    write_pid(state, "i-other-state-folder", elsewhere.pid)
    write_pid(state, "i-reused-by-pytest", os.getpid())
    write_pid(state, "i-exited", gone.pid)
    emulator_dir(state).mkdir()
    (emulator_dir(state) / "emulator.json").write_text(json.dumps(asdict(EmulatorInfo(1, 1, 0.0, "", runner.pid))))
    assert instance_folders.worker_processes(state) == {"i-worker": worker.pid}


class OneInstanceEc2:
    """An instance that is live until ``terminate`` is set; records TerminateInstances."""

    def __init__(self) -> None:
        self.live, self.terminated = True, []

    def describe_instances(self, **_):
        return {"Reservations": [{"Instances": [{"InstanceId": "i-1"}]}] if self.live else []}

    def describe_instance_attribute(self, **_):
        return {"UserData": {}}

    def terminate_instances(self, InstanceIds):
        self.terminated += InstanceIds
        self.live = False


@pytest.mark.parametrize("ending", ["instance terminated", "worker exited"])
def test_the_runner_forgets_a_worker_s_pid_once_the_worker_is_gone(tmp_path, children, ending):
    ec2 = OneInstanceEc2()
    runner = instances.LocalInstanceRunner(ec2, tmp_path, spawn=lambda *_: children("-m", "sleeper"), prepared=True)
    runner.tick()
    pid_file = tmp_path / "instances" / "i-1" / "pid"
    process = runner.processes["i-1"]
    assert pid_file.read_text() == str(process.pid)
    if ending == "instance terminated":
        ec2.live = False
    else:
        process.kill()
        process.wait()
    runner.tick()
    assert not pid_file.exists() and runner.processes == {}
    assert ec2.terminated == ([] if ending == "instance terminated" else ["i-1"])
    assert process.poll() is not None


def test_a_new_server_prunes_the_folders_of_instances_whose_worker_is_gone(tmp_path, children):
    state = (tmp_path / "state").resolve()
    worker = children("-m", "sleeper", "--state-dir", str(state))
    write_pid(state, "i-still-working", worker.pid)
    (state / "instances" / "i-ended").mkdir()
    (state / "instances" / "i-ended" / "worker.log").write_text("done\n")
    assert instance_folders.prune_instance_folders(state) == 1
    assert [f.name for f in (state / "instances").iterdir()] == ["i-still-working"]
    assert instance_folders.prune_instance_folders(tmp_path / "no-such-state") == 0
