"""The hybrid service for real: ``hybrid demo --openstack`` end to end on the local fixture, and ``hybrid down`` after
a run killed halfway.

The web-tier AMI is baked in a VM on the local AWS server (or restored from the image cache), exported as on AWS,
uploaded to Glance and booted on the fixture (libvirt, QEMU) with the stack's key pair, security group and floating
IP. 100 concurrent requests go to the floating IP from inside the fixture's namespace, from 0 workers and then from
the cache; the autoscaler in the VM grows the fleet of local worker processes and the fleet comes back to 0.
``hybrid openstack check`` runs over SSH. While the service runs, Horizon (headless Chromium) shows the server
Active with its floating IP and the web tier's ready line in its console log; the screenshot goes to the report
folder. Afterwards nothing of the stack is left in either cloud, in the namespace or as a VM; foreign resources
survive.

Skipped, with the reason, where the fixture has no real compute (no namespace: no hypervisor could start) or this
is not root; the Horizon part where Chromium is missing.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid.core.settings import load
from hybrid.core.wait import Poll, wait_for
from hybrid.local import minicloud, web_vm
from hybrid.openstack.compute import new_key_pair
from hybrid.openstack.stack import stack_names
from hybrid.tools.demo import OpenStackDemo, run_openstack_demo
from tests.integration import horizon

ROOT = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = ROOT / "docs" / "horizon-web-tier.png"
READY_LINE = "hybrid web tier ready"
LOG_TIMEOUT = 60.0
pytestmark = pytest.mark.timeout(2400)


@pytest.fixture(scope="module")
def fixture_ready():
    if reason := minicloud.unavailable_reason():
        pytest.skip(reason)


def demo_settings(state_dir: Path, stack: str):
    from hybrid.tools.demo import demo_settings as settings_for
    from hybrid.cli.tools import OPENSTACK_DEMO_SETTINGS

    settings, _ = settings_for(state_dir, stack, list(OPENSTACK_DEMO_SETTINGS))
    return settings


def foreign_resources(conn, name: str) -> dict[str, str]:
    """A key pair and a security group of someone else, named after the stack."""
    conn.compute.create_keypair(name=name, public_key=new_key_pair("someone@laptop")[1])
    group = conn.network.create_security_group(name=name, description="someone else's")
    return {"keypair": name, "security_group": group.id}


def stack_leftovers(conn, settings) -> list[str]:
    """Everything of the stack that OpenStack still lists (by name or by the stack's marker)."""
    names = stack_names(settings)
    found = [f"server {s.name} ({s.status})" for s in conn.compute.servers() if s.name == names.server]
    found += [f"image {i.name}" for i in conn.image.images() if i.name == names.image]
    found += [f"floating IP {ip.floating_ip_address}" for ip in conn.network.ips()
              if settings.stack in (ip.description or "")]
    found += [f"security group {g.name}" for g in conn.network.security_groups() if g.name == names.security_group]
    found += [f"key pair {k.name}" for k in conn.compute.keypairs() if k.name == names.key_pair]
    return found


def namespace_listeners(port: int) -> list[str]:
    shown = subprocess.run(["ip", "netns", "exec", minicloud.NAMESPACE, "ss", "-Hltn", f"sport = :{port}"],
                           capture_output=True, text=True, check=False)
    return [line for line in shown.stdout.splitlines() if line.strip()]


def libvirt_domains() -> list[str]:
    shown = subprocess.run(["virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True,
                           text=True, check=False)
    return [line.strip() for line in shown.stdout.splitlines() if line.strip()]


def look_at_horizon(demo: OpenStackDemo, seen: dict) -> None:
    """Horizon shows the server Active with its floating IP, and its Log tab the web tier's ready line."""
    from tests.integration.test_horizon import console_lines, ip_addresses

    if reason := horizon.browser_skip_reason() or horizon.horizon_skip_reason():
        seen["skipped"] = reason
        return
    names = stack_names(demo.settings)
    address = demo.stack.find("floating_ip").properties["address"]
    server_id = demo.stack.find("server").id
    user, password = member_login()
    with horizon.chromium(demo.report_dir / "chromium-profile", demo.report_dir / "chromedriver.log",
                          failure_shot=demo.report_dir / "horizon-failure.png") as driver:
        horizon.login(driver, user, password)
        # The Log tab shows the console's last 35 lines unless told (Horizon reads this cookie): the ready line
        # comes before cloud-init's last words.
        driver.add_cookie({"name": "INSTANCE_LOG_LENGTH", "value": "500"})

        def server_row():
            driver.get(f"{horizon.HORIZON_URL}/project/instances/")
            return horizon.row_named(driver, "Instance Name", names.server) or {}

        seen["row"] = horizon.wait_until(
            f"Instances to show {names.server} Active with {address}", server_row, 30,
            done=lambda row: row.get("Status") == "Active" and address in ip_addresses(row.get("IP Address", "")),
            interval=1.0)
        horizon.scroll_to_text(driver, names.server)
        shot = demo.report_dir / "horizon-instances.png"
        assert driver.save_screenshot(str(shot)), "Chromium took no screenshot"
        seen["screenshot"] = shot
        driver.get(f"{horizon.HORIZON_URL}/project/instances/{server_id}/?tab=instance_details__log")
        seen["log"] = horizon.wait_until(
            "the Log tab to show the web tier's ready line", lambda: console_lines(driver), LOG_TIMEOUT,
            done=lambda lines: any(READY_LINE in line for line in lines))
        # For the picture, the tail of the log that starts a few lines above the ready line.
        ready_at = max(i for i, line in enumerate(seen["log"]) if READY_LINE in line)
        driver.add_cookie({"name": "INSTANCE_LOG_LENGTH", "value": str(len(seen["log"]) - ready_at + 12)})
        driver.get(f"{horizon.HORIZON_URL}/project/instances/{server_id}/?tab=instance_details__log")
        horizon.wait_until("the shortened Log tab", lambda: console_lines(driver), LOG_TIMEOUT,
                           done=lambda lines: any(READY_LINE in line for line in lines))
        log_shot = demo.report_dir / "horizon-console-log.png"
        assert driver.save_screenshot(str(log_shot)), "Chromium took no screenshot"
        if os.environ.get("HYBRID_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(shot, DOCS_SCREENSHOT)
            shutil.copyfile(log_shot, DOCS_SCREENSHOT.with_name("horizon-web-tier-log.png"))


def deliver_credentials_for_real(demo: OpenStackDemo, seen: dict) -> None:
    """The AWS path's credential delivery (paramiko, SFTP, sudo install, service restart) on the real server: the
    file lands 0600 for the service user, and the restarted web tier answers again. The content is the local AWS
    server's test credentials, which are not secrets."""
    from hybrid.openstack.remote import open_ssh, run

    seen["credentials"] = demo.stack.deliver_credentials(
        b"[default]\naws_access_key_id = emulator\naws_secret_access_key = emulator\n", "debian")
    client = open_ssh(demo.stack.ssh_target("debian"), demo.stack.key_path())
    try:
        seen["credentials_stat"], _ = run(client, f"sudo stat -c '%a %U' {seen['credentials']}")
        seen["staging_left"], _ = run(client, "ls -a ~")
    finally:
        client.close()
    web_vm.wait_until_answering(demo.url, demo.stack.settings.openstack.reach_namespace(), timeout=300)
    seen["answering_after_restart"] = True


def member_login() -> tuple[str, str]:
    import openstack

    auth = openstack.config.OpenStackConfig().get_one("hybrid-local").config["auth"]
    return auth["username"], auth["password"]


def test_the_openstack_demo_serves_every_request_through_the_floating_ip_and_leaves_nothing(
        fixture_ready, local_cloud, tmp_path, stack_name):
    settings = demo_settings(tmp_path / "state", stack_name)
    if reason := web_vm.unavailable_reason(settings):
        pytest.skip(reason)
    foreign = foreign_resources(local_cloud, f"{stack_name}-someone-else")
    domains_before = set(libvirt_domains())
    seen: dict = {}
    lines: list[str] = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        result = run_openstack_demo(settings, tmp_path / "report", report=report,
                                    before_down=lambda demo: (look_at_horizon(demo, seen),
                                                               deliver_credentials_for_real(demo, seen)))
    finally:
        leftovers_after = stack_leftovers(local_cloud, settings)
        foreign_left = [kind for kind, found in (
            ("keypair", local_cloud.compute.find_keypair(foreign["keypair"], ignore_missing=True)),
            ("security_group", local_cloud.network.find_security_group(foreign["security_group"],
                                                                        ignore_missing=True))) if found is not None]
        local_cloud.compute.delete_keypair(foreign["keypair"], ignore_missing=True)
        local_cloud.network.delete_security_group(foreign["security_group"], ignore_missing=True)
    report_json = json.loads((tmp_path / "report" / "report.json").read_text())
    print(json.dumps({k: report_json[k] for k in ("stages_s", "first_answer_s", "time_to_zero_s", "max_fleet")}))
    for run in ("cold", "warm"):
        summary = result.summaries[run]
        assert (summary["correct"], summary["requests"]) == (100, 100), summary
        assert summary["url"].startswith("http://172.24.4.")  # the floating IP, reached inside the namespace
    assert result.time_to_zero is not None, "the fleet came back to 0"
    assert result.max_fleet >= 1, "the autoscaler in the VM launched workers"
    assert result.check["ok"], result.check
    assert abs(result.check["skew_s"]) <= 2.0
    assert any("hybrid-web" in line for line in result.check["log_lines"]), result.check["log_lines"]
    assert result.passed, lines[-20:]
    assert (tmp_path / "report" / "timeline.png").stat().st_size > 0
    for stage in web_vm.STAGES:
        assert stage in result.stages
    assert seen["credentials"] == "/etc/hybrid/aws-credentials"
    assert seen["credentials_stat"] == "600 hybrid"
    assert ".hybrid-aws-credentials" not in seen["staging_left"].split()
    assert seen["answering_after_restart"]
    if "skipped" not in seen:
        assert seen["row"]["Status"] == "Active"
        assert any(READY_LINE in line for line in seen["log"])
        assert seen["screenshot"].stat().st_size > 0
    else:
        print(f"Horizon: {seen['skipped']}")
    # Nothing of the stack in either cloud, in the namespace or as a VM; the foreign look-alikes survived.
    assert leftovers_after == []
    assert foreign_left == ["keypair", "security_group"]
    assert namespace_listeners(result_port(lines)) == []
    assert set(libvirt_domains()) - domains_before == set()


def result_port(lines: list[str]) -> int:
    """The relay's port, from its report line (``relay: the local AWS server is http://IP:PORT ...``)."""
    line = next(line for line in lines if line.startswith("relay: the local AWS server is "))
    return int(line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1])



def test_down_cleans_up_after_an_up_killed_while_the_server_boots(fixture_ready, local_cloud, tmp_path, stack_name):
    """`hybrid up` is killed (SIGKILL, its whole process group) once its server exists; `hybrid down` then leaves
    nothing: no OpenStack resource of the stack, no VM, no relay in the namespace, no process of the state folder."""
    state = tmp_path / "state"
    settings = load(None, {}, {"stack": stack_name, "state_dir": str(state)})
    if reason := web_vm.unavailable_reason(settings):
        pytest.skip(reason)
    domains_before = set(libvirt_domains())
    command = [sys.executable, "-m", "hybrid", "--stack", stack_name, "--state-dir", str(state)]
    up = subprocess.Popen([*command, "up"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    server = stack_names(settings).server

    def server_exists() -> Poll[bool]:
        if up.poll() is not None:
            return Poll(False, done=False, failed=f"`hybrid up` ended first (exit {up.returncode}): "
                                                  f"{up.stdout.read()[-2000:]}")
        return Poll(True, done=any(s.name == server for s in local_cloud.compute.servers()))

    try:
        wait_for(f"server {server} to be created", server_exists, timeout=900, interval=1.0)
    finally:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    print(f"killed `hybrid up` (pid {up.pid}) after its server appeared")
    down = subprocess.run([*command, "down"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(down.stdout[-3000:], down.stderr[-2000:])
    assert down.returncode == 0, down.stderr
    assert stack_leftovers(local_cloud, settings) == []
    assert set(libvirt_domains()) - domains_before == set()
    from hybrid.local.stack import processes_of, read_records
    assert processes_of(state.resolve()) == []
    assert web_vm.RELAY not in read_records(settings)
