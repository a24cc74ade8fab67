"""Benchmark of the machine images on the local AWS server: bake (under QEMU: KVM where a standard guest boots,
else TCG), image sizes, export to a VMDK, and the app-tier image booted as a VM up to its first answer.

Run: ``.venv/bin/python benchmarks/bench_images.py [--cached]`` from the repository root, as root (QEMU, the base
image). It starts its own local AWS server in a fresh state folder and, unless ``--cached``, a fresh image cache
(``HYBRID_IMAGE_CACHE``), so both bakes really boot a builder: about 10 minutes under TCG. With ``--cached`` the
machine's cache (``~/.cache/hybrid/images``) is used and a bake of an unchanged checkout only restores its disk.
Results go to stdout, progress lines to stderr.

Rows:
- per tier: the wheelhouse (build time here, size), the bake (``hybrid image bake`` end to end: wheelhouse, upload,
  builder boot, install, clean-up, CreateImage with its power-down and disk flattening, builder termination), the
  image's qcow2 size on disk (allocated bytes) and virtual size;
- the export of the web-tier image (``ExportImage`` until ``completed``: qcow2 -> stream-optimised VMDK -> S3), the
  download with its ETag check, and the conversion back to qcow2, with the VMDK's size;
- the app-tier image booted as a VM (1 GiB, like t3.micro): launch to the first reply of a queued request, the
  worker's peak RSS (its stats line on the serial console), and idle timeout to the guest's own power-off.
The hypervisor row says which accelerator ran and why (``/var/lib/minicloud/hypervisor``, written by the fixture's
KVM probe); on a machine where KVM boots a standard guest, both are measured only if it is chosen there.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ROLES = ("app-tier", "web-tier")
IDLE_TIMEOUT = 30


def qcow2_sizes(disk: Path) -> tuple[int, int]:
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], check=True,
                                     capture_output=True, text=True).stdout)
    return info["actual-size"], info["virtual-size"]


def hypervisor_line() -> str:
    from hybrid.local.machines import HYPERVISOR_FILE, choose_accel

    why = HYPERVISOR_FILE.read_text().splitlines()[1:2] if HYPERVISOR_FILE.exists() else ["not probed"]
    return f"accelerator {choose_accel()} ({why[0] if why else ''})"


def bake_both(settings, rows: list[list[str]]) -> dict:
    from hybrid.core.localserver import image_store
    from hybrid.machine_images.bake import BakeRequest, bake_image

    results = {}
    for role in ROLES:
        common.progress(f"baking {role}")
        lines: list[str] = []
        started = time.perf_counter()
        result = bake_image(settings, BakeRequest(role), report=lines.append)
        seconds = time.perf_counter() - started
        results[role] = result
        actual, virtual = qcow2_sizes(image_store(settings.state_path) / result.image_id / "disk.qcow2")
        wheelhouse = next((line for line in lines if "wheelhouse" in line), "")
        rows.append([role, f"{seconds:.0f}", f"{actual / 1e6:.0f}", f"{virtual / 2**30:.1f}",
                     "cache" if any("cache" in line for line in lines) else "VM", wheelhouse[:70]])
    return results


def export_web_tier(settings, out_dir: Path) -> list[str]:
    from hybrid.aws.images import AmiDriver
    from hybrid.aws.objects import S3Objects
    from hybrid.aws.session import AwsClients
    from hybrid.machine_images.export import Exporter, ensure_export_bucket
    from hybrid.openstack.image import convert_to_qcow2

    common.progress("exporting web-tier")
    clients = AwsClients(settings)
    exporter = Exporter(AmiDriver(clients.ec2, settings.stack), S3Objects(clients.s3), settings,
                        report=common.ignore)
    image_id = exporter.find_image("web-tier")
    started = time.perf_counter()
    task = exporter.wait(exporter.start(image_id, ensure_export_bucket(clients.s3, settings)))
    exported = time.perf_counter()
    vmdk = out_dir / f"{task.task_id}.vmdk"
    exporter.download(task, vmdk)
    downloaded = time.perf_counter()
    convert_to_qcow2(vmdk, out_dir / "web-tier.qcow2")
    converted = time.perf_counter()
    exporter.delete_export(task)
    return [f"{exported - started:.1f}", f"{downloaded - exported:.1f}", f"{converted - downloaded:.1f}",
            f"{vmdk.stat().st_size / 1e6:.0f}"]


def boot_app_tier(settings, endpoint: str) -> list[str]:
    from hybrid.aws.stack import build_aws_stack
    from hybrid.core.messages import ClassifyRequest
    from hybrid.core.naming import LOCAL_MACHINE_TAG, LOCAL_MACHINE_VM, ROLE_APP_TIER, ROLE_TAG, STACK_TAG
    from hybrid.local.instance_folders import instance_folder
    from hybrid.local.machines import guest_settings_json

    common.progress("booting the app-tier image as a VM")
    ec2, s3, sqs = (common.local_client(endpoint, service) for service in ("ec2", "s3", "sqs"))
    image = next(r["id"] for r in build_aws_stack(settings).status() if r["kind"] == "image")
    tags = [{"Key": STACK_TAG, "Value": settings.stack}, {"Key": ROLE_TAG, "Value": ROLE_APP_TIER},
            {"Key": LOCAL_MACHINE_TAG, "Value": LOCAL_MACHINE_VM}]
    started = time.perf_counter()
    [instance] = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", UserData=guest_settings_json(settings),
        InstanceInitiatedShutdownBehavior="terminate",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"]]
    folder = instance_folder(settings.state_path, instance)
    try:
        key = common.upload_image(s3, f"{settings.stack}-input", common.photo_jpeg("coffee"))
        responses = f"{settings.stack}-responses"
        request = ClassifyRequest(uuid.uuid4().hex, key, "coffee", responses)
        common.send_bodies(sqs, sqs.get_queue_url(QueueName=f"{settings.stack}-requests")["QueueUrl"],
                           [request.to_body()])
        replies_url = sqs.get_queue_url(QueueName=responses)["QueueUrl"]
        replies, answered = [], started
        while not replies and time.perf_counter() - started < 900:
            replies, answered = common.receive_replies(sqs, replies_url)
        label = replies[0].label if replies else "no answer"
        deadline = time.monotonic() + 600
        while not (folder / "ended").exists() and time.monotonic() < deadline:
            time.sleep(1)
        ended = (folder / "ended").read_text().strip() if (folder / "ended").exists() else "still running"
        off = time.perf_counter()
        console = (folder / "console.log").read_text(errors="replace")
        peaks = re.findall(r"peak_rss_mb=([0-9.]+)", console)
        return [f"{answered - started:.0f}", label, f"{float(peaks[-1]):.0f}" if peaks else "?",
                f"{off - answered:.0f}", ended]
    finally:
        ec2.terminate_instances(InstanceIds=[instance])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cached", action="store_true", help="use the machine's image cache (no real bake when "
                                                              "this checkout was baked before)")
    args = parser.parse_args(argv)
    from hybrid.core.settings import load
    from hybrid.local.machines import missing_tools

    if missing_tools():
        print(f"cannot boot VMs here: {', '.join(missing_tools())} missing (devstack/minicloud.sh install)")
        return 2
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-images-")))
        if not args.cached:
            os.environ["HYBRID_IMAGE_CACHE"] = str(work / "image-cache")  # the server inherits it: real bakes
        state_dir = work / "state"
        info = stack.enter_context(common.local_server(state_dir, common.progress))
        settings = load(None, {}, {"stack": f"bench-img-{uuid.uuid4().hex[:6]}", "state_dir": str(state_dir),
                                   "worker.idle_timeout": str(IDLE_TIMEOUT)})
        stack.enter_context(common.aws_stack(settings, common.progress))
        print(f"# machine images, {common.cpu_model()}, {os.cpu_count()} cores; {hypervisor_line()}")
        rows: list[list[str]] = []
        bake_both(settings, rows)
        print(common.table(["image", "bake s", "qcow2 MB", "virtual GiB", "builder", "report"], rows))
        export = export_web_tier(settings, work)
        print(common.table(["export s (ExportImage)", "download s", "to qcow2 s", "VMDK MB"], [export]))
        boot = boot_app_tier(settings, info.url)
        print(common.table(["launch to 1st answer s", "label", "worker peak RSS MB",
                            f"answer to power-off s (idle {IDLE_TIMEOUT} s)", "ended"], [boot]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
