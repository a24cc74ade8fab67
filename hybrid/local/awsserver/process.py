"""Start, stop and inspect the emulator subprocess. Its record lives in ``<state_dir>/emulator/``
(``hybrid.core.localserver``)."""
from __future__ import annotations

import logging
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from hybrid.core import procs
from hybrid.core.errors import HybridError
from hybrid.core.localserver import (SERVER_MODULE, EmulatorInfo, emulator_dir, is_emulator_process, read_record,
                                     remove_record, write_record)
from hybrid.core.wait import Poll, wait_for
from hybrid.local.instance_folders import prune_instance_folders

log = logging.getLogger(__name__)
RUNNER_MODULE = "hybrid.local.instances"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def emulator_status(state_dir: Path) -> EmulatorInfo | None:
    """The running emulator of this state folder, or None. A record whose process is gone counts as not running."""
    info = read_record(state_dir)
    if info and is_emulator_process(info.pid) and answers(info.url):
        return info
    return None


def start_emulator(state_dir: Path, on_poll: Callable[[Poll[int]], None] | None = None) -> EmulatorInfo:
    """Starts the emulator and its local instance runner, unless they already run (idempotent).

    A new server listens on the port of the one before it when that port is free (else on any free port): so the
    endpoint of this state folder stays the same across restarts, and the web tier and autoscaler that use it
    reach the new server without a restart (it starts empty: the stack has to be set up again)."""
    running = emulator_status(state_dir)
    if running:
        return _ensure_runner(state_dir, running)
    stop_emulator(state_dir)
    pruned = prune_instance_folders(state_dir)  # the new server starts with no instance
    if pruned:
        log.info("removed the folders of %d instances of an earlier local server", pruned)
    folder = emulator_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    port_file, log_path = folder / "port", folder / "emulator.log"
    runner = _spawn_runner(state_dir)  # it loads the worker's code while the server starts, then waits for it
    try:
        process, port = _spawn_listening_server(port_file, log_path, on_poll)
    except BaseException:
        _terminate(runner.pid, RUNNER_MODULE)
        raise
    info = EmulatorInfo(pid=process.pid, port=port, started_at=time.time(), log_path=str(log_path),
                        runner_pid=runner.pid)
    write_record(state_dir, info)
    log.info("emulator started at %s (pid %s)", info.url, info.pid)
    return info


def _spawn_listening_server(port_file: Path, log_path: Path,
                            on_poll: Callable[[Poll[int]], None] | None) -> tuple[subprocess.Popen, int]:
    """The server on the earlier server's port if it is free, else on any free port."""
    earlier = _earlier_port(port_file)
    try:
        return _spawn_server(port_file, log_path, earlier, on_poll)
    except HybridError:
        if not earlier:
            raise
    log.info("port %s of the earlier local server is taken: listening on another one", earlier)
    return _spawn_server(port_file, log_path, 0, on_poll)


def _earlier_port(port_file: Path) -> int:
    """The port the last server of this folder listened on, if it is free now; else 0 (any free port)."""
    try:
        port = int(port_file.read_text())
    except (OSError, ValueError):
        return 0
    return port if procs.port_is_free(port) else 0


def _spawn_server(port_file: Path, log_path: Path, port: int,
                  on_poll: Callable[[Poll[int]], None] | None) -> tuple[subprocess.Popen, int]:
    """Starts the server on ``port`` (0: any free one) and waits until it answers there."""
    port_file.unlink(missing_ok=True)
    command = procs.module_command(SERVER_MODULE, "--port-file", str(port_file), "--port", str(port))
    process = procs.spawn_logged(command, log_path)
    listening = wait_for("the local AWS server to listen", lambda: _probe_port(process, port_file, log_path),
                         timeout=START_TIMEOUT, interval=0.1, on_poll=on_poll)
    return process, listening


def _ensure_runner(state_dir: Path, info: EmulatorInfo) -> EmulatorInfo:
    """Starts the local instance runner beside a running emulator if it is not running."""
    if is_runner_process(info.runner_pid):
        return info
    info = EmulatorInfo(**{**asdict(info), "runner_pid": _spawn_runner(state_dir).pid})
    write_record(state_dir, info)
    return info


def _spawn_runner(state_dir: Path) -> subprocess.Popen:
    """The local instance runner; it waits for this folder's server to be recorded before its first call."""
    return procs.spawn_logged(procs.module_command(RUNNER_MODULE, "--state-dir", str(Path(state_dir).resolve())),
                              emulator_dir(state_dir) / "instances.log")


def stop_emulator(state_dir: Path) -> EmulatorInfo | None:
    """Stops this state folder's emulator if it runs; returns what was stopped. Tolerates one already gone."""
    info = read_record(state_dir)
    if info and is_runner_process(info.runner_pid):
        _terminate(info.runner_pid, RUNNER_MODULE)
    if info and is_emulator_process(info.pid):
        _terminate(info.pid, SERVER_MODULE)
    remove_record(state_dir)
    return info if info and not is_emulator_process(info.pid) else None


def _probe_port(process: subprocess.Popen, port_file: Path, log_path: Path) -> Poll[int]:
    if process.poll() is not None:
        return Poll(0, done=False, failed=f"the server exited with code {process.returncode}; last log lines:\n"
                                          + procs.log_tail(log_path))
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


def is_runner_process(pid: int) -> bool:
    """True if ``pid`` is alive and is our local instance runner (guards against a reused pid)."""
    return procs.runs_module(pid, RUNNER_MODULE)


def _terminate(pid: int, module: str) -> None:
    procs.terminate(pid, lambda: procs.runs_module(pid, module), what=f"process {pid} ({module})",
                    patience=STOP_TIMEOUT)
