"""Export to OpenStack, AWS half through botocore's Stubber (the local server has no VM export): the export task's
progress and failure paths, the timeout on a fake clock, the download's ETag check; qemu-img for real if present."""
from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from hybrid.aws.images import AmiDriver, export_key
from hybrid.aws.objects import ChecksumMismatch, EtagHasher, S3Objects
from hybrid.aws.session import MappedClient
from hybrid.core.clock import FakeClock
from hybrid.core.errors import HybridError, WaitTimeout
from hybrid.core.settings import load
from hybrid.machine_images.export import (
    Exporter,
    ExportOptions,
    ExportTask,
    export_image,
)
from hybrid.openstack.image import convert_to_qcow2

TASK = "export-ami-0123456789abcdef0"
IMAGE = "ami-0123456789abcdef0"


@pytest.fixture
def settings(tmp_path):
    return load(None, {}, {"stack": "shop", "state_dir": str(tmp_path / "state"), "aws.target": "aws"})


@pytest.fixture
def clients():
    made = {name: boto3.client(name, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
            for name in ("ec2", "s3")}
    stubs = {name: Stubber(client) for name, client in made.items()}
    for stub in stubs.values():
        stub.activate()
    yield {name: MappedClient(client, "aws") for name, client in made.items()}, stubs
    for stub in stubs.values():
        stub.assert_no_pending_responses()


def exporter(clients, settings, clock=None, polls=None):
    mapped, _ = clients
    return Exporter(AmiDriver(mapped["ec2"], settings.stack), S3Objects(mapped["s3"]), settings, clock or FakeClock(),
                    report=lambda line: None, on_poll=polls.append if polls is not None else None)


def task_reply(status: str, progress: str = "", message: str = "") -> dict:
    task = {"ExportImageTaskId": TASK, "ImageId": IMAGE, "Status": status,
            "S3ExportLocation": {"S3Bucket": "shop-exports", "S3Prefix": "exports/"}}
    if progress:
        task["Progress"] = progress
    if message:
        task["StatusMessage"] = message
    return {"ExportImageTasks": [task]}


def describe(stubs, reply):
    stubs["ec2"].add_response("describe_export_image_tasks", reply, {"ExportImageTaskIds": [TASK]})


def test_start_exports_vmdk_into_the_bucket_and_names_the_key(clients, settings):
    _, stubs = clients
    stubs["ec2"].add_response("describe_export_image_tasks", {"ExportImageTasks": []}, {})
    stubs["ec2"].add_response("export_image", {"ExportImageTaskId": TASK, "Status": "active"}, {
        "ImageId": IMAGE, "DiskImageFormat": "VMDK", "RoleName": "vmimport", "ClientToken": ANY,
        "S3ExportLocation": {"S3Bucket": "shop-exports", "S3Prefix": "exports/"}, "Description": ANY,
        "TagSpecifications": [{"ResourceType": "export-image-task",
                               "Tags": [{"Key": "hybrid:stack", "Value": "shop"}]}]})
    task = exporter(clients, settings).start(IMAGE, "shop-exports")
    assert task == ExportTask(TASK, IMAGE, "shop-exports", f"exports/{TASK}.vmdk")


def test_start_resumes_this_stacks_active_export(clients, settings):
    _, stubs = clients
    reply = task_reply("active", "40")
    reply["ExportImageTasks"][0]["Tags"] = [{"Key": "hybrid:stack", "Value": "shop"}]
    stubs["ec2"].add_response("describe_export_image_tasks", reply, {})
    assert exporter(clients, settings).start(IMAGE, "shop-exports").task_id == TASK


def test_wait_reports_progress_until_completed(clients, settings):
    _, stubs = clients
    describe(stubs, task_reply("active", "20", "converting"))
    describe(stubs, task_reply("active", "85", "uploading"))
    describe(stubs, task_reply("completed"))
    polls, clock = [], FakeClock()
    exporter(clients, settings, clock, polls).wait(ExportTask(TASK, IMAGE, "shop-exports", "k"))
    assert [p.progress for p in polls] == [0.2, 0.85, 1.0]
    assert polls[0].state == "active: converting" and clock.sleeps == [30.0, 30.0]


@pytest.mark.parametrize("status", ["deleting", "deleted"])
def test_a_deleted_export_fails_with_aws_reason(clients, settings, status):
    _, stubs = clients
    describe(stubs, task_reply("active", "10"))
    describe(stubs, task_reply(status, message="Insufficient permissions - role vmimport cannot write"))
    with pytest.raises(HybridError, match=f"the export was {status}: Insufficient permissions"):
        exporter(clients, settings).wait(ExportTask(TASK, IMAGE, "shop-exports", "k"))


def test_an_export_that_never_finishes_times_out_on_the_clock(clients, settings):
    _, stubs = clients
    for _ in range(3):
        describe(stubs, task_reply("active", "5", "validating"))
    clock = FakeClock()
    with pytest.raises(WaitTimeout, match="active: validating"):
        exporter(clients, settings, clock).wait(ExportTask(TASK, IMAGE, "shop-exports", "k"), timeout=60)
    assert clock.now() == 60


def body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def stub_object(stubs, data: bytes, etag: str, part_size: int | None = None) -> None:
    key = {"Bucket": "shop-exports", "Key": f"exports/{TASK}.vmdk"}
    stubs["s3"].add_response("head_object", {"ContentLength": len(data), "ETag": f'"{etag}"'}, key)
    if part_size:
        stubs["s3"].add_response("head_object", {"ContentLength": part_size, "PartsCount": 3},
                                 {**key, "PartNumber": 1})
    stubs["s3"].add_response("get_object", {"Body": body(data), "ContentLength": len(data)}, key)


def multipart_etag(data: bytes, part: int) -> str:
    digests = b"".join(hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part))
    return f"{hashlib.md5(digests).hexdigest()}-{-(-len(data) // part)}"


TASK_AT = ExportTask(TASK, IMAGE, "shop-exports", f"exports/{TASK}.vmdk")


def test_download_checks_a_single_part_etag_and_reports_progress(clients, settings, tmp_path):
    _, stubs = clients
    data = b"vmdk" * 1000
    stub_object(stubs, data, hashlib.md5(data).hexdigest())
    polls = []
    sha = exporter(clients, settings, polls=polls).download(TASK_AT, tmp_path / "disk.vmdk")
    assert sha == hashlib.sha256(data).hexdigest() and (tmp_path / "disk.vmdk").read_bytes() == data
    assert polls[-1].progress == 1.0


def test_download_checks_a_multipart_etag(clients, settings, tmp_path):
    _, stubs = clients
    data = bytes(range(256)) * 40  # 10240 bytes in parts of 4096: 3 parts
    stub_object(stubs, data, multipart_etag(data, 4096), part_size=4096)
    exporter(clients, settings).download(TASK_AT, tmp_path / "disk.vmdk")


def test_download_with_a_wrong_checksum_is_deleted_and_fails(clients, settings, tmp_path):
    _, stubs = clients
    stub_object(stubs, b"corrupted bytes", hashlib.md5(b"original bytes").hexdigest())
    with pytest.raises(ChecksumMismatch, match="S3 reports"):
        exporter(clients, settings).download(TASK_AT, tmp_path / "disk.vmdk")
    assert not (tmp_path / "disk.vmdk").exists()


def test_etag_hasher_matches_for_chunks_that_straddle_parts():
    data = bytes(range(256)) * 100
    hasher = EtagHasher(1000)
    for start in range(0, len(data), 333):
        hasher.update(data[start:start + 333])
    assert hasher.etag() == multipart_etag(data, 1000)
    assert export_key("exports/", TASK, "VMDK") == f"exports/{TASK}.vmdk"


def make_vmdk(path: Path) -> None:
    subprocess.run(["qemu-img", "create", "-f", "vmdk", str(path), "16M"], check=True, capture_output=True)


needs_qemu = pytest.mark.skipif(not shutil.which("qemu-img"),
                                reason="qemu-img is not installed (Debian/Ubuntu package qemu-utils)")


@needs_qemu
def test_qemu_img_converts_vmdk_to_qcow2(tmp_path):
    make_vmdk(tmp_path / "disk.vmdk")
    out = convert_to_qcow2(tmp_path / "disk.vmdk", tmp_path / "disk.qcow2")
    assert out.read_bytes()[:4] == b"QFI\xfb"


def test_a_failing_qemu_img_is_a_clear_error(tmp_path):
    (tmp_path / "bad.vmdk").write_bytes(b"not a disk")
    with pytest.raises(HybridError, match="failed \\(exit 1\\)"):
        convert_to_qcow2(tmp_path / "bad.vmdk", tmp_path / "bad.qcow2", qemu_img=shutil.which("false"))


@needs_qemu
@pytest.mark.parametrize("keep", [False, True])
def test_the_whole_export_uploads_the_qcow2_and_cleans_up_unless_kept(clients, settings, tmp_path, keep):
    _, stubs = clients
    make_vmdk(tmp_path / "source.vmdk")
    data = (tmp_path / "source.vmdk").read_bytes()
    stubs["ec2"].add_response("describe_images", {"Images": [{"ImageId": IMAGE, "State": "available", "Tags": [
        {"Key": "hybrid:stack", "Value": "shop"}]}]}, {"Owners": ["self"], "Filters": ANY})
    _stub_bucket_exists(stubs)
    stubs["ec2"].add_response("describe_export_image_tasks", {"ExportImageTasks": []}, {})
    stubs["ec2"].add_response("export_image", {"ExportImageTaskId": TASK}, None)
    describe(stubs, task_reply("completed"))
    stub_object(stubs, data, hashlib.md5(data).hexdigest())
    if not keep:
        stubs["s3"].add_response("delete_object", {}, {"Bucket": "shop-exports", "Key": f"exports/{TASK}.vmdk"})
    uploads = []

    result = export_image(exporter(clients, settings), clients[0]["s3"],
                          ExportOptions(out_dir=tmp_path / "out", keep=keep),
                          lambda name, path: uploads.append((name, path)) or "glance-id")

    assert uploads == [("shop-web-tier", tmp_path / "out/shop-web-tier.qcow2")]
    assert result.glance_image_id == "glance-id" and result.qcow2.read_bytes()[:4] == b"QFI\xfb"
    assert (tmp_path / f"out/{TASK}.vmdk").exists() == keep


def _stub_bucket_exists(stubs):
    bucket = {"Bucket": "shop-exports"}
    stubs["s3"].add_response("head_bucket", {}, bucket)
    stubs["s3"].add_response("get_bucket_tagging", {"TagSet": [{"Key": "hybrid:stack", "Value": "shop"}]}, bucket)
    stubs["s3"].add_response("get_public_access_block", {"PublicAccessBlockConfiguration": {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True}}, bucket)
    stubs["s3"].add_response("get_bucket_encryption", {"ServerSideEncryptionConfiguration": {"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}}, bucket)
