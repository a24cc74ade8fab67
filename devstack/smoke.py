#!/usr/bin/env python3
"""Smoke test of the local OpenStack fixture (devstack/minicloud.sh) with openstacksdk, as the service's member user.

    .venv/bin/python devstack/smoke.py [--cloud hybrid-local] [--keep]

Uploads a tiny qcow2 image, creates a key pair and a security group with the web tier's rules, boots a server on
`private` with user data, waits for ACTIVE, allocates a floating IP from `public`, associates it (read back from
Neutron), then deletes everything. Prints the time of each step. Never sends traffic to the floating IP: on the
fixture nothing is routable. Exits non-zero on any failure.
"""
import argparse
import base64
import os
import subprocess
import sys
import tempfile
import time

import openstack
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

TIMINGS = []


class step:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.t = time.monotonic()
        return self

    def __exit__(self, exc_type, exc, tb):
        dt = time.monotonic() - self.t
        TIMINGS.append((self.name, dt))
        print(f"{'FAILED' if exc_type else 'ok':6} {dt:6.2f}s  {self.name}", flush=True)
        return False


def ssh_public_key():
    key = ed25519.Ed25519PrivateKey.generate()
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode() + " hybrid-smoke"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cloud", default="hybrid-local")
    ap.add_argument("--network", default="private")
    ap.add_argument("--external-network", default="public")
    ap.add_argument("--flavor", default="m1.small")
    ap.add_argument("--operator-cidr", default="203.0.113.7/32", help="source of the SSH rule")
    ap.add_argument("--keep", action="store_true", help="do not delete what was created")
    args = ap.parse_args()

    name = f"smoke-{os.getpid()}"
    made = {}
    t0 = time.monotonic()
    rc = 1
    try:
        with step("connect + authenticate"):
            conn = openstack.connect(cloud=args.cloud)
            conn.authorize()
        with step("find network, external network, flavor"):
            net = conn.network.find_network(args.network, ignore_missing=False)
            ext = conn.network.find_network(args.external_network, ignore_missing=False)
            flavor = conn.compute.find_flavor(args.flavor, ignore_missing=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "16M"], check=True)
            with step("upload qcow2 image"):
                made["image"] = image = conn.image.create_image(
                    name=name, filename=path, disk_format="qcow2", container_format="bare", wait=True, timeout=120)
                image = conn.image.get_image(image.id)
                assert image.status == "active", image.status
        with step("create key pair"):
            made["keypair"] = kp = conn.compute.create_keypair(name=name, public_key=ssh_public_key())
        with step("create security group + rules (22 operator, 80, 8000, ICMP)"):
            made["sg"] = sg = conn.network.create_security_group(name=name, description="hybrid smoke test")
            for proto, port, cidr in (("tcp", 22, args.operator_cidr), ("tcp", 80, "0.0.0.0/0"),
                                      ("tcp", 8000, "0.0.0.0/0"), ("icmp", None, "0.0.0.0/0")):
                rule = dict(security_group_id=sg.id, direction="ingress", ethertype="IPv4", protocol=proto,
                            remote_ip_prefix=cidr)
                if port:
                    rule.update(port_range_min=port, port_range_max=port)
                conn.network.create_security_group_rule(**rule)
        user_data = "#cloud-config\nruncmd:\n  - echo hybrid web tier\n"
        with step("boot server (create call)"):
            made["server"] = server = conn.compute.create_server(
                name=name, image_id=image.id, flavor_id=flavor.id, networks=[{"uuid": net.id}], key_name=kp.name,
                security_groups=[{"name": sg.name}], user_data=base64.b64encode(user_data.encode()).decode())
        with step("wait for ACTIVE"):
            server = conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], interval=0.5, wait=180)
        fixed = [a["addr"] for addrs in server.addresses.values() for a in addrs]
        print(f"       server {server.id} ACTIVE, fixed address(es) {fixed}")
        with step("allocate floating IP + associate"):
            port = next(conn.network.ports(device_id=server.id, network_id=net.id))
            made["fip"] = fip = conn.network.create_ip(floating_network_id=ext.id)
            conn.network.update_ip(fip, port_id=port.id)
        with step("read the association from Neutron"):
            fip = conn.network.get_ip(fip.id)
            assert fip.port_id == port.id, (fip.port_id, port.id)
            assert fip.fixed_ip_address in fixed, (fip.fixed_ip_address, fixed)
        print(f"       floating IP {fip.floating_ip_address} -> {fip.fixed_ip_address} (port {port.id}, "
              f"status {fip.status}; not routable on the fixture, never contacted)")
        rc = 0
    except Exception as exc:  # noqa: BLE001 - report and clean up
        print(f"smoke test failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        if not args.keep and made:
            with step("delete everything"):
                if "fip" in made:
                    conn.network.delete_ip(made["fip"], ignore_missing=True)
                if "server" in made:
                    conn.compute.delete_server(made["server"], ignore_missing=True)
                    conn.compute.wait_for_delete(made["server"], interval=0.5, wait=120)
                deletes = {"sg": conn.network.delete_security_group, "keypair": conn.compute.delete_keypair,
                           "image": conn.image.delete_image}
                for kind in ("sg", "keypair", "image"):
                    if kind in made:
                        deletes[kind](made[kind], ignore_missing=True)
    total = time.monotonic() - t0
    print(f"{'PASS' if rc == 0 else 'FAIL'}: {total:.2f}s in all")
    return rc


if __name__ == "__main__":
    sys.exit(main())
