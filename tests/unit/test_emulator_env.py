"""`hybrid emulator env`: the lines that point the AWS CLI at a state folder's local server, built by
hybrid.core.localserver.client_environment from the server's record."""
from __future__ import annotations

import os
import shlex

import pytest
from click.testing import CliRunner

from hybrid.aws.session import EMULATOR_CREDENTIALS
from hybrid.cli import Context
from hybrid.cli.awsserver import emulator, shell_assignment
from hybrid.core import localserver
from hybrid.core.errors import EmulatorNotRunning
from hybrid.core.localserver import EmulatorInfo


@pytest.fixture
def live_server(tmp_path, monkeypatch, children):
    """A recorded server on port 4566 that is alive: the children fixture's sleeper plays it."""
    monkeypatch.setattr(localserver, "SERVER_MODULE", "sleeper")
    server = children("-m", "sleeper")
    localserver.emulator_dir(tmp_path).mkdir()
    localserver.write_record(tmp_path, EmulatorInfo(server.pid, 4566, 0.0, ""))
    return server


def invoke(tmp_path, *args):
    context = Context(None, {"state_dir": str(tmp_path), "aws.region": "eu-west-1"})
    return CliRunner().invoke(emulator, ["env", *args], obj=context, catch_exceptions=False)


def test_the_environment_names_the_recorded_server_and_the_credentials_the_project_signs_with(tmp_path, live_server):
    variables = localserver.client_environment(tmp_path, "eu-west-1")
    assert variables == {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
                         "AWS_ACCESS_KEY_ID": EMULATOR_CREDENTIALS["aws_access_key_id"],
                         "AWS_SECRET_ACCESS_KEY": EMULATOR_CREDENTIALS["aws_secret_access_key"],
                         "AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-west-1",
                         "AWS_EC2_METADATA_DISABLED": "true"}


def test_without_a_live_server_there_is_no_environment(tmp_path):
    with pytest.raises(EmulatorNotRunning, match="start it with `hybrid emulator start`"):
        localserver.client_environment(tmp_path, "us-east-1")


def test_sh_lines_are_exports_that_a_shell_can_eval(tmp_path, live_server):
    result = invoke(tmp_path)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith("#") and "not secrets" in lines[0]
    exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines[1:])
    assert exported == localserver.client_environment(tmp_path, "eu-west-1")


def test_fish_lines_set_global_exported_variables(tmp_path, live_server):
    lines = invoke(tmp_path, "--shell", "fish").output.splitlines()[1:]
    assert "set -gx AWS_ENDPOINT_URL http://127.0.0.1:4566;" in lines
    assert all(line.startswith("set -gx AWS_") and line.endswith(";") for line in lines)


def test_a_server_that_is_not_running_exits_3_and_prints_no_exports(tmp_path):
    localserver.emulator_dir(tmp_path).mkdir()
    localserver.write_record(tmp_path, EmulatorInfo(os.getpid(), 4566, 0.0, ""))  # a live pid, not the server
    result = CliRunner().invoke(emulator, ["env"], obj=Context(None, {"state_dir": str(tmp_path)}))
    assert result.exit_code == 3
    assert "export" not in result.stdout and "start it with `hybrid emulator start`" in result.stderr


def test_values_that_need_quoting_are_quoted():
    assert shell_assignment("sh", "A", "x y") == "export A='x y'"
    assert shell_assignment("fish", "A", "x y") == "set -gx A 'x y';"
