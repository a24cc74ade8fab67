"""The OpenStack stack and its drivers against an in-memory cloud, through the same error-mapping connection."""
import base64
import json
import stat

import pytest
import yaml

from hybrid.core.clock import FakeClock
from hybrid.core.contracts import ACTION_CREATE, ACTION_UPDATE
from hybrid.core.errors import HostKeyError, HybridError, NameTakenError, NotFoundError, QuotaError, WaitTimeout
from hybrid.core.settings import load
from hybrid.openstack.compute import new_key_pair, server_settings_json, user_data
from hybrid.openstack.image import ImageSource, checksums
from hybrid.openstack.session import MappedConnection
from hybrid.openstack.stack import build_openstack_stack, desired_resources, kernel_image, ssh_source
from tests.openstack_fakes import FakeCloud, Record, with_base_image


def quiet(line):
    return None


@pytest.fixture
def cloud():
    return FakeCloud("hybrid-local")


@pytest.fixture
def make(cloud, tmp_path):
    def build(image=None, stack="unit", **overrides):
        # The local fixture's base image (which lends its kernel) and namespace come in only where a test asks.
        settings = load(None, {}, {"stack": stack, "state_dir": str(tmp_path / "state"), "openstack.namespace": "",
                                   "openstack.kernel_image": "", **overrides})
        return build_openstack_stack(settings, image, MappedConnection(cloud, "hybrid-local"), FakeClock())
    return build


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "web.qcow2"
    path.write_bytes(b"QFI\xfb" + b"\0" * 1000)
    md5, sha512 = checksums(path)
    return ImageSource(path, "qcow2", md5, sha512)


def foreign_everything(cloud, name="unit-web-tier"):
    """A server, key pair, security group and floating IP of someone else, some with this stack's names."""
    cloud.keypairs["someone"] = Record(id="someone", name="someone", public_key="ssh-ed25519 AAAA someone@laptop")
    group = cloud.network.create_security_group("other-sg", "not ours")
    server = cloud.compute.create_server(name="other-server", networks=[{"uuid": "net-private"}],
                                         security_groups=[{"name": group.id}], metadata={"owner": "someone"})
    cloud.compute.get_server(server.id)
    cloud.network.create_ip("net-public", description="hybrid:stack=unit-2 hybrid:role=web-tier")
    return {"keypair": "someone", "group": group.id, "server": server.id}


def test_up_creates_everything_and_prints_the_url(make, cloud, image_file):
    stack = make(image_file)
    changes = stack.up(report=quiet)
    assert [(c.action, c.resource.kind) for c in changes] == [
        (ACTION_CREATE, kind) for kind in ("image", "keypair", "security_group", "server", "floating_ip")]
    ip = next(iter(cloud.ips.values()))
    [port] = [p for p in cloud.ports.values() if p.device_id == next(iter(cloud.servers))]
    assert ip.port_id == port.id
    assert stack.url() == f"http://{ip.floating_ip_address}:8000/"
    assert {r["state"] for r in stack.status()} == {"ok"}


def test_up_twice_changes_nothing_the_second_time(make, cloud, image_file):
    make(image_file).up(report=quiet)
    calls = len(cloud.calls)
    assert make(image_file).up(report=quiet) == []
    assert cloud.calls[calls:] == []


def test_plan_of_a_new_stack_and_then_of_a_set_up_one(make, image_file):
    assert {c.action for c in make(image_file).plan()} == {ACTION_CREATE}
    make(image_file).up(report=quiet)
    assert {c.action for c in make(image_file).plan()} == {"keep"}


def test_image_upload_is_skipped_when_name_and_checksum_exist(make, cloud, image_file):
    make(image_file).up(report=quiet)
    make(image_file).up(report=quiet)
    assert [c for c in cloud.calls if c.startswith("create_image")] == ["create_image unit-web-tier"]
    [image] = cloud.images.values()
    assert image.tags == ["hybrid_stack=unit"]
    assert image.properties == {"hybrid_stack": "unit", "hybrid_origin": "uploaded"}


def test_a_changed_image_file_is_uploaded_again_and_the_old_upload_removed(make, cloud, image_file, tmp_path):
    make(image_file).up(report=quiet)
    image_file.path.write_bytes(b"QFI\xfb" + b"\1" * 1000)
    md5, sha512 = checksums(image_file.path)
    changes = make(ImageSource(image_file.path, "qcow2", md5, sha512)).up(report=quiet)
    assert [(c.action, c.resource.kind) for c in changes] == [(ACTION_UPDATE, "image")]
    assert [i.checksum for i in cloud.images.values()] == [md5]


def test_without_an_image_file_the_image_must_exist(make, cloud):
    with pytest.raises(NotFoundError, match="image 'unit-web-tier' not found.*--image PATH"):
        make().up(report=quiet)
    assert cloud.calls == []
    cloud.images["given"] = Record(id="given", name="unit-web-tier", status="active", checksum="x", tags=[],
                                   properties={})
    make().up(report=quiet)
    make().down(report=quiet, delete_image=True)
    assert "given" in cloud.images


def test_down_leaves_only_foreign_resources(make, cloud, image_file):
    foreign = foreign_everything(cloud)
    make(image_file).up(report=quiet)
    lines = make().down(report=quiet, delete_image=True)
    assert set(cloud.keypairs) == {foreign["keypair"]}
    assert set(cloud.groups) == {foreign["group"]}
    assert set(cloud.servers) == {foreign["server"]}
    assert [ip.description for ip in cloud.ips.values()] == ["hybrid:stack=unit-2 hybrid:role=web-tier"]
    assert cloud.images == {}
    assert lines == ["floating_ip unit-web-tier: deleted", "server unit-web-tier: deleted",
                     "security_group unit-web-tier: deleted", "keypair unit-openstack: deleted",
                     "image unit-web-tier: deleted"]
    assert make().down(report=quiet)[:4] == [f"{kind}: already absent" for kind in (
        "floating_ip unit-web-tier", "server unit-web-tier", "security_group unit-web-tier",
        "keypair unit-openstack")]


def test_a_foreign_resource_with_the_stacks_name_is_neither_adopted_nor_deleted(make, cloud, image_file):
    cloud.keypairs["unit-openstack"] = Record(id="unit-openstack", name="unit-openstack",
                                              public_key="ssh-ed25519 AAAA someone@laptop")
    with pytest.raises(NameTakenError, match="keypair unit-openstack exists but is not tagged for this stack"):
        make(image_file).up(report=quiet)
    assert "keypair unit-openstack: left alone (not this stack's)" in make().down(report=quiet)
    assert "unit-openstack" in cloud.keypairs


def test_a_server_in_error_is_reported_and_the_run_leaves_nothing_behind(make, cloud, image_file):
    cloud.boot_error = "No valid host was found."
    lines = []
    with pytest.raises(HybridError, match="server unit-web-tier to become ACTIVE failed: .*No valid host"):
        make(image_file).up(report=lines.append)
    assert cloud.count() == {"images": 0, "keypairs": 0, "groups": 0, "servers": 0, "ips": 0}
    assert "rolled back: server unit-web-tier: deleted" in lines
    assert not (image_file.path.parent / "state" / "keys" / "unit-openstack.pem").exists()


def test_a_quota_hit_is_a_quota_error_and_the_run_is_rolled_back(make, cloud, image_file):
    cloud.ip_quota = 0
    with pytest.raises(QuotaError, match="Quota exceeded.*quota"):
        make(image_file).up(report=quiet)
    assert cloud.count() == {"images": 0, "keypairs": 0, "groups": 0, "servers": 0, "ips": 0}


def test_a_second_failed_run_keeps_what_the_first_run_made(make, cloud, image_file):
    make(image_file).up(report=quiet)
    del cloud.ips[next(iter(cloud.ips))]
    cloud.ip_quota = 0
    with pytest.raises(QuotaError):
        make(image_file).up(report=quiet)
    assert cloud.count() == {"images": 1, "keypairs": 1, "groups": 1, "servers": 1, "ips": 0}


def test_an_unknown_external_network_stops_up_before_anything_is_made(make, cloud, image_file):
    with pytest.raises(NotFoundError, match="external network 'nowhere' not found.*openstack.external_network"):
        make(image_file, **{"openstack.external_network": "nowhere"}).up(report=quiet)
    assert cloud.calls == []
    with pytest.raises(HybridError, match="'private' is not an external network"):
        make(image_file, **{"openstack.external_network": "private"}).up(report=quiet)


def test_an_unknown_flavor_or_network_is_named(make, image_file):
    with pytest.raises(NotFoundError, match="flavor 'm9.huge' not found.*openstack.flavor"):
        make(image_file, **{"openstack.flavor": "m9.huge"}).plan()
    with pytest.raises(NotFoundError, match="network 'lan' not found.*openstack.network"):
        make(image_file, **{"openstack.network": "lan"}).plan()


def test_security_group_rules_are_converged(make, cloud, image_file):
    make(image_file, **{"aws.operator_cidr": "198.51.100.7/32"}).up(report=quiet)
    [group] = cloud.groups.values()
    ingress = sorted((r.protocol, r.port_range_min, r.remote_ip_prefix) for r in cloud.rules.values()
                     if r.direction == "ingress")
    assert ingress == [("icmp", None, "0.0.0.0/0"), ("tcp", 22, "198.51.100.7/32"), ("tcp", 8000, "0.0.0.0/0")]
    cloud.network.create_security_group_rule(security_group_id=group.id, direction="ingress", ethertype="IPv4",
                                             protocol="tcp", port_range_min=3306, port_range_max=3306,
                                             remote_ip_prefix="0.0.0.0/0")
    changes = make(image_file).up(report=quiet)
    assert [c.describe() for c in changes] == [(
        "update security_group unit-web-tier: ingress: icmp from 0.0.0.0/0, tcp/22 from 198.51.100.7/32, "
        "tcp/3306 from 0.0.0.0/0, tcp/8000 from 0.0.0.0/0 -> icmp from 0.0.0.0/0, tcp/8000 from 0.0.0.0/0")]
    assert sum(r.direction == "egress" for r in cloud.rules.values()) == 2
    assert make(image_file).up(report=quiet) == []


def test_the_keypair_private_key_is_written_0600_and_the_public_key_names_the_stack(make, cloud, image_file,
                                                                                    tmp_path):
    make(image_file).up(report=quiet)
    key = tmp_path / "state" / "keys" / "unit-openstack.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert cloud.keypairs["unit-openstack"].public_key.endswith(" hybrid:stack=unit")
    make().down(report=quiet)
    assert not key.exists()


def test_an_existing_floating_ip_of_the_stack_is_reused_and_associated(make, cloud, image_file):
    ip = cloud.network.create_ip("net-public", description="hybrid:stack=unit hybrid:role=web-tier")
    make(image_file).up(report=quiet)
    assert list(cloud.ips) == [ip.id] and ip.port_id is not None
    ip["port_id"] = None
    changes = make(image_file).up(report=quiet)
    assert [c.describe() for c in changes] == ["update floating_ip unit-web-tier: server: none -> unit-web-tier"]


def test_status_of_a_missing_stack(make, image_file):
    rows = make(image_file).status()
    assert {r["kind"]: r["state"] for r in rows} == {"image": "missing", "keypair": "missing",
                                                      "security_group": "missing", "server": "missing",
                                                      "floating_ip": "missing", "url": "missing"}


def test_user_data_writes_the_settings_and_enables_the_service_without_credentials():
    settings = load(None, {}, {"stack": "shop"})
    text = user_data(server_settings_json(settings))
    import base64

    import yaml
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    [written] = config["write_files"]
    served = json.loads(base64.b64decode(written["content"]))
    assert written["path"] == "/etc/hybrid/settings.json"
    assert served["stack"] == "shop" and served["web"]["bind"] == "0.0.0.0:8000"
    assert ["systemctl", "enable", "--now", "hybrid-web.service"] in config["runcmd"]
    assert not any(word in text.lower() for word in ("password", "secret", "aws_access_key"))


def test_desired_resources_carry_the_stack_marker():
    settings = load(None, {}, {"stack": "shop"})
    by_kind = {r.kind: r for r in desired_resources(settings)}
    assert by_kind["security_group"].inputs["description"] == "hybrid:stack=shop hybrid:role=web-tier"
    assert by_kind["floating_ip"].properties == {"server": "shop-web-tier"}
    assert not by_kind["image"].managed
    # On the local fixture SSH may come only from its namespace's own address, where the operator's connections are made
    assert by_kind["security_group"].properties == {
        "ingress": "icmp from 0.0.0.0/0, tcp/22 from 172.24.4.1/32, tcp/8000 from 0.0.0.0/0"}


@pytest.mark.parametrize(("overrides", "ssh"), [
    ({"openstack.cloud": "devstack"}, ""),
    ({"openstack.namespace": ""}, ""),
    ({"openstack.cloud": "devstack", "aws.operator_cidr": "198.51.100.7/32"}, "198.51.100.7/32"),
    ({"aws.operator_cidr": "198.51.100.7/32"}, "198.51.100.7/32"),
    ({}, "172.24.4.1/32"),
])
def test_ssh_is_open_to_the_operator_cidr_else_on_the_fixture_to_its_namespace_else_to_no_one(overrides, ssh):
    assert ssh_source(load(None, {}, overrides)) == ssh


def test_an_upload_borrows_the_kernel_of_the_fixture_base_image_when_baked_on_the_local_server(cloud, tmp_path,
                                                                                             image_file):
    with_base_image(cloud)
    settings = load(None, {}, {"stack": "unit", "state_dir": str(tmp_path / "state"), "openstack.namespace": ""})
    stack = build_openstack_stack(settings, image_file, MappedConnection(
        cloud, "hybrid-local"), FakeClock())
    stack.up(report=quiet)
    [uploaded] = [i for i in cloud.images.values() if i.name == "unit-web-tier"]
    assert uploaded.properties["kernel_id"] == "kernel-1" and uploaded.properties["ramdisk_id"] == "ramdisk-1"
    assert uploaded.properties["os_command_line"] == "root=/dev/vda console=ttyS0"


def test_without_the_kernel_image_an_upload_fails_before_anything_is_created(cloud, tmp_path, image_file):
    settings = load(None, {}, {"stack": "unit", "state_dir": str(tmp_path / "state"), "openstack.namespace": ""})
    stack = build_openstack_stack(settings, image_file, MappedConnection(
        cloud, "hybrid-local"), FakeClock())
    with pytest.raises(NotFoundError, match="debian-12-base.*openstack.kernel_image"):
        stack.up(report=quiet)
    assert not cloud.images and not cloud.servers


@pytest.mark.parametrize(("overrides", "kernel"), [
    ({}, "debian-12-base"), ({"aws.target": "aws"}, ""), ({"openstack.kernel_image": ""}, ""),
    ({"aws.target": "aws", "openstack.kernel_image": "my-kernel"}, "my-kernel")])
def test_the_kernel_image_is_the_fixture_base_image_only_for_images_baked_on_the_local_server(overrides, kernel):
    assert kernel_image(load(None, {}, overrides)) == kernel


def test_the_server_user_data_names_the_aws_endpoint_it_reaches_and_no_credentials():
    settings = load(None, {}, {"stack": "shop"})
    [server] = [r for r in desired_resources(settings, aws_endpoint="http://172.24.4.1:4566") if r.kind == "server"]
    text = server.inputs["user_data"]
    written = yaml.safe_load(text)["write_files"][0]
    served = json.loads(base64.b64decode(written["content"]))
    assert served["aws"]["endpoint_url"] == "http://172.24.4.1:4566" and served["web"]["bind"] == "0.0.0.0:8000"
    assert "secret" not in text.lower() and "aws_access_key_id" not in text


def test_new_key_pair_is_an_openssh_pair_with_the_comment():
    private, public = new_key_pair("hybrid:stack=x")
    import io

    import paramiko
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(private))
    assert public == f"ssh-ed25519 {key.get_base64()} hybrid:stack=x"


def test_the_ssh_target_is_pinned_to_the_host_keys_the_servers_console_printed(make, cloud, image_file):
    from tests.unit.test_openstack_hostkeys import REAL_CONSOLE, REAL_FINGERPRINT

    stack = make(image_file)
    stack.up(report=quiet)
    [server] = cloud.servers.values()
    server["console"] = "[    0.000000] Linux version 6.1.0\n" + REAL_CONSOLE
    target = stack.ssh_target("debian")
    assert target.host == next(iter(cloud.ips.values())).floating_ip_address and target.user == "debian"
    assert [(k.key_type, k.fingerprint) for k in target.host_keys] == [("ssh-ed25519", REAL_FINGERPRINT)]

    server["console"] = "[    0.0] Linux version 6.1.0\n[   20.1] cloud-init[1]: Cloud-init v. 22.4.2 finished at "
    assert stack.ssh_target("debian").host_keys == target.host_keys, "after a reboot: what its console printed"
    [saved] = (stack.settings.state_path / "keys").glob("*.host-keys.json")
    saved.write_text(saved.read_text().replace(server.id, "server-gone"))
    with pytest.raises(HostKeyError, match="cloud-init finished but no SSH host keys"):
        stack.ssh_target("debian")


def test_without_host_keys_on_the_console_there_is_no_ssh_target(make, cloud, image_file):
    stack = make(image_file)
    stack.up(report=quiet)
    [server] = cloud.servers.values()
    server["console"] = "[    0.000000] Linux version 6.1.0\n-----BEGIN SSH HOST KEY KEYS-----\n"
    with pytest.raises(WaitTimeout, match="SSH host keys of server unit-web-tier on its console"):
        stack.ssh_target("debian")
