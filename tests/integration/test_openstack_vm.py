"""A real virtual machine on the local OpenStack fixture (devstack/minicloud.sh with libvirt compute).

The stack's own code (``build_openstack_stack``) boots a server from the fixture's base image ``debian-12-base`` on
the private network, with the stack's key pair and a security group that allows SSH from the fixture's external
namespace (``aws.operator_cidr`` = the external network's range), and gives it a floating IP. Then: the server is
ACTIVE and its libvirt domain runs; its console log shows cloud-init finished; paramiko logs in through the floating
IP with the stack's private key (and not with another key), pinned to the host key the server's console printed (and
refused when the pinned key is another); the credentials' staging file is 0600 from its creation; a port the group
does not allow gets no answer while an allowed port with no listener is refused; the floating IP is refused locally in
the root namespace (an ``unreachable`` route). After ``down`` nothing of the server is left: no libvirt domain, no
QEMU, no tap, no bridge port, no iptables or ebtables rule.

Probes that touch the floating IP run inside the namespace, through ``minicloud.sh exec`` (``hybrid.local.minicloud``).
Skipped, with the reason, when the fixture is not up, runs fake compute, or the run is not root. The tests share one
server (it boots in about a minute under software emulation) and run in file order.
"""
from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import time

import pytest

from hybrid.core.settings import load
from hybrid.openstack.compute import new_key_pair
from hybrid.openstack.hostkeys import HostKey, console_host_keys, fingerprint
from hybrid.openstack.remote import create_private, deliver_credentials, open_ssh, run
from hybrid.openstack.stack import build_openstack_stack, stack_names
from hybrid.local import minicloud

BASE_IMAGE = "debian-12-base"
SSH_READY_TIMEOUT = 300.0
BLOCKED_PORT = 8080        # not in the web tier's group: tcp 22 from the operator, 80 and 8000, ICMP
ALLOWED_IDLE_PORT = 8000   # in the group; nothing listens there on the base image
GONE_TIMEOUT = 60.0
CLOUD_INIT_TIMEOUT = 180.0
# The first test sets up the shared server: SSH waits for the host keys its console prints near the end of
# cloud-init's final stage (about 1 to 3 minutes under software emulation, slower on a loaded machine).
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def admin(local_cloud):
    import openstack

    if reason := minicloud.unavailable_reason():
        pytest.skip(reason)
    if local_cloud.image.find_image(BASE_IMAGE, ignore_missing=True) is None:
        pytest.skip(f"image {BASE_IMAGE!r} is not in the fixture's Glance (minicloud.sh up registers it)")
    conn = openstack.connect(cloud="hybrid-local-admin", api_timeout=30)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def external_range(admin) -> str:
    """The external network's range (172.24.4.0/24 on the fixture): its gateway is the namespace's address."""
    return admin.network.find_subnet("public-subnet", ignore_missing=False).cidr


@pytest.fixture(scope="module")
def vm(admin, external_range, tmp_path_factory):
    """The stack, up, with its server SSH-ready; torn down at the end of the module (again, if a test did it)."""
    name = f"t-vm-{int(time.time()) % 100000}"
    state = tmp_path_factory.mktemp("vm-state")
    settings = load(None, {}, {"stack": name, "state_dir": str(state), "openstack.image_name": BASE_IMAGE,
                               "openstack.flavor": "m1.tiny", "aws.operator_cidr": external_range})
    started = time.monotonic()
    try:
        build_openstack_stack(settings).up(report=print)
        stack = build_openstack_stack(settings)
        active = time.monotonic() - started
        address, pinned = stack.find("floating_ip").properties["address"], stack.ssh_target("debian").host_keys
        printed = time.monotonic() - started
        ready = minicloud.wait_for_ssh(address, stack.key_path(), pinned, SSH_READY_TIMEOUT, interval=3)
        print(f"ACTIVE after {active:.1f} s, host keys on the console after {printed:.1f} s, SSH-ready after "
              f"{time.monotonic() - started:.1f} s ({ready})")
        yield stack
    finally:
        build_openstack_stack(settings).down(report=print)


@pytest.fixture(scope="module")
def host_keys(vm):
    """The server's host keys as its console printed them (read through the stack's own code)."""
    return vm.ssh_target("debian").host_keys


def server_of(stack, admin):
    return admin.compute.get_server(stack.find("server").id)


def port_of(stack, admin):
    [port] = list(admin.network.ports(device_id=stack.find("server").id))
    return port


def sh(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout


def test_the_server_is_active_and_its_libvirt_domain_runs(vm, admin):
    server = server_of(vm, admin)
    assert server.status == "ACTIVE"
    assert server.image["id"] == admin.image.find_image(BASE_IMAGE).id
    private = [a["addr"] for a in server.addresses["private"] if a.get("OS-EXT-IPS:type") == "fixed"]
    assert private and private[0].startswith("10.0.0."), server.addresses
    assert sh("virsh", "-q", "-c", "qemu:///system", "domstate", server.instance_name).strip() == "running"


def test_the_console_log_shows_cloud_init_finished(vm, admin):
    """SSH answers before cloud-init's last stage ends: the log is read until that stage's final line arrives."""
    deadline, log = time.monotonic() + CLOUD_INIT_TIMEOUT, ""
    while time.monotonic() < deadline:
        log = admin.compute.get_server_console_output(vm.find("server").id)["output"]
        if minicloud.CLOUD_INIT_FINISHED.search(log):
            break
        time.sleep(3)
    assert "Linux version" in log
    assert minicloud.CLOUD_INIT_FINISHED.search(log), log[-3000:]


def test_paramiko_logs_in_through_the_floating_ip_with_the_stacks_key_only(vm, admin, host_keys, tmp_path):
    address = vm.find("floating_ip").properties["address"]
    answer = minicloud.ssh(address, vm.key_path(), "hostname; ip -4 -o addr show scope global", host_keys)
    assert answer["ok"] and answer["code"] == 0, answer
    hostname, addresses = answer["output"].split("\n", 1)
    assert hostname == stack_names(vm.settings).server
    fixed = port_of(vm, admin).fixed_ips[0]["ip_address"]
    assert f"inet {fixed}/24" in addresses, "the server sees its fixed address; the floating one is DNAT"

    stranger = tmp_path / "stranger.pem"
    stranger.write_text(new_key_pair("stranger@nowhere")[0])
    stranger.chmod(0o600)
    refused = minicloud.ssh(address, stranger, "hostname", host_keys)
    assert not refused["ok"] and "CredentialsError" in refused["error"], refused


def test_ssh_is_pinned_to_the_host_key_the_console_printed(vm, admin, host_keys):
    """The console's key is the server's own (its sshd's key file says so, over the pinned session); the same
    server is refused once the pinned key is altered, or pinned by another key's fingerprint only."""
    address = vm.find("floating_ip").properties["address"]
    console = admin.compute.get_server_console_output(vm.find("server").id)["output"]
    assert "-----BEGIN SSH HOST KEY KEYS-----" in console and console_host_keys(console) == host_keys
    [key] = host_keys
    assert key.key_type == "ssh-ed25519" and key.public_key, "the fixture's image makes one ed25519 host key"
    answer = minicloud.ssh(address, vm.key_path(), "cat /etc/ssh/ssh_host_ed25519_key.pub", host_keys)
    assert answer["ok"] and answer["output"].split()[1] == key.public_key, answer
    by_fingerprint = minicloud.ssh(address, vm.key_path(), "true", [HostKey(key.key_type, key.fingerprint)])
    assert by_fingerprint["ok"] and by_fingerprint["code"] == 0, by_fingerprint

    other = base64.b64decode(new_key_pair("other")[1].split()[1])
    for altered in (HostKey(key.key_type, fingerprint(other), base64.b64encode(other).decode()),
                    HostKey(key.key_type, fingerprint(other))):
        refused = minicloud.ssh(address, vm.key_path(), "true", [altered])
        assert not refused["ok"] and refused["error"].startswith("HostKeyError"), refused
        assert key.fingerprint in refused["error"] and fingerprint(other) in refused["error"], refused


def test_the_staging_file_is_0600_from_its_creation_on_the_servers_sftp(vm):
    """OpenSSH's sftp-server creates the file with the mode the OPEN request carries: 0600 before a byte or a
    chmod; what ``deliver_credentials`` writes stays 0600."""
    target = vm.ssh_target("debian")
    client = open_ssh(target, vm.key_path())
    try:
        sftp = client.open_sftp()
        with create_private(sftp, ".hybrid-mode-probe"):
            created = stat.S_IMODE(sftp.stat(".hybrid-mode-probe").st_mode)
        sftp.remove(".hybrid-mode-probe")
        deliver_credentials(target, vm.key_path(), {".hybrid-aws-credentials": b"[default]\n"})
        modes, _ = run(client, "stat -c '%a %s' .hybrid-aws-credentials && rm -f .hybrid-aws-credentials")
    finally:
        client.close()
    assert created == 0o600
    assert modes == "600 10"


def test_the_security_group_filters_and_the_floating_ip_lives_only_in_the_namespace(vm, external_range):
    address = vm.find("floating_ip").properties["address"]
    assert minicloud.tcp(address, BLOCKED_PORT) == "timeout", "a port the group does not allow gets no answer"
    assert minicloud.tcp(address, ALLOWED_IDLE_PORT) == "refused", "an allowed port with no listener: a reset"
    assert minicloud.tcp(address, 22) == "connected"
    # From the root namespace the floating range is `unreachable` (checked first: without that route a packet would
    # follow the default route off the machine), so the kernel refuses the attempt before any packet is sent.
    assert f"unreachable {external_range}" in sh("ip", "-4", "route", "show", "type", "unreachable")
    assert minicloud.tcp_from_here(address, 22, timeout=2.0) == "error: No route to host"


def test_down_leaves_no_domain_tap_bridge_port_or_rule_of_the_server(vm, admin):
    server, port = server_of(vm, admin), port_of(vm, admin)
    domain, tap = server.instance_name, f"tap{port.id[:11]}"
    assert tap in sh("ip", "-o", "link", "show"), "while up, the server's tap exists"
    assert port.id[:10] in sh("iptables-save"), "while up, the agent filters the port"

    vm.down(report=print)

    def remnants() -> list[str]:
        found = []
        if tap in sh("ip", "-o", "link", "show"):
            found.append(f"link {tap}")
        if tap in sh("bridge", "link", "show"):
            found.append(f"bridge port {tap}")
        if port.id[:10] in sh("iptables-save") or port.id[:10] in sh("ip6tables-save"):
            found.append(f"iptables rules of port {port.id}")
        if tap in sh("ebtables", "-t", "nat", "-L"):
            found.append(f"ebtables rules of {tap}")
        if domain in sh("virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name"):
            found.append(f"libvirt domain {domain}")
        if f"guest={domain}" in sh("ps", "-eo", "args"):
            found.append(f"QEMU of {domain}")
        return found

    deadline = time.monotonic() + GONE_TIMEOUT
    while (left := remnants()) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == []
    assert admin.compute.find_server(server.id, ignore_missing=True) is None


def test_exec_runs_the_command_in_the_namespace_and_returns_its_exit_code(admin, external_range):
    script = ["bash", str(minicloud.MINICLOUD), "exec", "--"]
    inside = subprocess.run([*script, "ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True)
    gateway = admin.network.find_subnet("public-subnet", ignore_missing=False).gateway_ip
    assert f"inet {gateway}/{external_range.split('/')[1]}" in inside.stdout
    ours = set(re.findall(r"inet ([\d.]+)/", sh("ip", "-4", "-o", "addr", "show"))) - {"127.0.0.1"}
    assert not ours & set(re.findall(r"inet ([\d.]+)/", inside.stdout)), "none of this machine's addresses in there"
    assert subprocess.run([*script, "sh", "-c", "exit 7"], check=False).returncode == 7
    env = subprocess.run([*script, "sh", "-c", 'echo "$HYBRID_PROBE"'], capture_output=True, text=True, check=True,
                         env={**os.environ, "HYBRID_PROBE": "kept"})
    assert env.stdout.strip() == "kept", "the command sees this environment"
