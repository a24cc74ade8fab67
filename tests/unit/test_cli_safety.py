"""Asking before a real cloud is changed: the OpenStack side on the in-memory cloud, named as a real cloud (not the
local fixture). The AWS side against the local AWS server as real AWS is in tests/integration/test_cli_safety.py."""
import json

import pytest
from click.testing import CliRunner

from hybrid.cli import Context, safety
from hybrid.cli.openstack import openstack
from hybrid.core.clock import FakeClock
from hybrid.openstack import stack as stack_module
from hybrid.openstack.session import MappedConnection
from tests.openstack_fakes import FakeCloud, Record, with_base_image

REAL_CLOUD = "lab-devstack"


@pytest.fixture
def cloud(monkeypatch):
    cloud = with_base_image(FakeCloud(REAL_CLOUD))
    cloud.images["img"] = Record(id="img", name="cli-web-tier", status="active", checksum="c", tags=[],
                                 properties={})
    real = stack_module.build_openstack_stack

    def build(settings, image=None, conn=None, clock=None):
        return real(settings, image, MappedConnection(cloud, REAL_CLOUD), FakeClock())

    monkeypatch.setattr(stack_module, "build_openstack_stack", build)
    return cloud


def invoke(tmp_path, *args, cloud_name=REAL_CLOUD, answer=None):
    context = Context(None, {"stack": "cli", "state_dir": str(tmp_path), "openstack.namespace": "",
                             "openstack.cloud": cloud_name, "openstack.kernel_image": ""})
    return CliRunner().invoke(openstack, list(args), obj=context, input=answer)


@pytest.fixture
def terminal(monkeypatch):
    """An operator at a terminal (CliRunner's stdin is not one)."""
    monkeypatch.setattr(safety, "can_ask", lambda: True)


def servers(cloud):
    return [s.name for s in cloud.servers.values()]


def test_up_on_a_real_cloud_without_a_terminal_shows_the_plan_and_changes_nothing(cloud, tmp_path):
    refused = invoke(tmp_path, "up")
    assert refused.exit_code == 2, refused.output
    assert "create server cli-web-tier" in refused.output
    assert "stdin is not a terminal: nothing was changed; pass --yes" in refused.output
    assert servers(cloud) == [] and not cloud.ips


def test_up_asks_and_a_no_changes_nothing(cloud, tmp_path, terminal):
    declined = invoke(tmp_path, "up", answer="n\n")
    assert declined.exit_code == 1 and isinstance(declined.exception, safety.Cancelled)
    assert f"apply these changes to stack cli on OpenStack cloud '{REAL_CLOUD}'? [y/N]" in declined.output
    assert servers(cloud) == []
    accepted = invoke(tmp_path, "up", answer="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert servers(cloud) == ["cli-web-tier"]


def test_down_lists_what_it_deletes_and_deletes_nothing_unasked(cloud, tmp_path):
    assert invoke(tmp_path, "up", "--yes").exit_code == 0
    refused = invoke(tmp_path, "down")
    assert refused.exit_code == 2
    assert "delete server cli-web-tier" in refused.output and "delete floating_ip" in refused.output
    assert "keep image cli-web-tier (pass --delete-image to delete it)" in refused.output
    assert servers(cloud) == ["cli-web-tier"] and cloud.ips

    dry = invoke(tmp_path, "down", "--dry-run")
    assert dry.exit_code == 0 and "delete server cli-web-tier" in dry.output
    assert servers(cloud) == ["cli-web-tier"]


def test_down_asks_and_a_yes_deletes(cloud, tmp_path, terminal):
    assert invoke(tmp_path, "up", "--yes").exit_code == 0
    declined = invoke(tmp_path, "down", answer="n\n")
    assert declined.exit_code == 1 and isinstance(declined.exception, safety.Cancelled)
    assert servers(cloud) == ["cli-web-tier"]
    deleted = invoke(tmp_path, "down", answer="y\n")
    assert deleted.exit_code == 0 and "server cli-web-tier: deleted" in deleted.output
    assert servers(cloud) == [] and not cloud.ips


def test_the_yes_flag_answers_for_the_operator(cloud, tmp_path):
    assert invoke(tmp_path, "up", "--yes").exit_code == 0
    down = invoke(tmp_path, "down", "--yes")
    assert down.exit_code == 0 and servers(cloud) == []


def test_the_local_fixture_never_asks(cloud, tmp_path):
    up = invoke(tmp_path, "up", cloud_name="hybrid-local")
    assert up.exit_code == 0 and "[y/N]" not in up.output
    down = invoke(tmp_path, "down", cloud_name="hybrid-local")
    assert down.exit_code == 0 and servers(cloud) == []


def test_plan_json_and_detailed_exit_code(cloud, tmp_path):
    plan = invoke(tmp_path, "plan", "--json", "--detailed-exitcode")
    assert plan.exit_code == 2
    changes = json.loads(plan.output)
    assert changes["stack"] == "cli" and changes["cloud"] == REAL_CLOUD
    assert {"action": "create", "kind": "server", "name": "cli-web-tier", "differences": []} in changes["changes"]
    assert invoke(tmp_path, "plan").exit_code == 0, "without the flag a plan with changes exits 0"
    invoke(tmp_path, "up", "--yes")
    settled = invoke(tmp_path, "plan", "--json", "--detailed-exitcode")
    assert settled.exit_code == 0 and json.loads(settled.output)["changes"] == []


def test_a_confirmation_is_never_asked_where_no_real_cloud_is_named():
    safety.confirm("delete it", [], yes=False)  # returns: nothing to ask
    with pytest.raises(Exception, match="pass --yes"):
        safety.confirm("delete it", ["AWS (region us-east-1)"], yes=False)  # no terminal under pytest
