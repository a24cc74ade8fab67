"""The real `hybrid` command: where settings came from, and settings mistakes as one line and exit 2.

Nothing here reaches a network: the commands that would call AWS stop at their settings, and the one that gets further
is pointed at a closed loopback port.
"""
import json
import os
import subprocess
import sys

import pytest


@pytest.fixture
def hybrid(tmp_path):
    """Runs ``python -m hybrid`` in tmp_path with AWS files of this test only (profile work: ap-south-1)."""
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "config").write_text("[profile work]\nregion = ap-south-1\n")
    (aws / "credentials").write_text("[work]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = secret\n")
    base = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "OS_", "HYBRID_"))}
    base.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(aws / "config"),
                AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"), NO_COLOR="1")

    def run(*args, env=None):
        return subprocess.run([sys.executable, "-m", "hybrid", "--state-dir", str(tmp_path / "state"), *args],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**base, **(env or {})})

    return run


def one_error_line(result):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


def origins(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_show_json_is_show(hybrid):
    plain, flagged = hybrid("config", "show"), hybrid("config", "show", "--json")
    assert plain.returncode == 0 and plain.stdout == flagged.stdout
    assert json.loads(plain.stdout)["aws"]["region"] == "us-east-1"


def test_show_origin_names_each_values_layer(hybrid, tmp_path):
    (tmp_path / "hybrid.toml").write_text('[worker]\nthreads = 2\n')
    result = hybrid("--set", "aws.target=aws", "config", "show", "--origin", env={"AWS_REGION": "eu-west-3"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 'aws.region = "eu-west-3"  (env AWS_REGION)' in lines
    assert 'aws.target = "aws"  (command line)' in lines
    assert "worker.threads = 2  (file hybrid.toml)" in lines
    assert "scaling.max_workers = 20  (default)" in lines


def test_show_origin_json_gives_the_profiles_region(hybrid):
    shown = origins(hybrid("--set", "aws.target=aws", "--profile", "work", "config", "show", "--origin", "--json"))
    assert shown["aws.region"] == {"value": "ap-south-1", "origin": "profile work"}
    assert shown["aws.profile"] == {"value": "work", "origin": "command line"}


def test_openstack_cloud_from_os_cloud_then_the_flag(hybrid):
    shown = origins(hybrid("config", "show", "--origin", "--json", env={"OS_CLOUD": "lab"}))
    assert shown["openstack.cloud"] == {"value": "lab", "origin": "env OS_CLOUD"}
    shown = origins(hybrid("--os-cloud", "work", "config", "show", "--origin", "--json", env={"OS_CLOUD": "lab"}))
    assert shown["openstack.cloud"] == {"value": "work", "origin": "command line"}


def test_a_missing_profile_is_one_line_and_exit_2(hybrid, tmp_path):
    line = one_error_line(hybrid("--set", "aws.target=aws", "--profile", "nope", "config", "show"))
    assert line == (f"error: AWS profile 'nope' (aws.profile) is in neither {tmp_path}/aws/config nor "
                    f"{tmp_path}/aws/credentials: `aws configure list-profiles` lists the profiles; name one with "
                    "--profile or aws.profile")


def test_a_bad_aws_profile_variable_stops_aws_plan_with_one_line_and_exit_2(hybrid):
    result = hybrid("--set", "aws.target=aws", "--set", "aws.endpoint_url=http://127.0.0.1:9", "aws", "plan",
                    env={"AWS_PROFILE": "typo"})
    assert one_error_line(result).startswith("error: AWS profile 'typo' (AWS_PROFILE) is in neither ")


def test_a_region_typo_is_exit_2_with_a_suggestion(hybrid):
    result = hybrid("--set", "aws.target=aws", "--profile", "work", "--set", "aws.region=us-esat-1", "aws", "plan")
    assert one_error_line(result) == "error: aws.region = 'us-esat-1' is not an AWS region (did you mean us-east-1?)"


def test_a_config_folder_is_one_line_and_exit_2(hybrid, tmp_path):
    line = one_error_line(hybrid("--config", str(tmp_path), "config", "show"))
    assert line == f"error: config file {tmp_path} is a folder: name the file, e.g. {tmp_path}/hybrid.toml"


def test_a_config_that_is_not_utf8_is_one_line_and_exit_2(hybrid, tmp_path):
    (tmp_path / "latin1.toml").write_bytes('stack = "caf\u00e9"\n'.encode("latin-1"))
    line = one_error_line(hybrid("--config", "latin1.toml", "config", "show"))
    assert line == "error: config file latin1.toml is not UTF-8 text (byte 0xe9 at offset 12): save it as UTF-8"


def test_a_misspelt_key_in_set_suggests_the_right_one(hybrid):
    line = one_error_line(hybrid("--set", "aws.regoin=eu-west-1", "config", "show"))
    assert "unknown setting aws.regoin (command line): did you mean aws.region?" in line


def test_a_misspelt_variable_is_a_warning_and_the_command_goes_on(hybrid):
    result = hybrid("config", "show", env={"HYBRID_AWS_REGON": "eu-west-1"})
    assert result.returncode == 0 and json.loads(result.stdout)["aws"]["region"] == "us-east-1"
    assert ("HYBRID_AWS_REGON is not a setting and is ignored: did you mean HYBRID_AWS_REGION?" in result.stderr)
