"""The `hybrid` command as an operator runs it: real subprocesses, real exit codes, its own emulator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid.local.awsserver.process import is_emulator_process


def hybrid(*args: str, state_dir: Path, check: bool = True, env: dict | None = None):
    result = subprocess.run([sys.executable, "-m", "hybrid", "--state-dir", str(state_dir), *args],
                            capture_output=True, text=True, timeout=180,
                            env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true", **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"hybrid {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def own_state(tmp_path):
    yield tmp_path
    hybrid("emulator", "stop", state_dir=tmp_path, check=False)


def listening_sockets(pid: int) -> list[str]:
    inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
              if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")}
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                addresses.append(fields[1])
    return addresses


def test_emulator_lifecycle(own_state):
    assert hybrid("emulator", "status", state_dir=own_state, check=False).returncode == 3
    first = hybrid("emulator", "start", state_dir=own_state)
    assert "local AWS server running at http://127.0.0.1:" in first.stdout
    second = hybrid("emulator", "start", state_dir=own_state)
    assert first.stdout == second.stdout, "a second start reuses the running server"
    status = json.loads(hybrid("emulator", "status", "--json", state_dir=own_state).stdout)
    assert status["running"] and status["url"].startswith("http://127.0.0.1:")
    assert Path(status["log"]).parent == own_state / "emulator" and Path(status["log"]).exists()
    assert listening_sockets(status["pid"]) and all(
        a.startswith("0100007F:") for a in listening_sockets(status["pid"])), "listens on 127.0.0.1 only"
    assert "stopped" in hybrid("emulator", "stop", state_dir=own_state).stdout
    assert not is_emulator_process(status["pid"])
    assert "was not running" in hybrid("emulator", "stop", state_dir=own_state).stdout


def test_aws_commands_end_to_end(own_state, stack_name):
    hybrid("emulator", "start", state_dir=own_state)
    stack = ["--stack", stack_name]
    assert hybrid(*stack, "aws", "status", state_dir=own_state, check=False).returncode == 3
    plan = hybrid(*stack, "aws", "plan", state_dir=own_state).stdout
    assert f"create bucket {stack_name}-input" in plan and plan.strip().endswith("10 change(s)")
    assert "10 change(s)" in hybrid(*stack, "aws", "up", state_dir=own_state).stdout
    assert hybrid(*stack, "aws", "up", state_dir=own_state).stdout.strip() == f"stack {stack_name}: no changes"
    assert hybrid(*stack, "aws", "plan", state_dir=own_state).stdout.strip() == "no changes"
    status = json.loads(hybrid(*stack, "aws", "status", "--json", state_dir=own_state).stdout)
    assert {r["state"] for r in status["resources"]} <= {"ok", "available", "0 live"}
    table = hybrid(*stack, "aws", "status", state_dir=own_state).stdout
    assert table.splitlines()[0].split() == ["KIND", "NAME", "STATE", "ID", "DETAIL"]
    down = hybrid(*stack, "aws", "down", state_dir=own_state).stdout
    assert f"bucket {stack_name}-input: deleted" in down
    assert hybrid(*stack, "aws", "status", state_dir=own_state, check=False).returncode == 3


def test_errors_are_one_line_with_a_trustworthy_exit_code(own_state):
    missing = hybrid("aws", "status", state_dir=own_state, check=False)
    assert missing.returncode == 3
    assert missing.stderr.strip() == ("error: the local AWS server is not running (no live emulator recorded in "
                                      f"{own_state}/emulator): start it with `hybrid emulator start`")
    bad = hybrid("--set", "scaling.max_workers=lots", "aws", "plan", state_dir=own_state, check=False)
    assert bad.returncode == 2 and "scaling.max_workers" in bad.stderr and "Traceback" not in bad.stderr
    usage = hybrid("--set", "nonsense", "aws", "plan", state_dir=own_state, check=False)
    assert usage.returncode == 2 and "SECTION.KEY=VALUE" in usage.stderr


def test_help_teaches(own_state):
    top = hybrid("--help", state_dir=own_state).stdout
    assert "hybrid emulator start" in top and "hybrid config keys" in top
    assert "Only resources tagged for the stack" in hybrid("aws", "down", "--help", state_dir=own_state).stdout
    keys = hybrid("config", "keys", state_dir=own_state).stdout
    assert "scaling.max_workers = 20" in keys


def test_web_refuses_to_serve_a_stack_that_is_not_set_up(own_state, stack_name):
    hybrid("emulator", "start", state_dir=own_state)
    result = hybrid("--stack", stack_name, "--set", "web.bind=127.0.0.1:9", "web", state_dir=own_state, check=False)
    assert result.returncode == 3
    assert result.stderr.strip() == (f"error: stack {stack_name} is not set up (no queue {stack_name}-requests): "
                                     "run `hybrid aws up` first")
