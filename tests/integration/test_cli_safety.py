"""Safe by default on a real account: the local AWS server stands in for real AWS (aws.target = "aws" with its
endpoint), so `down` and `up` behave as they would on an operator's account, and what they did is checked on the
server itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

FAKE_ACCOUNT = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_CONFIG_FILE": "/nonexistent",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def hybrid(state_dir, stack_name):
    def run(*args: str, real: bool = False, endpoint: str = "") -> subprocess.CompletedProcess:
        target = ["--set", "aws.target=aws", "--set", f"aws.endpoint_url={endpoint}",
                  "--set", "aws.instance_profile=no"] if real else []
        return subprocess.run([sys.executable, "-m", "hybrid", "--state-dir", str(state_dir), "--stack", stack_name,
                               *target, *args], capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL, env={**os.environ, **FAKE_ACCOUNT})
    return run


@pytest.fixture
def set_up(hybrid, stack_name, raw_client):
    """The stack set up on the local server, with one image in its input bucket."""
    up = hybrid("aws", "up")
    assert up.returncode == 0, up.stderr
    raw_client("s3").put_object(Bucket=f"{stack_name}-input", Key="cat.jpg", Body=b"not really a cat")
    yield
    hybrid("aws", "down")


def everything_there(hybrid, raw_client, stack_name) -> bool:
    status = hybrid("aws", "status", "--json")
    objects = raw_client("s3").list_objects_v2(Bucket=f"{stack_name}-input").get("KeyCount", 0)
    return status.returncode == 0 and objects == 1


def test_down_on_a_real_account_without_yes_deletes_nothing(set_up, hybrid, endpoint, raw_client, stack_name):
    for command in (("aws", "down"), ("down",)):
        refused = hybrid(*command, real=True, endpoint=endpoint)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"delete bucket {stack_name}-input (1 object(s), emptied first)" in refused.stdout
        assert f"delete queue {stack_name}-requests" in refused.stdout
        assert "stdin is not a terminal: nothing was changed; pass --yes" in refused.stderr
        assert everything_there(hybrid, raw_client, stack_name), f"`{' '.join(command)}` deleted something"


def test_down_dry_run_lists_and_deletes_nothing(set_up, hybrid, endpoint, raw_client, stack_name):
    dry = hybrid("aws", "down", "--dry-run", real=True, endpoint=endpoint)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith(f"AWS, stack {stack_name}: ") and f"  delete bucket {stack_name}-output (empty)" in lines
    assert everything_there(hybrid, raw_client, stack_name)
    local_dry = hybrid("aws", "down", "--dry-run")
    assert local_dry.returncode == 0 and f"delete bucket {stack_name}-input (1 object(s)" in local_dry.stdout
    assert everything_there(hybrid, raw_client, stack_name)


def test_down_with_yes_deletes(set_up, hybrid, endpoint, raw_client, stack_name):
    down = hybrid("aws", "down", "--yes", real=True, endpoint=endpoint)
    assert down.returncode == 0, down.stderr
    assert f"bucket {stack_name}-input: deleted" in down.stdout
    assert hybrid("aws", "status").returncode == 3


def test_up_on_a_real_account_shows_its_plan_and_changes_nothing_unasked(hybrid, endpoint, raw_client, stack_name):
    ami = raw_client("ec2").describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    refused = hybrid("--set", f"aws.ami_id={ami}", "aws", "up", real=True, endpoint=endpoint)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"create bucket {stack_name}-input" in refused.stdout and "pass --yes" in refused.stderr
    buckets = [b["Name"] for b in raw_client("s3").list_buckets()["Buckets"]]
    assert not [b for b in buckets if b.startswith(stack_name)]


def test_plan_detailed_exit_code_and_json(hybrid, stack_name):
    before = hybrid("aws", "plan", "--detailed-exitcode", "--json")
    assert before.returncode == 2, before.stderr
    plan = json.loads(before.stdout)
    assert plan["stack"] == stack_name and plan["target"] == "emulator"
    assert {"action": "create", "kind": "bucket", "name": f"{stack_name}-input", "differences": []} in plan["changes"]
    try:
        assert hybrid("aws", "up").returncode == 0
        after = hybrid("aws", "plan", "--detailed-exitcode")
        assert after.returncode == 0 and after.stdout.strip() == "no changes"
    finally:
        hybrid("aws", "down")
