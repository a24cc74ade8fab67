"""The local instance runner's folder per instance, ``<state_dir>/instances/<instance id>/``: the instance's user
data, its worker's log, and while the worker lives its ``pid``.

An instance that boots as a VM has its machine's files there instead (console, disk overlay, config drive, QMP
socket, ``machine.json``, ``ended``: ``hybrid.local.machines``).

The runner (``hybrid.local.instances``) writes them; the local server's supervisor prunes what an earlier server
left (``hybrid.local.awsserver.process``), and the local stack lists the workers from them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from hybrid.core import procs
from hybrid.core.localserver import read_record


def instance_folder(state_dir: Path, instance_id: str) -> Path:
    return Path(state_dir) / "instances" / instance_id


def write_pid(state_dir: Path, instance_id: str, pid: int) -> None:
    (instance_folder(state_dir, instance_id) / "pid").write_text(str(pid))


def forget_pid(state_dir: Path, instance_id: str) -> None:
    """The worker is gone: its pid may soon belong to another process."""
    (instance_folder(state_dir, instance_id) / "pid").unlink(missing_ok=True)


def worker_processes(state_dir: Path) -> dict[str, int]:
    """Instance id -> pid of the live worker processes of this state folder, from their pid files. The kernel reuses
    pids (at most 32768 here), so a pid counts only while its process is alive, runs with this ``--state-dir``
    (a forked worker keeps its runner's command line, a spawned one has its own) and is not the runner itself."""
    state = str(Path(state_dir).resolve())
    record = read_record(Path(state))
    runner = record.runner_pid if record else 0
    found = {}
    for pid_file in (Path(state) / "instances").glob("*/pid"):
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if pid != runner and procs.runs_with(pid, "--state-dir", state):
            found[pid_file.parent.name] = pid
    return found


def prune_instance_folders(state_dir: Path) -> int:
    """Removes the folders (user data, worker log, pid) of instances that have no live worker; returns how many. For
    a new local server, which starts with no instance: the folders left belong to an earlier one, and their logs
    stayed until now for a look after that run."""
    live = set(worker_processes(state_dir))
    gone = [folder for folder in (Path(state_dir) / "instances").glob("*")
            if folder.is_dir() and folder.name not in live]
    for folder in gone:
        shutil.rmtree(folder, ignore_errors=True)
    return len(gone)
