"""Export a baked AMI to OpenStack: AMI -> VMDK in S3 (``ec2:ExportImage``) -> local download with checksum ->
``qemu-img convert -O qcow2`` -> Glance, then the exported S3 object is deleted (unless kept).

The export bucket ``<stack>-exports`` is private like the stack's other buckets: all public access blocked, default
encryption SSE-S3 (AES256), the stack's tags. VM Import/Export writes into it with the service role ``vmimport``
(``--role-name``), which needs s3:GetBucketLocation, s3:GetObject, s3:ListBucket, s3:PutObject and s3:GetBucketAcl
on the bucket; see AWS's "Required permissions for VM Import/Export".

**Checksum.** The exported object is written by AWS, not by us, so there is no SHA-256 of ours in its metadata to
compare with. The S3 ETag is the check: with SSE-S3 it is the MD5 of the object for a single-part upload, and for a
multipart upload (``<hex>-<parts>``, which large exports are) the MD5 of the parts' concatenated MD5s. The part
size comes from ``HeadObject(PartNumber=1)``, so the download recomputes the same digest while it streams. (With
SSE-KMS the ETag is not an MD5 at all, one reason the bucket uses SSE-S3.) The SHA-256 of the download is logged and
handed to Glance, which stores its own hash of the upload.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid.aws.compute import tags_of
from hybrid.aws.session import MappedClient
from hybrid.aws.stack import exports_bucket_resource, stack_names
from hybrid.aws.storage import BucketDriver
from hybrid.core.clock import Clock, SystemClock
from hybrid.core.errors import CloudError, HybridError, NameTakenError, NotFoundError
from hybrid.machine_images.bake import image_name
from hybrid.core.naming import ROLE_TAG, ROLE_WEB_TIER, STACK_TAG
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for

log = logging.getLogger(__name__)
Report = Callable[[str], None]
OnPoll = Callable[[Poll[Any]], None]
DISK_FORMAT = "VMDK"
EXPORT_PREFIX = "exports/"
EXPORT_TIMEOUT = 4 * 3600.0
EXPORT_INTERVAL = 30.0
EXPORT_FAILED_STATES = ("deleting", "deleted")
CHUNK_BYTES = 8 * 1024 * 1024
DEFAULT_ROLE_NAME = "vmimport"


class ChecksumMismatch(HybridError):
    """A downloaded object's digest differs from the one S3 reports for it."""


@dataclass(frozen=True)
class ExportTask:
    """One ``ec2:ExportImage`` task and where its VMDK lands."""

    task_id: str
    image_id: str
    bucket: str
    key: str


def exports_bucket(settings: Settings) -> str:
    return stack_names(settings).exports_bucket


def glance_image_name(settings: Settings) -> str:
    """The Glance name the OpenStack side boots the web tier from."""
    return settings.openstack.image_name or f"{settings.stack}-{ROLE_WEB_TIER}"


def export_key(prefix: str, task_id: str, disk_format: str = DISK_FORMAT) -> str:
    """Where AWS writes an export: ``<S3Prefix><ExportImageTaskId>.<format>``."""
    return f"{prefix}{task_id}.{disk_format.lower()}"


def ensure_export_bucket(s3: MappedClient, settings: Settings) -> str:
    """Finds or creates ``<stack>-exports`` (private, AES256, tagged); converges one that drifted."""
    resource = exports_bucket_resource(stack_names(settings))
    name = resource.name
    driver = BucketDriver(s3, settings.stack, settings.aws.region)
    found = driver.observe(resource)
    if found is None:
        driver.create(resource)
    elif not found.owned:
        raise NameTakenError(f"bucket {name} exists but is not tagged for stack {settings.stack}: the name is "
                             "taken; choose another stack name (--stack)")
    elif any(found.properties.get(k) != v for k, v in resource.properties.items()):
        driver.update(resource, found)
    return name


class EtagHasher:
    """Recomputes an S3 ETag while bytes stream by: MD5 for one part, MD5 of part MD5s for ``part_size`` parts."""

    def __init__(self, part_size: int | None = None) -> None:
        self.part_size, self.parts, self.current, self.filled = part_size, [], hashlib.md5(), 0

    def update(self, data: bytes) -> None:
        while data:
            room = len(data) if not self.part_size else self.part_size - self.filled
            self.current.update(data[:room])
            self.filled += len(data[:room])
            data = data[room:]
            if self.part_size and self.filled == self.part_size:
                self._close_part()

    def _close_part(self) -> None:
        self.parts.append(self.current.digest())
        self.current, self.filled = hashlib.md5(), 0

    def etag(self) -> str:
        if not self.part_size:
            return self.current.hexdigest()
        if self.filled:
            self._close_part()
        return f"{hashlib.md5(b''.join(self.parts)).hexdigest()}-{len(self.parts)}"


class Exporter:
    """The AWS half of an export, through one EC2 and one S3 client (``MappedClient``)."""

    def __init__(self, ec2: MappedClient, s3: MappedClient, settings: Settings, clock: Clock | None = None,
                 report: Report = log.info, on_poll: OnPoll | None = None) -> None:
        self.ec2, self.s3, self.settings = ec2, s3, settings
        self.clock, self.report, self.on_poll = clock or SystemClock(), report, on_poll

    def find_image(self, role: str, image_id: str = "") -> str:
        """The AMI to export: ``image_id``, or the stack's baked ``<stack>-<role>`` image."""
        if image_id:
            return image_id
        name = image_name(self.settings, role)
        images = self.ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
        owned = [i for i in images if tags_of(i).get(STACK_TAG) == self.settings.stack
                 and i.get("State") == "available"]
        if not owned:
            raise NotFoundError(f"no available image {name} of stack {self.settings.stack}: bake it with "
                                f"`hybrid image bake --role {role}`")
        return owned[0]["ImageId"]

    def start(self, image_id: str, bucket: str, role_name: str = DEFAULT_ROLE_NAME) -> ExportTask:
        """Resumes this stack's active export of ``image_id`` if there is one, else starts a new one."""
        active = self.active_task(image_id, bucket)
        if active:
            self.report(f"resuming export {active.task_id} of {image_id}")
            return active
        reply = self.ec2.export_image(
            ImageId=image_id, DiskImageFormat=DISK_FORMAT, RoleName=role_name, ClientToken=uuid.uuid4().hex,
            S3ExportLocation={"S3Bucket": bucket, "S3Prefix": EXPORT_PREFIX},
            Description=f"hybrid {self.settings.stack}: {image_id} for OpenStack",
            TagSpecifications=[{"ResourceType": "export-image-task", "Tags": [
                {"Key": STACK_TAG, "Value": self.settings.stack}]}])
        task_id = reply["ExportImageTaskId"]
        self.report(f"export {task_id} of {image_id} started into s3://{bucket}/{EXPORT_PREFIX}")
        return ExportTask(task_id, image_id, bucket, export_key(EXPORT_PREFIX, task_id))

    def active_task(self, image_id: str, bucket: str) -> ExportTask | None:
        tasks = self.ec2.describe_export_image_tasks().get("ExportImageTasks", [])
        for task in tasks:
            location = task.get("S3ExportLocation", {})
            if (task.get("ImageId") == image_id and task.get("Status") == "active"
                    and location.get("S3Bucket") == bucket
                    and tags_of(task).get(STACK_TAG) == self.settings.stack):
                prefix = location.get("S3Prefix", "")
                return ExportTask(task["ExportImageTaskId"], image_id, bucket,
                                  export_key(prefix, task["ExportImageTaskId"]))
        return None

    def wait(self, task: ExportTask, timeout: float = EXPORT_TIMEOUT) -> ExportTask:
        """Waits until the task completes; raises with AWS's StatusMessage if it is deleted (failed)."""
        wait_for(f"export {task.task_id} of {task.image_id}", lambda: self.export_state(task.task_id), timeout,
                 interval=EXPORT_INTERVAL, clock=self.clock, on_poll=self.on_poll)
        self.report(f"export {task.task_id} completed: s3://{task.bucket}/{task.key}")
        return task

    def export_state(self, task_id: str) -> Poll[str]:
        tasks = self.ec2.describe_export_image_tasks(ExportImageTaskIds=[task_id]).get("ExportImageTasks", [])
        if not tasks:
            return Poll("", done=False, failed=f"export task {task_id} is not listed any more")
        task = tasks[0]
        status, message = task.get("Status", ""), task.get("StatusMessage", "")
        state = f"{status}: {message}" if message else status
        if status in EXPORT_FAILED_STATES:
            return Poll(status, done=False, failed=f"the export was {status}: {message or 'no reason given'}",
                        state=state)
        return Poll(status, done=status == "completed", progress=_progress(task, status), state=state)

    def download(self, task: ExportTask, destination: Path) -> str:
        """Streams the VMDK to ``destination``, checks it against the S3 ETag; returns its SHA-256."""
        head = self.s3.head_object(Bucket=task.bucket, Key=task.key)
        size, etag = int(head["ContentLength"]), head["ETag"].strip('"')
        hasher = EtagHasher(self.part_size(task, etag))
        sha256 = self._stream(task, destination, size, hasher)
        if hasher.etag() != etag:
            destination.unlink(missing_ok=True)
            raise ChecksumMismatch(f"s3://{task.bucket}/{task.key}: downloaded bytes give ETag {hasher.etag()}, "
                                   f"S3 reports {etag}; the download was deleted, run the export again")
        self.report(f"downloaded {size} bytes to {destination} (ETag {etag} verified, sha256 {sha256})")
        return sha256

    def part_size(self, task: ExportTask, etag: str) -> int | None:
        """None for a single-part object; else the size of its first part (every part but the last)."""
        if "-" not in etag:
            return None
        first = self.s3.head_object(Bucket=task.bucket, Key=task.key, PartNumber=1)
        return int(first["ContentLength"])

    def _stream(self, task: ExportTask, destination: Path, size: int, hasher: EtagHasher) -> str:
        body = self.s3.get_object(Bucket=task.bucket, Key=task.key)["Body"]
        sha256, done = hashlib.sha256(), 0
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(destination, "wb") as out:
            for chunk in body.iter_chunks(CHUNK_BYTES):
                out.write(chunk)
                hasher.update(chunk)
                sha256.update(chunk)
                done += len(chunk)
                self._progress(done, size)
        return sha256.hexdigest()

    def _progress(self, done: int, size: int) -> None:
        if self.on_poll:
            self.on_poll(Poll(done, done=done >= size, progress=done / size if size else 1.0,
                              state=f"{done / 2**20:.0f}/{size / 2**20:.0f} MiB"))

    def delete_export(self, task: ExportTask) -> None:
        self.s3.delete_object(Bucket=task.bucket, Key=task.key)
        self.report(f"deleted s3://{task.bucket}/{task.key}")


def _progress(task: dict[str, Any], status: str) -> float | None:
    if status == "completed":
        return 1.0
    try:
        return int(task.get("Progress", "")) / 100
    except ValueError:
        return None


# ---------------------------------------------------------------- local conversion and Glance

def convert_to_qcow2(source: Path, destination: Path, qemu_img: str | None = None) -> Path:
    """``qemu-img convert -f vmdk -O qcow2``; checks the result is a qcow2 image."""
    binary = qemu_img or shutil.which("qemu-img")
    if not binary:
        raise HybridError("qemu-img is not installed: install it (Debian/Ubuntu: apt-get install qemu-utils)")
    destination.unlink(missing_ok=True)
    _run([binary, "convert", "-f", "vmdk", "-O", "qcow2", str(source), str(destination)])
    info = json.loads(_run([binary, "info", "--output=json", str(destination)]))
    if info.get("format") != "qcow2":
        raise HybridError(f"{destination} is {info.get('format')!r} after conversion, not qcow2")
    return destination


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HybridError(f"{' '.join(command[:2])} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def upload_to_glance(conn: Any, name: str, path: Path, tags: list[str] | None = None) -> str:
    """Uploads a qcow2 file to Glance through an openstacksdk connection; returns the image id.

    An active image of that name whose checksum (Glance's MD5 of the data) matches the file is returned instead of
    uploading again.
    """
    from openstack import exceptions as os_exceptions

    digest = _md5_of(path)
    try:
        for existing in conn.image.images(name=name):
            if existing.checksum == digest and existing.status == "active":
                return str(existing.id)
        image = conn.image.create_image(name=name, filename=str(path), disk_format="qcow2",
                                        container_format="bare", allow_duplicates=False, tags=tags or [], wait=True)
    except os_exceptions.SDKException as exc:
        raise CloudError(f"Glance upload of {name} failed: {exc}") from exc
    return str(image.id)


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def connect_openstack(cloud: str) -> Any:
    """An openstacksdk connection to ``cloud`` (a clouds.yaml entry), with SDK errors mapped."""
    import openstack
    from openstack import exceptions as os_exceptions

    try:
        conn = openstack.connect(cloud=cloud)
        conn.authorize()
        return conn
    except os_exceptions.SDKException as exc:
        raise CloudError(f"cannot connect to OpenStack cloud {cloud!r} (check clouds.yaml): {exc}") from exc


# ---------------------------------------------------------------- the whole export

@dataclass(frozen=True)
class ExportOptions:
    role: str = ROLE_WEB_TIER
    image_id: str = ""
    out_dir: Path | None = None
    keep: bool = False
    role_name: str = DEFAULT_ROLE_NAME
    timeout: float = EXPORT_TIMEOUT


@dataclass(frozen=True)
class ExportResult:
    task_id: str
    qcow2: Path
    sha256: str
    glance_image_id: str
    glance_name: str


def export_image(exporter: Exporter, s3: MappedClient, options: ExportOptions,
                 upload: Callable[[str, Path], str]) -> ExportResult:
    """AMI -> S3 VMDK -> local VMDK (checked) -> qcow2 -> ``upload(name, path)``; then cleans up unless kept."""
    settings = exporter.settings
    out_dir = options.out_dir or settings.state_path / "images"
    image_id = exporter.find_image(options.role, options.image_id)
    task = exporter.wait(exporter.start(image_id, ensure_export_bucket(s3, settings), options.role_name),
                         options.timeout)
    vmdk = out_dir / f"{task.task_id}.vmdk"
    sha256 = exporter.download(task, vmdk)
    qcow2 = convert_to_qcow2(vmdk, out_dir / f"{image_name(settings, options.role)}.qcow2")
    name = glance_image_name(settings) if options.role == ROLE_WEB_TIER else image_name(settings, options.role)
    glance_id = upload(name, qcow2)
    exporter.report(f"Glance image {name} ({glance_id}) from {qcow2}")
    if not options.keep:
        exporter.delete_export(task)
        vmdk.unlink(missing_ok=True)
    return ExportResult(task.task_id, qcow2, sha256, glance_id, name)


def export_to_openstack(settings: Settings, options: ExportOptions, clock: Clock | None = None,
                        report: Report = log.info, on_poll: OnPoll | None = None) -> ExportResult:
    """The export wired to the stack's AWS clients and the ``openstack.cloud`` connection."""
    from hybrid.aws.session import AwsClients

    conn = connect_openstack(settings.openstack.cloud)  # before hours of export, not after
    clients = AwsClients(settings)
    exporter = Exporter(clients.ec2, clients.s3, settings, clock, report, on_poll)
    tags = [f"{STACK_TAG}={settings.stack}", f"{ROLE_TAG}={options.role}"]

    def upload(name: str, path: Path) -> str:
        return upload_to_glance(conn, name, path, tags)

    return export_image(exporter, clients.s3, options, upload)
