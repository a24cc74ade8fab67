"""Real VMs on the local AWS server: the local instance runner boots a bake builder as a QEMU VM from the base image,
with the instance's user data and key on a config drive; the guest reaches the local AWS server at
http://10.0.2.100/ and nothing else; a guest that powers off stops its instance (EC2's default shutdown behaviour);
``power_down`` (CreateImage's) shuts a booted guest down cleanly; a terminated instance's VM is killed after the
grace and leaves no QEMU behind; an app-tier VM whose image has no disk is terminated with the reason.

Under TCG (these machines) a boot to the end of cloud-init takes about a minute: the module boots one VM per test.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import boto3
import pytest

from hybrid.core import procs
from hybrid.core.errors import HybridError
from hybrid.core.localserver import GUEST_AWS_ENDPOINT
from hybrid.core.wait import Poll, wait_for
from hybrid.local import machines
from hybrid.local.instance_folders import instance_folder
from hybrid.local.instances import VM_GRACE

MARKER = "HYBRID-VM-TEST-MARKER"
BOOT_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def vm_tools():
    """Skips, with the reason, when this machine cannot boot a local VM."""
    missing = machines.missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: `devstack/minicloud.sh install` installs them")
    try:
        return machines.base_image()
    except (HybridError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no base image for a local VM: {exc}")


@pytest.fixture(scope="module")
def ec2(emulator):
    return boto3.client("ec2", endpoint_url=emulator[0].url, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


@pytest.fixture(scope="module")
def vm_stack() -> str:
    return f"t-vm-{os.urandom(4).hex()}"


@pytest.fixture(scope="module")
def public_key(ec2, vm_stack, tmp_path_factory) -> str:
    """An ed25519 key pair made here; the server keeps its public key (ImportKeyPair)."""
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = key.with_suffix(".pub").read_text().strip()
    ec2.import_key_pair(KeyName=vm_stack, PublicKeyMaterial=public.encode())
    return public


def user_data(server_port: int) -> str:
    """A #cloud-config whose commands write to the console what the guest could reach, then power off."""
    fetch = "import urllib.request as u, sys; print(sys.argv[1], u.urlopen(sys.argv[2], timeout=10).status)"
    commands = [
        f"echo {MARKER} > /dev/console",
        f"python3 -c {shlex.quote(fetch)} GUEST-AWS {GUEST_AWS_ENDPOINT}/moto-api/ > /dev/console 2>&1",
        # the host's loopback through slirp's gateway: restrict=on must leave it unreachable
        f"python3 -c {shlex.quote(fetch)} GUEST-HOST http://10.0.2.2:{server_port}/ > /dev/console 2>&1"
        " || echo GUEST-HOST unreachable > /dev/console",
        "echo KEYS $(cat /home/debian/.ssh/authorized_keys) > /dev/console",
        "poweroff",
    ]
    return "#cloud-config\nruncmd:\n" + "".join(f"  - {json.dumps(c)}\n" for c in commands)


def launch_builder(ec2, stack: str, data: str = "", key_name: str = "", **more_tags: str) -> str:
    image = min(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])
    tags = {"hybrid:role": "bake", "hybrid:bake-role": "app-tier", "hybrid:stack": stack, **more_tags}
    options = {"UserData": data} if data else {}
    options.update({"KeyName": key_name} if key_name else {})
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             TagSpecifications=[{"ResourceType": "instance",
                                                 "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
                             **options)["Instances"][0]["InstanceId"]


def state_of(ec2, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def running_qemu(folder: Path) -> tuple[int, list[str]]:
    """Waits for the runner to start the folder's QEMU; its pid and its actual command line (from /proc)."""
    def started() -> Poll[tuple[int, list[str]]]:
        pid = machines.qemu_pid(folder)
        argv = procs.cmdline(pid) if pid else None
        return Poll((pid, argv or []), done=bool(argv))
    return wait_for(f"a VM in {folder}", started, timeout=60, interval=0.2)


def console(folder: Path) -> str:
    try:
        return (folder / "console.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture(scope="module")
def powered_off_builder(vm_tools, emulator, ec2, vm_stack, public_key):
    """One builder booted for real, to the end of its user data (which powers it off): what the tests read."""
    info, state_dir = emulator
    instance_id = launch_builder(ec2, vm_stack, user_data(info.port), key_name=vm_stack)
    folder = instance_folder(state_dir, instance_id)
    t0 = time.monotonic()
    pid, argv = running_qemu(folder)
    wait_for("the guest to power off", lambda: Poll(None, done=not machines.is_running(folder),
                                                    state=console(folder)[-200:]), timeout=BOOT_TIMEOUT, interval=1)
    wait_for("the runner to stop the instance", lambda: Poll(None, done=state_of(ec2, instance_id) == "stopped",
                                                             state=state_of(ec2, instance_id)), timeout=30)
    yield {"id": instance_id, "folder": folder, "pid": pid, "argv": argv, "seconds": time.monotonic() - t0,
           "server_port": info.port}
    ec2.terminate_instances(InstanceIds=[instance_id])


@pytest.mark.timeout(600)
def test_a_builder_boots_its_user_data_and_reaches_only_the_local_aws_server(powered_off_builder, public_key):
    print(f"boot to power-off: {powered_off_builder['seconds']:.0f} s")
    text = console(powered_off_builder["folder"])
    assert MARKER in text
    assert "GUEST-AWS 200" in text
    assert "GUEST-HOST unreachable" in text and "GUEST-HOST 200" not in text
    assert f"KEYS {public_key}" in text


@pytest.mark.timeout(600)
def test_the_vm_s_network_forwards_only_the_server_and_ssh(powered_off_builder):
    argv, port = powered_off_builder["argv"], powered_off_builder["server_port"]
    assert [a for a in argv if a in ("-net", "-nic")] == [] and argv.count("-netdev") == 1
    settings = option(argv, "-netdev").split(",")
    assert settings[0] == "user" and "restrict=on" in settings
    forwards = [s for s in settings if s.startswith(("guestfwd=", "hostfwd="))]
    ssh_port = json.loads((powered_off_builder["folder"] / "machine.json").read_text())["ssh_port"]
    assert forwards == [f"guestfwd=tcp:10.0.2.100:80-cmd:socat STDIO TCP:127.0.0.1:{port}",
                        f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22"]
    assert "-no-reboot" in argv and option(argv, "-accel") in ("tcg", "kvm")


@pytest.mark.timeout(600)
def test_a_guest_that_powers_off_stops_its_instance(powered_off_builder, ec2):
    folder = powered_off_builder["folder"]
    record = json.loads((folder / "machine.json").read_text())
    assert record["kind"] == "vm" and record["pid"] == powered_off_builder["pid"]
    assert state_of(ec2, powered_off_builder["id"]) == "stopped"
    assert (folder / "ended").read_text().strip() == "guest powered off"
    assert "reboot: Power down" in console(folder)
    assert not procs.is_alive(powered_off_builder["pid"])


@pytest.mark.timeout(600)
def test_terminating_a_running_vm_kills_it_after_the_grace(vm_tools, emulator, ec2, vm_stack):
    state_dir = emulator[1]
    instance_id = launch_builder(ec2, vm_stack)  # no user data: the guest boots and stays up
    folder = instance_folder(state_dir, instance_id)
    pid, _ = running_qemu(folder)
    ec2.terminate_instances(InstanceIds=[instance_id])
    terminated = time.monotonic()
    wait_for("the runner to end the VM", lambda: Poll(None, done=(folder / "ended").exists()),
             timeout=VM_GRACE + 30, interval=0.5)
    assert VM_GRACE - 5 <= time.monotonic() - terminated <= VM_GRACE + 30
    assert (folder / "ended").read_text().startswith("killed: its instance is no longer running")
    assert not procs.is_alive(pid) and not machines.is_running(folder)
    assert not [p for p in procs.pids() if (procs.cmdline(p) or [""])[0].endswith(machines.QEMU)
                and str(folder) in _cwd(p)]


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""



@pytest.mark.timeout(600)
def test_power_down_shuts_a_booted_guest_down_cleanly(vm_tools, emulator, ec2, vm_stack):
    """What CreateImage does before it copies a VM's disk: a clean shutdown (file systems unmounted), then QEMU's
    end."""
    state_dir = emulator[1]
    instance_id = launch_builder(ec2, vm_stack, "#cloud-config\nruncmd:\n  - echo BOOTED > /dev/console\n")
    folder = instance_folder(state_dir, instance_id)
    running_qemu(folder)
    wait_for("the guest to run its user data", lambda: Poll(None, done="BOOTED" in console(folder)),
             timeout=BOOT_TIMEOUT, interval=1)
    t0 = time.monotonic()
    assert machines.power_down(folder, 120) is True
    print(f"power_down took {time.monotonic() - t0:.1f} s")
    assert not machines.is_running(folder) and "systemd-shutdown[1]: All filesystems unmounted." in console(folder)
    wait_for("the runner to stop the instance", lambda: Poll(None, done=state_of(ec2, instance_id) == "stopped"),
             timeout=30)
    assert (folder / "ended").read_text().strip() == "guest powered off"
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_an_app_tier_vm_whose_image_has_no_disk_is_terminated_with_the_reason(vm_tools, emulator, ec2, vm_stack):
    instance_id = launch_builder(ec2, vm_stack, **{"hybrid:role": "app-tier", "hybrid:local-machine": "vm"})
    wait_for("the runner to terminate it", lambda: Poll(None, done=state_of(ec2, instance_id) == "terminated"),
             timeout=30)
    text = console(instance_folder(emulator[1], instance_id))
    assert "hybrid: the VM cannot boot: its image ami-" in text and "has no disk" in text


@pytest.mark.timeout(600)
def test_a_stopped_vm_shuts_down_cleanly_and_boots_again_from_its_own_disk(vm_tools, emulator, ec2, vm_stack):
    state_dir = emulator[1]
    every_boot = "test -e /var/tmp/booted && echo DISK-KEPT > /dev/console; touch /var/tmp/booted"
    instance_id = launch_builder(ec2, vm_stack, f"#cloud-config\nbootcmd:\n  - {json.dumps(every_boot)}\n"
                                                "runcmd:\n  - echo FIRST-BOOT > /dev/console\n")
    folder = instance_folder(state_dir, instance_id)
    first, _ = running_qemu(folder)
    wait_for("the first boot", lambda: Poll(None, done="FIRST-BOOT" in console(folder)), timeout=BOOT_TIMEOUT)
    ec2.stop_instances(InstanceIds=[instance_id])
    wait_for("the guest to shut down", lambda: Poll(None, done=(folder / "ended").exists()), timeout=VM_GRACE)
    assert (folder / "ended").read_text().strip() == "guest powered off"
    assert "systemd-shutdown[1]: All filesystems unmounted." in console(folder)

    ec2.start_instances(InstanceIds=[instance_id])
    second, _ = running_qemu(folder)
    wait_for("the second boot", lambda: Poll(None, done="DISK-KEPT" in console(folder)), timeout=BOOT_TIMEOUT)
    assert second != first and console(folder).count("FIRST-BOOT") == 1
    ec2.stop_instances(InstanceIds=[instance_id])
    wait_for("the guest to shut down", lambda: Poll(None, done=(folder / "ended").exists()), timeout=VM_GRACE)
    ec2.terminate_instances(InstanceIds=[instance_id])
