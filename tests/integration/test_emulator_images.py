"""Machine images with real bytes on the local AWS server, over HTTP: GetConsoleOutput from the instance's folder,
CreateImage storing a builder's disk, DeregisterImage removing it, ExportImage/DescribeExportImageTasks writing a
stream-optimised VMDK to S3, and `hybrid image export`'s Exporter (all but the Glance upload) unchanged against it.

The instance folders are written here as the local instance runner would write them (the runner's own tests boot
real VMs). The module runs its own server, so that the server's image cache is this module's folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from hybrid.aws.images import AmiDriver
from hybrid.aws.objects import S3Objects
from hybrid.aws.session import AwsClients
from hybrid.core.clock import WallClock
from hybrid.core.localserver import IMAGE_CACHE_VARIABLE, image_store
from hybrid.core.naming import RECIPE_DIGEST_TAG
from hybrid.local.awsserver import start_emulator, stop_emulator
from hybrid.local.instance_folders import instance_folder
from hybrid.machine_images.export import ExportOptions, Exporter, export_image
from tests.fakes import eventually

pytestmark = pytest.mark.skipif(not shutil.which("qemu-img"),
                                reason="qemu-img is not installed (Debian/Ubuntu package qemu-utils)")
DISK_BYTES = 20 * 2**20  # random, so the stream-optimised VMDK stays above one 16 MiB upload part


@pytest.fixture(scope="module")
def image_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image-cache")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory, image_cache):
    """This module's own server (it overrides the session's), started with the module's image cache."""
    state_dir = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(IMAGE_CACHE_VARIABLE, str(image_cache))
        info = start_emulator(state_dir)
    yield info, state_dir
    stop_emulator(state_dir)


@pytest.fixture(scope="module")
def random_disk(tmp_path_factory) -> Path:
    """A qcow2 holding DISK_BYTES of random data."""
    folder = tmp_path_factory.mktemp("disk")
    raw = folder / "disk.raw"
    raw.write_bytes(os.urandom(DISK_BYTES))
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(folder / "disk.qcow2"))
    raw.unlink()
    return folder / "disk.qcow2"


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


def image_files(folder: Path, disk: Path | None = None) -> Path:
    """An image folder: a disk (a tiny empty qcow2 unless given), a fake kernel and initrd, image.json."""
    folder.mkdir(parents=True, exist_ok=True)
    if disk:
        shutil.copyfile(disk, folder / "disk.qcow2")
    else:
        qemu_img("create", "-f", "qcow2", str(folder / "disk.qcow2"), "8M")
    (folder / "vmlinuz").write_bytes(b"kernel")
    (folder / "initrd.img").write_bytes(b"initrd")
    (folder / "image.json").write_text(json.dumps({"cmdline": "root=/dev/vda rw console=ttyS0"}))
    return folder


def launch(ec2, **tags: str) -> str:
    image = min(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             TagSpecifications=spec)["Instances"][0]["InstanceId"]


def cache_restored_builder(ec2, state_dir: Path, image_cache: Path, digest: str, disk: Path | None = None) -> str:
    """An instance the runner restored from the image cache: its entry, machine.json with from_cache."""
    image_files(image_cache / digest, disk)
    instance_id = launch(ec2, **{RECIPE_DIGEST_TAG: digest})
    folder = instance_folder(state_dir, instance_id)
    folder.mkdir(parents=True)
    (folder / "machine.json").write_text(json.dumps({"kind": "vm", "pid": 0, "from_cache": digest}))
    return instance_id


def image_state(ec2, image_id: str) -> dict:
    return ec2.describe_images(ImageIds=[image_id])["Images"][0]


def available_image(ec2, instance_id: str, name: str) -> str:
    image_id = ec2.create_image(InstanceId=instance_id, Name=name)["ImageId"]
    eventually(lambda: image_state(ec2, image_id)["State"] != "pending", timeout=60)
    assert image_state(ec2, image_id)["State"] == "available", image_state(ec2, image_id)
    return image_id


def finished_task(ec2, task_id: str, timeout: float = 120) -> dict:
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        task = ec2.describe_export_image_tasks(ExportImageTaskIds=[task_id])["ExportImageTasks"][0]
        seen.append((task["Status"], task.get("StatusMessage"), task.get("Progress")))
        if task["Status"] != "active":
            return {**task, "seen": seen}
        time.sleep(0.2)
    raise AssertionError(f"export {task_id} still active after {timeout} s: {seen[-3:]}")


# ---------------------------------------------------------------- GetConsoleOutput

def test_console_output_is_the_tail_of_the_instances_console(raw_client, state_dir):
    ec2 = raw_client("ec2")
    instance_id = launch(ec2)
    assert "Output" not in ec2.get_console_output(InstanceId=instance_id)  # nothing yet, as on AWS
    folder = instance_folder(state_dir, instance_id)
    folder.mkdir(parents=True)
    (folder / "worker.log").write_text("worker log\n")
    assert ec2.get_console_output(InstanceId=instance_id)["Output"] == "worker log\n"
    console = "".join(f"[{n:6d}] booting\n" for n in range(5000)) + "HYBRID-BAKE-READY app-tier\n"
    (folder / "console.log").write_text(console)
    output = ec2.get_console_output(InstanceId=instance_id)["Output"]
    assert len(output) == 64 * 1024 and console.endswith(output)


def test_console_output_of_an_unknown_instance_is_ec2s_error(raw_client):
    with pytest.raises(ClientError, match="InvalidInstanceID.NotFound"):
        raw_client("ec2").get_console_output(InstanceId="i-0123456789abcdef0")


# ---------------------------------------------------------------- CreateImage, DeregisterImage

def test_create_image_of_a_cache_restored_builder_stores_its_disk_and_deregister_removes_it(
        raw_client, state_dir, image_cache, stack_name):
    ec2 = raw_client("ec2")
    builder = cache_restored_builder(ec2, state_dir, image_cache, f"{stack_name}-digest")
    image_id = available_image(ec2, builder, f"{stack_name}-app-tier")
    stored = image_store(state_dir) / image_id
    assert sorted(p.name for p in stored.iterdir()) == ["disk.qcow2", "image.json", "initrd.img", "vmlinuz"]
    ec2.deregister_image(ImageId=image_id)
    assert not stored.exists()


def test_create_image_of_a_vm_flattens_its_disk_and_caches_it_by_recipe(raw_client, state_dir, image_cache,
                                                                        stack_name, tmp_path):
    pytest.importorskip("hybrid.local.machines", reason="the runner's power_down is not there yet")
    ec2 = raw_client("ec2")
    base = image_files(tmp_path / "base")
    digest = f"{stack_name}-vm"
    instance_id = launch(ec2, **{RECIPE_DIGEST_TAG: digest})
    folder = instance_folder(state_dir, instance_id)
    folder.mkdir(parents=True)
    qemu_img("create", "-f", "qcow2", "-F", "qcow2", "-b", str(base / "disk.qcow2"), str(folder / "disk.qcow2"))
    (folder / "machine.json").write_text(json.dumps({"kind": "vm", "pid": 0, "disk": str(base / "disk.qcow2")}))
    image_id = available_image(ec2, instance_id, f"{stack_name}-web-tier")
    disk = image_store(state_dir) / image_id / "disk.qcow2"
    assert "backing-filename" not in json.loads(qemu_img("info", "--output=json", str(disk)))
    assert (image_cache / digest / "disk.qcow2").is_file()


def test_create_image_that_cannot_store_the_disk_fails_with_the_reason(raw_client, state_dir, stack_name):
    ec2 = raw_client("ec2")
    instance_id = launch(ec2)
    folder = instance_folder(state_dir, instance_id)
    folder.mkdir(parents=True)
    (folder / "machine.json").write_text(json.dumps({"kind": "vm", "pid": 0, "from_cache": "no-such-digest"}))
    image_id = ec2.create_image(InstanceId=instance_id, Name=f"{stack_name}-broken")["ImageId"]
    eventually(lambda: image_state(ec2, image_id)["State"] != "pending", timeout=60)
    image = image_state(ec2, image_id)
    assert image["State"] == "failed" and "no-such-digest" in image["StateReason"]["Message"]


def test_create_image_of_an_instance_that_is_no_machine_is_a_record_only(raw_client, state_dir, stack_name):
    ec2 = raw_client("ec2")
    image_id = ec2.create_image(InstanceId=launch(ec2), Name=f"{stack_name}-record")["ImageId"]
    assert image_state(ec2, image_id)["State"] == "available"
    assert not (image_store(state_dir) / image_id).exists()


# ---------------------------------------------------------------- ExportImage, DescribeExportImageTasks

def test_export_writes_a_stream_optimised_vmdk_with_a_multipart_etag(raw_client, state_dir, image_cache,
                                                                     random_disk, stack_name, tmp_path):
    ec2, s3 = raw_client("ec2"), raw_client("s3")
    image_id = available_image(ec2, cache_restored_builder(ec2, state_dir, image_cache, f"{stack_name}-x",
                                                           random_disk), f"{stack_name}-app-tier")
    s3.create_bucket(Bucket=f"{stack_name}-exports")
    started = ec2.export_image(ImageId=image_id, DiskImageFormat="VMDK", RoleName="vmimport",
                               S3ExportLocation={"S3Bucket": f"{stack_name}-exports", "S3Prefix": "exports/"})
    assert started["Status"] == "active" and started["ImageId"] == image_id

    task = finished_task(ec2, started["ExportImageTaskId"])

    assert task["Status"] == "completed", task
    progress = [int(p) for _, _, p in task["seen"] if p is not None]
    assert progress == sorted(progress) and all(0 <= p < 100 for p in progress)
    key = f"exports/{started['ExportImageTaskId']}.vmdk"
    assert s3.head_object(Bucket=f"{stack_name}-exports", Key=key)["ETag"].strip('"').endswith("-2")
    local = tmp_path / "export.vmdk"
    s3.download_file(f"{stack_name}-exports", key, str(local))
    info = json.loads(qemu_img("info", "--output=json", str(local)))
    assert info["format"] == "vmdk" and info["format-specific"]["data"]["create-type"] == "streamOptimized"
    qemu_img("compare", str(local), str(random_disk))  # exits non-zero if the contents differ


def test_export_of_an_image_without_a_disk_is_refused(raw_client, stack_name):
    ec2 = raw_client("ec2")
    image_id = ec2.create_image(InstanceId=launch(ec2), Name=f"{stack_name}-record")["ImageId"]
    with pytest.raises(ClientError, match="InvalidParameterValue.*has no disk"):
        ec2.export_image(ImageId=image_id, DiskImageFormat="VMDK", RoleName="vmimport",
                         S3ExportLocation={"S3Bucket": f"{stack_name}-exports"})
    with pytest.raises(ClientError, match="InvalidAMIID"):
        ec2.export_image(ImageId="ami-0123456789abcdef0", DiskImageFormat="VMDK",
                         S3ExportLocation={"S3Bucket": f"{stack_name}-exports"})


def test_export_into_a_missing_bucket_is_deleted_with_the_reason(raw_client, state_dir, image_cache, stack_name):
    ec2 = raw_client("ec2")
    image_id = available_image(ec2, cache_restored_builder(ec2, state_dir, image_cache, f"{stack_name}-m"),
                               f"{stack_name}-app-tier")
    started = ec2.export_image(ImageId=image_id, DiskImageFormat="VMDK",
                               S3ExportLocation={"S3Bucket": f"{stack_name}-nowhere", "S3Prefix": "x/"})
    task = finished_task(ec2, started["ExportImageTaskId"])
    assert task["Status"] == "deleted" and "NoSuchBucket" in task["StatusMessage"]


def test_describe_lists_filters_and_pages_the_tasks(raw_client, state_dir, image_cache, stack_name):
    ec2 = raw_client("ec2")
    image_id = available_image(ec2, cache_restored_builder(ec2, state_dir, image_cache, f"{stack_name}-d"),
                               f"{stack_name}-app-tier")
    tags = [{"ResourceType": "export-image-task", "Tags": [{"Key": "hybrid:stack", "Value": stack_name}]}]
    location = {"S3Bucket": f"{stack_name}-nowhere", "S3Prefix": "x/"}
    ids = [ec2.export_image(ImageId=image_id, DiskImageFormat="RAW", S3ExportLocation=location, ClientToken=token,
                            TagSpecifications=tags)["ExportImageTaskId"] for token in ("a", "b", "a")]
    assert ids[0] == ids[2] != ids[1]  # the same ClientToken, the same task
    mine = [{"Name": "tag:hybrid:stack", "Values": [stack_name]}]
    first = ec2.describe_export_image_tasks(Filters=mine, MaxResults=1)
    second = ec2.describe_export_image_tasks(Filters=mine, MaxResults=1, NextToken=first["NextToken"])
    assert [t["ExportImageTaskId"] for t in first["ExportImageTasks"] + second["ExportImageTasks"]] == ids[:2]
    assert "NextToken" not in second


# ---------------------------------------------------------------- `hybrid image export`, minus Glance

class QuickClock(WallClock):
    """Real time, but the exporter's 30 s polls take a fifth of a second."""

    def sleep(self, seconds: float) -> None:
        super().sleep(min(seconds, 0.2))


def test_the_exporter_runs_unchanged_against_the_server(settings_for, stack_name, raw_client, state_dir,
                                                        image_cache, random_disk, tmp_path):
    settings = settings_for(stack_name)
    ec2 = raw_client("ec2")
    image_id = available_image(ec2, cache_restored_builder(ec2, state_dir, image_cache, f"{stack_name}-e",
                                                           random_disk), f"{stack_name}-web-tier")
    clients, lines, uploads = AwsClients(settings), [], []
    exporter = Exporter(AmiDriver(clients.ec2, stack_name), S3Objects(clients.s3), settings, QuickClock(),
                        report=lines.append)

    result = export_image(exporter, clients.s3, ExportOptions(image_id=image_id, out_dir=tmp_path / "out"),
                          lambda name, path: uploads.append((name, path)) or "glance-id")

    assert uploads == [(f"{stack_name}-web-tier", result.qcow2)] and result.glance_image_id == "glance-id"
    assert json.loads(qemu_img("info", "--output=json", str(result.qcow2)))["format"] == "qcow2"
    qemu_img("compare", str(result.qcow2), str(random_disk))
    assert any("verified" in line for line in lines), lines
    bucket = f"{stack_name}-exports"
    assert raw_client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # not kept: deleted
