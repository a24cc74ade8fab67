"""Emulator instances become local worker processes: ``python -m hybrid.local.instances --state-dir DIR``.

The runner watches the local server's app-tier instances (tag ``hybrid:role=app-tier``, any stack) and keeps one
worker process per pending or running instance, started with that instance's id and its user-data settings. An
instance terminated through the API loses its process (SIGKILL, like a powered-off machine); a process that exits
on its own gets its instance terminated. Each worker logs to ``<state_dir>/instances/<instance id>/worker.log`` and
its pid is in ``pid`` beside it.

Workers are forked from the runner, which has imported the worker's code, ONNX Runtime, NumPy and PIL once
(``--spawn fork``, the default): a new instance serves within about a tenth of a second instead of paying 1-2 s
of interpreter start and imports, which 20 workers starting together on 2 cores turn into 10-15 s. On AWS the same
role is played by a baked AMI and a warm pool; EC2 boot times are not emulated. ``--spawn exec`` starts each worker
as a fresh ``hybrid worker`` process instead.

The runner freezes its objects out of the garbage collector before each fork (``gc.freeze``). Otherwise the
child's first full collection walks every object inherited from the runner, and writing their GC headers copies
much of the runner's heap: a new worker then spent 2.5-3x more CPU before serving (0.13-0.25 s instead of
0.05-0.08 s, ``benchmarks/bench_fork.py``), in the middle of the burst that made the autoscaler launch it.
"""
from __future__ import annotations

import argparse
import base64
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hybrid.aws.session import AwsClients, MappedClient, warm_service_models
from hybrid.core import procs
from hybrid.core.errors import HybridError, NotFoundError
from hybrid.core.localserver import emulator_dir
from hybrid.core.naming import ROLE_APP_TIER, ROLE_TAG
from hybrid.core.settings import load
from hybrid.local.awsserver.wakeup import Wakeups, wake
from hybrid.local.instance_folders import forget_pid, instance_folder, write_pid
from hybrid.local.model_cache import prepare_model_cache

log = logging.getLogger("hybrid.local.instances")
POLL_INTERVAL = 0.25  # without wake-ups
WOKEN_POLL_INTERVAL = 2.0  # with them (awsserver.wakeup): launches and terminations wake the runner at once;
# the poll only catches a worker that died without terminating its instance, and a lost wake-up
WATCHED_STATES = ("pending", "running")


@dataclass
class LocalInstanceRunner:
    ec2: MappedClient
    state_dir: Path
    spawn: Callable[[str, Path, Path, Path], subprocess.Popen] = field(default=None)  # type: ignore[assignment]
    prepare: Callable[[], None] = field(default=None)  # type: ignore[assignment]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    prepared: bool = False
    wakeups: Wakeups | None = None

    def __post_init__(self) -> None:
        self.spawn = self.spawn or spawn_worker
        self.prepare = self.prepare or prepare_model

    def tick(self) -> None:
        """One reconciliation: start, kill and reap so processes match live instances."""
        live = set(self._live_instance_ids())
        for instance_id in sorted(live - set(self.processes)):
            self._start(instance_id)
        for instance_id in sorted(set(self.processes) - live):
            self._kill(instance_id, "its instance was terminated")
        for instance_id, process in list(self.processes.items()):
            if process.poll() is not None:
                self._reap(instance_id, process.returncode)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except HybridError as exc:
                log.warning("instance runner tick failed: %s", exc)
            if not (self.wakeups and self.wakeups.enabled):
                stop.wait(POLL_INTERVAL)
            else:
                self.wakeups.wait(WOKEN_POLL_INTERVAL)
        self.shutdown()

    def shutdown(self) -> None:
        for instance_id in list(self.processes):
            self._kill(instance_id, "the runner is stopping")
        if self.wakeups is not None:
            self.wakeups.close()

    def _live_instance_ids(self) -> list[str]:
        filters = [{"Name": f"tag:{ROLE_TAG}", "Values": [ROLE_APP_TIER]},
                   {"Name": "instance-state-name", "Values": list(WATCHED_STATES)}]
        reservations = self.ec2.describe_instances(Filters=filters)["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    def _start(self, instance_id: str) -> None:
        if not self.prepared:
            self.prepare()
            self.prepared = True
        folder = instance_folder(self.state_dir, instance_id)
        folder.mkdir(parents=True, exist_ok=True)
        user_data = folder / "user-data.json"
        user_data.write_bytes(user_data_of(self.ec2, instance_id))
        self.processes[instance_id] = self.spawn(instance_id, user_data, folder / "worker.log", self.state_dir)
        write_pid(self.state_dir, instance_id, self.processes[instance_id].pid)
        log.info("instance %s: started worker pid %s", instance_id, self.processes[instance_id].pid)

    def _kill(self, instance_id: str, why: str) -> None:
        process = self.processes.pop(instance_id)
        if process.poll() is None:
            _kill_group(process.pid)
        process.wait()
        forget_pid(self.state_dir, instance_id)
        log.info("instance %s: worker pid %s killed (%s)", instance_id, process.pid, why)

    def _reap(self, instance_id: str, code: int) -> None:
        del self.processes[instance_id]
        forget_pid(self.state_dir, instance_id)
        log.info("instance %s: worker exited with code %s; terminating the instance", instance_id, code)
        try:
            self.ec2.terminate_instances(InstanceIds=[instance_id])
        except NotFoundError:
            pass


def user_data_of(ec2: MappedClient, instance_id: str) -> bytes:
    """The instance's user data (the workers' settings JSON), as cloud-init would read it at boot."""
    try:
        value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    except NotFoundError:
        return b"{}"
    encoded = value.get("UserData", {}).get("Value", "")
    return base64.b64decode(encoded) if encoded else b"{}"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        os.kill(pid, signal.SIGKILL)  # forked a moment ago: not yet the leader of its own group


class ForkedWorker:
    """A forked worker, with the part of ``subprocess.Popen``'s interface the runner uses."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode


_PRELOADED: dict[str, object] = {}


def preload_worker_code() -> None:
    """Imports what every worker needs (PIL's format plugins included: ``warm_decoder``) and loads the model once
    (ONNX Runtime, one thread: no thread pool is started), so a forked worker serves at once and shares the model's
    memory with its siblings."""
    # imported here, not at the top: they load NumPy, which reads the BLAS thread variables main() sets only once,
    # when it loads
    from app_tier.classifier import load_classifier
    from hybrid.core.decoding import warm_decoder
    import app_tier.service  # noqa: F401

    prepare_model()
    _PRELOADED["classifier"] = load_classifier("onnx", threads=1)
    warm_decoder()
    warm_service_models()
    gc.collect()  # the garbage of the imports goes now, not frozen into every worker


def inherited_classifier(settings: object) -> object | None:
    """The runner's model, when the worker's settings ask for that same one."""
    worker = settings.worker  # type: ignore[attr-defined]
    return _PRELOADED.get("classifier") if worker.runtime in ("auto", "onnx") and worker.threads == 1 else None


def fork_worker(instance_id: str, user_data: Path, log_path: Path, state_dir: Path) -> ForkedWorker:
    """Forks a worker for one instance; the child writes to its own log and never returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()  # see the module's notes: the child's collections skip what it inherits
    pid = os.fork()
    if pid:
        return ForkedWorker(pid)
    code = 1
    try:
        _become_worker_process(log_path)
        from app_tier.service import run_worker  # preloaded in fork mode; see preload_worker_code for why it is lazy

        settings = load(None, {}, {"state_dir": str(state_dir)}, user_data=user_data)
        run_worker(settings, instance_id, inherited_classifier(settings))
        code = 0
    except BaseException:  # noqa: BLE001 - the child must never return into the runner's loop
        logging.getLogger("app_tier").exception("worker %s failed", instance_id)
    finally:
        logging.shutdown()
        os._exit(code)


def _become_worker_process(log_path: Path) -> None:
    os.setsid()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    logging.getLogger("app_tier").setLevel(logging.INFO)


def prepare_model() -> None:
    """Exports the ONNX model once, so that workers start from the cache instead of each importing torch."""
    log.info("preparing the model cache before the first worker starts")
    prepare_model_cache(check=False)


def spawn_worker(instance_id: str, user_data: Path, log_path: Path, state_dir: Path) -> subprocess.Popen:
    """``hybrid worker`` for one instance: its user data as settings, this emulator's state folder, one thread."""
    command = procs.module_command("hybrid", "--state-dir", str(state_dir), "worker", "--instance-id", instance_id,
                                   "--user-data", str(user_data))
    return procs.spawn_logged(command, log_path, {"OMP_NUM_THREADS": "1"})


def stop_soon(stop: threading.Event, emulator_folder: Path) -> None:
    """Asks the runner to stop, and wakes it: it may be waiting up to ``WOKEN_POLL_INTERVAL`` for a wake-up."""
    stop.set()
    wake(emulator_folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", required=True, help="the emulator's state folder")
    parser.add_argument("--spawn", choices=("fork", "exec"), default="fork",
                        help="fork workers from this preloaded process (fast), or exec `hybrid worker` for each")
    args = parser.parse_args(argv)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"  # before NumPy loads: no BLAS threads to lose across fork()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load(None, {}, {"state_dir": str(Path(args.state_dir).resolve())})
    spawn = fork_worker if args.spawn == "fork" else spawn_worker
    if args.spawn == "fork":
        preload_worker_code()
    state_dir = Path(args.state_dir).resolve()
    folder = emulator_dir(state_dir)
    runner = LocalInstanceRunner(AwsClients(settings).ec2, state_dir, spawn, prepared=args.spawn == "fork",
                                 wakeups=Wakeups(folder))  # preloading prepared the model
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_soon(stop, folder))
    log.info("watching app-tier instances on the local server")
    runner.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
