"""Glance upload through openstacksdk, against the OpenStack fixture (cloud ``hybrid-local``) when it answers."""
from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from hybrid.openstack.glance import upload_qcow2



@pytest.fixture
def conn(local_cloud):
    return local_cloud


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img is not installed (package qemu-utils)")
def test_upload_to_glance_creates_a_bare_qcow2_image_once(conn, tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "16M"], check=True, capture_output=True)
    name = f"t-images-{uuid.uuid4().hex[:8]}"
    try:
        first = upload_qcow2(conn, name, disk, ["hybrid:stack=t"])
        again = upload_qcow2(conn, name, disk, ["hybrid:stack=t"])
        image = conn.image.get_image(first)
        assert (image.disk_format, image.container_format, image.status) == ("qcow2", "bare", "active")
        assert again == first
    finally:
        for image in conn.image.images(name=name):
            conn.image.delete_image(image, ignore_missing=True)
