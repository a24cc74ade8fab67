"""The whole embedded stack on this machine: local AWS server (+ instance runner), the stack's AWS side, the
autoscaler and the web tier, each a process whose pid, command and log live in ``<state_dir>/local/``.

``up`` starts what is not running (idempotent) and returns the web tier's URL. ``down`` stops, by process id, what
``up`` started, tears the stack's AWS side down (instances first), stops the local server, and checks that no
process of this state folder is left (the commands that run ``down`` itself, and their shells, do not count).

A restarted local AWS server is a new one: moto keeps everything in memory, so it starts empty, and ``up`` sets the
stack up again (with new ids: image, security group). It listens on the port of the server before it
(``start_emulator``), so the web tier and autoscaler follow it without a restart: the web tier creates its reply
queue again, the autoscaler reads the new launch specification when a launch finds the old one gone. Each service
record names the endpoint its service was started against; should the new server have had to take another port,
``up`` restarts the services of the old endpoint. While the server is down the web tier stays live (`/healthz`)
but not ready (`/readyz`), and the autoscaler's ticks fail, are counted, and the loop goes on.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hybrid.aws.stack import build_aws_stack
from hybrid.core import procs
from hybrid.core.localserver import EmulatorInfo
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for
from hybrid.local.awsserver.process import emulator_status, is_runner_process, start_emulator, stop_emulator
from hybrid.local.instance_folders import worker_processes
from hybrid.local.model_cache import prepare_model_cache

log = logging.getLogger(__name__)
Report = Callable[[str], None]
STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    pid: int
    command: list[str]
    log_path: str
    started_at: float
    endpoint: str = ""  # the local AWS server's URL it was started against


def local_dir(settings: Settings) -> Path:
    return settings.state_path.resolve() / "local"


def web_url(settings: Settings) -> str:
    return f"http://{settings.web.bind}"


def read_records(settings: Settings) -> dict[str, ServiceRecord]:
    path = local_dir(settings) / "services.json"
    try:
        return {name: ServiceRecord(**record) for name, record in json.loads(path.read_text()).items()}
    except (OSError, ValueError, TypeError):
        return {}


def write_records(settings: Settings, records: dict[str, ServiceRecord]) -> None:
    path = local_dir(settings) / "services.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: asdict(r) for name, r in records.items()}, indent=2))


def is_running(record: ServiceRecord) -> bool:
    """Alive, not a zombie, and still running the recorded command (guards against a reused pid)."""
    return procs.runs_command(record.pid, record.command)


def up(settings: Settings, child_args: Sequence[str], report: Report = log.info) -> str:
    """Starts every part that is not running, and restarts the services of another local AWS server endpoint;
    returns the web tier's URL once it is ready (`/readyz`)."""
    server = start_aws_side(settings, report)
    records = read_records(settings)
    for name, command in (("autoscaler", "autoscale"), ("web", "web")):  # down stops them in reverse
        record = records.get(name)
        if record and is_running(record):
            if record.endpoint == server.url:
                report(f"{name}: already running (pid {record.pid})")
                continue
            report(f"{name}: restarting (pid {record.pid} uses {record.endpoint or 'another endpoint'}, the local "
                   f"AWS server is now {server.url}): {stop_service(record)}")
        records[name] = start_service(settings, name, procs.module_command("hybrid", *child_args, command),
                                      server.url)
        write_records(settings, records)
        report(f"{name}: started (pid {records[name].pid}, log {records[name].log_path})")
    wait_for("the web tier to be ready", lambda: _ready(settings, records["web"]), timeout=60, interval=0.25)
    return web_url(settings)


def start_aws_side(settings: Settings, report: Report = log.info) -> EmulatorInfo:
    """The local AWS server and its instance runner, the stack's AWS side, and the model cache its workers load;
    returns the server's record."""
    info = start_emulator(settings.state_path)
    report(f"local AWS server: {info.url} (pid {info.pid}), instance runner pid {info.runner_pid}")
    changes = build_aws_stack(settings).up(report=lambda line: None)
    report(f"stack {settings.stack}: {len(changes)} change(s)" if changes else f"stack {settings.stack}: ready")
    crowding = fleet_crowding(settings.scaling.max_workers, os.cpu_count() or 1)
    if crowding:
        report(crowding)
    _prepare_model(report)
    return info


def local_fleet_size(cores: int | None = None) -> int:
    """The largest useful local fleet: one instance per CPU core (at least 2).

    A local instance is a process on this machine, so workers beyond the core count add no capacity; they only take
    turns on the same cores, and every answer of a burst then arrives at the end. Measured on 2 cores, 100
    concurrent requests from 0 workers: 20 workers averaged 4.7 s per request, 2 workers 1.7-2.1 s."""
    return max(2, cores or os.cpu_count() or 2)


def fleet_crowding(max_workers: int, cores: int) -> str:
    """A note when the local fleet may grow past ``local_fleet_size(cores)``, else ""."""
    size = local_fleet_size(cores)
    if max_workers <= size:
        return ""
    return (f"note: scaling.max_workers = {max_workers} on {cores} core(s): local workers beyond the core count only "
            f"share the same cores and make a burst's answers come later (`--set scaling.max_workers={size}`;"
            " `hybrid demo` sets it so)")


def _prepare_model(report: Report) -> None:
    started = time.monotonic()
    prepare_model_cache(check=True, stdout=subprocess.DEVNULL)
    report(f"model: ready ({time.monotonic() - started:.1f} s)")


def start_service(settings: Settings, name: str, command: list[str], endpoint: str = "") -> ServiceRecord:
    """Starts ``command`` in the background, logging to ``<state_dir>/local/<name>.log``; returns its record (the
    caller keeps it with ``write_records``, and ``down`` stops it). ``endpoint``: the local AWS server it uses."""
    log_path = local_dir(settings) / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    process = procs.spawn_logged(command, log_path)
    return ServiceRecord(name, process.pid, command, str(log_path), time.time(), endpoint)


def _ready(settings: Settings, record: ServiceRecord) -> Poll[bool]:
    """Done once `/readyz` says the web tier can answer a miss: its threads run and its queues and buckets answer
    (after a restart of the local AWS server, once it has created its reply queue again)."""
    if not alive(record.pid):
        return Poll(False, done=False, failed=f"the web tier exited; see {record.log_path}:\n"
                                              + procs.log_tail(Path(record.log_path)))
    try:
        with urllib.request.urlopen(f"{web_url(settings)}/readyz", timeout=5) as reply:
            return Poll(True, done=reply.status == 200)
    except OSError:  # HTTPError (503: not ready yet) included
        return Poll(False, done=False, state="starting")


def down(settings: Settings, report: Report = log.info) -> list[str]:
    """Stops the services, removes the stack's AWS side, stops the local server; returns what is left (none)."""
    records = read_records(settings)
    for name in reversed(list(records)):  # the last started first: the web tier before the autoscaler
        report(f"{name}: {stop_service(records[name])}")
    write_records(settings, {})
    if emulator_status(settings.state_path):
        build_aws_stack(settings).down(report=report)
    stopped = stop_emulator(settings.state_path)
    report(f"local AWS server: {'stopped' if stopped else 'was not running'}")
    removed = remove_stack_files(settings)
    if removed:
        report(f"local files of stack {settings.stack}: removed ({', '.join(removed)})")
    leftovers = processes_of(settings.state_path.resolve())
    for pid, command in leftovers:
        report(f"left over: pid {pid}: {command}")
    return [command for _, command in leftovers]


def remove_stack_files(settings: Settings) -> list[str]:
    """Removes the stack's result cache and autoscaler timeline from the state folder; returns what was there. The
    stack's buckets are gone, and with them the labels the cache answered with. (Logs stay; instance folders go when
    the next local server starts.)"""
    removed = []
    for what, path in (("result cache", settings.result_cache_path), ("autoscaler timeline", settings.timeline_path)):
        if path.exists():
            path.unlink()
            removed.append(what)
    return removed


def stop_service(record: ServiceRecord) -> str:
    if not is_running(record):
        return "was not running"
    procs.terminate(record.pid, lambda: is_running(record), what=f"{record.name} (pid {record.pid})",
                    patience=STOP_TIMEOUT, group=True)
    return f"stopped (pid {record.pid})"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (its command line may not be final yet right after the fork)."""
    procs.reap(pid)
    return procs.is_alive(pid)


def processes_of(state_dir: Path) -> list[tuple[int, str]]:
    """Live processes whose command line names this state folder (workers, services, the local server), but for
    this process and those above it (the `hybrid local down` that asks, the shell or tool that runs it)."""
    found, askers = [], procs.ancestors(os.getpid())
    for pid in procs.pids():
        argv = procs.cmdline(pid)
        if pid not in askers and argv and str(state_dir) in "\0".join(argv) and procs.is_alive(pid):
            found.append((pid, " ".join(argv).strip()))
    return found


def status(settings: Settings) -> list[dict[str, object]]:
    """One row per local process: the local server, its runner, the services and every worker."""
    rows: list[dict[str, object]] = []
    info = emulator_status(settings.state_path)
    rows.append({"process": "local AWS server", "pid": info.pid if info else "", "state": "running" if info
                 else "stopped", "detail": info.url if info else ""})
    if info:
        alive = is_runner_process(info.runner_pid)
        rows.append({"process": "instance runner", "pid": info.runner_pid, "state": "running" if alive
                     else "stopped", "detail": ""})
    for name, record in read_records(settings).items():
        rows.append({"process": name, "pid": record.pid, "state": "running" if is_running(record) else "stopped",
                     "detail": web_url(settings) if name == "web" else record.log_path})
    for instance_id, pid in sorted(worker_processes(settings.state_path.resolve()).items()):
        rows.append({"process": "worker", "pid": pid, "state": "running", "detail": instance_id})
    return rows


def resources(settings: Settings) -> list[dict[str, Any]]:
    """The stack's AWS resources as `hybrid aws status` shows them; none while the local AWS server is down."""
    return build_aws_stack(settings).status() if emulator_status(settings.state_path) else []
