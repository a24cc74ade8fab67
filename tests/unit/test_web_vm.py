"""The pure parts of the whole hybrid on this machine: when the web tier can run as a VM, what a local worker takes
from its runner over its user data, and the relay's arguments."""
from __future__ import annotations

import pytest

from hybrid.core.errors import ConfigError
from hybrid.core.settings import load
from hybrid.local import web_vm
from hybrid.local.instances import own_server
from hybrid.local.relay import address


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"aws.target": "aws"}, "aws.target is not emulator"),
    ({"openstack.cloud": "devstack"}, "has no network namespace"),
    ({"openstack.namespace": "hybrid-no-such-namespace"}, "'hybrid-no-such-namespace' does not exist"),
])
def test_the_web_tier_runs_as_a_vm_only_on_the_emulator_with_a_namespace_that_exists(overrides, reason):
    assert reason in web_vm.unavailable_reason(load(None, {}, overrides))


def test_up_refuses_at_once_and_says_why_where_no_vm_can_run(tmp_path):
    settings = load(None, {}, {"state_dir": str(tmp_path), "openstack.namespace": "hybrid-no-such-namespace"})
    with pytest.raises(ConfigError, match="cannot run as a VM here: network namespace"):
        web_vm.up(settings)
    assert not any(tmp_path.iterdir()), "nothing was started"


def test_a_local_worker_reaches_its_own_server_whatever_address_its_launcher_used(tmp_path):
    user_data = tmp_path / "user-data.json"
    launched_with = load(None, {}, {"aws.endpoint_url": "http://172.24.4.1:38703", "state_dir": "/var/lib/hybrid",
                                    "worker.idle_timeout": "7"})
    user_data.write_text(launched_with.to_json())
    settings = load(None, {}, own_server(tmp_path / "state"), user_data=user_data)
    assert settings.aws.endpoint_url == "" and settings.state_dir == str(tmp_path / "state")
    assert settings.worker.idle_timeout == 7  # the rest is the launcher's


def test_relay_addresses_are_ip_and_port():
    assert address("172.24.4.1:4566") == ("172.24.4.1", 4566)
    with pytest.raises(ValueError):
        address("172.24.4.1")

