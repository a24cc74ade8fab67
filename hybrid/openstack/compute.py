"""Nova parts of a stack: the key pair and the web-tier server.

Nova key pairs have no tags, so the key pair's public key carries the stack in its comment
(``ssh-ed25519 AAAA... hybrid:stack=<stack>``); the key is made here, so the private half never crosses the network.
The server carries ``hybrid:stack`` / ``hybrid:role`` in its metadata and boots with cloud-init user data that
writes the web tier's settings JSON (never credentials) and enables its service.
"""
from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hybrid.core.clock import Clock, SystemClock
from hybrid.core.contracts import Observed, Resource
from hybrid.core.errors import NotFoundError
from hybrid.core.keys import KeyPairDriverBase
from hybrid.core.naming import STACK_TAG
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for
from hybrid.openstack.names import carries_marker, stack_marker

log = logging.getLogger(__name__)
SERVER_BOOT_TIMEOUT = 600.0
SERVER_DELETE_TIMEOUT = 300.0
WEB_SERVICE = "hybrid-web.service"
SETTINGS_PATH = "/etc/hybrid/settings.json"
Dependency = Callable[[str], "Observed | None"]


class KeyPairDriver(KeyPairDriverBase):
    """The stack's Nova key pair, marked in its public key's comment; a created private key is written to
    ``key_dir/<name>.pem`` with mode 0600."""

    kind = "keypair"
    without_key = "SSH to the server is not possible; `hybrid openstack down` then `up` makes a new pair"

    def __init__(self, conn: Any, stack: str, key_dir: Path) -> None:
        super().__init__(stack, key_dir)
        self.conn = conn

    def find_pair(self, name: str) -> tuple[str, bool] | None:
        pair = self.conn.compute.find_keypair(name, ignore_missing=True)
        if pair is None:
            return None
        return pair.name, carries_marker(_comment(pair.public_key), self.stack)

    def make_pair(self, resource: Resource) -> tuple[str, str]:
        private, public = new_key_pair(stack_marker(self.stack))
        pair = self.conn.compute.create_keypair(name=resource.name, public_key=public)
        return pair.name, private

    def delete_pair(self, name: str) -> None:
        self.conn.compute.delete_keypair(name, ignore_missing=False)


def new_key_pair(comment: str) -> tuple[str, str]:
    """A fresh Ed25519 key: (OpenSSH private key, ``ssh-ed25519 ... <comment>`` public key)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {comment}"


def _comment(public_key: str | None) -> str:
    parts = (public_key or "").split(None, 2)
    return parts[2] if len(parts) == 3 else ""


def server_settings_json(settings: Settings, aws_endpoint: str = "") -> str:
    """The settings the server's web tier runs with: the operator's, listening on all interfaces of its port, and
    with ``aws_endpoint`` (when given) as the AWS endpoint: the address under which the server reaches it."""
    port = settings.web.bind.rpartition(":")[2]
    served = dataclasses.replace(settings, web=dataclasses.replace(settings.web, bind=f"0.0.0.0:{port}"))
    if aws_endpoint:
        served = dataclasses.replace(served, aws=dataclasses.replace(served.aws, endpoint_url=aws_endpoint))
    return served.to_json()


def user_data(settings_json: str) -> str:
    """cloud-init: write the settings JSON, then enable and start the web tier's service."""
    config = {
        "write_files": [{"path": SETTINGS_PATH, "owner": "root:root", "permissions": "0644",
                         "encoding": "b64", "content": base64.b64encode(settings_json.encode()).decode()}],
        "runcmd": [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", WEB_SERVICE]],
    }
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


class ServerDriver:
    """The web-tier server. Property ``status`` (ACTIVE). Inputs name the flavor, network and user data; the
    image, security group and key pair come from the stack's other drivers through ``dependency(kind)``."""

    kind = "server"

    def __init__(self, conn: Any, stack: str, dependency: Dependency, clock: Clock | None = None,
                 boot_timeout: float = SERVER_BOOT_TIMEOUT) -> None:
        self.conn, self.stack, self.dependency = conn, stack, dependency
        self.clock, self.boot_timeout = clock or SystemClock(), boot_timeout
        self.on_poll: Callable[[Poll[Any]], None] | None = None

    def owned(self, server: Any) -> bool:
        return (server.metadata or {}).get(STACK_TAG) == self.stack

    def find(self, name: str) -> Any | None:
        servers = [s for s in self.conn.compute.servers(name=name) if s.name == name]
        servers.sort(key=lambda s: not self.owned(s))
        return servers[0] if servers else None

    def observe(self, resource: Resource) -> Observed | None:
        server = self.find(resource.name)
        if server is None:
            return None
        fault = (server.fault or {}).get("message", "") if server.status == "ERROR" else ""
        return Observed(self.kind, resource.name, server.id, self.owned(server), {"status": server.status},
                        state="present" if server.status == "ACTIVE" else server.status.lower(), notes=(f"fault: {fault}",) if fault else ())

    def create(self, resource: Resource) -> Observed:
        image, group, pair = (self._required(kind) for kind in ("image", "security_group", "keypair"))
        flavor = self.conn.compute.find_flavor(resource.inputs["flavor"], ignore_missing=False)
        network = self.conn.network.find_network(resource.inputs["network"], ignore_missing=False)
        server = self.conn.compute.create_server(
            name=resource.name, image_id=image.id, flavor_id=flavor.id, networks=[{"uuid": network.id}],
            key_name=pair.name, security_groups=[{"name": group.id}], metadata=dict(resource.tags),
            user_data=base64.b64encode(resource.inputs["user_data"].encode()).decode())
        self.wait_active(resource.name, server.id)
        return Observed(self.kind, resource.name, server.id, True, {"status": "ACTIVE"})

    def _required(self, kind: str) -> Observed:
        found = self.dependency(kind)
        if found is None:
            raise NotFoundError(f"the server needs the stack's {kind}, which does not exist")
        return found

    def wait_active(self, name: str, server_id: str) -> None:
        wait_for(f"server {name} to become ACTIVE", lambda: self._boot_poll(server_id), timeout=self.boot_timeout,
                 interval=2.0, clock=self.clock, on_poll=self.on_poll)

    def _boot_poll(self, server_id: str) -> Poll[str]:
        server = self.conn.compute.get_server(server_id)
        failed = ""
        if server.status == "ERROR":
            failed = f"it is in ERROR: {(server.fault or {}).get('message', 'no fault message')}"
        return Poll(server.status, done=server.status == "ACTIVE", failed=failed, state=server.status)

    def update(self, resource: Resource, observed: Observed) -> None:
        """A server of this stack that is not ACTIVE: one in ERROR is replaced, one stopped is started, one still
        building is waited for."""
        status = observed.properties.get("status")
        if status == "ERROR":
            self.delete(observed)
            self.create(resource)
            return
        if status == "SHUTOFF":
            self.conn.compute.start_server(observed.id)
        self.wait_active(resource.name, observed.id)

    def delete(self, observed: Observed) -> bool:
        self.conn.compute.delete_server(observed.id, ignore_missing=True)
        wait_for(f"server {observed.name} to be deleted", lambda: self._gone_poll(observed.id),
                 timeout=SERVER_DELETE_TIMEOUT, interval=1.0, clock=self.clock)
        return True

    def _gone_poll(self, server_id: str) -> Poll[bool]:
        try:
            server = self.conn.compute.get_server(server_id)
        except NotFoundError:
            return Poll(True, done=True, state="gone")
        return Poll(False, done=server.status == "DELETED", state=server.status)
