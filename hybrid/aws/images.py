"""Machine images on EC2 (AWS or the local server): find an AMI, launch and end a builder instance, create, tag and
deregister images, and VM Import/Export's export-image tasks.

Small named operations only; what to do in which order, the waits and the reports belong to
``hybrid.machine_images``.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from hybrid.aws.compute import tag_specification, tags_of
from hybrid.aws.session import MappedClient
from hybrid.core.errors import NotFoundError
from hybrid.core.naming import STACK_TAG

log = logging.getLogger(__name__)
BUILDER_METADATA_OPTIONS = {"HttpTokens": "required", "HttpEndpoint": "enabled"}


@dataclass(frozen=True)
class ExportTask:
    """One ``ec2:ExportImage`` task and where its disk image lands."""

    task_id: str
    image_id: str
    bucket: str
    key: str


@dataclass(frozen=True)
class ExportStatus:
    """Where an export task stands: AWS's status and message, and its progress (0 to 1) when AWS says."""

    status: str
    message: str = ""
    progress: float | None = None


def export_key(prefix: str, task_id: str, disk_format: str) -> str:
    """Where AWS writes an export: ``<S3Prefix><ExportImageTaskId>.<format>``."""
    return f"{prefix}{task_id}.{disk_format.lower()}"


def snapshot_ids(image: dict[str, Any]) -> list[str]:
    return [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("SnapshotId")]


class AmiDriver:
    """The machine images of one stack, and the instances that build them, through one EC2 client."""

    def __init__(self, ec2: MappedClient, stack: str) -> None:
        self.ec2, self.stack = ec2, stack

    def owned(self, item: dict[str, Any]) -> bool:
        """Whether an image or export task carries this stack's tag."""
        return tags_of(item).get(STACK_TAG) == self.stack

    # ------------------------------------------------------------ images

    def images_named(self, name: str) -> list[dict[str, Any]]:
        """This account's images of that name, deregistered ones left out."""
        images = self.ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
        return [i for i in images if i.get("State") != "deregistered"]

    def find_image(self, name: str) -> dict[str, Any] | None:
        images = self.images_named(name)
        return images[0] if images else None

    def available_image_id(self, name: str) -> str | None:
        """The id of this stack's available image of that name, if there is one."""
        owned = [i for i in self.images_named(name) if self.owned(i) and i.get("State") == "available"]
        return owned[0]["ImageId"] if owned else None

    def first_image_of(self, owner: str) -> str | None:
        """The lowest id among ``owner``'s images (a stable pick among the local server's stock images)."""
        images = self.ec2.describe_images(Owners=[owner])["Images"]
        return min(i["ImageId"] for i in images) if images else None

    def image(self, image_id: str) -> dict[str, Any] | None:
        """The image as EC2 describes it, or None while it is not listed yet."""
        images = self.ec2.describe_images(ImageIds=[image_id])["Images"]
        return images[0] if images else None

    def create_image(self, instance_id: str, name: str, description: str, tags: dict[str, str]) -> str:
        return self.ec2.create_image(InstanceId=instance_id, Name=name, Description=description,
                                     TagSpecifications=tag_specification("image", tags))["ImageId"]

    def tag_snapshots_like(self, image: dict[str, Any]) -> None:
        """Gives the image's snapshots the image's tags (the local server rejects snapshot TagSpecifications on
        create_image, so they are tagged afterwards)."""
        snapshots = snapshot_ids(image)
        if snapshots:
            self.ec2.create_tags(Resources=snapshots, Tags=image.get("Tags", []))

    def deregister(self, image: dict[str, Any]) -> bool:
        """Deregisters an image and deletes its snapshots; False when the image was gone already."""
        try:
            self.ec2.deregister_image(ImageId=image["ImageId"])
        except NotFoundError:
            return False
        for snapshot in snapshot_ids(image):
            try:
                self.ec2.delete_snapshot(SnapshotId=snapshot)
            except NotFoundError:
                log.info("snapshot %s of image %s is already gone", snapshot, image["ImageId"])
        return True

    # ------------------------------------------------------------ builder instances

    def launch_builder(self, image_id: str, instance_type: str, user_data: str, tags: dict[str, str]) -> str:
        """One instance from ``image_id``, tagged (and its volumes) with ``tags``; returns its id."""
        reply = self.ec2.run_instances(
            ImageId=image_id, InstanceType=instance_type, MinCount=1, MaxCount=1, UserData=user_data,
            ClientToken=f"bake-{uuid.uuid4().hex}", MetadataOptions=BUILDER_METADATA_OPTIONS,
            TagSpecifications=tag_specification("instance", tags) + tag_specification("volume", tags))
        return reply["Instances"][0]["InstanceId"]

    def instance_state(self, instance_id: str) -> str:
        """EC2's state name of the instance; ``terminated`` once it is not listed any more."""
        try:
            reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except NotFoundError:
            return "terminated"
        instances = [i for r in reservations for i in r["Instances"]]
        return instances[0]["State"]["Name"] if instances else "terminated"

    def console_output(self, instance_id: str) -> str:
        """The instance's serial console so far (botocore has already base64-decoded it)."""
        return self.ec2.get_console_output(InstanceId=instance_id).get("Output", "") or ""

    def terminate(self, instance_id: str) -> None:
        """Asks EC2 to terminate the instance; one that is gone already is fine."""
        try:
            self.ec2.terminate_instances(InstanceIds=[instance_id])
        except NotFoundError:
            log.info("instance %s is already gone", instance_id)

    # ------------------------------------------------------------ export tasks (VM Import/Export)

    def start_export(self, image_id: str, bucket: str, prefix: str, role_name: str, disk_format: str,
                     description: str) -> ExportTask:
        """Starts exporting ``image_id`` into ``s3://bucket/prefix``, the task tagged for this stack."""
        reply = self.ec2.export_image(
            ImageId=image_id, DiskImageFormat=disk_format, RoleName=role_name, ClientToken=uuid.uuid4().hex,
            S3ExportLocation={"S3Bucket": bucket, "S3Prefix": prefix}, Description=description,
            TagSpecifications=tag_specification("export-image-task", {STACK_TAG: self.stack}))
        task_id = reply["ExportImageTaskId"]
        return ExportTask(task_id, image_id, bucket, export_key(prefix, task_id, disk_format))

    def active_export(self, image_id: str, bucket: str, disk_format: str) -> ExportTask | None:
        """This stack's export of ``image_id`` into ``bucket`` that is still running, if there is one."""
        for task in self.ec2.describe_export_image_tasks().get("ExportImageTasks", []):
            location = task.get("S3ExportLocation", {})
            if (task.get("ImageId") == image_id and task.get("Status") == "active"
                    and location.get("S3Bucket") == bucket and self.owned(task)):
                task_id = task["ExportImageTaskId"]
                return ExportTask(task_id, image_id, bucket,
                                  export_key(location.get("S3Prefix", ""), task_id, disk_format))
        return None

    def export_status(self, task_id: str) -> ExportStatus | None:
        """The task's status, or None when EC2 does not list it any more."""
        tasks = self.ec2.describe_export_image_tasks(ExportImageTaskIds=[task_id]).get("ExportImageTasks", [])
        if not tasks:
            return None
        status = tasks[0].get("Status", "")
        return ExportStatus(status, tasks[0].get("StatusMessage", ""), _progress(tasks[0], status))


def _progress(task: dict[str, Any], status: str) -> float | None:
    if status == "completed":
        return 1.0
    try:
        return int(task.get("Progress", "")) / 100
    except ValueError:
        return None
