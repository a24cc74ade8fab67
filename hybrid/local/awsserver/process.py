"""Start, stop and inspect the emulator subprocess. Its record lives in ``<state_dir>/emulator/``."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from hybrid.core.errors import EmulatorNotRunning, HybridError
from hybrid.core.wait import Poll, wait_for

log = logging.getLogger(__name__)
SERVER_MODULE = "hybrid.local.awsserver.server"
RUNNER_MODULE = "hybrid.local.instances"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class EmulatorInfo:
    pid: int
    port: int
    started_at: float
    log_path: str
    runner_pid: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def emulator_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "emulator"


def _record_path(state_dir: Path) -> Path:
    return emulator_dir(state_dir) / "emulator.json"


def read_record(state_dir: Path) -> EmulatorInfo | None:
    try:
        return EmulatorInfo(**json.loads(_record_path(state_dir).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def emulator_status(state_dir: Path) -> EmulatorInfo | None:
    """The running emulator of this state folder, or None. A record whose process is gone counts as not running."""
    info = read_record(state_dir)
    if info and is_emulator_process(info.pid) and answers(info.url):
        return info
    return None


def endpoint_url(state_dir: Path) -> str:
    """The emulator's URL, or ``EmulatorNotRunning`` saying how to start it."""
    info = read_record(state_dir)
    if info is None or not is_emulator_process(info.pid):
        raise EmulatorNotRunning(f"the local AWS server is not running (no live emulator recorded in "
                                 f"{emulator_dir(state_dir)}): start it with `hybrid emulator start`")
    return info.url


def start_emulator(state_dir: Path, on_poll: Callable[[Poll[int]], None] | None = None) -> EmulatorInfo:
    """Starts the emulator and its local instance runner, unless they already run (idempotent)."""
    running = emulator_status(state_dir)
    if running:
        return _ensure_runner(state_dir, running)
    stop_emulator(state_dir)
    from hybrid.local.instances import prune_instance_folders

    pruned = prune_instance_folders(state_dir)  # the new server starts with no instance
    if pruned:
        log.info("removed the folders of %d instances of an earlier local server", pruned)
    folder = emulator_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    port_file, log_path = folder / "port", folder / "emulator.log"
    port_file.unlink(missing_ok=True)
    process = _spawn(port_file, log_path)
    port = wait_for("the local AWS server to listen", lambda: _probe_port(process, port_file, log_path),
                    timeout=START_TIMEOUT, interval=0.1, on_poll=on_poll)
    info = EmulatorInfo(pid=process.pid, port=port, started_at=time.time(), log_path=str(log_path))
    _record_path(state_dir).write_text(json.dumps(asdict(info)))
    log.info("emulator started at %s (pid %s)", info.url, info.pid)
    return _ensure_runner(state_dir, info)


def _ensure_runner(state_dir: Path, info: EmulatorInfo) -> EmulatorInfo:
    """Starts the local instance runner beside a running emulator if it is not running."""
    if info.runner_pid and is_our_process(info.runner_pid, RUNNER_MODULE):
        return info
    runner = _spawn_module(RUNNER_MODULE, ["--state-dir", str(Path(state_dir).resolve())],
                           emulator_dir(state_dir) / "instances.log")
    info = EmulatorInfo(**{**asdict(info), "runner_pid": runner.pid})
    _record_path(state_dir).write_text(json.dumps(asdict(info)))
    return info


def stop_emulator(state_dir: Path) -> EmulatorInfo | None:
    """Stops this state folder's emulator if it runs; returns what was stopped. Tolerates one already gone."""
    info = read_record(state_dir)
    if info and info.runner_pid and is_our_process(info.runner_pid, RUNNER_MODULE):
        _terminate(info.runner_pid, RUNNER_MODULE)
    if info and is_emulator_process(info.pid):
        _terminate(info.pid, SERVER_MODULE)
    _record_path(state_dir).unlink(missing_ok=True)
    return info if info and not is_emulator_process(info.pid) else None


def _spawn(port_file: Path, log_path: Path) -> subprocess.Popen:
    return _spawn_module(SERVER_MODULE, ["--port-file", str(port_file)], log_path)


def _spawn_module(module: str, args: list[str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log_file:
        return subprocess.Popen([sys.executable, "-m", module, *args], stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def _probe_port(process: subprocess.Popen, port_file: Path, log_path: Path) -> Poll[int]:
    if process.poll() is not None:
        return Poll(0, done=False, failed=f"the server exited with code {process.returncode}; last log lines:\n"
                                          + _tail(log_path))
    try:
        port = int(port_file.read_text())
    except (OSError, ValueError):
        return Poll(0, done=False, state="starting")
    return Poll(port, done=answers(f"http://127.0.0.1:{port}"), state="listening")


ANSWER_TIMEOUT = 10.0  # a live server can be busy for seconds while moto builds a service it has not served yet
PROBE_PATH = "/moto-api/"  # moto's dashboard page: static. Not data.json, which serialises every model (its 1,301
# Amazon AMIs included) and took 0.5 s of the server's CPU when empty, more with every resource


def answers(url: str) -> bool:
    """True if the server at ``url`` answers HTTP. A slow answer still counts: while moto loads a backend (EC2 took
    1-2 s on its first call, under a lock every request waits on, before the server preloaded it; other services
    still load on first use) a 2 s limit called a live server dead."""
    try:
        with urllib.request.urlopen(f"{url}{PROBE_PATH}", timeout=ANSWER_TIMEOUT):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def is_emulator_process(pid: int) -> bool:
    """True if ``pid`` is alive and is our emulator (guards against a reused pid)."""
    return is_our_process(pid, SERVER_MODULE)


def is_our_process(pid: int, module: str) -> bool:
    """True if ``pid`` is alive (not a zombie) and runs ``module``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return module.encode() in cmdline and status != "Z"


def _terminate(pid: int, module: str) -> None:
    for signum, patience in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline and is_our_process(pid, module):
            _reap(pid)
            time.sleep(0.05)
        if not is_our_process(pid, module):
            return
    raise HybridError(f"process {pid} ({module}) did not stop")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
