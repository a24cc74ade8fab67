"""Neutron parts of a stack: the web-tier security group and the floating IP.

Both carry ``hybrid:stack=<stack> hybrid:role=web-tier`` in their description. A floating IP has no name: the
stack's is the one whose description names the stack, and its association is read from Neutron (the IP's port and
that port's device), never from the server's ``addresses``, which Nova fills in only seconds later.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hybrid.core.contracts import Observed, Resource
from hybrid.core.errors import CloudError, NotFoundError
from hybrid.openstack.names import carries_marker

log = logging.getLogger(__name__)
ANYWHERE = "0.0.0.0/0"
Dependency = Callable[[str], "Observed | None"]


@dataclass(frozen=True)
class Rule:
    """One IPv4 ingress rule: protocol, port (None for ICMP) and source CIDR."""

    protocol: str
    port: int | None
    cidr: str

    def sort_key(self) -> tuple[str, int, str]:
        return self.protocol, -1 if self.port is None else self.port, self.cidr

    def describe(self) -> str:
        where = f"{self.protocol}/{self.port}" if self.port is not None else self.protocol
        return f"{where} from {self.cidr}"

    def body(self) -> dict[str, Any]:
        ports = {"port_range_min": self.port, "port_range_max": self.port} if self.port is not None else {}
        return {"direction": "ingress", "ethertype": "IPv4", "protocol": self.protocol,
                "remote_ip_prefix": self.cidr, **ports}


def web_tier_rules(operator_cidr: str, web_port: int) -> list[Rule]:
    """SSH from the operator's CIDR (none when unset), the web tier's port (where its front listens), and ICMP:
    the ports that something on the server listens on, and no others."""
    rules = [Rule("tcp", web_port, ANYWHERE), Rule("icmp", None, ANYWHERE)]
    if operator_cidr:
        rules.append(Rule("tcp", 22, operator_cidr))
    return sorted(set(rules), key=Rule.sort_key)


def describe_rules(rules: Iterable[Rule]) -> str:
    return ", ".join(r.describe() for r in sorted(set(rules), key=Rule.sort_key)) or "none"


def parse_rules(text: str) -> list[Rule]:
    """The inverse of ``describe_rules`` (the desired rules travel as a resource property)."""
    rules = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item == "none":
            continue
        where, _, cidr = item.partition(" from ")
        protocol, _, port = where.partition("/")
        rules.append(Rule(protocol, int(port) if port else None, cidr))
    return rules


def rule_of(body: Any) -> Rule | None:
    """The ``Rule`` an observed Neutron rule stands for; None for egress or IPv6 rules (left alone)."""
    get = body.get if isinstance(body, dict) else lambda key, default=None: getattr(body, key, default)
    if get("direction") != "ingress" or get("ethertype", "IPv4") != "IPv4":
        return None
    low, high = get("port_range_min"), get("port_range_max")
    port = low if low is not None and low == high else None
    cidr = get("remote_ip_prefix") or ANYWHERE
    return Rule(get("protocol") or "any", port, str(ipaddress.ip_network(cidr, strict=False)))


class SecurityGroupDriver:
    """The web tier's security group. Property ``ingress``: its IPv4 inbound rules, converged exactly."""

    kind = "security_group"

    def __init__(self, conn: Any, stack: str) -> None:
        self.conn, self.stack = conn, stack

    def owned(self, group: Any) -> bool:
        return carries_marker(group.description, self.stack) or f"hybrid:stack={self.stack}" in (group.tags or [])

    def find(self, name: str) -> Any | None:
        groups = sorted((g for g in self.conn.network.security_groups(name=name) if g.name == name),
                        key=lambda g: not self.owned(g))
        return groups[0] if groups else None

    def observe(self, resource: Resource) -> Observed | None:
        group = self.find(resource.name)
        if group is None:
            return None
        rules = [r for r in map(rule_of, self._rules(group.id)) if r is not None]
        return Observed(self.kind, resource.name, group.id, self.owned(group), {"ingress": describe_rules(rules)})

    def _rules(self, group_id: str) -> list[Any]:
        return list(self.conn.network.security_group_rules(security_group_id=group_id))

    def create(self, resource: Resource) -> Observed:
        group = self.conn.network.create_security_group(name=resource.name,
                                                        description=resource.inputs["description"])
        observed = Observed(self.kind, resource.name, group.id, True, {"ingress": "none"})
        self.update(resource, observed)
        return observed

    def update(self, resource: Resource, observed: Observed) -> None:
        """Deletes inbound IPv4 rules that are not wanted and adds the missing ones; egress is left as it is."""
        wanted = set(parse_rules(resource.properties["ingress"]))
        present: set[Rule] = set()
        for body in self._rules(observed.id):
            rule = rule_of(body)
            if rule is None:
                continue
            if rule in wanted and rule not in present:
                present.add(rule)
            else:
                self.conn.network.delete_security_group_rule(body["id"] if isinstance(body, dict) else body.id,
                                                             ignore_missing=True)
        for rule in sorted(wanted - present, key=Rule.sort_key):
            self.conn.network.create_security_group_rule(security_group_id=observed.id, **rule.body())

    def delete(self, observed: Observed) -> bool:
        try:
            self.conn.network.delete_security_group(observed.id, ignore_missing=False)
        except NotFoundError:
            return False
        return True


class FloatingIpDriver:
    """The stack's floating IP on the external network, associated with the server's port.

    Property ``server``: the name of the server it is associated with (``none`` when it is not). An IP of this
    stack that already exists is reused; any others the stack still holds (a crashed run) are reported.
    """

    kind = "floating_ip"

    def __init__(self, conn: Any, stack: str, dependency: Dependency) -> None:
        self.conn, self.stack, self.dependency = conn, stack, dependency

    def stack_ips(self) -> list[Any]:
        return [ip for ip in self.conn.network.ips() if carries_marker(ip.description, self.stack)]

    def observe(self, resource: Resource) -> Observed | None:
        ours = self.stack_ips()
        if not ours:
            return None
        ports = self._server_ports()
        ours.sort(key=lambda ip: ip.port_id not in ports)
        chosen = ours[0]
        notes = [f"status {chosen.status}"] + ([f"{len(ours) - 1} more IP(s) of this stack"] if len(ours) > 1 else [])
        server = resource.inputs.get("server", "") if chosen.port_id and chosen.port_id in ports else "none"
        return Observed(self.kind, resource.name, chosen.id, True,
                        {"server": server, "address": chosen.floating_ip_address}, notes=tuple(notes))

    def _server_ports(self) -> list[str]:
        server = self.dependency("server")
        if server is None or not server.owned:
            return []
        return [p.id for p in self.conn.network.ports(device_id=server.id)]

    def create(self, resource: Resource) -> Observed:
        external = find_external_network(self.conn, resource.inputs["external_network"])
        ip = self.conn.network.create_ip(floating_network_id=external.id, description=resource.inputs["description"])
        log.info("allocated floating IP %s", ip.floating_ip_address)
        observed = Observed(self.kind, resource.name, ip.id, True,
                            {"server": "none", "address": ip.floating_ip_address})
        self.update(resource, observed)
        return Observed(self.kind, resource.name, ip.id, True,
                        {"server": resource.inputs["server"], "address": ip.floating_ip_address})

    def update(self, resource: Resource, observed: Observed) -> None:
        ports = self._server_ports()
        if not ports:
            raise NotFoundError(f"server {resource.inputs['server']} has no port to attach floating IP "
                                f"{observed.properties.get('address', observed.id)} to")
        self.conn.network.update_ip(observed.id, port_id=ports[0])

    def delete(self, observed: Observed) -> bool:
        try:
            self.conn.network.delete_ip(observed.id, ignore_missing=False)
        except NotFoundError:
            return False
        return True


def find_external_network(conn: Any, name: str) -> Any:
    """The external network floating IPs come from; a clear error when it is missing or not external."""
    network = conn.network.find_network(name, ignore_missing=True)
    if network is None:
        raise NotFoundError(f"external network {name!r} not found in cloud {conn.cloud!r}: set "
                            "openstack.external_network to one of its external networks (`openstack network list "
                            "--external`)")
    if not network.is_router_external:
        raise CloudError(f"network {name!r} is not an external network: set openstack.external_network to one "
                         "that is (`openstack network list --external`)")
    return network
