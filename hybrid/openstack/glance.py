"""Glance uploads of exported images: a connection checked at once, and an upload skipped when Glance already holds
the same bytes under that name.

The connection is a ``MappedConnection``, so every call raises the project's errors, never openstacksdk's.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hybrid.openstack.image import file_digests
from hybrid.openstack.session import MappedConnection, connect

log = logging.getLogger(__name__)


def connect_checked(cloud: str) -> MappedConnection:
    """A connection to ``cloud`` (a clouds.yaml entry) that has already authenticated: openstacksdk authenticates
    lazily, and a wrong cloud should show before a long export, not after it."""
    conn = connect(cloud)
    conn.authorize()
    return conn


def find_active_upload(conn: Any, name: str, md5: str) -> str | None:
    """The id of an active image of that name whose checksum (Glance's MD5 of the data) is ``md5``."""
    for image in conn.image.images(name=name):
        if image.checksum == md5 and image.status == "active":
            return str(image.id)
    return None


def upload_qcow2(conn: Any, name: str, path: Path, tags: list[str] | None = None,
                 properties: dict[str, str] | None = None) -> str:
    """Uploads a qcow2 file as a bare image ``name`` (with ``properties``) and returns its id; an active image of
    that name with the file's checksum is returned instead of uploading again."""
    [md5] = file_digests(path, "md5")
    found = find_active_upload(conn, name, md5)
    if found:
        log.info("Glance image %s (%s) already holds %s", name, found, path)
        return found
    image = conn.image.create_image(name=name, filename=str(path), disk_format="qcow2", container_format="bare",
                                    allow_duplicates=False, tags=tags or [], wait=True, **(properties or {}))
    return str(image.id)

