"""The OpenStack stack against the real single-node cloud of devstack/minicloud.sh (cloud ``hybrid-local``).

Skipped, with the reason, when that cloud does not answer. Loopback only: nothing is ever sent to a floating IP.
"""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest

from hybrid.core.errors import NotFoundError
from hybrid.core.settings import load
from hybrid.openstack.compute import new_key_pair
from hybrid.openstack.image import prepare_image
from hybrid.openstack.stack import build_openstack_stack



@pytest.fixture(scope="session")
def raw(local_cloud):
    return local_cloud


@pytest.fixture(scope="session")
def qcow2(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "web.qcow2"
    if shutil.which("qemu-img"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    else:
        path.write_bytes(b"QFI\xfb\x00\x00\x00\x03" + b"\0" * 504)
    return path


@pytest.fixture
def settings_of(tmp_path):
    def make(stack: str, **dotted: str):
        return load(None, {}, {"stack": stack, "state_dir": str(tmp_path / "state"), **dotted})
    return make


@pytest.fixture
def foreign(raw, qcow2):
    """Someone else's image, server, key pair and security group in the same project."""
    tag, made = f"foreign-{uuid.uuid4().hex[:6]}", {}
    try:
        made["image"] = raw.image.create_image(tag, filename=str(qcow2), disk_format="qcow2",
                                               container_format="bare", wait=True).id
        made["keypair"] = raw.compute.create_keypair(name=tag, public_key=new_key_pair("someone@laptop")[1]).name
        made["group"] = raw.network.create_security_group(name=tag, description="not a hybrid stack").id
        made["server"] = raw.compute.create_server(
            name=tag, image_id=made["image"], flavor_id=raw.compute.find_flavor("m1.small").id,
            networks=[{"uuid": raw.network.find_network("private").id}], security_groups=[{"name": made["group"]}]).id
        yield made
    finally:
        _remove_foreign(raw, made)


def _remove_foreign(raw, made: dict) -> None:
    if "server" in made:
        raw.compute.delete_server(made["server"], ignore_missing=True)
        deadline = time.monotonic() + 120
        while _exists(raw, made["server"]) and time.monotonic() < deadline:
            time.sleep(1)
    deletes = {"keypair": raw.compute.delete_keypair, "group": raw.network.delete_security_group,
               "image": raw.image.delete_image}
    for kind in made.keys() & deletes.keys():
        deletes[kind](made[kind], ignore_missing=True)


def _exists(raw, server_id: str) -> bool:
    return raw.compute.find_server(server_id, ignore_missing=True) is not None


def stack_leftovers(raw, stack: str) -> list[str]:
    """Every resource in the project that carries the stack's marker or name."""
    marker = f"hybrid:stack={stack}"
    found = [f"server {s.name}" for s in raw.compute.servers() if (s.metadata or {}).get("hybrid:stack") == stack]
    found += [f"keypair {k.name}" for k in raw.compute.keypairs() if marker in (k.public_key or "")]
    found += [f"security_group {g.name}" for g in raw.network.security_groups() if marker in (g.description or "")]
    found += [f"floating_ip {i.floating_ip_address}" for i in raw.network.ips() if marker in (i.description or "")]
    found += [f"image {i.name}" for i in raw.image.images() if f"hybrid_stack={stack}" in (i.tags or [])]
    return found


def test_up_twice_then_down_leaves_nothing_of_the_stack_and_spares_foreign_resources(
        raw, qcow2, settings_of, stack_name, foreign, tmp_path):
    settings = settings_of(stack_name)
    source = prepare_image(qcow2, False, tmp_path)
    try:
        started = time.monotonic()
        first = build_openstack_stack(settings, source).up(report=print)
        print(f"first up: {time.monotonic() - started:.1f} s")
        assert [c.resource.kind for c in first] == ["image", "keypair", "security_group", "server", "floating_ip"]
        started = time.monotonic()
        stack = build_openstack_stack(settings, source)
        assert stack.up(report=print) == []
        print(f"second up: {time.monotonic() - started:.1f} s")

        server = raw.compute.find_server(f"{stack_name}-web-tier", ignore_missing=False)
        [port] = list(raw.network.ports(device_id=server.id))
        [ip] = [i for i in raw.network.ips() if f"hybrid:stack={stack_name}" in (i.description or "")]
        assert ip.port_id == port.id, "the floating IP is associated with the server's port (read from Neutron)"
        assert stack.url() == f"http://{ip.floating_ip_address}:8000/"

        rows = {r["kind"]: r for r in stack.status()}
        assert {kind: row["state"] for kind, row in rows.items()} == {
            "image": "ok", "keypair": "ok", "security_group": "ok", "server": "ok", "floating_ip": "ok", "url": "ok"}
        assert ip.floating_ip_address in rows["floating_ip"]["detail"]
    finally:
        started = time.monotonic()
        build_openstack_stack(settings).down(report=print, delete_image=True)
        print(f"down: {time.monotonic() - started:.1f} s")
    assert stack_leftovers(raw, stack_name) == []
    assert raw.compute.find_server(foreign["server"], ignore_missing=True) is not None
    assert raw.compute.find_keypair(foreign["keypair"], ignore_missing=True) is not None
    assert raw.network.find_security_group(foreign["group"], ignore_missing=True) is not None
    assert raw.image.find_image(foreign["image"], ignore_missing=True) is not None
    assert build_openstack_stack(settings).down(report=print)[:4] == [
        f"floating_ip {stack_name}-web-tier: already absent", f"server {stack_name}-web-tier: already absent",
        f"security_group {stack_name}-web-tier: already absent", f"keypair {stack_name}-openstack: already absent"]


def test_an_unknown_external_network_is_named_and_nothing_is_created(raw, qcow2, settings_of, stack_name, tmp_path):
    settings = settings_of(stack_name, **{"openstack.external_network": "no-such-net"})
    with pytest.raises(NotFoundError, match="external network 'no-such-net' not found in cloud 'hybrid-local'"):
        build_openstack_stack(settings, prepare_image(qcow2, False, tmp_path)).up(report=print)
    assert stack_leftovers(raw, stack_name) == []


def test_status_of_a_stack_that_is_not_set_up(raw, settings_of, stack_name):
    rows = build_openstack_stack(settings_of(stack_name)).status()
    assert {r["kind"]: r["state"] for r in rows} == {
        "image": "missing", "keypair": "missing", "security_group": "missing", "server": "missing",
        "floating_ip": "missing", "url": "missing"}


def test_wrong_credentials_are_a_credentials_error(raw, tmp_path, monkeypatch):
    """The fixture's member cloud with a wrong password, from a clouds.yaml of the test's own."""
    from hybrid.core.errors import CredentialsError
    from hybrid.openstack.session import connect

    auth = dict(raw.config.config["auth"])
    auth["password"] = "wrong-" + uuid.uuid4().hex[:6]
    path = tmp_path / "clouds.yaml"
    import yaml
    path.write_text(yaml.safe_dump({"clouds": {"badpass": {"auth": auth,
                                                           "region_name": raw.config.get_region_name()}}}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    with pytest.raises(CredentialsError, match="cloud 'badpass' rejected the credentials"):
        connect("badpass").compute.find_flavor("m1.small")
