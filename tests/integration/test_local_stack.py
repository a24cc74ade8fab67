"""`hybrid local up|status|down` as an operator runs them: every part a real process, nothing left afterwards."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import requests

from hybrid.local.stack import processes_of
from tests.integration.rig import photo_bytes
from tests.integration.test_web_tier import free_port

pytestmark = pytest.mark.timeout(300)


def hybrid(state_dir, port, *args, check=True):
    command = [sys.executable, "-m", "hybrid", "--state-dir", str(state_dir), "--stack", "local-test",
               "--set", f"web.bind=127.0.0.1:{port}", "--set", "worker.idle_timeout=2", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"})
    if check and result.returncode:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def test_local_stack_up_is_idempotent_serves_and_down_leaves_nothing(tmp_path):
    state_dir, port = tmp_path / "state", free_port()
    stale = state_dir / "instances" / "i-of-an-earlier-server"
    stale.mkdir(parents=True)
    (stale / "worker.log").write_text("an earlier run\n")
    try:
        first = hybrid(state_dir, port, "local", "up").stdout
        assert not stale.exists(), "a new local server prunes the folders of instances it never had"
        assert f"web tier: http://127.0.0.1:{port}/" in first
        second = hybrid(state_dir, port, "local", "up").stdout
        assert "autoscaler: already running" in second and "web: already running" in second
        answer = requests.post(f"http://127.0.0.1:{port}/", timeout=120,
                               files={"inputFile": ("coffee.jpg", io.BytesIO(photo_bytes("coffee")))})
        assert answer.status_code == 200 and answer.text.startswith("coffee:")
        status = json.loads(hybrid(state_dir, port, "local", "status", "--json").stdout)
        running = {p["process"] for p in status["processes"] if p["state"] == "running"}
        assert {"local AWS server", "instance runner", "autoscaler", "web"} <= running
        assert {r["state"] for r in status["resources"] if r["kind"] != "instances"} <= {"ok", "available"}
        assert (state_dir / "local" / "web.log").exists() and (state_dir / "local" / "autoscaler.log").exists()
        assert (state_dir / "autoscale" / "local-test-timeline.jsonl").exists()
    finally:
        down = hybrid(state_dir, port, "local", "down", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "no process and no resource left" in down.stdout
    assert "local files of stack local-test: removed (result cache, autoscaler timeline)" in down.stdout
    assert not (state_dir / "web" / "local-test-cache.json").exists()
    assert not (state_dir / "autoscale" / "local-test-timeline.jsonl").exists()
    assert (state_dir / "local" / "web.log").exists(), "logs stay for a look after the run"
    assert processes_of(state_dir.resolve()) == []
    assert hybrid(state_dir, port, "local", "status", check=False).returncode == 3
