"""Export a baked AMI to OpenStack: AMI -> VMDK in S3 (``ec2:ExportImage``) -> local download with checksum ->
``qemu-img convert -O qcow2`` -> Glance, then the exported S3 object is deleted (unless kept).

The export bucket ``<stack>-exports`` is private like the stack's other buckets: all public access blocked, default
encryption SSE-S3 (AES256), the stack's tags. VM Import/Export writes into it with the service role ``vmimport``
(``--role-name``), which needs s3:GetBucketLocation, s3:GetObject, s3:ListBucket, s3:PutObject and s3:GetBucketAcl
on the bucket; see AWS's "Required permissions for VM Import/Export".

**Checksum.** The exported object is written by AWS, not by us, so there is no SHA-256 of ours in its metadata to
compare with. The S3 ETag is the check (``hybrid.aws.objects``): with SSE-S3 it is the MD5 of the object, or of its
parts' MD5s for a multipart upload, which large exports are. (With SSE-KMS the ETag is not an MD5 at all, one reason
the bucket uses SSE-S3.) The SHA-256 of the download is logged and handed to Glance, which stores its own hash of
the upload.

The SDK calls are the adapters': ``hybrid.aws.images`` (the export task), ``hybrid.aws.objects`` (the download),
``hybrid.openstack.image`` (qemu-img) and ``hybrid.openstack.glance`` (the upload); this module orders the steps.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid.aws.images import AmiDriver, ExportTask
from hybrid.aws.objects import S3Objects
from hybrid.aws.session import AwsClients, MappedClient
from hybrid.aws.stack import exports_bucket_resource, stack_names
from hybrid.aws.storage import BucketDriver
from hybrid.core.clock import Clock, SystemClock
from hybrid.core.errors import NameTakenError, NotFoundError
from hybrid.core.naming import ROLE_TAG, ROLE_WEB_TIER, STACK_TAG
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for
from hybrid.machine_images.recipes import image_name
from hybrid.openstack.glance import connect_checked, upload_qcow2
from hybrid.openstack.image import boot_properties, convert_to_qcow2
from hybrid.openstack.stack import kernel_image

log = logging.getLogger(__name__)
Report = Callable[[str], None]
OnPoll = Callable[[Poll[Any]], None]
DISK_FORMAT = "VMDK"
EXPORT_PREFIX = "exports/"
EXPORT_TIMEOUT = 4 * 3600.0
EXPORT_INTERVAL = 30.0
LOCAL_EXPORT_INTERVAL = 2.0
"""The local AWS server exports in about half a minute: polling it is free, AWS's tasks take an hour or more."""
EXPORT_FAILED_STATES = ("deleting", "deleted")
DEFAULT_ROLE_NAME = "vmimport"


def exports_bucket(settings: Settings) -> str:
    return stack_names(settings).exports_bucket


def glance_image_name(settings: Settings) -> str:
    """The Glance name the OpenStack side boots the web tier from."""
    return settings.openstack.image_name or f"{settings.stack}-{ROLE_WEB_TIER}"


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


class Exporter:
    """The AWS half of an export: the stack's images and their export tasks, and the exported objects in S3."""

    def __init__(self, amis: AmiDriver, objects: S3Objects, settings: Settings, clock: Clock | None = None,
                 report: Report = log.info, on_poll: OnPoll | None = None) -> None:
        self.amis, self.objects, self.settings = amis, objects, settings
        self.clock, self.report, self.on_poll = clock or SystemClock(), report, on_poll

    def find_image(self, role: str, image_id: str = "") -> str:
        """The AMI to export: ``image_id``, or the stack's baked ``<stack>-<role>`` image."""
        if image_id:
            return image_id
        name = image_name(self.settings, role)
        found = self.amis.available_image_id(name)
        if found is None:
            raise NotFoundError(f"no available image {name} of stack {self.settings.stack}: bake it with "
                                f"`hybrid image bake --role {role}`")
        return found

    def start(self, image_id: str, bucket: str, role_name: str = DEFAULT_ROLE_NAME) -> ExportTask:
        """Resumes this stack's active export of ``image_id`` if there is one, else starts a new one."""
        active = self.amis.active_export(image_id, bucket, DISK_FORMAT)
        if active:
            self.report(f"resuming export {active.task_id} of {image_id}")
            return active
        task = self.amis.start_export(image_id, bucket, EXPORT_PREFIX, role_name, DISK_FORMAT,
                                      f"hybrid {self.settings.stack}: {image_id} for OpenStack")
        self.report(f"export {task.task_id} of {image_id} started into s3://{bucket}/{EXPORT_PREFIX}")
        return task

    def wait(self, task: ExportTask, timeout: float = EXPORT_TIMEOUT) -> ExportTask:
        """Waits until the task completes; raises with AWS's StatusMessage if it is deleted (failed)."""
        interval = EXPORT_INTERVAL if self.settings.aws.target == "aws" else LOCAL_EXPORT_INTERVAL
        wait_for(f"export {task.task_id} of {task.image_id}", lambda: self.export_state(task.task_id), timeout,
                 interval=interval, clock=self.clock, on_poll=self.on_poll)
        self.report(f"export {task.task_id} completed: s3://{task.bucket}/{task.key}")
        return task

    def export_state(self, task_id: str) -> Poll[str]:
        found = self.amis.export_status(task_id)
        if found is None:
            return Poll("", done=False, failed=f"export task {task_id} is not listed any more")
        status, message = found.status, found.message
        state = f"{status}: {message}" if message else status
        if status in EXPORT_FAILED_STATES:
            return Poll(status, done=False, failed=f"the export was {status}: {message or 'no reason given'}",
                        state=state)
        return Poll(status, done=status == "completed", progress=found.progress, state=state)

    def download(self, task: ExportTask, destination: Path) -> str:
        """Streams the VMDK to ``destination``, checks it against the S3 ETag; returns its SHA-256."""
        done = self.objects.download_verified(task.bucket, task.key, destination, self._progress)
        self.report(f"downloaded {done.size} bytes to {destination} (ETag {done.etag} verified, "
                    f"sha256 {done.sha256})")
        return done.sha256

    def _progress(self, done: int, size: int) -> None:
        if self.on_poll:
            self.on_poll(Poll(done, done=done >= size, progress=done / size if size else 1.0,
                              state=f"{done / 2**20:.0f}/{size / 2**20:.0f} MiB"))

    def delete_export(self, task: ExportTask) -> None:
        self.objects.delete(task.bucket, task.key)
        self.report(f"deleted s3://{task.bucket}/{task.key}")


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
                 upload: Callable[[str, Path], str] | None) -> ExportResult:
    """AMI -> S3 VMDK -> local VMDK (checked) -> qcow2 -> ``upload(name, path)``; then cleans up unless kept.
    Without ``upload`` the qcow2 file is the result (the caller uploads it; ``glance_image_id`` is empty)."""
    settings = exporter.settings
    out_dir = options.out_dir or settings.state_path / "images"
    image_id = exporter.find_image(options.role, options.image_id)
    task = exporter.wait(exporter.start(image_id, ensure_export_bucket(s3, settings), options.role_name),
                         options.timeout)
    vmdk = out_dir / f"{task.task_id}.vmdk"
    sha256 = exporter.download(task, vmdk)
    qcow2 = convert_to_qcow2(vmdk, out_dir / f"{image_name(settings, options.role)}.qcow2")
    name = glance_image_name(settings) if options.role == ROLE_WEB_TIER else image_name(settings, options.role)
    glance_id = upload(name, qcow2) if upload else ""
    if upload:
        exporter.report(f"Glance image {name} ({glance_id}) from {qcow2}")
    if not options.keep:
        exporter.delete_export(task)
        vmdk.unlink(missing_ok=True)
    return ExportResult(task.task_id, qcow2, sha256, glance_id, name)


def stack_exporter(settings: Settings, clients: AwsClients, clock: Clock | None = None, report: Report = log.info,
                   on_poll: OnPoll | None = None) -> Exporter:
    return Exporter(AmiDriver(clients.ec2, settings.stack), S3Objects(clients.s3), settings, clock, report, on_poll)


def export_to_file(settings: Settings, options: ExportOptions, report: Report = log.info,
                   on_poll: OnPoll | None = None) -> ExportResult:
    """The export down to the local qcow2 file, for a caller that uploads it itself (``hybrid up``)."""
    clients = AwsClients(settings)
    return export_image(stack_exporter(settings, clients, None, report, on_poll), clients.s3, options, None)


def export_to_openstack(settings: Settings, options: ExportOptions, clock: Clock | None = None,
                        report: Report = log.info, on_poll: OnPoll | None = None) -> ExportResult:
    """The export wired to the stack's AWS clients and the ``openstack.cloud`` connection."""
    conn = connect_checked(settings.openstack.cloud)  # before hours of export, not after
    clients = AwsClients(settings)
    exporter = stack_exporter(settings, clients, clock, report, on_poll)
    tags = [f"{STACK_TAG}={settings.stack}", f"{ROLE_TAG}={options.role}"]
    booted_by = boot_properties(conn, kernel_image(settings)) if options.role == ROLE_WEB_TIER else {}

    def upload(name: str, path: Path) -> str:
        return upload_qcow2(conn, name, path, tags, booted_by)

    return export_image(exporter, clients.s3, options, upload)
