"""`local up` restarts only the services of another endpoint; `local down` counts what is left of a state folder's
processes, but never the commands that run it."""
import subprocess
import sys

from hybrid.local.stack import processes_of
from tests.fakes import eventually

ASK = ("import sys; from pathlib import Path; from hybrid.local.stack import processes_of; "
       "print(processes_of(Path(sys.argv[1])))")


def test_the_shell_that_runs_the_check_and_the_check_itself_are_not_left_over(tmp_path):
    """As `bash -c "hybrid --state-dir DIR local down"` runs it: the shell's command line names the folder too."""
    shell = f"{sys.executable} -c {ASK!r} {tmp_path}; : {tmp_path}"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_process_of_the_folder_that_is_not_an_ancestor_is_left_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path)])
    try:
        eventually(lambda: [pid for pid, _ in processes_of(tmp_path)] == [sleeper.pid])  # once it has exec'd
    finally:
        sleeper.kill()
        sleeper.wait()


def test_up_restarts_a_service_of_another_endpoint_and_keeps_one_of_the_same(tmp_path, monkeypatch):
    from hybrid.core.localserver import EmulatorInfo
    from hybrid.core.settings import load
    from hybrid.local import stack

    settings = load(None, {}, {"state_dir": str(tmp_path), "stack": "restart-test"})
    server = EmulatorInfo(pid=1, port=4566, started_at=0.0, log_path="")
    stack.write_records(settings, {
        "autoscaler": stack.ServiceRecord("autoscaler", 11, ["a"], "", 0.0, server.url),
        "web": stack.ServiceRecord("web", 12, ["w"], "", 0.0, "http://127.0.0.1:9")})
    stopped, started = [], []
    monkeypatch.setattr(stack, "start_aws_side", lambda settings, report: server)
    monkeypatch.setattr(stack, "is_running", lambda record: True)
    monkeypatch.setattr(stack, "stop_service", lambda record: stopped.append(record.name) or "stopped")
    monkeypatch.setattr(stack, "start_service", lambda settings, name, command, endpoint: started.append(name)
                        or stack.ServiceRecord(name, 13, command, "", 0.0, endpoint))
    monkeypatch.setattr(stack, "wait_for", lambda *args, **kwargs: None)
    lines = []
    stack.up(settings, [], report=lines.append)
    assert (stopped, started) == (["web"], ["web"])
    assert "autoscaler: already running (pid 11)" in lines
    assert stack.read_records(settings)["web"].endpoint == server.url
