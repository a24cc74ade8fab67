"""Emulator instances become local worker processes or local VMs: ``python -m hybrid.local.instances --state-dir DIR``.

The runner watches the local server's app-tier instances and bake builders (tag ``hybrid:role`` ``app-tier`` or
``bake``, any stack) and gives each pending or running one what stands for its machine:

- a local worker process (every app-tier instance, unless tagged as below): one per instance, started with that
  instance's id and its user-data settings. An instance terminated through the API loses its process (SIGKILL, like
  a powered-off machine); a process that exits on its own gets its instance terminated. Each worker logs to
  ``<state_dir>/instances/<instance id>/worker.log`` and its pid is in ``pid`` beside it.
- a QEMU VM (``hybrid.local.machines``) for a builder (``hybrid:role=bake``), and for an app-tier instance tagged
  ``hybrid:local-machine=vm``: it boots the instance's image (a builder whose AMI has no disk boots the base image)
  with the instance's user data on a config drive, once. A VM whose instance is terminated (or stopped: its guest
  is asked to shut down, its disk kept for the next start) gets ``VM_GRACE`` seconds to power off, then is killed.
  A guest that powers off while its instance is live ends it as EC2 does: TerminateInstances when
  ``InstanceInitiatedShutdownBehavior`` is ``terminate``, else StopInstances. ``ended`` in the instance's folder
  says how the VM ended; the runner kills its VMs when it stops. A builder whose recipe digest is in the image
  cache boots nothing: it is restored from the cache, ready at once.

Workers are forked from the runner, which has imported the worker's code, ONNX Runtime, NumPy and PIL once
(``--spawn fork``, the default): a new instance serves within about a tenth of a second instead of paying 1-2 s
of interpreter start and imports, which 20 workers starting together on 2 cores turn into 10-15 s. On AWS the same
role is played by a baked AMI and a warm pool; EC2 boot times are not emulated for worker processes (a VM boots
for real: about a minute under TCG). ``--spawn exec`` starts each worker as a fresh ``hybrid worker`` process
instead.

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

from hybrid.aws.compute import tags_of
from hybrid.aws.session import AwsClients, MappedClient, warm_service_models
from hybrid.core import procs
from hybrid.core.clock import Clock, SystemClock
from hybrid.core.errors import EmulatorNotRunning, HybridError, NotFoundError
from hybrid.core.localserver import emulator_dir, endpoint_url, read_record
from hybrid.core.logs import TEXT_FORMAT
from hybrid.core.naming import LOCAL_MACHINE_TAG, LOCAL_MACHINE_VM, RECIPE_DIGEST_TAG, ROLE_APP_TIER, ROLE_TAG
from hybrid.core.settings import load
from hybrid.core.wait import Poll, wait_for
from hybrid.local import machines
from hybrid.local.awsserver.wakeup import Wakeups, wake
from hybrid.local.instance_folders import forget_pid, instance_folder, write_pid
from hybrid.local.model_cache import prepare_model_cache
from hybrid.machine_images.bake import BAKE_ROLE_TAG, ROLE_BAKE

log = logging.getLogger("hybrid.local.instances")
POLL_INTERVAL = 0.25  # without wake-ups
WOKEN_POLL_INTERVAL = 2.0  # with them (awsserver.wakeup): launches and terminations wake the runner at once;
# the poll only catches a worker that died without terminating its instance, and a lost wake-up
WATCHED_STATES = ("pending", "running")
STOPPED_STATES = ("stopping", "stopped")
WATCHED_ROLES = (ROLE_APP_TIER, ROLE_BAKE)
SERVER_TIMEOUT = 90.0  # seconds the runner waits for its server to be recorded (it starts beside it)
VM_GRACE = 60.0  # seconds a VM may run on once its instance is terminated (or stopped), to power itself off
PROCESS, VM = "process", "vm"
Instance = dict
BootVm = Callable[[Instance], "subprocess.Popen | None"]  # QEMU, or None: nothing runs (restored from the cache)


def how_it_runs(instance: Instance) -> str:
    """``vm`` for a builder and for an app-tier instance tagged ``hybrid:local-machine=vm``, else ``process``."""
    tags = tags_of(instance)
    if tags.get(ROLE_TAG) == ROLE_BAKE:
        return VM
    if tags.get(ROLE_TAG) == ROLE_APP_TIER and tags.get(LOCAL_MACHINE_TAG) == LOCAL_MACHINE_VM:
        return VM
    return PROCESS


def how_qemu_ended(code: int | None) -> str:
    """``ended``'s line for a QEMU that exited by itself: 0 when the guest powered off (``-no-reboot``)."""
    return "guest powered off" if code == 0 else f"killed: QEMU exited with code {code}"


def shutdown_action(behavior: str) -> str:
    """EC2's rule for a guest that powers itself off: ``terminate`` if the instance says so, else ``stop``."""
    return "terminate" if behavior == "terminate" else "stop"


@dataclass
class LocalInstanceRunner:
    ec2: MappedClient
    state_dir: Path
    spawn: Callable[[str, Path, Path, Path], subprocess.Popen] = field(default=None)  # type: ignore[assignment]
    prepare: Callable[[], None] = field(default=None)  # type: ignore[assignment]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    prepared: bool = False
    wakeups: Wakeups | None = None
    boot_vm: BootVm = field(default=None)  # type: ignore[assignment]
    clock: Clock = field(default_factory=SystemClock)
    vm_grace: float = VM_GRACE
    vms: dict[str, subprocess.Popen | None] = field(default_factory=dict)  # QEMU by instance (None: from cache)
    ending: dict[str, float] = field(default_factory=dict)  # VMs whose instance is no longer live: since when
    ended: set[str] = field(default_factory=set)  # VMs gone while their instance was live: not booted again until
    # the instance has stopped (a StartInstances boots it again)

    def __post_init__(self) -> None:
        self.spawn = self.spawn or spawn_worker
        self.prepare = self.prepare or prepare_model
        self.boot_vm = self.boot_vm or (lambda instance: boot_instance(self.ec2, self.state_dir, instance))

    def tick(self) -> None:
        """One reconciliation: start, kill and reap so processes and VMs match live instances."""
        live = self._live_instances()
        booted = {instance_id: instance for instance_id, instance in live.items() if how_it_runs(instance) == VM}
        self._reconcile_processes(set(live) - set(booted))
        self._reconcile_machines(booted)

    def _reconcile_processes(self, live: set[str]) -> None:
        for instance_id in sorted(live - set(self.processes)):
            self._start(instance_id)
        for instance_id in sorted(set(self.processes) - live):
            self._kill(instance_id, "its instance was terminated")
        for instance_id, process in list(self.processes.items()):
            if process.poll() is not None:
                self._reap(instance_id, process.returncode)

    def _reconcile_machines(self, live: dict[str, Instance]) -> None:
        self.ended &= set(live)
        for instance_id in sorted(set(live) - set(self.vms) - self.ended):
            self._start_vm(live[instance_id])
        for instance_id in sorted(self.vms):
            if instance_id not in live:
                self._end_vm_of_gone_instance(instance_id)
            elif self._vm_exited(instance_id):
                self._vm_ended_by_itself(instance_id)

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
        for instance_id in list(self.vms):
            self._kill_vm(instance_id, "the runner is stopping")
        for instance_id in list(self.processes):
            self._kill(instance_id, "the runner is stopping")
        if self.wakeups is not None:
            self.wakeups.close()

    def _live_instances(self) -> dict[str, Instance]:
        filters = [{"Name": f"tag:{ROLE_TAG}", "Values": list(WATCHED_ROLES)},
                   {"Name": "instance-state-name", "Values": list(WATCHED_STATES)}]
        reservations = self.ec2.describe_instances(Filters=filters)["Reservations"]
        return {i["InstanceId"]: i for r in reservations for i in r["Instances"]}

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
        self._end_instance(instance_id, "terminate")

    def _start_vm(self, instance: Instance) -> None:
        instance_id = instance["InstanceId"]
        try:
            self.vms[instance_id] = self.boot_vm(instance)
        except (HybridError, OSError, subprocess.SubprocessError) as exc:
            self._cannot_boot(instance_id, str(exc))

    def _cannot_boot(self, instance_id: str, why: str) -> None:
        log.warning("instance %s: its VM cannot boot (%s); terminating the instance", instance_id, why)
        folder = instance_folder(self.state_dir, instance_id)
        folder.mkdir(parents=True, exist_ok=True)
        machines.append_console(folder, f"hybrid: the VM cannot boot: {why}")
        self.ended.add(instance_id)
        self._end_instance(instance_id, "terminate")

    def _vm_exited(self, instance_id: str) -> bool:
        process = self.vms[instance_id]
        return process is not None and process.poll() is not None

    def _vm_ended_by_itself(self, instance_id: str) -> None:
        """QEMU exits 0 when the guest powers off (``-no-reboot``); any other end is QEMU's failure."""
        code = self.vms[instance_id].returncode  # type: ignore[union-attr]
        if code == 0:
            self._guest_powered_off(instance_id)
        else:
            self._qemu_failed(instance_id, code)

    def _qemu_failed(self, instance_id: str, code: int) -> None:
        folder = instance_folder(self.state_dir, instance_id)
        said = " / ".join(procs.log_tail(folder / machines.QEMU_LOG, 3).splitlines())  # ``ended`` is one line
        why = f"QEMU exited with code {code}: {said}"
        self._forget_vm(instance_id, f"killed: {why}")
        self._cannot_boot(instance_id, why)

    def _guest_powered_off(self, instance_id: str) -> None:
        self._forget_vm(instance_id, "guest powered off")
        self.ended.add(instance_id)
        action = shutdown_action(self._shutdown_behavior(instance_id))
        log.info("instance %s: the guest powered off; %s the instance", instance_id,
                 "terminating" if action == "terminate" else "stopping")
        self._end_instance(instance_id, action)

    def _end_vm_of_gone_instance(self, instance_id: str) -> None:
        """The instance is terminated or stopped: the VM gets ``vm_grace`` seconds to power off, then is killed. A
        stopped instance's guest is asked to shut down first (EC2 does; its disk is kept for the next start)."""
        if self.vms[instance_id] is None:
            del self.vms[instance_id]  # restored from the cache: nothing ran
        elif self._vm_exited(instance_id):
            self._forget_vm(instance_id, how_qemu_ended(self.vms[instance_id].returncode))  # type: ignore[union-attr]
        elif instance_id not in self.ending:
            self.ending[instance_id] = self.clock.now()
            if self._state_of(instance_id) in STOPPED_STATES:
                machines.request_shutdown(instance_folder(self.state_dir, instance_id))
        elif self.clock.now() - self.ending[instance_id] >= self.vm_grace:
            self._kill_vm(instance_id, f"its instance is no longer running and the guest still ran "
                                       f"{self.vm_grace:g} s later")

    def _state_of(self, instance_id: str) -> str:
        try:
            reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except NotFoundError:
            return "terminated"
        found = [i["State"]["Name"] for r in reservations for i in r["Instances"]]
        return found[0] if found else "terminated"

    def _kill_vm(self, instance_id: str, why: str) -> None:
        process = self.vms.get(instance_id)
        if process is not None and process.poll() is None:
            stop_machine(instance_folder(self.state_dir, instance_id), process)
            self._forget_vm(instance_id, f"killed: {why}")
        elif process is not None:
            self._forget_vm(instance_id, how_qemu_ended(process.returncode))
        else:
            self.vms.pop(instance_id, None)

    def _forget_vm(self, instance_id: str, ended: str) -> None:
        process = self.vms.pop(instance_id)
        self.ending.pop(instance_id, None)
        machines.write_ended(instance_folder(self.state_dir, instance_id), ended)
        log.info("instance %s: VM pid %s ended (%s)", instance_id, process.pid if process else 0, ended)

    def _shutdown_behavior(self, instance_id: str) -> str:
        try:
            value = self.ec2.describe_instance_attribute(InstanceId=instance_id,
                                                         Attribute="instanceInitiatedShutdownBehavior")
        except NotFoundError:
            return "stop"
        return value.get("InstanceInitiatedShutdownBehavior", {}).get("Value", "stop")

    def _end_instance(self, instance_id: str, action: str) -> None:
        try:
            if action == "terminate":
                self.ec2.terminate_instances(InstanceIds=[instance_id])
            else:
                self.ec2.stop_instances(InstanceIds=[instance_id])
        except NotFoundError:
            pass


def boot_instance(ec2: MappedClient, state_dir: Path, instance: Instance) -> subprocess.Popen | None:
    """Boots the instance's VM; None when a builder is restored from the image cache instead (nothing runs)."""
    tags, instance_id, image_id = tags_of(instance), instance["InstanceId"], instance.get("ImageId", "")
    folder = instance_folder(state_dir, instance_id)
    if tags.get(ROLE_TAG) == ROLE_BAKE:
        digest = tags.get(RECIPE_DIGEST_TAG, "")
        entry = machines.cached_image(digest)
        if entry is not None:
            machines.restore_from_cache(folder, entry, image_id, tags.get(BAKE_ROLE_TAG, ""), digest)
            log.info("instance %s: builder restored from the image cache %s", instance_id, entry)
            return None
    machines.require_tools()
    machine = machines.Machine(instance_id, image_id, image_to_boot(state_dir, instance),
                               machines.memory_for(instance.get("InstanceType", "")), server_port(state_dir),
                               procs.free_port(), machines.choose_accel())
    return machines.boot(folder, machine, raw_user_data(ec2, instance_id), public_keys_of(ec2, instance))


def image_to_boot(state_dir: Path, instance: Instance) -> machines.BootImage:
    """A builder boots its AMI's disk, else the base image; an app-tier VM its AMI's disk, which must be stored."""
    image_id = instance.get("ImageId", "")
    if tags_of(instance).get(ROLE_TAG) == ROLE_BAKE:
        return machines.builder_image(state_dir, image_id)
    image = machines.stored_image(state_dir, image_id)
    if image is None:
        raise HybridError(f"its image {image_id} has no disk on the local server (only an image created from a "
                          "local VM, e.g. by `hybrid image bake`, has one)")
    return image


def server_port(state_dir: Path) -> int:
    """The local AWS server's port on 127.0.0.1, which a VM reaches as http://10.0.2.100/."""
    record = read_record(state_dir)
    if record is None:
        raise HybridError(f"no local AWS server is recorded in {emulator_dir(state_dir)}: a VM would reach nothing")
    return record.port


def stop_machine(folder: Path, process: subprocess.Popen) -> None:
    """Ends a VM the runner started: QMP quit and SIGKILL (``machines.kill``), then makes sure and reaps it."""
    try:
        machines.kill(folder)
    except HybridError as exc:
        log.warning("VM of %s: %s", folder.name, exc)
    if process.poll() is None:
        _kill_group(process.pid)
    process.wait()


def public_keys_of(ec2: MappedClient, instance: Instance) -> dict[str, str]:
    """The instance's key pair as cloud-init's meta data names it, when the server knows the public key."""
    name = instance.get("KeyName", "")
    if not name:
        return {}
    try:
        pairs = ec2.describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"]
    except HybridError:
        return {}
    public_key = (pairs[0].get("PublicKey") or "").strip() if pairs else ""
    return {name: public_key} if public_key else {}


def raw_user_data(ec2: MappedClient, instance_id: str) -> bytes:
    """The instance's user data bytes, as cloud-init would read them at boot; empty when it has none."""
    try:
        value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    except NotFoundError:
        return b""
    encoded = value.get("UserData", {}).get("Value", "")
    return base64.b64decode(encoded) if encoded else b""


def user_data_of(ec2: MappedClient, instance_id: str) -> bytes:
    """A worker's settings JSON: the instance's user data, ``{}`` when it has none."""
    return raw_user_data(ec2, instance_id) or b"{}"


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

        settings = load(None, {}, own_server(state_dir), user_data=user_data)
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


def own_server(state_dir: Path) -> dict[str, str]:
    """What a local worker process's settings take from its runner, over its user data: the runner's state folder,
    and so this local server as its AWS endpoint. The launcher may have reached the server under another address (a
    web-tier server on the local OpenStack reaches it through the fixture's relay), which this process may not."""
    return {"state_dir": str(state_dir), "aws.endpoint_url": ""}


def spawn_worker(instance_id: str, user_data: Path, log_path: Path, state_dir: Path) -> subprocess.Popen:
    """``hybrid worker`` for one instance: its user data as settings, this emulator's state folder and endpoint
    (``own_server``), one thread."""
    command = procs.module_command("hybrid", "--state-dir", str(state_dir), "--set", "aws.endpoint_url=", "worker",
                                   "--instance-id", instance_id, "--user-data", str(user_data))
    return procs.spawn_logged(command, log_path, {"OMP_NUM_THREADS": "1"})


def wait_for_server(state_dir: Path) -> str:
    """This folder's local AWS server's URL, once it is recorded: the runner is started beside the server and loads
    the worker's code while the server starts, so it may be ready first."""
    def recorded() -> Poll[str]:
        try:
            return Poll(endpoint_url(state_dir), done=True)
        except EmulatorNotRunning:
            return Poll("", done=False, state="starting")

    return wait_for("the local AWS server to be recorded", recorded, timeout=SERVER_TIMEOUT, interval=0.1)


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
    logging.basicConfig(level=logging.INFO, format=TEXT_FORMAT)
    settings = load(None, {}, {"state_dir": str(Path(args.state_dir).resolve())})
    spawn = fork_worker if args.spawn == "fork" else spawn_worker
    if args.spawn == "fork":
        preload_worker_code()
    state_dir = Path(args.state_dir).resolve()
    folder = emulator_dir(state_dir)
    wait_for_server(state_dir)
    runner = LocalInstanceRunner(AwsClients(settings).ec2, state_dir, spawn, prepared=args.spawn == "fork",
                                 wakeups=Wakeups(folder))  # preloading prepared the model
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_soon(stop, folder))
    log.info("watching app-tier instances and bake builders on the local server")
    runner.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
