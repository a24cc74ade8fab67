"""hybrid.core.localserver: the record of where a state folder's local AWS server listens, as the AWS adapter reads
it."""
from __future__ import annotations

import os

import pytest

from hybrid.aws.session import AwsClients
from hybrid.core import localserver
from hybrid.core.errors import EmulatorNotRunning
from hybrid.core.localserver import EmulatorInfo
from hybrid.core.settings import load


def test_a_record_reads_back_as_written_and_a_bad_or_missing_one_as_none(tmp_path):
    info = EmulatorInfo(pid=12, port=4566, started_at=1.5, log_path="emulator.log", runner_pid=13)
    localserver.emulator_dir(tmp_path).mkdir()
    localserver.write_record(tmp_path, info)
    assert localserver.read_record(tmp_path) == info
    (tmp_path / "emulator" / "emulator.json").write_text('{"pid": 12}')
    assert localserver.read_record(tmp_path) is None
    localserver.remove_record(tmp_path)
    localserver.remove_record(tmp_path)
    assert localserver.read_record(tmp_path) is None


@pytest.mark.parametrize("recorded", ["nothing", "a process that is not the server"])
def test_without_a_live_server_the_endpoint_says_how_to_start_one(tmp_path, recorded):
    if recorded != "nothing":
        localserver.emulator_dir(tmp_path).mkdir()
        localserver.write_record(tmp_path, EmulatorInfo(os.getpid(), 4566, 0.0, ""))
    with pytest.raises(EmulatorNotRunning, match="start it with `hybrid emulator start`"):
        localserver.endpoint_url(tmp_path)


def test_the_emulator_target_of_the_aws_adapter_uses_the_recorded_server(tmp_path, monkeypatch, children):
    monkeypatch.setattr(localserver, "SERVER_MODULE", "sleeper")  # the children fixture's module plays the server
    server = children("-m", "sleeper")
    localserver.emulator_dir(tmp_path).mkdir()
    localserver.write_record(tmp_path, EmulatorInfo(server.pid, 4566, 0.0, ""))
    settings = load(None, {}, {"state_dir": str(tmp_path), "aws": {"target": "emulator"}})
    assert localserver.endpoint_url(tmp_path) == "http://127.0.0.1:4566"
    assert AwsClients(settings).endpoint_url == "http://127.0.0.1:4566"
    server.kill()
    server.wait()
    with pytest.raises(EmulatorNotRunning):
        localserver.endpoint_url(tmp_path)
