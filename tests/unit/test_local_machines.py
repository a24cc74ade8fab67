"""Local VMs (hybrid.local.machines) and the runner's side of them (hybrid.local.instances): the QEMU command line
and its network, the config drive's meta data, which instance boots how, EC2's rule for a guest that powers off,
and the runner's reconciliation with state-holding fakes (a sleeping child stands for QEMU). Real boots are in
tests/integration/test_local_vm.py."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from hybrid.core.clock import FakeClock
from hybrid.core.errors import HybridError
from hybrid.core.localserver import IMAGE_CACHE_VARIABLE, image_store
from hybrid.local import instances, machines
from hybrid.local.instance_folders import instance_folder

IMAGE = machines.BootImage(Path("/images/ami-1"), "root=/dev/vda rw console=ttyS0")


def machine(**overrides) -> machines.Machine:
    values = {"instance_id": "i-1", "image_id": "ami-1", "image": IMAGE, "memory_mib": 2048, "server_port": 5000,
              "ssh_port": 2222, "accel": "tcg", **overrides}
    return machines.Machine(**values)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# ---------------------------------------------------------------- the QEMU command line

def test_the_vm_boots_the_image_s_kernel_with_its_command_line_and_disks_by_their_folder_names():
    argv = machines.qemu_command(machine())
    assert argv[0] == "qemu-system-x86_64" and option(argv, "-accel") == "tcg" and option(argv, "-cpu") == "max"
    assert option(argv, "-m") == "2048" and option(argv, "-smp") == "1" and "-no-reboot" in argv
    assert option(argv, "-kernel") == "/images/ami-1/vmlinuz" and option(argv, "-initrd") == "/images/ami-1/initrd.img"
    assert option(argv, "-append") == "root=/dev/vda rw console=ttyS0"
    drives = [value for name, value in zip(argv, argv[1:]) if name == "-drive"]
    assert drives == ["file=disk.qcow2,if=virtio,format=qcow2,discard=unmap,detect-zeroes=unmap",
                      "file=config.iso,if=virtio,format=raw,readonly=on"]
    assert option(argv, "-chardev") == "file,id=console,path=console.log,append=on"
    assert option(argv, "-serial") == "chardev:console"
    assert option(argv, "-qmp") == "unix:qmp.sock,server=on,wait=off"


def test_under_kvm_the_vm_uses_the_host_cpu():
    argv = machines.qemu_command(machine(accel="kvm"))
    assert option(argv, "-accel") == "kvm" and option(argv, "-cpu") == "host"


def test_the_network_forwards_only_the_local_aws_server_and_ssh():
    argv = machines.qemu_command(machine())
    assert argv.count("-netdev") == 1 and "-nic" not in argv and "-net" not in argv
    assert option(argv, "-netdev").split(",") == [
        "user", "id=n0", "restrict=on", "guestfwd=tcp:10.0.2.100:80-cmd:socat STDIO TCP:127.0.0.1:5000",
        "hostfwd=tcp:127.0.0.1:2222-:22"]
    assert option(argv, "-device") == "virtio-net-pci,netdev=n0"


def test_accel_is_kvm_only_where_the_fixture_found_it_boots(tmp_path):
    hypervisor = tmp_path / "hypervisor"
    assert machines.choose_accel(hypervisor) == "tcg"
    hypervisor.write_text("kvm\nprobe: user space reached in 2.1 s\n")
    assert machines.choose_accel(hypervisor) == "kvm"
    hypervisor.write_text("qemu\n")
    assert machines.choose_accel(hypervisor) == "tcg"
    hypervisor.write_text("")
    assert machines.choose_accel(hypervisor) == "tcg"


@pytest.mark.parametrize("instance_type, mib", [("t3.micro", 1024), ("t2.micro", 1024), ("t3.small", 2048),
                                                ("m5.large", 1024), ("", 1024)])
def test_memory_follows_the_instance_type(instance_type, mib):
    assert machines.memory_for(instance_type) == mib


# ---------------------------------------------------------------- config drive and images

def test_meta_data_names_the_instance_and_its_public_key_only_when_known():
    data = machines.meta_data("i-1", {})
    assert data == {"uuid": "i-1", "hostname": "i-1", "name": "i-1", "launch_index": 0,
                    "availability_zone": "local"}
    assert machines.meta_data("i-1", {"k": "ssh-ed25519 AAAA k"})["public_keys"] == {"k": "ssh-ed25519 AAAA k"}


@pytest.mark.skipif(not (shutil.which("genisoimage") and shutil.which("isoinfo")),
                    reason="genisoimage is not installed (`devstack/minicloud.sh install`)")
def test_the_config_drive_is_an_iso_labelled_config_2_with_meta_data_and_user_data(tmp_path):
    iso = machines.write_config_drive(tmp_path, machines.meta_data("i-1", {}), b"#cloud-config\nruncmd: []\n")

    def extract(path: str) -> bytes:
        return subprocess.run(["isoinfo", "-R", "-i", str(iso), "-x", path], capture_output=True, check=True).stdout
    assert json.loads(extract("/openstack/latest/meta_data.json"))["uuid"] == "i-1"
    assert extract("/openstack/latest/user_data") == b"#cloud-config\nruncmd: []\n"
    volume = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True).stdout
    assert "Volume id: config-2" in volume
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.iso"]  # its staging folder is gone


def test_an_image_s_command_line_comes_from_image_json_else_the_base_default(tmp_path):
    assert machines.image_of(tmp_path).cmdline == machines.BASE_CMDLINE
    (tmp_path / "image.json").write_text(json.dumps({"cmdline": "root=/dev/vda ro console=ttyS0"}))
    assert machines.image_of(tmp_path).cmdline == "root=/dev/vda ro console=ttyS0"


def test_only_an_ami_with_a_disk_in_the_store_is_a_stored_image(tmp_path):
    assert machines.stored_image(tmp_path, "ami-1") is None
    folder = image_store(tmp_path) / "ami-1"
    folder.mkdir(parents=True)
    (folder / "disk.qcow2").write_bytes(b"")
    assert machines.stored_image(tmp_path, "ami-1").disk == folder / "disk.qcow2"


def test_an_app_tier_vm_whose_image_has_no_disk_cannot_boot(tmp_path):
    instance = {"InstanceId": "i-1", "ImageId": "ami-none", "Tags": tags("app-tier", vm=True)}
    with pytest.raises(HybridError, match="ami-none has no disk"):
        instances.image_to_boot(tmp_path, instance)


def test_a_builder_whose_recipe_is_cached_is_restored_and_boots_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(IMAGE_CACHE_VARIABLE, str(tmp_path / "cache"))
    entry = tmp_path / "cache" / "d1"
    entry.mkdir(parents=True)
    (entry / "disk.qcow2").write_bytes(b"")
    (entry / "image.json").write_text(json.dumps({"created_at": 0}))
    instance = {"InstanceId": "i-1", "ImageId": "ami-1",
                "Tags": tags("bake") + [{"Key": "hybrid:recipe-digest", "Value": "d1"},
                                        {"Key": "hybrid:bake-role", "Value": "app-tier"}]}

    assert instances.boot_instance(None, tmp_path / "state", instance) is None

    folder = instance_folder(tmp_path / "state", "i-1")
    assert (folder / "console.log").read_text().splitlines() == [
        f"hybrid: restored from the image cache {entry} (baked 1970-01-01 00:00:00 UTC)",
        "HYBRID-BAKE-READY app-tier"]
    record = json.loads((folder / "machine.json").read_text())
    assert (record["kind"], record["pid"], record["from_cache"], record["image_id"]) == ("vm", 0, "d1", "ami-1")


def test_a_vm_needs_its_tools_and_says_how_to_get_them(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "socat" else f"/usr/bin/{tool}")
    with pytest.raises(HybridError, match=r"socat.*devstack/minicloud.sh install"):
        machines.require_tools()


def test_with_no_vm_power_down_has_nothing_to_do_and_kill_nothing_to_kill(tmp_path):
    assert machines.power_down(tmp_path, 1.0) is True
    assert machines.kill(tmp_path) is False
    (tmp_path / "machine.json").write_text(json.dumps({"kind": "vm", "pid": 1}))  # pid 1 is no QEMU of this folder
    assert machines.is_running(tmp_path) is False and machines.power_down(tmp_path, 1.0) is True


# ---------------------------------------------------------------- QMP

class FakeQmpServer:
    """A QMP peer on a unix socket: greeting, capabilities, then an event and the answers to the commands."""

    def __init__(self, path: Path, *answers: dict) -> None:
        self.commands: list[dict] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.thread = threading.Thread(target=self.serve, args=answers, daemon=True)
        self.thread.start()

    def serve(self, *answers: dict) -> None:
        connection, _ = self.listener.accept()
        with connection, connection.makefile("rb") as requests:
            connection.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            for reply in ({"return": {}}, *answers):
                self.commands.append(json.loads(requests.readline()))
                connection.sendall(b'{"event": "SOMETHING", "data": {}}\n' + json.dumps(reply).encode() + b"\n")
        self.listener.close()


def test_qmp_leaves_negotiation_then_runs_the_commands_skipping_events(tmp_path):
    server = FakeQmpServer(tmp_path / "qmp.sock", {"return": {}}, {"return": {"status": "running"}})
    reply = machines.qmp(tmp_path / "qmp.sock", machines.CTRL_ALT_DELETE, {"execute": "query-status"})
    assert reply == {"return": {"status": "running"}}
    server.thread.join(5)
    assert [c["execute"] for c in server.commands] == ["qmp_capabilities", "send-key", "query-status"]
    assert [k["data"] for k in server.commands[1]["arguments"]["keys"]] == ["ctrl", "alt", "delete"]


def test_a_qmp_error_is_a_hybrid_error(tmp_path):
    FakeQmpServer(tmp_path / "qmp.sock", {"error": {"class": "GenericError", "desc": "no such thing"}})
    with pytest.raises(HybridError, match="no such thing"):
        machines.qmp(tmp_path / "qmp.sock", {"execute": "nothing"})


# ---------------------------------------------------------------- who boots how

def tags(role: str, vm: bool = False) -> list[dict]:
    found = [{"Key": "hybrid:role", "Value": role}, {"Key": "hybrid:stack", "Value": "s"}]
    return found + ([{"Key": "hybrid:local-machine", "Value": "vm"}] if vm else [])


@pytest.mark.parametrize("instance_tags, how", [
    (tags("bake"), "vm"),
    (tags("app-tier", vm=True), "vm"),
    (tags("app-tier"), "process"),
    (tags("app-tier") + [{"Key": "hybrid:local-machine", "Value": "process"}], "process"),
    ([], "process"),
])
def test_builders_and_vm_tagged_app_tier_instances_boot_vms_the_rest_are_processes(instance_tags, how):
    assert instances.how_it_runs({"InstanceId": "i-1", "Tags": instance_tags}) == how


@pytest.mark.parametrize("behavior, action", [("terminate", "terminate"), ("stop", "stop"), ("", "stop")])
def test_a_guest_that_powers_off_ends_its_instance_by_ec2_s_rule(behavior, action):
    assert instances.shutdown_action(behavior) == action


# ---------------------------------------------------------------- the runner's reconciliation

class Ec2:
    """Instances by id with their tags, state and shutdown behaviour; honours the runner's two filters."""

    def __init__(self) -> None:
        self.instances: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []

    def add(self, instance_id: str, role: str, vm: bool = False, behavior: str = "stop") -> None:
        self.instances[instance_id] = {"InstanceId": instance_id, "Tags": tags(role, vm), "State": {"Name": "running"},
                                       "behavior": behavior}

    def state(self, instance_id: str) -> str:
        return self.instances[instance_id]["State"]["Name"]

    def set_state(self, instance_id: str, state: str) -> None:
        self.instances[instance_id]["State"] = {"Name": state}

    def describe_instances(self, Filters=(), InstanceIds=()):
        if InstanceIds:
            return {"Reservations": [{"Instances": [self.instances[i] for i in InstanceIds]}]}
        wanted = {f["Name"]: set(f["Values"]) for f in Filters}
        found = [i for i in self.instances.values() if i["State"]["Name"] in wanted["instance-state-name"]
                 and instances.tags_of(i).get("hybrid:role") in wanted["tag:hybrid:role"]]
        return {"Reservations": [{"Instances": found}]}

    def describe_instance_attribute(self, InstanceId, Attribute):
        if Attribute == "instanceInitiatedShutdownBehavior":
            return {"InstanceInitiatedShutdownBehavior": {"Value": self.instances[InstanceId]["behavior"]}}
        return {"UserData": {}}

    def terminate_instances(self, InstanceIds):
        for instance_id in InstanceIds:
            self.calls.append(("terminate", instance_id))
            self.set_state(instance_id, "terminated")

    def stop_instances(self, InstanceIds):
        for instance_id in InstanceIds:
            self.calls.append(("stop", instance_id))
            self.set_state(instance_id, "stopped")


@pytest.fixture
def runner(tmp_path, children):
    """A runner whose VMs are sleeping children (QEMU stand-ins) and whose workers are sleeping children too."""
    ec2, clock, booted, spawned = Ec2(), FakeClock(), [], []

    def boot_vm(instance):  # a QEMU stand-in: exits 0 (its guest powered off) when its stdin closes
        booted.append(instance["InstanceId"])
        return children("-c", "import sys; sys.stdin.read()", stdin=subprocess.PIPE)

    def spawn(instance_id, *_):
        spawned.append(instance_id)
        return children("-m", "sleeper")
    made = instances.LocalInstanceRunner(ec2, tmp_path, spawn=spawn, prepared=True, boot_vm=boot_vm, clock=clock)
    made.booted, made.spawned = booted, spawned  # type: ignore[attr-defined]
    yield made
    made.shutdown()


def ended(runner, instance_id: str) -> str:
    return (instance_folder(runner.state_dir, instance_id) / "ended").read_text().strip()


def power_off(qemu: subprocess.Popen) -> None:
    qemu.stdin.close()
    qemu.wait()


def test_the_runner_boots_builders_and_vm_tagged_instances_once_and_forks_the_rest(runner):
    runner.ec2.add("i-builder", "bake")
    runner.ec2.add("i-vm", "app-tier", vm=True)
    runner.ec2.add("i-worker", "app-tier")
    runner.ec2.add("i-web", "web-tier")
    runner.tick()
    runner.tick()
    assert sorted(runner.booted) == ["i-builder", "i-vm"] and runner.spawned == ["i-worker"]
    assert sorted(runner.vms) == ["i-builder", "i-vm"] and list(runner.processes) == ["i-worker"]


@pytest.mark.parametrize("behavior, action, state", [("stop", "stop", "stopped"),
                                                     ("terminate", "terminate", "terminated")])
def test_a_guest_that_powers_off_ends_its_instance_once(runner, behavior, action, state):
    runner.ec2.add("i-1", "bake", behavior=behavior)
    runner.tick()
    power_off(runner.vms["i-1"])
    runner.tick()
    runner.tick()
    assert runner.ec2.calls == [(action, "i-1")] and runner.ec2.state("i-1") == state
    assert ended(runner, "i-1") == "guest powered off" and runner.vms == {} and runner.booted == ["i-1"]


def test_a_stopped_instance_that_starts_again_boots_again(runner):
    runner.ec2.add("i-1", "bake")
    runner.tick()
    power_off(runner.vms["i-1"])
    runner.tick()
    runner.tick()  # stopped: not live
    runner.ec2.set_state("i-1", "running")  # StartInstances
    runner.tick()
    assert runner.booted == ["i-1", "i-1"]


def test_a_terminated_instance_s_vm_gets_the_grace_then_is_killed(runner):
    runner.ec2.add("i-1", "bake")
    runner.tick()
    qemu = runner.vms["i-1"]
    runner.ec2.terminate_instances(["i-1"])
    runner.tick()
    runner.clock.advance(instances.VM_GRACE - 1)
    runner.tick()
    assert qemu.poll() is None and "i-1" in runner.vms
    runner.clock.advance(1)
    runner.tick()
    assert qemu.poll() is not None and runner.vms == {}
    assert ended(runner, "i-1").startswith("killed: its instance is no longer running")


@pytest.mark.parametrize("end, asked", [("stop", True), ("terminate", False)])
def test_a_stopped_instance_s_guest_is_asked_to_shut_down_a_terminated_one_is_left_to_power_off(
        runner, monkeypatch, end, asked):
    requests = []
    monkeypatch.setattr(machines, "request_shutdown", lambda folder: requests.append(folder.name) or True)
    runner.ec2.add("i-1", "bake")
    runner.tick()
    getattr(runner.ec2, f"{end}_instances")(["i-1"])
    runner.tick()
    runner.tick()
    assert requests == (["i-1"] if asked else [])
    runner.clock.advance(instances.VM_GRACE)
    runner.tick()
    assert ended(runner, "i-1").startswith("killed: its instance is no longer running")


def test_a_vm_that_powers_off_within_the_grace_is_not_killed(runner):
    runner.ec2.add("i-1", "bake")
    runner.tick()
    runner.ec2.terminate_instances(["i-1"])
    runner.tick()
    power_off(runner.vms["i-1"])  # the guest powered itself off after terminating its instance
    runner.tick()
    assert ended(runner, "i-1") == "guest powered off" and runner.ec2.calls == [("terminate", "i-1")]


def test_a_qemu_that_fails_terminates_its_instance_with_qemu_s_words(runner):
    runner.ec2.add("i-1", "bake")
    runner.tick()
    folder = instance_folder(runner.state_dir, "i-1")
    folder.mkdir(parents=True)
    (folder / "qemu.log").write_text("qemu-system-x86_64: Could not open backing file\n")
    runner.vms["i-1"].kill()
    runner.vms["i-1"].wait()
    runner.tick()
    assert runner.ec2.calls == [("terminate", "i-1")] and runner.vms == {}
    assert ended(runner, "i-1") == "killed: QEMU exited with code -9: qemu-system-x86_64: Could not open backing file"
    assert "Could not open backing file" in (folder / "console.log").read_text()


def test_a_vm_that_cannot_boot_terminates_its_instance_and_says_why_on_its_console(runner):
    def cannot_boot(instance):
        raise HybridError("its image ami-x has no disk")
    runner.boot_vm = cannot_boot
    runner.ec2.add("i-1", "app-tier", vm=True)
    runner.tick()
    runner.tick()
    assert runner.ec2.calls == [("terminate", "i-1")]
    console = (instance_folder(runner.state_dir, "i-1") / "console.log").read_text()
    assert "hybrid: the VM cannot boot: its image ami-x has no disk" in console


def test_a_builder_restored_from_the_cache_runs_nothing_and_is_forgotten_when_terminated(runner):
    runner.boot_vm = lambda instance: None
    runner.ec2.add("i-1", "bake")
    runner.tick()
    assert runner.vms == {"i-1": None}
    runner.ec2.terminate_instances(["i-1"])
    runner.tick()
    assert runner.vms == {} and not (instance_folder(runner.state_dir, "i-1") / "ended").exists()


def test_the_runner_kills_its_vms_when_it_stops(runner):
    runner.ec2.add("i-1", "bake")
    runner.tick()
    qemu = runner.vms["i-1"]
    runner.shutdown()
    assert qemu.poll() is not None and runner.vms == {}
    assert ended(runner, "i-1") == "killed: the runner is stopping"


def test_the_public_key_goes_to_the_meta_data_only_when_the_server_has_it():
    class KeyPairs:
        def describe_key_pairs(self, KeyNames, IncludePublicKey):
            assert IncludePublicKey is True
            return {"KeyPairs": [{"KeyName": KeyNames[0], "PublicKey": "ssh-ed25519 AAAA me\n"}
                                 if KeyNames[0] == "known" else {"KeyName": KeyNames[0]}]}
    assert instances.public_keys_of(KeyPairs(), {"KeyName": "known"}) == {"known": "ssh-ed25519 AAAA me"}
    assert instances.public_keys_of(KeyPairs(), {"KeyName": "created-elsewhere"}) == {}
    assert instances.public_keys_of(KeyPairs(), {}) == {}
