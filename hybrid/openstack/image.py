"""The web-tier image in Glance: uploaded from a local qcow2 or VMDK file, skipped when already there.

An image counts as already there when one of that name carries the file's checksum (Glance's md5 ``checksum`` or
its sha512 ``os_hash_value``). Images this stack uploads carry the tag ``hybrid_stack=<stack>`` and the properties
``hybrid_stack`` and ``hybrid_origin=uploaded``; only those are ever deleted, and only when asked.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid.core.contracts import Observed, Resource
from hybrid.core.errors import ConfigError, HybridError, NotFoundError
from hybrid.openstack.names import IMAGE_ORIGIN_KEY, IMAGE_STACK_KEY, ORIGIN_UPLOADED

log = logging.getLogger(__name__)
QCOW2_MAGIC = b"QFI\xfb"
VMDK_MAGICS = (b"KDMV", b"# Disk DescriptorFile")
SUFFIX_FORMATS = {".qcow2": "qcow2", ".qcow": "qcow2", ".vmdk": "vmdk"}
QEMU_IMG = "qemu-img"
Runner = Callable[[Sequence[str]], object]


@dataclass(frozen=True)
class ImageSource:
    """A local disk image ready to upload: its path, Glance disk format and checksums."""

    path: Path
    disk_format: str
    md5: str
    sha512: str


def disk_format_of(path: Path) -> str:
    """``qcow2`` or ``vmdk``, from the file's first bytes (or its suffix when they say nothing)."""
    with path.open("rb") as handle:
        head = handle.read(32)
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    if head.startswith(VMDK_MAGICS):
        return "vmdk"
    if path.suffix.lower() in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[path.suffix.lower()]
    raise ConfigError(f"--image {path}: not a qcow2 or VMDK disk image")


def conversion_command(source: Path, target: Path, qemu_img: str = QEMU_IMG) -> list[str]:
    """The qemu-img call that turns a VMDK into a qcow2."""
    return [qemu_img, "convert", "-f", "vmdk", "-O", "qcow2", str(source), str(target)]


def run_command(command: Sequence[str]) -> str:
    """Runs ``command`` and returns its output; raises when it is not installed or fails."""
    if shutil.which(command[0]) is None:
        raise ConfigError(f"{command[0]} is not installed: install qemu-utils (Debian/Ubuntu: apt-get install "
                          "qemu-utils) to convert VMDK images")
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HybridError(f"{' '.join(command)} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return result.stdout


def convert_to_qcow2(source: Path, destination: Path, qemu_img: str = QEMU_IMG) -> Path:
    """``qemu-img convert -f vmdk -O qcow2``, then ``qemu-img info`` checks the result is a qcow2 image."""
    destination.unlink(missing_ok=True)
    run_command(conversion_command(source, destination, qemu_img))
    info = json.loads(run_command([qemu_img, "info", "--output=json", str(destination)]))
    if info.get("format") != "qcow2":
        raise HybridError(f"{destination} is {info.get('format')!r} after conversion, not qcow2")
    return destination


def prepare_image(path: Path, convert: bool, work_dir: Path, runner: Runner = run_command) -> ImageSource:
    """The file to upload: as given, or (``convert``) a VMDK converted to qcow2 under ``work_dir``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--image {path}: no such file")
    disk_format = disk_format_of(path)
    if convert and disk_format == "vmdk":
        target = Path(work_dir) / f"{path.stem}.qcow2"
        if not target.exists() or target.stat().st_mtime < path.stat().st_mtime:
            target.parent.mkdir(parents=True, exist_ok=True)
            log.info("converting %s to %s", path, target)
            runner(conversion_command(path, target))
        path, disk_format = target, "qcow2"
    md5, sha512 = checksums(path)
    return ImageSource(path, disk_format, md5, sha512)


def checksums(path: Path) -> tuple[str, str]:
    md5, sha512 = file_digests(path, "md5", "sha512")
    return md5, sha512


def file_digests(path: Path, *algorithms: str) -> list[str]:
    """The hex digests of a file, one per hashlib algorithm name, in one read."""
    digests = [hashlib.new(name, usedforsecurity=False) for name in algorithms]
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            for digest in digests:
                digest.update(block)
    return [digest.hexdigest() for digest in digests]


BOOT_PROPERTIES = ("kernel_id", "ramdisk_id", "os_command_line")
"""What a disk without a boot loader borrows from the image whose kernel boots it (Nova boots it directly)."""


def boot_properties(conn: Any, kernel_image: str) -> dict[str, str]:
    """``kernel_id``, ``ramdisk_id`` and ``os_command_line`` of the Glance image ``kernel_image`` ({} for "")."""
    if not kernel_image:
        return {}
    found = [i for i in conn.image.images(name=kernel_image) if i.name == kernel_image and i.status == "active"]
    if not found:
        raise NotFoundError(f"image {kernel_image!r}, whose kernel boots the web-tier image, is not in Glance: set "
                            "openstack.kernel_image (empty when the disk has its own boot loader)")
    image = found[0]
    properties = {**(getattr(image, "properties", None) or {}),
                  **{key: getattr(image, key, None) for key in BOOT_PROPERTIES if getattr(image, key, None)}}
    missing = [key for key in ("kernel_id", "ramdisk_id") if not properties.get(key)]
    if missing:
        raise NotFoundError(f"image {kernel_image!r} has no {' or '.join(missing)}: it cannot lend a kernel")
    return {key: str(properties[key]) for key in BOOT_PROPERTIES if properties.get(key)}


class ImageDriver:
    """Glance images of one name. Property ``checksum``: the md5 of the local file (when one is given). An upload
    borrows the boot properties of ``kernel_image`` when that is set (see ``boot_properties``)."""

    kind = "image"

    def __init__(self, conn: Any, stack: str, source: ImageSource | None, kernel_image: str = "") -> None:
        self.conn, self.stack, self.source, self.kernel_image = conn, stack, source, kernel_image

    def owned(self, image: Any) -> bool:
        properties = getattr(image, "properties", None) or {}
        return (f"{IMAGE_STACK_KEY}={self.stack}" in (image.tags or [])
                or properties.get(IMAGE_STACK_KEY) == self.stack)

    def uploaded_by_us(self, image: Any) -> bool:
        properties = getattr(image, "properties", None) or {}
        return self.owned(image) and properties.get(IMAGE_ORIGIN_KEY) == ORIGIN_UPLOADED

    def matches(self, image: Any) -> bool:
        if self.source is None:
            return False
        return image.checksum == self.source.md5 or getattr(image, "hash_value", None) == self.source.sha512

    def find(self, name: str) -> Any | None:
        """The best image of that name: ours with the file's checksum, then ours, then any with it, then any."""
        images = [i for i in self.conn.image.images(name=name) if i.name == name and i.status != "deleted"]
        ranked = sorted(images, key=lambda i: (not (self.owned(i) and self.matches(i)), not self.owned(i),
                                               not self.matches(i), i.status != "active"))
        return ranked[0] if ranked else None

    def observe(self, resource: Resource) -> Observed | None:
        image = self.find(resource.name)
        if image is None:
            return None
        origin = "uploaded by this stack" if self.uploaded_by_us(image) else "not uploaded by this stack"
        properties = {"checksum": self.source.md5 if self.matches(image) else str(image.checksum)}
        return Observed(self.kind, resource.name, image.id, self.owned(image), properties,
                        state=image.status if image.status != "active" else "present", notes=(origin,))

    def create(self, resource: Resource) -> Observed:
        if self.source is None:
            raise NotFoundError(f"image {resource.name} is not in Glance: pass --image PATH (qcow2 or vmdk)")
        source = self.source
        booted_by = boot_properties(self.conn, self.kernel_image)
        log.info("uploading %s (%s) as image %s", source.path, source.disk_format, resource.name)
        image = self.conn.image.create_image(
            resource.name, filename=str(source.path), disk_format=source.disk_format, container_format="bare",
            md5=source.md5, tags=[f"{IMAGE_STACK_KEY}={self.stack}"], allow_duplicates=True, wait=True,
            **{IMAGE_STACK_KEY: self.stack, IMAGE_ORIGIN_KEY: ORIGIN_UPLOADED}, **booted_by)
        return Observed(self.kind, resource.name, image.id, True, {"checksum": source.md5})

    def update(self, resource: Resource, observed: Observed) -> None:
        """A different file under the same name: upload it, then delete the previous upload of this stack."""
        self.create(resource)
        self.delete(observed)

    def delete(self, observed: Observed) -> bool:
        """Deletes the image only if this stack uploaded it."""
        images = [i for i in self.conn.image.images(name=observed.name) if i.id == observed.id]
        if not images or not self.uploaded_by_us(images[0]):
            return False
        self.conn.image.delete_image(observed.id, ignore_missing=True)
        return True
