"""The real AWS CLI (the ``awscli`` package of the dev extra) as the local AWS server's companion, in the environment
a shell has after ``eval "$(hybrid emulator env)"``: it sees the stack's buckets, queues and instances with their
tags, and a folder it copies under ``batch/`` is classified, with nothing submitted through ``hybrid``.

AWS CLI v1 sends ``sqs`` commands to its built-in SQS host in every region unless ``--endpoint-url`` is given on the
command line: it ignores ``AWS_ENDPOINT_URL`` there (aws/aws-cli#8737), so the ``sqs`` calls pass the flag, as the
README says.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid.tools.samples import build_samples

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(480)]

AWS = Path(sys.executable).with_name("aws")
HYBRID = [sys.executable, "-m", "hybrid"]
IMAGES = 20


@pytest.fixture
def shell_env(state_dir, tmp_path) -> dict[str, str]:
    """The variables of a shell that ran ``eval "$(hybrid emulator env)"``; no ~/.aws file of the user's is read."""
    assert AWS.exists(), f"{AWS} is missing: the dev extra installs awscli (scripts/lib/venv.sh ensure_venv)"
    command = shlex.join([*HYBRID, "--state-dir", str(state_dir), "emulator", "env"])
    isolated = {**os.environ, "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials")}
    shell = subprocess.run(["sh", "-c", f'eval "$({command})" && env -0'], env=isolated, capture_output=True,
                           timeout=60, check=True)
    return dict(item.split("=", 1) for item in shell.stdout.decode().split("\0") if item)


def aws(env: dict[str, str], *args: str, json_out: bool = True):
    result = subprocess.run([str(AWS), *args, *(["--output", "json"] if json_out else [])], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"aws {shlex.join(args)} exited {result.returncode}:\n{result.stderr}"
    return json.loads(result.stdout) if json_out and result.stdout.strip() else result.stdout


def test_emulator_env_exports_the_server_and_exits_3_when_none_runs(shell_env, endpoint, tmp_path):
    assert shell_env["AWS_ENDPOINT_URL"] == endpoint
    assert shell_env["AWS_EC2_METADATA_DISABLED"] == "true" and shell_env["AWS_REGION"] == "us-east-1"
    none = subprocess.run([*HYBRID, "--state-dir", str(tmp_path / "nothing"), "emulator", "env"],
                          capture_output=True, text=True, timeout=60)
    assert none.returncode == 3 and none.stdout == ""
    assert "start it with `hybrid emulator start`" in none.stderr


def test_the_aws_cli_lists_the_stacks_buckets_queues_and_instances(stack, shell_env):
    rig = stack()
    name, endpoint = rig.settings.stack, shell_env["AWS_ENDPOINT_URL"]
    launched = rig.launch(1)

    listing = aws(shell_env, "s3", "ls", json_out=False).split()
    assert {f"{name}-input", f"{name}-output"} <= set(listing)
    tags = aws(shell_env, "s3api", "get-bucket-tagging", "--bucket", f"{name}-input")["TagSet"]
    assert {"Key": "hybrid:stack", "Value": name} in tags

    queues = aws(shell_env, "sqs", "list-queues", "--queue-name-prefix", name, "--endpoint-url", endpoint)
    assert sorted(url.rsplit("/", 1)[1] for url in queues["QueueUrls"]) == \
        [f"{name}-requests", f"{name}-requests-dlq", f"{name}-responses", f"{name}-responses-dlq"]
    assert all(url.startswith(endpoint) for url in queues["QueueUrls"])

    reservations = aws(shell_env, "ec2", "describe-instances",
                       "--filters", f"Name=tag:hybrid:stack,Values={name}")["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert [i["InstanceId"] for i in instances] == launched
    assert {"Key": "hybrid:role", "Value": "app-tier"} in instances[0]["Tags"]


@pytest.mark.model
def test_a_folder_the_aws_cli_copies_under_batch_is_classified(stack, shell_env, state_dir, onnx_cache, tmp_path):
    from app_tier.classifier import load_classifier

    made = build_samples(tmp_path / "samples", IMAGES, seed=4,
                         classifier=load_classifier("auto", threads=1, cache_dir=onnx_cache))
    expected = {sample.name: sample.label for sample in made}
    folder = tmp_path / "photos"  # the images alone
    folder.mkdir()
    for sample in made:
        shutil.copy(sample.path, folder / sample.path.name)

    rig = stack(worker__idle_timeout="60")
    rig.launch(2)
    aws(shell_env, "s3", "cp", "--recursive", "--only-show-errors", str(folder),
        f"s3://{rig.settings.stack}-input/batch/any/where/", json_out=False)

    results = subprocess.run([*HYBRID, "--state-dir", str(state_dir), "--stack", rig.settings.stack,
                              "results", "--wait", "180"], capture_output=True, text=True, timeout=240)
    assert results.returncode == 0, f"hybrid results exited {results.returncode}:\n{results.stdout}{results.stderr}"
    labels = dict(line.split(":", 1) for line in results.stdout.splitlines())
    assert {Path(name).stem: label for name, label in labels.items()} == expected
