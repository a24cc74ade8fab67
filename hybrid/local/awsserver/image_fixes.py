"""Machine images with real bytes on the local server: what moto's EC2 lacks for ``hybrid image bake`` and
``hybrid image export`` to run unchanged against it.

- ``GetConsoleOutput``: the last 64 KiB of the instance's console (a VM's ``console.log``, a worker process's
  ``worker.log``), base64-encoded as EC2 returns it; no Output when there is nothing (moto returns a fixed sample).
- ``CreateImage`` of an instance the runner made a machine (``machine.json``): the AMI is ``pending`` while its disk
  is stored (``image_store``), then ``available``, or ``failed`` with a StateReason. Other instances keep moto's
  behaviour (a record only).
- ``DeregisterImage`` also removes the image's disk from the store.
- ``ExportImage`` and ``DescribeExportImageTasks`` (``export_tasks``): the upload goes to this server's own S3 over
  HTTP, multipart, so the object's ETag is a multipart ETag as AWS's exports have.

``apply`` patches moto's EC2 responses and AMI backend before the server serves (server fix 5 remembers each
response class's method names from its first request on). The pinned moto only.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hybrid.core.localserver import emulator_dir
from hybrid.core.naming import RECIPE_DIGEST_TAG
from hybrid.local.awsserver.export_tasks import (CONVERT_OPTIONS, ExportImageTask, ExportTasks, Upload, new_task_id,
                                                 page, start_export, tags_of)
from hybrid.local.awsserver.image_store import (StoreJob, console_tail, encoded_console, image_disk, read_machine,
                                                remove_image, store_image)
from hybrid.local.awsserver.sqs_fixes import require_pinned_moto
from hybrid.local.instance_folders import instance_folder

log = logging.getLogger(__name__)
UPLOAD_PART_BYTES = 16 * 2**20
UPLOAD_THREADS = 2
FAILED_REASON_CODE = "Server.InternalError"


@dataclass
class ImageServer:
    """What the patched actions need: the state folder, this server's port (for the exports' uploads), the tasks."""

    state_dir: Path
    port: int = 0
    tasks: ExportTasks = field(default_factory=ExportTasks)

    @property
    def export_work_dir(self) -> Path:
        return emulator_dir(self.state_dir) / "exports"


_server: ImageServer | None = None


def apply(state_dir: Path) -> ImageServer:
    """Patches moto's EC2 in this process for the images of ``state_dir``. Idempotent."""
    global _server
    from moto.ec2.models.amis import AmiBackend
    from moto.ec2.responses import EC2Response

    require_pinned_moto("the machine image actions")
    _server = ImageServer(Path(state_dir))
    for name, action in (("get_console_output", get_console_output), ("export_image", export_image),
                         ("describe_export_image_tasks", describe_export_image_tasks)):
        setattr(EC2Response, name, action)
    AmiBackend.create_image = _storing_disks(_original(AmiBackend.create_image))
    AmiBackend.deregister_image = _removing_disks(_original(AmiBackend.deregister_image))
    return _server


def listening(port: int) -> None:
    """The server's port, once it listens: exports upload to it."""
    _current().port = port


def _current() -> ImageServer:
    if _server is None:
        raise RuntimeError("image_fixes.apply(state_dir) was not called in this process")
    return _server


def _original(method: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(method, "__wrapped__", method)


# ---------------------------------------------------------------- GetConsoleOutput

def get_console_output(self: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.core.types import Base64EncodedString
    from moto.core.utils import utcnow

    instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
    result: dict[str, Any] = {"InstanceId": instance.id, "Timestamp": utcnow()}
    tail = console_tail(instance_folder(_current().state_dir, instance.id))
    if tail:
        result["Output"] = Base64EncodedString(encoded_console(tail))
    return ActionResult(result)


# ---------------------------------------------------------------- CreateImage, DeregisterImage

def _storing_disks(create_image: Callable[..., Any]) -> Callable[..., Any]:
    def create_image_with_disk(self: Any, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        ami = create_image(self, instance_id, *args, **kwargs)
        server = _current()
        folder = instance_folder(server.state_dir, instance_id)
        machine = read_machine(folder)
        if machine is not None:
            digest = self.tags.get(instance_id, {}).get(RECIPE_DIGEST_TAG, "")
            ami.state = "pending"
            job = StoreJob(server.state_dir, ami.id, instance_id, folder, machine, digest)
            threading.Thread(target=store_in_background, args=(ami, job, self.amis), name=f"store-{ami.id}",
                             daemon=True).start()
        return ami

    create_image_with_disk.__wrapped__ = create_image  # type: ignore[attr-defined]
    return create_image_with_disk


def store_in_background(ami: Any, job: StoreJob, registered: dict[str, Any]) -> None:
    """Stores the disk; the AMI becomes ``available``, or ``failed`` with the reason. An AMI deregistered
    meanwhile loses its stored disk again."""
    log.info("storing the disk of instance %s as image %s", job.instance_id, ami.id)
    try:
        store_image(job, _power_down)
    except Exception as exc:  # noqa: BLE001 - any failure fails the image, with its reason, as AWS's would
        log.warning("image %s of instance %s failed: %s", ami.id, job.instance_id, exc)
        ami.state_reason = {"Code": FAILED_REASON_CODE, "Message": f"storing the disk failed: {exc}"}
        ami.state = "failed"
        return
    if ami.id not in registered:
        remove_image(job.state_dir, ami.id)
        return
    ami.state = "available"
    log.info("image %s available", ami.id)


def _power_down(folder: Path, timeout: float) -> bool:
    from hybrid.local.machines import power_down  # the runner's side: loaded only when a VM is imaged

    return power_down(folder, timeout)


def _removing_disks(deregister_image: Callable[..., Any]) -> Callable[..., Any]:
    def deregister_image_and_disk(self: Any, ami_id: str, *args: Any, **kwargs: Any) -> Any:
        result = deregister_image(self, ami_id, *args, **kwargs)
        if remove_image(_current().state_dir, ami_id):
            log.info("removed the disk of image %s", ami_id)
        return result

    deregister_image_and_disk.__wrapped__ = deregister_image  # type: ignore[attr-defined]
    return deregister_image_and_disk


# ---------------------------------------------------------------- ExportImage, DescribeExportImageTasks

def export_image(self: Any) -> Any:
    from moto.core.responses import ActionResult

    self.error_on_dryrun()
    server = _current()
    image_id, disk_format = self._get_param("ImageId"), str(self._get_param("DiskImageFormat") or "").upper()
    location = self._get_param("S3ExportLocation") or {}
    disk = exportable_disk(self.ec2_backend, server.state_dir, image_id, disk_format, location)
    task = ExportImageTask(new_task_id(), image_id, disk_format, location["S3Bucket"],
                           location.get("S3Prefix", ""), (self.current_account, self.region),
                           self._get_param("RoleName") or "vmimport", self._get_param("Description") or "",
                           tags_of(self._get_param("TagSpecifications", [])))
    task, new = server.tasks.add(task, self._get_param("ClientToken") or "")
    if new:
        log.info("export %s of %s (%s) into s3://%s/%s", task.task_id, image_id, disk_format, task.bucket, task.key)
        start_export(task, disk, server.export_work_dir, s3_upload(server, self.get_access_key(), self.region))
    return ActionResult(task.started())


def exportable_disk(backend: Any, state_dir: Path, image_id: str, disk_format: str,
                    location: dict[str, Any]) -> Path:
    """The image's disk to export; EC2's errors for what AWS would refuse too."""
    from moto.ec2.exceptions import InvalidAMIIdError, InvalidParameterValue, MissingParameterError

    if not image_id:
        raise MissingParameterError("ImageId")
    if disk_format not in CONVERT_OPTIONS:
        raise InvalidParameterValue(f"DiskImageFormat {disk_format or '(none)'} is not one of "
                                    f"{', '.join(CONVERT_OPTIONS)}")
    if not location.get("S3Bucket"):
        raise MissingParameterError("S3ExportLocation.S3Bucket")
    images = backend.describe_images(ami_ids=[image_id])
    if not images:
        raise InvalidAMIIdError(image_id)
    if images[0].state != "available":
        raise InvalidParameterValue(f"image {image_id} is {images[0].state}; only an available image can be "
                                    "exported")
    disk = image_disk(state_dir, image_id)
    if disk is None:
        raise InvalidParameterValue(f"image {image_id} has no disk on the local AWS server, so it cannot be "
                                    "exported: only images that CreateImage made of a VM instance (a local bake) "
                                    "have one")
    return disk


def s3_upload(server: ImageServer, access_key: str, region: str) -> Upload:
    """Uploads to this server's S3 over HTTP as the caller (the same account), multipart above one part."""
    def upload(path: Path, bucket: str, key: str, on_bytes: Callable[[int], None]) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{server.port}", region_name=region,
                              aws_access_key_id=access_key, aws_secret_access_key="local",
                              config=Config(s3={"addressing_style": "path"}))
        transfer = TransferConfig(multipart_threshold=UPLOAD_PART_BYTES, multipart_chunksize=UPLOAD_PART_BYTES,
                                  max_concurrency=UPLOAD_THREADS)
        client.upload_file(str(path), bucket, key, Config=transfer, Callback=on_bytes)

    return upload


def describe_export_image_tasks(self: Any) -> Any:
    from moto.core.responses import ActionResult

    self.error_on_dryrun()
    tasks = _current().tasks.describe((self.current_account, self.region), self._get_param("ExportImageTaskIds", []),
                                      self._get_param("Filters", []))
    shown, next_token = page(tasks, self._get_int_param("MaxResults"), self._get_param("NextToken"))
    result: dict[str, Any] = {"ExportImageTasks": [t.described() for t in shown]}
    if next_token:
        result["NextToken"] = next_token
    return ActionResult(result)
