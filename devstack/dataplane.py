#!/usr/bin/python3
"""As admin, for minicloud.sh's real compute: ``register-image FOLDER`` puts the base image (devstack/base_image.sh)
in Glance, public, as ``debian-12-base`` with its kernel and ramdisk (``debian-12-base-kernel`` / ``-ramdisk``,
booted directly: kernel_id / ramdisk_id); images of an older recipe go. Idempotent: the recipe's digest is the
image property ``minicloud_recipe``. ``router-gateway`` prints router1's external address.

Run with Debian's python3 (python3-openstacksdk). Env: MC_PASSWORD, MC_HOST.
"""
import hashlib
import os
import sys
import time
from pathlib import Path

import openstack

HOST = os.environ.get("MC_HOST", "127.0.0.1")
NAME = "debian-12-base"
# ttyS0 last: it is /dev/console, so systemd's and cloud-init's lines reach the console log too
COMMAND_LINE = "root=/dev/vda rw console=tty0 console=ttyS0"


def connect():
    return openstack.connect(auth_url=f"http://{HOST}:5000/v3", username="admin", password=os.environ["MC_PASSWORD"],
                             project_name="admin", user_domain_name="Default", project_domain_name="Default",
                             region_name="RegionOne")


def recipe_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "recipe").read_bytes()).hexdigest()[:16]


def upload(conn, name: str, path: Path, disk_format: str, digest: str, **properties):
    started = time.monotonic()
    image = conn.image.create_image(name=name, filename=str(path), disk_format=disk_format,
                                    container_format=disk_format if disk_format in ("aki", "ari") else "bare",
                                    visibility="public", wait=True, minicloud_recipe=digest, **properties)
    print(f"uploaded {name} ({path.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - started:.1f} s")
    return image


def register_image(folder: Path) -> int:
    conn = connect()
    digest = recipe_digest(folder)
    names = (NAME, f"{NAME}-kernel", f"{NAME}-ramdisk")
    current = {i.name: i for i in conn.image.images() if i.name in names
               and i.properties.get("minicloud_recipe") == digest and i.status == "active"}
    if set(current) == set(names):
        print(f"{NAME}: already in Glance (recipe {digest}, image {current[NAME].id})")
        return 0
    for image in conn.image.images():
        if image.name in names and image.id not in {i.id for i in current.values()}:
            conn.image.delete_image(image, ignore_missing=True)
            print(f"deleted {image.name} {image.id} (recipe {image.properties.get('minicloud_recipe')})")
    kernel = current.get(names[1]) or upload(conn, names[1], folder / "vmlinuz", "aki", digest)
    ramdisk = current.get(names[2]) or upload(conn, names[2], folder / "initrd.img", "ari", digest)
    disk = current.get(NAME) or upload(conn, NAME, folder / "disk.qcow2", "qcow2", digest, kernel_id=kernel.id,
                                       ramdisk_id=ramdisk.id, os_command_line=COMMAND_LINE, os_distro="debian",
                                       os_version="12", hw_disk_bus="virtio", min_disk=2, min_ram=256)
    print(f"{NAME}: in Glance (recipe {digest}, image {disk.id})")
    return 0


def router_gateway() -> int:
    conn = connect()
    router = conn.network.find_router("router1", ignore_missing=False)
    ips = [ip["ip_address"] for ip in (router.external_gateway_info or {}).get("external_fixed_ips", [])]
    if not ips:
        print("router1 has no external address", file=sys.stderr)
        return 1
    print(ips[0])
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["register-image"] and len(argv) == 2:
        return register_image(Path(argv[1]))
    if argv == ["router-gateway"]:
        return router_gateway()
    print("usage: dataplane.py register-image FOLDER | router-gateway", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
