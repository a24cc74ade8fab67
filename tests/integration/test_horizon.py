"""Horizon, in headless Chromium, shows what ``build_openstack_stack(...).up()`` made on the local fixture.

Logs into the fixture's Horizon (devstack/minicloud.sh, http://127.0.0.1/) as the member user of cloud
``hybrid-local`` and finds the stack's web-tier server (Active, with the floating IP that Neutron reports), its
console log (the instance's Log tab, every line of it in the API's console output), its key pair and its security
group. With real compute the server boots the fixture's base image, so the log is a real boot's. Saves a screenshot
of the Instances page to the test's tmp_path (and, with HYBRID_UPDATE_SCREENSHOTS=1, to docs/horizon-instances.png
for the README) (on a failure: tmp_path/horizon-failure.png, beside chromedriver.log and Chromium's network log).
Skipped, with the reason, without /usr/bin/chromium and /usr/bin/chromedriver (Debian's ``chromium`` and
``chromium-driver``), selenium, the cloud or Horizon. The browser only talks to Horizon on loopback (its network log
is checked for anything else: no DNS query, no other address); nothing is ever sent to a floating IP.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hybrid.core.settings import load
from hybrid.openstack.image import prepare_image
from hybrid.openstack.stack import build_openstack_stack, stack_names
from hybrid.local import minicloud
from tests.integration import horizon

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "horizon-instances.png"
FLOATING_IP_TIMEOUT = 30.0
TABLE_TIMEOUT = 20.0
LOG_TIMEOUT = 60.0
BASE_IMAGE = "debian-12-base"


@pytest.fixture
def member(local_cloud):
    """(user, password) of the cloud's member user, from its clouds.yaml entry; skips without a browser or Horizon."""
    if reason := horizon.browser_skip_reason() or horizon.horizon_skip_reason():
        pytest.skip(reason)
    auth = local_cloud.config.config["auth"]
    return auth["username"], auth["password"]


@pytest.fixture
def web_stack(member, local_cloud, stack_name, tmp_path):
    """A stack set up by the project's own code on the fixture, torn down (image included) afterwards. With real
    compute its server boots the fixture's base image (so its console log is a real boot's); with fake compute it
    gets a 16 MiB empty qcow2 of its own."""
    overrides = {"stack": stack_name, "state_dir": str(tmp_path / "state")}
    source = None
    if local_cloud.image.find_image(BASE_IMAGE, ignore_missing=True) is not None and not minicloud.unavailable_reason():
        overrides.update({"openstack.image_name": BASE_IMAGE, "openstack.flavor": "m1.tiny"})
    else:
        qcow2 = tmp_path / "web.qcow2"
        if shutil.which("qemu-img"):
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "16M"], check=True)
        else:
            qcow2.write_bytes(b"QFI\xfb\x00\x00\x00\x03" + b"\0" * 504)
        source = prepare_image(qcow2, False, tmp_path)
    settings = load(None, {}, overrides)
    started = time.monotonic()
    try:
        build_openstack_stack(settings, source).up(report=print)
        print(f"up: {time.monotonic() - started:.1f} s")
        yield build_openstack_stack(settings)
    finally:
        build_openstack_stack(settings).down(report=print, delete_image=True)


def ip_addresses(cell: str) -> list[str]:
    """The addresses of Horizon's "IP Address" cell ("10.0.0.12, 172.24.4.46", or one per line)."""
    return [part.strip() for part in cell.replace("\n", ",").split(",") if part.strip()]


def console_lines(driver) -> list[str]:
    """The non-empty lines of the Log tab's console output (filled in after the page loads)."""
    from selenium.webdriver.common.by import By

    panes = driver.find_elements(By.CSS_SELECTOR, "pre.logs")
    return [plain(line) for pane in panes for line in pane.text.splitlines() if plain(line)]


def plain(line: str) -> str:
    """A console line without escape sequences, control characters or runs of blanks (as a browser renders it)."""
    line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line)
    return " ".join("".join(c for c in line if c.isprintable() and c != "\ufffd").split())


def test_horizon_shows_the_web_tier_server_with_its_floating_ip_key_pair_security_group_and_console_log(
        member, local_cloud, web_stack, tmp_path):
    names = stack_names(web_stack.settings)
    rows = {row["kind"]: row for row in web_stack.status()}
    assert rows["server"]["state"] == "ok", rows["server"]
    assert rows["floating_ip"]["state"] == "ok", rows["floating_ip"]
    address = web_stack.find("floating_ip").properties["address"]  # Neutron's answer, via the floating_ip driver
    assert rows["floating_ip"]["detail"].split(";")[0] == address

    started, net_log = time.monotonic(), tmp_path / "chromium-net-log.json"
    with horizon.chromium(tmp_path / "chromium-profile", tmp_path / "chromedriver.log", net_log,
                          failure_shot=tmp_path / "horizon-failure.png") as driver:
        horizon.login(driver, *member)
        print(f"browser started and logged in: {time.monotonic() - started:.1f} s")

        def server_row():
            driver.get(f"{horizon.HORIZON_URL}/project/instances/")
            return (horizon.row_named(driver, "Instance Name", names.server)
                    or {"instances shown": [row.get("Instance Name") for row in horizon.table_rows(driver)]})

        row = horizon.wait_until(
            f"Instances to show {names.server} Active with floating IP {address}", server_row, FLOATING_IP_TIMEOUT,
            done=lambda row: row.get("Status") == "Active" and address in ip_addresses(row.get("IP Address", "")),
            interval=1.0)
        print(f"instance row: {row}")
        assert row["Key Pair"] == names.key_pair
        assert row["Power State"] == "Running"
        horizon.scroll_to_text(driver, names.server)
        shot = tmp_path / "horizon-instances.png"
        assert driver.save_screenshot(str(shot)), "Chromium took no screenshot"
        if os.environ.get("HYBRID_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(shot, DOCS_SCREENSHOT)

        server_id = web_stack.find("server").id
        driver.get(f"{horizon.HORIZON_URL}/project/instances/{server_id}/?tab=instance_details__log")
        shown = horizon.wait_until("the instance's Log tab to show console lines",
                                   lambda: console_lines(driver), LOG_TIMEOUT)
        api_log = local_cloud.compute.get_server_console_output(server_id)["output"]
        print(f"Log tab: {len(shown)} lines, last {shown[-1]!r}")
        assert set(shown) <= {plain(line) for line in api_log.splitlines()}, "Horizon shows the server's console log"

        driver.get(f"{horizon.HORIZON_URL}/project/key_pairs/")  # an AngularJS table: rows arrive after the page
        key = horizon.wait_until(f"Key Pairs to show {names.key_pair}",
                                 lambda: horizon.row_named(driver, "Name", names.key_pair), TABLE_TIMEOUT)
        assert key.get("Type") == "ssh", key

        driver.get(f"{horizon.HORIZON_URL}/project/security_groups/")
        group = horizon.wait_until(f"Security Groups to show {names.security_group}",
                                   lambda: horizon.row_named(driver, "Name", names.security_group), TABLE_TIMEOUT)
        assert f"hybrid:stack={web_stack.settings.stack}" in group.get("Description", ""), group
    print(f"browser total: {time.monotonic() - started:.1f} s")
    assert horizon.outside_traffic(net_log) == [], "Chromium reached beyond loopback"
