"""A stack's OpenStack side: what it should have (pure), its drivers, its own steps (check the cloud, the web tier's
URL, SSH, credentials), and up / down / status on the shared stack engine (``hybrid.core.stack_engine``).

The plan is the engine's: the same create / update / keep and the same "name is taken" refusal as on AWS.
``up`` checks the cloud first (flavor, network, external network, image), then creates or converges in order;
if a step fails it deletes what this run created before raising, so a failed ``up`` leaves nothing behind.
``down`` deletes in reverse order, and only what carries the stack's marker; the image only when asked and only
when this stack uploaded it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid.core import netns, stack_engine
from hybrid.core.clock import Clock, SystemClock
from hybrid.core.contracts import Change, Observed, Resource, ResourceDriver
from hybrid.core.errors import NotFoundError
from hybrid.core.naming import ROLE_WEB_TIER
from hybrid.core.settings import FIXTURE_GATEWAY, FIXTURE_KERNEL_IMAGE, FIXTURE_NAMESPACE, Settings
from hybrid.core.stack_engine import STATE_MISSING, Report, StackEngine
from hybrid.core.wait import Poll
from hybrid.openstack.compute import server_settings_json, user_data
from hybrid.openstack.hostkeys import HostKey, host_keys_from_json, host_keys_json, wait_for_console_host_keys
from hybrid.openstack.image import ImageSource
from hybrid.openstack.names import OpenStackNames
from hybrid.openstack.network import describe_rules, find_external_network, web_tier_rules

if TYPE_CHECKING:
    from hybrid.openstack.remote import ServiceCheck, Target

log = logging.getLogger(__name__)
DEPENDENCY_TIMEOUT = 120.0
IMAGE_HINT = "pass --image PATH (a qcow2 or VMDK file) to upload it, or set openstack.image_name"


def stack_names(settings: Settings) -> OpenStackNames:
    return OpenStackNames(settings.stack, settings.openstack.image_name)


def ssh_source(settings: Settings) -> str:
    """Where SSH to the server may come from: ``aws.operator_cidr``, else, on the local fixture, its namespace's
    own address (the operator's connections to a floating IP are made there); else nowhere."""
    if settings.aws.operator_cidr:
        return settings.aws.operator_cidr
    if settings.openstack.reach_namespace() == FIXTURE_NAMESPACE:
        return f"{FIXTURE_GATEWAY}/32"
    return ""


def web_port(settings: Settings) -> int:
    return int(settings.web.bind.rpartition(":")[2])


def desired_resources(settings: Settings, image: ImageSource | None = None, aws_endpoint: str = "") -> list[Resource]:
    """Every resource of the stack's OpenStack side, in creation order. Without a local image file the image is
    only referred to by name: it must exist, and is never changed. ``aws_endpoint``: where the server's AWS calls go,
    when it reaches AWS under another address than this machine does."""
    names, cloud, tags = stack_names(settings), settings.openstack, stack_names(settings).tags()
    description = names.description()
    return [
        Resource("image", names.image, ROLE_WEB_TIER, {"checksum": image.md5} if image else {}, tags,
                 managed=image is not None, hint=IMAGE_HINT),
        Resource("keypair", names.key_pair, ROLE_WEB_TIER, {}, tags),
        Resource("security_group", names.security_group, ROLE_WEB_TIER,
                 {"ingress": describe_rules(web_tier_rules(ssh_source(settings), web_port(settings)))}, tags,
                 inputs={"description": description}),
        Resource("server", names.server, ROLE_WEB_TIER, {"status": "ACTIVE"}, tags,
                 inputs={"flavor": cloud.flavor, "network": cloud.network,
                         "user_data": user_data(server_settings_json(settings, aws_endpoint))}),
        Resource("floating_ip", names.floating_ip, ROLE_WEB_TIER, {"server": names.server}, tags,
                 inputs={"external_network": cloud.external_network, "server": names.server,
                         "description": description}),
    ]


@dataclass
class OpenStackStack:
    """One stack's OpenStack side, acting through drivers (openstacksdk adapters, or fakes in unit tests)."""

    settings: Settings
    conn: Any
    drivers: Mapping[str, ResourceDriver]
    desired: list[Resource]
    clock: Clock = field(default_factory=SystemClock)

    def resource(self, kind: str) -> Resource:
        return next(r for r in self.desired if r.kind == kind)

    @property
    def engine(self) -> StackEngine:
        """The shared stack engine over this stack's resources and drivers."""
        return StackEngine(self.desired, self.drivers, self.clock, "409", DEPENDENCY_TIMEOUT,
                           kept_because={"image": "not uploaded by this stack"})

    def find(self, kind: str) -> Observed | None:
        """This stack's resource of that kind as the cloud reports it now (what other drivers depend on)."""
        return self.engine.find(self.resource(kind))

    def observe(self) -> dict[tuple[str, str], Observed | None]:
        return self.engine.observe()

    def check_cloud(self) -> None:
        """Fails early, before anything is created, when the cloud lacks what the stack needs."""
        cloud = self.settings.openstack
        if self.conn.compute.find_flavor(cloud.flavor, ignore_missing=True) is None:
            raise NotFoundError(f"flavor {cloud.flavor!r} not found in cloud {cloud.cloud!r}: set openstack.flavor "
                                "(`openstack flavor list`)")
        if self.conn.network.find_network(cloud.network, ignore_missing=True) is None:
            raise NotFoundError(f"network {cloud.network!r} not found in cloud {cloud.cloud!r}: set "
                                "openstack.network (`openstack network list`)")
        find_external_network(self.conn, cloud.external_network)
        image = self.resource("image")
        if not image.managed and self.find("image") is None:
            raise NotFoundError(f"image {image.name!r} not found in cloud {cloud.cloud!r}: {image.hint}")

    def plan(self) -> list[Change]:
        self.check_cloud()
        return self.engine.plan()

    def up(self, report: Report = log.info, on_poll: Callable[[Poll[Any]], None] | None = None) -> list[Change]:
        """Creates what is missing and converges what differs; returns the changes made. On failure, deletes what
        this run created, then raises. ``on_poll`` sees the server's boot progress."""
        if on_poll is not None and hasattr(self.drivers["server"], "on_poll"):
            self.drivers["server"].on_poll = on_poll  # type: ignore[attr-defined]
        return self.engine.apply(self.plan(), report, roll_back=True)

    def url(self) -> str:
        """The web tier's address: ``http://<floating ip>:<port>/``; empty when the stack has no floating IP."""
        ip = self.find("floating_ip")
        if ip is None:
            return ""
        return f"http://{ip.properties['address']}:{web_port(self.settings)}/"

    def ssh_target(self, user: str) -> Target:
        """The server's floating IP as an SSH target, pinned to the host keys its console printed (waited for,
        up to ``HOST_KEYS_TIMEOUT``, while cloud-init has not printed them yet)."""
        from hybrid.openstack.remote import Target  # paramiko loads only for the SSH steps

        ip, server = self.find("floating_ip"), self.find("server")
        if ip is None or server is None or ip.properties.get("server") == "none":
            raise NotFoundError(f"stack {self.settings.stack} has no server with a floating IP: run "
                                "`hybrid openstack up` first")
        host_keys = self.server_host_keys(server.id, server.name)
        return Target(ip.properties["address"], user=user, host_keys=host_keys,
                      namespace=self.settings.openstack.reach_namespace())

    def server_host_keys(self, server_id: str, name: str) -> tuple[HostKey, ...]:
        """The server's host keys from its console (``wait_for_console_host_keys``), remembered in the state folder
        under the server's id for when a reboot has cleared its console."""
        saved = self.settings.state_path / "keys" / f"{stack_names(self.settings).key_pair}.host-keys.json"
        remembered = host_keys_from_json(saved.read_text(), server_id) if saved.exists() else ()
        keys = wait_for_console_host_keys(self.conn, server_id, name, self.clock, remembered=remembered)
        if keys != remembered:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(host_keys_json(server_id, keys))
        return keys

    def key_path(self) -> Path:
        return self.settings.state_path / "keys" / f"{stack_names(self.settings).key_pair}.pem"

    def ssh_skip_reason(self) -> str:
        """Why the SSH steps are skipped (empty when they run): the floating IPs are reachable neither from this
        machine (``openstack.routable``) nor from a namespace that exists here (``openstack.namespace``)."""
        return floating_ips_unreachable(self.settings)

    def deliver_credentials(self, content: bytes, user: str) -> str:
        """Installs the web tier's AWS credentials on the server over SSH; returns where."""
        from hybrid.openstack.remote import install_credentials  # paramiko: SSH steps only

        return install_credentials(self.ssh_target(user), self.key_path(), content)

    def check(self, user: str) -> ServiceCheck:
        from hybrid.openstack.remote import check  # paramiko: SSH steps only

        return check(self.ssh_target(user), self.key_path(), health_url=f"http://localhost:{web_port(self.settings)}/healthz")

    def down(self, report: Report = log.info, delete_image: bool = False) -> list[str]:
        """Deletes the stack's floating IP, server, security group and key pair (and, with ``delete_image``, an
        image this stack uploaded); returns one line per resource. Safe to repeat."""
        return self.engine.delete_in_reverse(report, lambda resource: self._delete(resource, delete_image))

    def down_preview(self, delete_image: bool = False) -> list[str]:
        """What `down` would do, one line per resource, changing nothing."""
        found = list(reversed(self.engine.found_each()))
        kept = [(r, f) for r, f in found if r.kind == "image" and not delete_image and f is not None]
        lines = self.engine.deletion_preview([(r, f) for r, f in found if (r, f) not in kept])
        return lines + [f"keep image {r.name} (pass --delete-image to delete it)" for r, _ in kept]

    def _delete(self, resource: Resource, delete_image: bool) -> str:
        """Every resource of that name this stack owns (Nova and Neutron allow several); the image only when asked."""
        if resource.kind == "image" and not delete_image:
            return f"image {resource.name}: kept (pass --delete-image to delete an image this stack uploaded)"
        return self.engine.delete_every(resource)

    def status(self) -> list[dict[str, Any]]:
        """One row per resource (kind, name, id, state, detail), then the web tier's URL."""
        rows = [status_row(resource, found) for resource, found in self.engine.found_each()]
        url = self.url()
        rows.append({"kind": "url", "name": ROLE_WEB_TIER, "id": "", "state": "ok" if url else STATE_MISSING,
                     "detail": url or "no floating IP"})
        return rows


def floating_ips_unreachable(settings: Settings) -> str:
    """Why this machine cannot reach the cloud's floating IPs, or "" when it can."""
    cloud = settings.openstack
    namespace = cloud.reach_namespace()
    if namespace:
        if netns.exists(namespace):
            return ""
        return (f"skipped: the floating IPs of cloud {cloud.cloud!r} are reached from network namespace "
                f"{namespace!r}, which does not exist here (the local fixture without real compute, or down)")
    if cloud.routable:
        return ""
    return (f"skipped: the floating IPs of cloud {cloud.cloud!r} are not reachable from this machine "
            "(openstack.routable = false, openstack.namespace empty)")


def status_row(resource: Resource, found: Observed | None) -> dict[str, Any]:
    row = stack_engine.status_row(resource, found, stack_engine.notes_of(resource, found))
    if found is not None and resource.kind == "floating_ip":
        row["detail"] = "; ".join(filter(None, [found.properties.get("address", ""), row["detail"]]))
    return row


def kernel_image(settings: Settings) -> str:
    """The Glance image whose kernel boots the web-tier image ("" when its disk boots itself)."""
    name = settings.openstack.kernel_image
    if name == "auto":
        return FIXTURE_KERNEL_IMAGE if settings.aws.target == "emulator" else ""
    return name


def build_openstack_stack(settings: Settings, image: ImageSource | None = None, conn: Any = None,
                          clock: Clock | None = None, aws_endpoint: str = "") -> OpenStackStack:
    """The stack wired to openstacksdk drivers on the cloud named by ``openstack.cloud`` (or on ``conn``)."""
    # lazy for start-up cost: these load openstacksdk, which the plan, the names and the tests' fakes do not need
    from hybrid.openstack.compute import KeyPairDriver, ServerDriver
    from hybrid.openstack.image import ImageDriver
    from hybrid.openstack.network import FloatingIpDriver, SecurityGroupDriver
    from hybrid.openstack.session import connect

    conn = conn if conn is not None else connect(settings.openstack.cloud)
    clock = clock or SystemClock()
    stack = OpenStackStack(settings, conn, {}, desired_resources(settings, image, aws_endpoint), clock)
    name = settings.stack
    stack.drivers = {d.kind: d for d in (
        ImageDriver(conn, name, image, kernel_image(settings)), KeyPairDriver(conn, name, settings.state_path / "keys"),
        SecurityGroupDriver(conn, name), ServerDriver(conn, name, stack.find, clock),
        FloatingIpDriver(conn, name, stack.find))}
    return stack
