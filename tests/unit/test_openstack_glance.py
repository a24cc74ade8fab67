"""Glance upload of an exported qcow2, on the in-memory cloud through ``MappedConnection``."""
from __future__ import annotations

import hashlib

from hybrid.openstack.glance import upload_qcow2
from hybrid.openstack.session import MappedConnection
from tests.openstack_fakes import FakeCloud, Record


def disk(tmp_path):
    path = tmp_path / "web.qcow2"
    path.write_bytes(b"QFI\xfb a disk")
    return path


def test_a_new_image_is_uploaded_as_a_bare_qcow2_with_its_tags(tmp_path):
    cloud = FakeCloud()
    image_id = upload_qcow2(MappedConnection(cloud, "c1"), "shop-web-tier", disk(tmp_path), ["hybrid:stack=shop"])
    image = cloud.images[image_id]
    assert (image.name, image.disk_format, image.tags) == ("shop-web-tier", "qcow2", ["hybrid:stack=shop"])
    assert cloud.calls == ["create_image shop-web-tier"]


def test_an_active_image_with_the_same_bytes_is_returned_instead_of_uploading_again(tmp_path):
    cloud, path = FakeCloud(), disk(tmp_path)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    cloud.images["old"] = Record(id="old", name="shop-web-tier", status="queued", checksum=md5)
    cloud.images["other"] = Record(id="other", name="shop-web-tier", status="active", checksum="0" * 32)
    cloud.images["same"] = Record(id="same", name="shop-web-tier", status="active", checksum=md5)
    assert upload_qcow2(MappedConnection(cloud, "c1"), "shop-web-tier", path) == "same"
    assert cloud.calls == []
