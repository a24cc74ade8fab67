"""The `openstack` command group, on the in-memory cloud (hybrid/cli.py registers the group under `hybrid`)."""
import json

import pytest
from click.testing import CliRunner

from hybrid.cli import Context
from hybrid.cli.openstack import openstack
from hybrid.core.clock import FakeClock
from hybrid.openstack import stack as stack_module
from hybrid.openstack.session import MappedConnection
from tests.openstack_fakes import FakeCloud, Record, with_base_image


@pytest.fixture
def cloud(monkeypatch):
    cloud = with_base_image(FakeCloud("hybrid-local"))
    cloud.images["img"] = Record(id="img", name="cli-web-tier", status="active", checksum="c", tags=[],
                                 properties={})
    real = stack_module.build_openstack_stack

    def build(settings, image=None, conn=None, clock=None):
        return real(settings, image, MappedConnection(cloud, "hybrid-local"), FakeClock())

    monkeypatch.setattr(stack_module, "build_openstack_stack", build)
    return cloud


def invoke(tmp_path, *args):
    # No namespace: these tests are about a cloud whose floating IPs this machine cannot reach.
    context = Context(None, {"stack": "cli", "state_dir": str(tmp_path), "openstack.namespace": ""})
    return CliRunner().invoke(openstack, list(args), obj=context, catch_exceptions=False)


def test_up_status_check_down(cloud, tmp_path):
    up = invoke(tmp_path, "up")
    assert up.exit_code == 0, up.output
    address = next(iter(cloud.ips.values())).floating_ip_address
    assert f"web tier: http://{address}:8000/" in up.output
    assert "stack cli: no changes" in invoke(tmp_path, "up").output

    status = invoke(tmp_path, "status", "--json")
    assert status.exit_code == 0
    rows = {r["kind"]: r for r in json.loads(status.output)["resources"]}
    assert rows["url"]["detail"] == f"http://{address}:8000/"

    check = invoke(tmp_path, "check")
    assert check.exit_code == 0
    assert "check: skipped: the floating IPs of cloud 'hybrid-local' are not reachable from this machine" \
        in check.output

    down = invoke(tmp_path, "down")
    assert "server cli-web-tier: deleted" in down.output
    assert invoke(tmp_path, "status").exit_code == 3


def test_up_with_credentials_skips_delivery_when_not_routable(cloud, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\n")
    result = invoke(tmp_path, "up", "--credentials", str(credentials))
    assert "credentials: skipped: the floating IPs" in result.output


def test_plan_lists_the_changes(cloud, tmp_path):
    result = invoke(tmp_path, "plan")
    assert result.output.splitlines() == ["create keypair cli-openstack", "create security_group cli-web-tier",
                                          "create server cli-web-tier", "create floating_ip cli-web-tier",
                                          "4 change(s)"]


def test_check_json_says_why_it_was_skipped(cloud, tmp_path):
    assert invoke(tmp_path, "up").exit_code == 0
    check = invoke(tmp_path, "check", "--json")
    assert check.exit_code == 0
    assert "are not reachable from this machine" in json.loads(check.output)["skipped"]
