"""One VM of the local AWS server: a QEMU machine that boots a machine image's disk, with its instance's user data on
a config drive, in the instance's folder (``hybrid.local.instance_folders``). The local instance runner
(``hybrid.local.instances``) decides which instances boot; this module boots them and ends them.

The instance's folder::

    console.log   the serial console, appended from boot (the server's GetConsoleOutput reads it)
    disk.qcow2    the writable disk: a qcow2 overlay whose backing file is the image's disk
    config.iso    the config drive (label config-2): openstack/latest/meta_data.json and user_data, read by cloud-init
    qmp.sock      QEMU's control socket (QMP)
    machine.json  {"kind": "vm", "pid", "image_id", "disk", "ssh_port", "started_at"[, "from_cache"], "accel"}
    ended         one line once the VM is gone: "guest powered off" or "killed: <why>"
    qemu.log      QEMU's own messages

The network is QEMU's user mode with ``restrict=on``: the guest reaches only what is forwarded, ``http://10.0.2.100/``
(``guestfwd`` through socat to the local AWS server on 127.0.0.1), and the host reaches its SSH port through
``127.0.0.1:<ssh_port>``. Nothing else, in either direction: the containment rule of these machines.

Images: an AMI with bytes is ``image_store(state_dir)/<ami id>/`` (``disk.qcow2``, ``vmlinuz``, ``initrd.img``,
``image.json`` with the kernel command line). A builder whose AMI has none boots the base image
(``devstack/base_image.sh``), and a builder whose recipe was baked before boots nothing (``restore_from_cache``).
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hybrid.core import procs
from hybrid.core.errors import HybridError, WaitTimeout
from hybrid.core.localserver import (GUEST_AWS_ADDRESS, GUEST_AWS_ENDPOINT, GUEST_AWS_PORT, image_cache_dir,
                                     image_store)
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for
from hybrid.machine_images.recipes import READY_MARKER

log = logging.getLogger(__name__)
GUEST_STATE_DIR = "/var/lib/hybrid"  # the images' state folder (the units' HYBRID_STATE_DIR)
QEMU = "qemu-system-x86_64"
# TCG's default CPU (qemu64) lacks SSE4.2 and POPCNT, which NumPy's wheels require (x86-64-v2): the worker died of
# "Illegal instruction" in the first bake. "max" is every feature TCG emulates (AVX2 since QEMU 7.2), as an EC2 CPU has.
TCG_CPU = "max"
TOOLS = (QEMU, "qemu-img", "genisoimage", "socat")
HYPERVISOR_FILE = Path("/var/lib/minicloud/hypervisor")  # written by devstack/minicloud.sh: kvm where KVM boots
BASE_IMAGE_SCRIPT = Path(__file__).resolve().parents[2] / "devstack" / "base_image.sh"
BASE_CMDLINE = "root=/dev/vda rw console=tty0 console=ttyS0"  # the base image's kernel command line
MEMORY_MIB = {"t2.micro": 1024, "t3.micro": 1024, "t2.small": 2048, "t3.small": 2048}
DEFAULT_MEMORY_MIB = 1024
CONSOLE, DISK, CONFIG_DRIVE, QMP_SOCKET = "console.log", "disk.qcow2", "config.iso", "qmp.sock"
MACHINE_RECORD, ENDED, QEMU_LOG = "machine.json", "ended", "qemu.log"
QMP_TIMEOUT = 5.0
POWER_BUTTON = {"execute": "system_powerdown"}
CTRL_ALT_DELETE = {"execute": "send-key", "arguments": {"keys": [{"type": "qcode", "data": key}
                                                                 for key in ("ctrl", "alt", "delete")]}}
QUIT = {"execute": "quit"}
KILL_PATIENCE = 10.0
PR_SET_PDEATHSIG = 1  # prctl(2): the signal the kernel sends a child when the thread that started it ends
TOOL_TIMEOUT = 120.0
BASE_BUILD_TIMEOUT = 1800.0


@dataclass(frozen=True)
class BootImage:
    """A machine image's boot files: ``disk.qcow2``, ``vmlinuz`` and ``initrd.img`` in ``folder``."""

    folder: Path
    cmdline: str

    @property
    def disk(self) -> Path:
        return self.folder / DISK

    @property
    def kernel(self) -> Path:
        return self.folder / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.folder / "initrd.img"


@dataclass(frozen=True)
class Machine:
    """What one VM boots: its instance, the image, its memory, the local AWS server's port and the host's SSH port."""

    instance_id: str
    image_id: str
    image: BootImage
    memory_mib: int
    server_port: int
    ssh_port: int
    accel: str = "tcg"


# ---------------------------------------------------------------- choices

def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def require_tools() -> None:
    """A ``HybridError`` naming what is missing of QEMU, qemu-img, genisoimage and socat."""
    missing = missing_tools()
    if missing:
        raise HybridError(f"a local VM needs {', '.join(missing)}, which this machine lacks: "
                          "`devstack/minicloud.sh install` installs them")


def choose_accel(hypervisor_file: Path = HYPERVISOR_FILE) -> str:
    """``kvm`` only where ``devstack/minicloud.sh``'s probe boot found that KVM runs a standard guest (the file's
    first line says ``kvm``), else ``tcg``: a /dev/kvm alone proves nothing (a nested PVM host has one and boots no
    Debian kernel)."""
    try:
        first = hypervisor_file.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return "tcg"
    return "kvm" if first == "kvm" else "tcg"


def memory_for(instance_type: str) -> int:
    """MiB of guest memory for an EC2 instance type (1024 for a type not listed)."""
    return MEMORY_MIB.get(instance_type, DEFAULT_MEMORY_MIB)


# ---------------------------------------------------------------- images

def image_of(folder: Path) -> BootImage:
    """The boot files of an image folder; its kernel command line from ``image.json``, else the base image's."""
    try:
        cmdline = json.loads((folder / "image.json").read_text()).get("cmdline") or BASE_CMDLINE
    except (OSError, ValueError, AttributeError):
        cmdline = BASE_CMDLINE
    return BootImage(folder, cmdline)


def stored_image(state_dir: Path, image_id: str) -> BootImage | None:
    """The AMI's disk in the local server's image store, or None when the AMI has no bytes."""
    folder = image_store(state_dir) / image_id
    return image_of(folder) if image_id and (folder / DISK).is_file() else None


def builder_image(state_dir: Path, image_id: str) -> BootImage:
    """What a builder boots: its AMI's disk when the store has it, else the base image."""
    return stored_image(state_dir, image_id) or base_image()


def base_image() -> BootImage:
    """The base image (``devstack/base_image.sh path``), built first when it is not there yet."""
    folder = _base_image_script("path")
    if not folder:
        log.info("the base image is not built yet: building it (devstack/base_image.sh build, about a minute)")
        folder = _base_image_script("build", timeout=BASE_BUILD_TIMEOUT)
    if not folder:
        raise HybridError("no base image: `devstack/base_image.sh build` failed (see the runner's log)")
    return BootImage(Path(folder), BASE_CMDLINE)


def _base_image_script(command: str, timeout: float = TOOL_TIMEOUT) -> str:
    """The folder the script prints (its last line), or "" when it prints none."""
    if not BASE_IMAGE_SCRIPT.is_file():
        raise HybridError(f"no base image script at {BASE_IMAGE_SCRIPT}: a local VM needs this project's checkout")
    done = subprocess.run(["bash", str(BASE_IMAGE_SCRIPT), command], capture_output=True, text=True, timeout=timeout)
    if done.returncode and command == "build":
        log.warning("devstack/base_image.sh build failed: %s", done.stderr.strip()[-2000:])
    lines = done.stdout.strip().splitlines()
    return lines[-1] if done.returncode == 0 and lines else ""


def cached_image(digest: str) -> Path | None:
    """The image cache's entry of a recipe digest, when it holds a disk."""
    entry = image_cache_dir() / digest
    return entry if digest and (entry / DISK).is_file() else None


# ---------------------------------------------------------------- the folder's files

def meta_data(instance_id: str, public_keys: dict[str, str]) -> dict:
    """The config drive's ``openstack/latest/meta_data.json``: cloud-init's instance id is the EC2 instance id."""
    data = {"uuid": instance_id, "hostname": instance_id, "name": instance_id, "launch_index": 0,
            "availability_zone": "local"}
    return {**data, "public_keys": dict(public_keys)} if public_keys else data


def write_config_drive(folder: Path, meta: dict, user_data: bytes) -> Path:
    """``config.iso``: an ISO 9660 file system labelled config-2, as OpenStack's config drive."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".config-drive.") as root:
        latest = Path(root) / "openstack" / "latest"
        latest.mkdir(parents=True)
        (latest / "meta_data.json").write_text(json.dumps(meta))
        if user_data:
            (latest / "user_data").write_bytes(user_data)
        _run_tool(["genisoimage", "-quiet", "-V", "config-2", "-J", "-R", "-o", str(folder / CONFIG_DRIVE), root])
    return folder / CONFIG_DRIVE


def create_overlay(folder: Path, backing: Path) -> Path:
    """``disk.qcow2`` on the image's disk. An overlay already there is kept: a stopped instance keeps its disk."""
    disk = folder / DISK
    if not disk.exists():
        _run_tool(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing.resolve()), str(disk)])
    return disk


def _run_tool(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if done.returncode:
        raise HybridError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def write_record(folder: Path, record: dict) -> None:
    (folder / MACHINE_RECORD).write_text(json.dumps(record))


def read_record(folder: Path) -> dict | None:
    """``machine.json``, or None when the instance never had a VM."""
    try:
        return json.loads((folder / MACHINE_RECORD).read_text())
    except (OSError, ValueError):
        return None


def write_ended(folder: Path, why: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ENDED).write_text(why + "\n")


def append_console(folder: Path, line: str) -> None:
    """A line on the console, as the machine's own output would appear (the runner's notes, a cache restore)."""
    with open(folder / CONSOLE, "a") as console:
        console.write(line + "\n")


# ---------------------------------------------------------------- booting

def network_options(server_port: int, ssh_port: int) -> str:
    """User-mode networking that forwards only the local AWS server (to the guest) and SSH (from the host)."""
    to_server = f"guestfwd=tcp:{GUEST_AWS_ADDRESS}:{GUEST_AWS_PORT}-cmd:socat STDIO TCP:127.0.0.1:{server_port}"
    return f"user,id=n0,restrict=on,{to_server},hostfwd=tcp:127.0.0.1:{ssh_port}-:22"


def qemu_command(machine: Machine) -> list[str]:
    """QEMU's command line, run in the instance's folder (its files by their short names)."""
    image = machine.image
    cpu = ["-cpu", "host" if machine.accel == "kvm" else TCG_CPU]
    return [QEMU, "-accel", machine.accel, *cpu, "-m", str(machine.memory_mib), "-smp", "1",
            "-display", "none", "-no-reboot",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", image.cmdline,
            "-drive", f"file={DISK},if=virtio,format=qcow2,discard=unmap,detect-zeroes=unmap",
            "-drive", f"file={CONFIG_DRIVE},if=virtio,format=raw,readonly=on",
            "-chardev", f"file,id=console,path={CONSOLE},append=on", "-serial", "chardev:console",
            "-qmp", f"unix:{QMP_SOCKET},server=on,wait=off",
            "-netdev", network_options(machine.server_port, machine.ssh_port),
            "-device", "virtio-net-pci,netdev=n0"]


def boot(folder: Path, machine: Machine, user_data: bytes, public_keys: dict[str, str]) -> subprocess.Popen:
    """Starts the VM: config drive, overlay, QEMU; records it in ``machine.json``. Returns QEMU's process."""
    require_tools()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ENDED).unlink(missing_ok=True)
    write_config_drive(folder, meta_data(machine.instance_id, public_keys), user_data)
    disk = create_overlay(folder, machine.image.disk)
    process = start_qemu(folder, qemu_command(machine))
    write_record(folder, {"kind": "vm", "pid": process.pid, "image_id": machine.image_id, "disk": str(disk),
                          "ssh_port": machine.ssh_port, "started_at": time.time(), "accel": machine.accel})
    log.info("instance %s: VM pid %s booting %s (%s, %s MiB, SSH on 127.0.0.1:%s)", machine.instance_id,
             process.pid, machine.image.folder, machine.accel, machine.memory_mib, machine.ssh_port)
    return process


def start_qemu(folder: Path, command: list[str]) -> subprocess.Popen:
    """QEMU in a session of its own (its socat children end with it), killed by the kernel if the starting process
    dies: a runner that is killed leaves no VM behind."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child between fork and exec only calls it
    with open(folder / QEMU_LOG, "ab") as qemu_log:
        return subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=qemu_log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL))


def restore_from_cache(folder: Path, entry: Path, image_id: str, bake_role: str, digest: str) -> None:
    """A builder whose recipe was baked before: nothing boots. Its console says where the image comes from and that
    it is ready; ``machine.json`` (pid 0) names the cache entry the server copies when the image is created."""
    folder.mkdir(parents=True, exist_ok=True)
    append_console(folder, f"hybrid: restored from the image cache {entry} (baked {baked_date(entry)})")
    append_console(folder, f"{READY_MARKER} {bake_role}")
    write_record(folder, {"kind": "vm", "pid": 0, "image_id": image_id, "disk": str(entry / DISK), "ssh_port": 0,
                          "started_at": time.time(), "from_cache": digest})


def baked_date(entry: Path) -> str:
    """When a cache entry was baked: ``image.json``'s ``created_at``, else the folder's time."""
    try:
        created = json.loads((entry / "image.json").read_text()).get("created_at")
    except (OSError, ValueError, AttributeError):
        created = None
    if isinstance(created, str) and created:
        return created
    stamp = created if isinstance(created, (int, float)) else entry.stat().st_mtime
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------- running and ending

def qemu_pid(folder: Path) -> int:
    """The pid of this folder's QEMU while it runs, else 0 (a pid reused by another process does not count)."""
    record = read_record(folder) or {}
    pid = int(record.get("pid") or 0)
    return pid if pid and _is_qemu_of(pid, folder) else 0


def _is_qemu_of(pid: int, folder: Path) -> bool:
    argv = procs.cmdline(pid)
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return bool(argv) and Path(argv[0]).name == QEMU and cwd == str(folder.resolve()) and procs.is_alive(pid)


def is_running(folder: Path) -> bool:
    return qemu_pid(folder) > 0


def power_down(folder: Path, timeout: float) -> bool:
    """Asks the guest to shut down (``request_shutdown``) and waits until QEMU is gone; True if it went (also when
    there was no VM), False if the guest still ran after ``timeout`` seconds."""
    pid = qemu_pid(folder)
    if not pid:
        return True
    request_shutdown(folder)
    return _wait_gone(pid, folder, timeout)


def request_shutdown(folder: Path) -> bool:
    """Asks the guest to shut down, as one would at the machine; True when QEMU took the request.

    Two requests: the power button (QMP ``system_powerdown``: ACPI, which systemd hears only through logind, and
    logind needs D-Bus, which the base image lacks) and Ctrl-Alt-Del (``send-key``: systemd itself handles it; a
    reboot, which ``-no-reboot`` turns into QEMU's end). Either shuts the guest down cleanly."""
    try:
        qmp(folder / QMP_SOCKET, POWER_BUTTON, CTRL_ALT_DELETE)
        return True
    except (OSError, HybridError) as exc:
        log.warning("VM %s: no shutdown request reached it: %s", folder.name, exc)
        return False


def kill(folder: Path) -> bool:
    """Ends the VM at once: QMP ``quit``, then SIGKILL to QEMU's session. True if a VM was running."""
    pid = qemu_pid(folder)
    if not pid:
        return False
    try:
        qmp(folder / QMP_SOCKET, QUIT)
    except (OSError, HybridError):
        pass  # SIGKILL does it
    if not _wait_gone(pid, folder, 1.0):
        _kill_session(pid)
        if not _wait_gone(pid, folder, KILL_PATIENCE):
            raise HybridError(f"QEMU pid {pid} of {folder} did not stop")
    return True


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_gone(pid: int, folder: Path, timeout: float) -> bool:
    def gone() -> Poll[None]:
        procs.reap(pid)  # when QEMU is our child
        return Poll(None, done=not _is_qemu_of(pid, folder), state="running")
    try:
        wait_for(f"QEMU pid {pid} to end", gone, timeout=timeout, interval=0.1)
        return True
    except WaitTimeout:
        return False


def qmp(socket_path: Path, *commands: dict, timeout: float = QMP_TIMEOUT) -> dict:
    """QMP commands (``{"execute": ..., "arguments": ...}``) on one connection: read the greeting, leave capabilities
    negotiation, run each; the last one's reply. A command QEMU refuses raises ``HybridError``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(str(socket_path))
        replies = connection.makefile("rb")
        _read_reply(replies, "QMP")
        for command in ({"execute": "qmp_capabilities"}, *commands):
            connection.sendall(json.dumps(command).encode() + b"\n")
            reply = _read_reply(replies, "return", "error")
            if "error" in reply:
                raise HybridError(f"QMP {command['execute']} failed: {reply['error'].get('desc', reply['error'])}")
        return reply


def _read_reply(replies, *keys: str) -> dict:
    """The next message holding one of ``keys``; events in between are skipped."""
    while True:
        line = replies.readline()
        if not line:
            raise HybridError("QMP connection closed")
        message = json.loads(line)
        if any(key in message for key in keys):
            return message


def guest_settings_json(settings: Settings) -> str:
    """``settings`` as the user data of an app-tier VM of the local server: its AWS calls go to
    ``GUEST_AWS_ENDPOINT`` (the only address the VM reaches) and its state stays in the image's ``/var/lib/hybrid``."""
    values = settings.to_dict()
    values["aws"] = {**values["aws"], "endpoint_url": GUEST_AWS_ENDPOINT}
    values["state_dir"] = GUEST_STATE_DIR
    return json.dumps(values)
