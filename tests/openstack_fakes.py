"""An in-memory cloud shaped like an openstacksdk connection, for unit tests (like httpx's mock transport).

It holds state as a cloud would (images, key pairs, security groups and rules, servers with their ports, floating
IPs), answers the subset of ``compute`` / ``network`` / ``image`` proxy calls the drivers make, and raises
openstacksdk's own exceptions, so the drivers run through ``MappedConnection`` exactly as against a real cloud.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import openstack.exceptions as osx


BOOT_PROPERTIES = ("kernel_id", "ramdisk_id", "os_command_line")


def with_base_image(cloud: "FakeCloud") -> "FakeCloud":
    """``cloud`` with the local fixture's base image ``debian-12-base``, whose kernel boots locally baked disks."""
    cloud.images["base"] = Record(id="base", name="debian-12-base", status="active", checksum="b", tags=[],
                                  properties={"kernel_id": "kernel-1", "ramdisk_id": "ramdisk-1",
                                              "os_command_line": "root=/dev/vda console=ttyS0"})
    return cloud


class Record(dict):
    """A resource: readable as attributes and as items, like openstacksdk's resources."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def http_error(kind: type, status: int, message: str) -> Exception:
    error = kind(message)
    error.status_code = status
    error.details = message
    return error


class FakeCloud:
    """The whole cloud; ``compute``, ``network`` and ``image`` are views on the same state."""

    def __init__(self, cloud: str = "fake") -> None:
        self.cloud = cloud
        self.ids = itertools.count(1)
        self.images: dict[str, Record] = {}
        self.keypairs: dict[str, Record] = {}
        self.groups: dict[str, Record] = {}
        self.rules: dict[str, Record] = {}
        self.servers: dict[str, Record] = {}
        self.ports: dict[str, Record] = {}
        self.ips: dict[str, Record] = {}
        self.flavors = {"m1.small": Record(id="flavor-1", name="m1.small")}
        self.networks = {"public": Record(id="net-public", name="public", is_router_external=True),
                         "private": Record(id="net-private", name="private", is_router_external=False)}
        self.boot_polls = 2
        self.boot_error = ""
        self.ip_quota = 50
        self.calls: list[str] = []
        self.compute, self.network, self.image = FakeCompute(self), FakeNetwork(self), FakeImage(self)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def not_found(self, what: str) -> Exception:
        return http_error(osx.NotFoundException, 404, f"{what} could not be found")

    def count(self) -> dict[str, int]:
        return {"images": len(self.images), "keypairs": len(self.keypairs), "groups": len(self.groups),
                "servers": len(self.servers), "ips": len(self.ips)}


class _View:
    is_fake_proxy = True

    def __init__(self, cloud: FakeCloud) -> None:
        self.cloud = cloud

    def _log(self, call: str) -> None:
        self.cloud.calls.append(call)


class FakeCompute(_View):
    def find_flavor(self, name: str, ignore_missing: bool = True) -> Record | None:
        return _find(self.cloud.flavors.get(name), name, ignore_missing, self.cloud)

    def find_keypair(self, name: str, ignore_missing: bool = True) -> Record | None:
        return _find(self.cloud.keypairs.get(name), name, ignore_missing, self.cloud)

    def create_keypair(self, name: str, public_key: str) -> Record:
        self._log(f"create_keypair {name}")
        if name in self.cloud.keypairs:
            raise http_error(osx.ConflictException, 409, f"Key pair '{name}' already exists.")
        self.cloud.keypairs[name] = Record(id=name, name=name, public_key=public_key)
        return self.cloud.keypairs[name]

    def delete_keypair(self, name: str, ignore_missing: bool = True) -> None:
        self._log(f"delete_keypair {name}")
        if self.cloud.keypairs.pop(name, None) is None and not ignore_missing:
            raise self.cloud.not_found(f"keypair {name}")

    def servers(self, name: str | None = None) -> Iterator[Record]:
        yield from [s for s in self.cloud.servers.values() if name is None or name in s.name]

    def create_server(self, **body: Any) -> Record:
        self._log(f"create_server {body['name']}")
        server = Record(id=self.cloud.new_id("server"), name=body["name"], status="BUILD", fault=None,
                        metadata=body.get("metadata", {}), polls=0, body=body)
        self.cloud.servers[server.id] = server
        group_ids = [g["name"] for g in body.get("security_groups", [])]
        port = Record(id=self.cloud.new_id("port"), device_id=server.id, network_id=body["networks"][0]["uuid"],
                      security_group_ids=group_ids)
        self.cloud.ports[port.id] = port
        return server

    def get_server(self, server_id: str) -> Record:
        server = self.cloud.servers.get(server_id)
        if server is None:
            raise self.cloud.not_found(f"server {server_id}")
        server["polls"] += 1
        if server.status == "BUILD" and server.polls >= self.cloud.boot_polls:
            server["status"] = "ERROR" if self.cloud.boot_error else "ACTIVE"
            server["fault"] = {"message": self.cloud.boot_error} if self.cloud.boot_error else None
        return server

    def get_server_console_output(self, server_id: str, length: int | None = None) -> dict:
        """What the server printed on its console (``console`` of its record; a test writes it)."""
        return {"output": self.get_server(server_id).get("console", "")}

    def start_server(self, server_id: str) -> None:
        self.cloud.servers[server_id]["status"] = "ACTIVE"

    def delete_server(self, server_id: str, ignore_missing: bool = True) -> None:
        self._log(f"delete_server {server_id}")
        if self.cloud.servers.pop(server_id, None) is None and not ignore_missing:
            raise self.cloud.not_found(f"server {server_id}")
        for port in [p for p in self.cloud.ports.values() if p.device_id == server_id]:
            del self.cloud.ports[port.id]
            for ip in self.cloud.ips.values():
                if ip.port_id == port.id:
                    ip["port_id"] = None


class FakeNetwork(_View):
    def find_network(self, name: str, ignore_missing: bool = True) -> Record | None:
        return _find(self.cloud.networks.get(name), name, ignore_missing, self.cloud)

    def security_groups(self, name: str | None = None) -> Iterator[Record]:
        yield from [g for g in self.cloud.groups.values() if name is None or g.name == name]

    def security_group_rules(self, security_group_id: str) -> Iterator[Record]:
        yield from [r for r in self.cloud.rules.values() if r.security_group_id == security_group_id]

    def create_security_group(self, name: str, description: str = "") -> Record:
        self._log(f"create_security_group {name}")
        group = Record(id=self.cloud.new_id("sg"), name=name, description=description, tags=[])
        self.cloud.groups[group.id] = group
        for ethertype in ("IPv4", "IPv6"):
            self.create_security_group_rule(security_group_id=group.id, direction="egress", ethertype=ethertype)
        return group

    def create_security_group_rule(self, **body: Any) -> Record:
        rule = Record({"protocol": None, "port_range_min": None, "port_range_max": None,
                       "remote_ip_prefix": None, **body, "id": self.cloud.new_id("rule")})
        self.cloud.rules[rule.id] = rule
        return rule

    def delete_security_group_rule(self, rule_id: str, ignore_missing: bool = True) -> None:
        self._log(f"delete_security_group_rule {rule_id}")
        self.cloud.rules.pop(rule_id, None)

    def delete_security_group(self, group_id: str, ignore_missing: bool = True) -> None:
        self._log(f"delete_security_group {group_id}")
        if any(group_id in p.security_group_ids for p in self.cloud.ports.values()):
            raise http_error(osx.ConflictException, 409, f"Security Group {group_id} in use.")
        if self.cloud.groups.pop(group_id, None) is None and not ignore_missing:
            raise self.cloud.not_found(f"security group {group_id}")
        for rule in [r for r in self.cloud.rules.values() if r.security_group_id == group_id]:
            del self.cloud.rules[rule.id]

    def ips(self) -> Iterator[Record]:
        yield from list(self.cloud.ips.values())

    def create_ip(self, floating_network_id: str, description: str = "") -> Record:
        self._log("create_ip")
        if len(self.cloud.ips) >= self.cloud.ip_quota:
            raise http_error(osx.ConflictException, 409,
                             "Quota exceeded for resources: ['floatingip'].")
        number = next(self.cloud.ids)
        ip = Record(id=f"fip-{number}", floating_ip_address=f"203.0.113.{number % 250 + 2}", port_id=None,
                    description=description, status="DOWN", floating_network_id=floating_network_id)
        self.cloud.ips[ip.id] = ip
        return ip

    def update_ip(self, ip_id: str, port_id: str | None = None) -> Record:
        self._log(f"update_ip {ip_id}")
        self.cloud.ips[ip_id]["port_id"] = port_id
        return self.cloud.ips[ip_id]

    def delete_ip(self, ip_id: str, ignore_missing: bool = True) -> None:
        self._log(f"delete_ip {ip_id}")
        if self.cloud.ips.pop(ip_id, None) is None and not ignore_missing:
            raise self.cloud.not_found(f"floating IP {ip_id}")

    def ports(self, device_id: str | None = None) -> Iterator[Record]:
        yield from [p for p in self.cloud.ports.values() if device_id is None or p.device_id == device_id]


class FakeImage(_View):
    def images(self, name: str | None = None) -> Iterator[Record]:
        yield from [i for i in self.cloud.images.values() if name is None or i.name == name]

    def create_image(self, name: str, *, filename: str, disk_format: str, md5: str = "", tags: Any = (),
                     **properties: Any) -> Record:
        self._log(f"create_image {name}")
        extra = {k: v for k, v in properties.items() if k.startswith("hybrid_") or k in BOOT_PROPERTIES}
        image = Record(id=self.cloud.new_id("image"), name=name, status="active", checksum=md5, hash_value=None,
                       disk_format=disk_format, tags=list(tags), properties=extra, filename=filename)
        self.cloud.images[image.id] = image
        return image

    def delete_image(self, image_id: str, ignore_missing: bool = True) -> None:
        self._log(f"delete_image {image_id}")
        self.cloud.images.pop(image_id, None)


def _find(found: Record | None, name: str, ignore_missing: bool, cloud: FakeCloud) -> Record | None:
    if found is None and not ignore_missing:
        raise cloud.not_found(name)
    return found
