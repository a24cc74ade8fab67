#!/usr/bin/python3
"""As admin: external network `public`, the service's `private` network + subnet + router, flavors; then the
clouds.yaml entries `hybrid-local` (member user, project hybrid) and `hybrid-local-admin`, merged into
/etc/openstack/clouds.yaml and ~/.config/openstack/clouds.yaml. Idempotent.

Run with Debian's python3 (python3-openstacksdk). Env: MC_PASSWORD, MC_MEMBER_PASSWORD, MC_HOST, MC_FLOATING_RANGE.
"""
import ipaddress
import os
import sys

import openstack
import yaml

HOST = os.environ.get("MC_HOST", "127.0.0.1")
PW = os.environ["MC_PASSWORD"]
MEMBER_PW = os.environ["MC_MEMBER_PASSWORD"]
AUTH_URL = f"http://{HOST}:5000/v3"
FLOATING = ipaddress.ip_network(os.environ.get("MC_FLOATING_RANGE", "172.24.4.0/24"))

CLOUDS = {
    "hybrid-local": {
        "auth": {"auth_url": AUTH_URL, "username": "hybrid", "password": MEMBER_PW, "project_name": "hybrid",
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "RegionOne", "interface": "public", "identity_api_version": 3,
    },
    "hybrid-local-admin": {
        "auth": {"auth_url": AUTH_URL, "username": "admin", "password": PW, "project_name": "admin",
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "RegionOne", "interface": "public", "identity_api_version": 3,
    },
}


def write_clouds():
    for path in ("/etc/openstack/clouds.yaml", os.path.expanduser("~/.config/openstack/clouds.yaml")):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = {}
        if os.path.exists(path):
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        data.setdefault("clouds", {}).update(CLOUDS)
        tmp = path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
        os.replace(tmp, path)
        print(f"clouds.yaml: wrote hybrid-local, hybrid-local-admin to {path}")


def main():
    write_clouds()
    conn = openstack.connect(auth_url=AUTH_URL, username="admin", password=PW, project_name="admin",
                             user_domain_name="Default", project_domain_name="Default", region_name="RegionOne")
    hybrid = conn.identity.find_project("hybrid")
    net = conn.network

    public = net.find_network("public")
    if public is None:
        public = net.create_network(name="public", is_router_external=True, provider_network_type="flat",
                                    provider_physical_network="physnet1")
    if not list(net.subnets(network_id=public.id)):
        hosts = list(FLOATING.hosts())  # .1 is the gateway, in the fixture's namespace minicloud-ext
        net.create_subnet(name="public-subnet", network_id=public.id, ip_version=4, cidr=str(FLOATING),
                          gateway_ip=str(hosts[0]), is_dhcp_enabled=False,
                          allocation_pools=[{"start": str(hosts[9]), "end": str(hosts[249])}])

    private = net.find_network("private", project_id=hybrid.id)
    if private is None:
        private = net.create_network(name="private", project_id=hybrid.id)
    subnets = list(net.subnets(network_id=private.id))
    subnet = subnets[0] if subnets else net.create_subnet(
        name="private-subnet", network_id=private.id, project_id=hybrid.id, ip_version=4, cidr="10.0.0.0/24",
        gateway_ip="10.0.0.1", is_dhcp_enabled=True)

    router = net.find_router("router1", project_id=hybrid.id)
    if router is None:
        router = net.create_router(name="router1", project_id=hybrid.id,
                                   external_gateway_info={"network_id": public.id})
    elif (router.external_gateway_info or {}).get("network_id") != public.id:
        router = net.update_router(router, external_gateway_info={"network_id": public.id})
    ports = list(net.ports(device_id=router.id, network_id=private.id))
    if not ports:
        net.add_interface_to_router(router, subnet_id=subnet.id)

    for name, ram, vcpus, disk in (("m1.tiny", 512, 1, 2), ("m1.small", 2048, 1, 20)):
        if conn.compute.find_flavor(name) is None:
            conn.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk, is_public=True)
    print(f"resources: public ({FLOATING}), private (10.0.0.0/24), router1, flavors m1.tiny, m1.small ready")


if __name__ == "__main__":
    sys.exit(main())
