"""Emulator instances become local worker processes: ``python -m hybrid.emulator.instances --state-dir DIR``.

The runner watches the local server's app-tier instances (tag ``hybrid:role=app-tier``, any stack) and keeps one
``hybrid worker`` process per pending or running instance, started with that instance's id and its user-data
settings. An instance terminated through the API loses its process (SIGKILL, like a powered-off machine); a
process that exits on its own gets its instance terminated. Each worker logs to
``<state_dir>/instances/<instance id>/worker.log``.
"""
from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hybrid.aws.session import MappedClient
from hybrid.errors import HybridError, NotFoundError
from hybrid.naming import ROLE_APP_TIER, ROLE_TAG

log = logging.getLogger("hybrid.emulator.instances")
POLL_INTERVAL = 0.25
WATCHED_STATES = ("pending", "running")


@dataclass
class LocalInstanceRunner:
    ec2: MappedClient
    state_dir: Path
    spawn: Callable[[str, Path, Path, Path], subprocess.Popen] = field(default=None)  # type: ignore[assignment]
    prepare: Callable[[], None] = field(default=None)  # type: ignore[assignment]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    prepared: bool = False

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
            stop.wait(POLL_INTERVAL)
        self.shutdown()

    def shutdown(self) -> None:
        for instance_id in list(self.processes):
            self._kill(instance_id, "the runner is stopping")

    def _live_instance_ids(self) -> list[str]:
        filters = [{"Name": f"tag:{ROLE_TAG}", "Values": [ROLE_APP_TIER]},
                   {"Name": "instance-state-name", "Values": list(WATCHED_STATES)}]
        reservations = self.ec2.describe_instances(Filters=filters)["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    def _start(self, instance_id: str) -> None:
        if not self.prepared:
            self.prepare()
            self.prepared = True
        folder = self.state_dir / "instances" / instance_id
        folder.mkdir(parents=True, exist_ok=True)
        user_data = folder / "user-data.json"
        user_data.write_bytes(self._user_data(instance_id))
        self.processes[instance_id] = self.spawn(instance_id, user_data, folder / "worker.log", self.state_dir)
        log.info("instance %s: started worker pid %s", instance_id, self.processes[instance_id].pid)

    def _user_data(self, instance_id: str) -> bytes:
        try:
            value = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        except NotFoundError:
            return b"{}"
        encoded = value.get("UserData", {}).get("Value", "")
        return base64.b64decode(encoded) if encoded else b"{}"

    def _kill(self, instance_id: str, why: str) -> None:
        process = self.processes.pop(instance_id)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.info("instance %s: worker pid %s killed (%s)", instance_id, process.pid, why)

    def _reap(self, instance_id: str, code: int) -> None:
        del self.processes[instance_id]
        log.info("instance %s: worker exited with code %s; terminating the instance", instance_id, code)
        try:
            self.ec2.terminate_instances(InstanceIds=[instance_id])
        except NotFoundError:
            pass


def prepare_model() -> None:
    """Exports the ONNX model once, so that workers start from the cache instead of each importing torch."""
    log.info("preparing the model cache before the first worker starts")
    subprocess.run([sys.executable, "-m", "hybrid", "models", "prepare"], check=False, stdin=subprocess.DEVNULL)


def spawn_worker(instance_id: str, user_data: Path, log_path: Path, state_dir: Path) -> subprocess.Popen:
    """``hybrid worker`` for one instance: its user data as settings, this emulator's state folder, one thread."""
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log_file:
        return subprocess.Popen([sys.executable, "-m", "hybrid", "--state-dir", str(state_dir), "worker",
                                 "--instance-id", instance_id,
                                 "--user-data", str(user_data)], stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", required=True, help="the emulator's state folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hybrid.aws.session import AwsClients
    from hybrid.settings import load

    settings = load(None, {}, {"state_dir": str(Path(args.state_dir).resolve())})
    runner = LocalInstanceRunner(AwsClients(settings).ec2, Path(args.state_dir).resolve())
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("watching app-tier instances on the local server")
    runner.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
