"""Processes of this machine: what /proc says about a pid (state, command line, CPU time, memory), and the project's
one way to start a background child, read the end of its log, and stop it.

The kernel reuses pids, so a recorded pid counts as ours only while its process is alive (not a zombie) and runs
what we started: ``runs_module``, ``runs_command`` and ``runs_with`` check that from its command line.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from hybrid.core.errors import HybridError, WaitTimeout
from hybrid.core.wait import Poll, wait_for

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KILL_PATIENCE = 5.0  # seconds a process gets to vanish after SIGKILL
STOP_POLL_INTERVAL = 0.05
CHILD_ENVIRONMENT = {"AWS_EC2_METADATA_DISABLED": "true", "PYTHONUNBUFFERED": "1"}
"""Added to every background child's environment: no AWS SDK call looks for credentials at the instance metadata
address (off EC2 it only waits), and Python writes each log line when it is printed."""


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the project reads."""

    state: str
    """one letter: R running, S sleeping, Z zombie (exited, not yet reaped), ..."""
    session: int
    cpu_seconds: float
    """user + system CPU time so far"""


def read_stat(pid: int) -> ProcStat | None:
    """The process's ``/proc/<pid>/stat``, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and parentheses
    return ProcStat(fields[0], int(fields[3]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)


def parent_pid(pid: int) -> int:
    """The process's parent's pid, or 0 if there is no such process (or it is init's child of nobody)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(text.rsplit(")", 1)[1].split()[1])


def ancestors(pid: int) -> set[int]:
    """``pid`` and every process above it, up to init: the shells and tools that started it."""
    found = set()
    while pid > 0 and pid not in found:
        found.add(pid)
        pid = parent_pid(pid)
    return found


def cmdline(pid: int) -> list[str] | None:
    """The process's arguments (``argv``, the program first), or None if there is no such process. Empty for a
    zombie, and for a moment right after exec, while the kernel sets up the new program."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


def pids() -> list[int]:
    """The pids of every process of this machine, right now."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def is_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    stat = read_stat(pid)
    return stat is not None and stat.state != "Z"


def runs_module(pid: int, module: str) -> bool:
    """True if the process is alive and was started as ``python -m module``."""
    return _alive_with(pid, lambda argv: ("-m", module) in zip(argv, argv[1:]))


def runs_command(pid: int, command: Sequence[str]) -> bool:
    """True if the process is alive and runs exactly ``command``."""
    return _alive_with(pid, lambda argv: argv == list(command))


def runs_with(pid: int, option: str, value: str) -> bool:
    """True if the process is alive and was started with ``option value`` among its arguments."""
    return _alive_with(pid, lambda argv: (option, value) in zip(argv, argv[1:]))


def _alive_with(pid: int, matches: Callable[[list[str]], bool]) -> bool:
    argv = cmdline(pid)
    return argv is not None and matches(argv) and is_alive(pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0.0 if it is gone)."""
    stat = read_stat(pid)
    return stat.cpu_seconds if stat else 0.0


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (kB / 1024, ``VmRSS``), or None if it is gone."""
    return memory_mb(pid).get("VmRSS")


def memory_mb(pid: int | str) -> dict[str, float]:
    """``VmRSS`` (resident now) and ``VmHWM`` (its peak) of a process (or ``"self"``) in MB; empty if it is gone."""
    values: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    except OSError:
        return {}
    return values


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent neither idle nor waiting on I/O since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLOCK_TICKS


def module_command(module: str, *args: str) -> list[str]:
    """The command line of ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def spawn_logged(command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Starts ``command`` in the background: in a session of its own (its process group can be stopped as one),
    stdin from /dev/null, stdout and stderr appended to ``log_path``, with this process's environment plus
    ``CHILD_ENVIRONMENT`` and ``env``."""
    environment = {**os.environ, **CHILD_ENVIRONMENT, **(env or {})}
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(list(command), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=environment, start_new_session=True)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, or ``(no log)``."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def reap(pid: int) -> None:
    """Collects the exit status of a child of this process that has exited (no zombie stays); anything else is
    left alone."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def terminate(pid: int, running: Callable[[], bool], *, what: str, patience: float, group: bool = False,
              kill_patience: float = KILL_PATIENCE) -> None:
    """Stops a process, or with ``group`` its process group: SIGTERM, then SIGKILL if ``running()`` still says so
    after ``patience`` seconds. A child of ours is reaped while we wait. A process already gone is fine; one still
    running ``kill_patience`` seconds after SIGKILL raises ``HybridError`` naming ``what``."""
    send = os.killpg if group else os.kill
    for signum, seconds in ((signal.SIGTERM, patience), (signal.SIGKILL, kill_patience)):
        try:
            send(pid, signum)
        except ProcessLookupError:
            return
        try:
            wait_for(f"{what} to stop", lambda: _stopped(pid, running), timeout=seconds, interval=STOP_POLL_INTERVAL)
            return
        except WaitTimeout:
            continue
    raise HybridError(f"{what} did not stop")


def _stopped(pid: int, running: Callable[[], bool]) -> Poll[None]:
    if not running():
        return Poll(None, done=True)
    reap(pid)
    return Poll(None, done=False, state="running")


def port_is_free(port: int) -> bool:
    """True if a server could listen on ``port`` of 127.0.0.1 now (as servers bind it: reusing TIME_WAIT)."""
    return bind_error("127.0.0.1", port) is None


def bind_error(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host``:``port`` now (the system's words), or None when it could."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
