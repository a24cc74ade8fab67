"""Every operator mistake gets one clear line and its documented exit code (0 ok, 1 failure, 2 usage or settings,
3 not running or not found), never a traceback: the `hybrid` console script run as an operator runs it, in a folder
with no local AWS server, no stack and (for the cloud names used) no OpenStack cloud."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NO_AWS_FILES = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def hybrid(folder: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRID_", "AWS_", "OS_"))}
    return subprocess.run([sys.executable, "-m", "hybrid", *args], cwd=folder, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL,
                          env={**clean, "AWS_EC2_METADATA_DISABLED": "true", "XDG_CACHE_HOME": str(folder / "cache"),
                               **NO_AWS_FILES, **(env or {})})


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "not-utf8.toml").write_bytes(b"stack = \"caf\xe9\"\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "autoscale").mkdir()
    (tmp_path / "empty" / "autoscale" / "hybrid-dev-timeline.jsonl").write_text("")
    (tmp_path / "corrupt" / "autoscale").mkdir(parents=True)
    (tmp_path / "corrupt" / "autoscale" / "hybrid-dev-timeline.jsonl").write_text('{"t": 1, "visible"\n')
    (tmp_path / "notes.jpg").write_text("these are notes, not a picture\n")
    return tmp_path


MISTAKES = [
    # (what, arguments, environment, exit code, words of the one line)
    ("--config names a folder", ["--config", "conf.d", "config", "show"], {}, 2, "is a folder"),
    ("a config file that is not UTF-8", ["--config", "not-utf8.toml", "config", "show"], {}, 2, "not UTF-8"),
    ("--profile names no profile", ["--profile", "nosuch", "--set", "aws.target=aws", "aws", "plan"], {}, 2,
     "AWS profile 'nosuch'"),
    ("AWS_PROFILE names no profile", ["--set", "aws.target=aws", "aws", "plan"], {"AWS_PROFILE": "nosuch"}, 2,
     "AWS profile 'nosuch' (AWS_PROFILE)"),
    ("a region typo", ["--set", "aws.target=aws", "--set", "aws.region=us-eest-1", "aws", "plan"], {}, 2,
     "did you mean us-west-1?"),
    ("a mistyped key", ["--set", "aws.regoin=eu-west-1", "config", "show"], {}, 2, "did you mean aws.region"),
    ("autoscale --plot with no timeline", ["autoscale", "--plot", "t.png"], {}, 3, "no timeline at"),
    ("autoscale --plot with an empty timeline", ["--state-dir", "empty", "autoscale", "--plot", "t.png"], {}, 3,
     "is empty"),
    ("autoscale --plot with a corrupt timeline", ["--state-dir", "corrupt", "autoscale", "--plot", "t.png"], {}, 1,
     "is damaged"),
    ("aws status with no local AWS server", ["aws", "status"], {}, 3, "local AWS server is not running"),
    ("results with no local AWS server", ["results"], {}, 3, "local AWS server is not running"),
    ("the web tier with no local AWS server", ["web"], {}, 3, "local AWS server"),
    ("a cloud missing from clouds.yaml: status", ["--os-cloud", "nope", "openstack", "status"],
     {"OS_CLIENT_CONFIG_FILE": "/nonexistent"}, 2, "cloud 'nope' is not in clouds.yaml"),
    ("a cloud missing from clouds.yaml: plan", ["--os-cloud", "nope", "openstack", "plan"],
     {"OS_CLIENT_CONFIG_FILE": "/nonexistent"}, 2, "cloud 'nope' is not in clouds.yaml"),
    ("a cloud missing from clouds.yaml: check", ["--os-cloud", "nope", "openstack", "check"],
     {"OS_CLIENT_CONFIG_FILE": "/nonexistent"}, 2, "cloud 'nope' is not in clouds.yaml"),
    ("a cloud missing from clouds.yaml: down", ["--os-cloud", "nope", "openstack", "down", "--yes"],
     {"OS_CLIENT_CONFIG_FILE": "/nonexistent"}, 2, "cloud 'nope' is not in clouds.yaml"),
    ("AWS that does not answer (paginated calls included)",
     ["--set", "aws.target=aws", "--set", "aws.endpoint_url=http://127.0.0.1:9", "--set", "aws.max_attempts=1",
      "--set", "aws.instance_profile=no", "aws", "status"], {}, 3, "cannot reach AWS"),
    ("classify on a text file", ["classify", "notes.jpg"], {}, 1, "notes: error: not an image"),
]


@pytest.mark.parametrize("what, args, env, code, words", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_one_line_and_its_exit_code(folder, what, args, env, code, words):
    result = hybrid(folder, *args, env=env)
    lines = error_lines(result)
    assert result.returncode == code, f"{what}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert len(lines) == 1 and words in lines[0], f"{what}: {lines}"
    assert "Traceback" not in result.stderr + result.stdout


def test_status_reports_both_clouds_whatever_one_says(folder):
    result = hybrid(folder, "--os-cloud", "nope", "status", env={"OS_CLIENT_CONFIG_FILE": "/nonexistent"})
    assert result.returncode == 3, "the worst of 3 (no local AWS server) and 2 (no such cloud)"
    assert result.stdout.splitlines() == ["== AWS", "== OpenStack"]
    assert [line.split(":")[0] for line in error_lines(result)] == ["error", "error"]
    assert "local AWS server is not running" in result.stderr and "cloud 'nope'" in result.stderr


def test_global_options_after_the_command_are_taken(folder):
    result = hybrid(folder, "config", "show", "--stack", "after-cmd", "--set", "aws.region=eu-west-1")
    assert result.returncode == 0, result.stderr
    assert '"stack": "after-cmd"' in result.stdout and '"region": "eu-west-1"' in result.stdout
    mistyped = hybrid(folder, "aws", "stauts")
    assert mistyped.returncode == 2 and "Did you mean 'status'?" in mistyped.stderr


def test_an_unknown_hybrid_variable_is_warned_about(folder):
    result = hybrid(folder, "config", "show", env={"HYBRID_AWS_REGOIN": "eu-west-1"})
    assert result.returncode == 0
    assert "HYBRID_AWS_REGOIN is not a setting and is ignored: did you mean HYBRID_AWS_REGION?" in result.stderr


def test_an_unexpected_error_is_one_line_and_a_log_with_the_traceback(folder, monkeypatch, capsys):
    from hybrid.cli import Context, root

    def broken(context):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(Context, "settings", property(broken))
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
    for verbose in ([], ["-v"]):
        with pytest.raises(SystemExit) as ended:
            root.run([*verbose, "aws", "plan"])
        assert ended.value.code == 1
        err = capsys.readouterr().err
        log = folder / "cache" / "hybrid" / "last-error.log"
        assert err.strip().splitlines()[-1] == (f"error: unexpected RuntimeError: disk on fire (traceback in {log}; "
                                                "-v shows it here)")
        assert ("Traceback" in err) == bool(verbose), "the traceback is shown with -v only"
        assert "Traceback" in log.read_text() and "disk on fire" in log.read_text()


def test_no_color_is_honoured_on_a_terminal(folder):
    import pty

    def on_terminal(env: dict) -> bytes:
        leader, follower = pty.openpty()
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRID_", "NO_COLOR"))}
        process = subprocess.Popen([sys.executable, "-m", "hybrid", "aws", "status"], cwd=folder, stdin=follower,
                                   stdout=follower, stderr=follower, env={**clean, **env})
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        process.wait(timeout=60)
        os.close(leader)
        return output

    assert b"\x1b[31m" in on_terminal({}), "errors are red on a terminal"
    plain = on_terminal({"NO_COLOR": "1"})
    assert b"\x1b[" not in plain and b"error: the local AWS server is not running" in plain


def test_the_aws_profile_and_region_chain_reach_every_command(folder):
    config = folder / "aws-config"
    config.write_text("[profile work]\nregion = eu-north-1\n")
    env = {"AWS_CONFIG_FILE": str(config)}
    args = ("--set", "aws.target=aws", "aws", "web-policy", "--account", "123456789012")
    from_profile = hybrid(folder, "--profile", "work", *args, env=env)
    assert from_profile.returncode == 0, from_profile.stderr
    assert "arn:aws:sqs:eu-north-1:123456789012:hybrid-dev-requests" in from_profile.stdout
    from_variable = hybrid(folder, "--profile", "work", *args, env={**env, "AWS_REGION": "ap-south-1"})
    assert "arn:aws:sqs:ap-south-1:123456789012:hybrid-dev-requests" in from_variable.stdout
    from_setting = hybrid(folder, "--profile", "work", "--set", "aws.region=ca-central-1", *args,
                          env={**env, "AWS_REGION": "ap-south-1"})
    assert "arn:aws:sqs:ca-central-1:123456789012:hybrid-dev-requests" in from_setting.stdout
