"""The hybrid service on the embedded default with a real web-tier VM: ``hybrid up`` / ``hybrid down`` when the AWS
side is the local AWS server and the OpenStack side is the local fixture with real compute.

``up`` does what an operator does by hand on the two clouds, in order, and times each stage:

1. **aws**: the local AWS server and its instance runner, the stack's queues and buckets, the workers' model cache.
2. **bake**: the web-tier AMI, baked in a VM from this checkout (or restored from the image cache).
3. **export**: ``ExportImage`` to a VMDK in the stack's exports bucket, downloaded and converted to qcow2, once per
   recipe digest in this state folder.
4. **relay**: the local AWS server offered inside the fixture's namespace (``hybrid.local.relay``): the only way from
   a server on the fixture to anything on this machine.
5. **openstack**: the image into Glance (it borrows the base image's kernel: a disk baked locally has no boot
   loader), the key pair, the security group, the server (its user data names the relay as its AWS endpoint, and no
   credentials: the local server's are not secrets) and the floating IP.
6. **ready**: ``/healthz`` through the floating IP, from inside the namespace, once the VM has booted, cloud-init
   has installed the settings and gunicorn listens.

The web tier and the autoscaler run in the VM under their systemd units; the autoscaler launches app-tier instances
on the local AWS server, which runs them as local worker processes. ``down`` deletes the OpenStack side (the image it
uploaded included), and then does what ``hybrid local down`` does, which stops the relay with the other services.
"""
from __future__ import annotations

import json
import logging
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybrid.core import netns, procs
from hybrid.core.errors import ConfigError, HybridError
from hybrid.core.localserver import read_record
from hybrid.core.naming import ROLE_WEB_TIER
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for
from hybrid.local import stack as local
from hybrid.openstack.stack import OpenStackStack, build_openstack_stack

log = logging.getLogger(__name__)
Report = Callable[[str], None]
OnPoll = Callable[[Poll[Any]], None]
READY_TIMEOUT = 900.0
"""Boot, cloud-init and gunicorn's start of a server under software emulation: about 2-4 minutes here."""
RELAY_TIMEOUT = 15.0
RELAY = "relay"
STAGES = ("aws", "bake", "export", "relay", "openstack", "ready", "down")
"""The stages of ``up`` in order, and ``down`` (which ``hybrid demo --openstack`` times too)."""


@dataclass
class WebVm:
    """What ``up`` made: the web tier's URL, the namespace it is reached from, and seconds per stage."""

    url: str
    namespace: str
    stages: dict[str, float] = field(default_factory=dict)


def unavailable_reason(settings: Settings) -> str:
    """Why the web tier cannot run as a VM here (empty when it can)."""
    if settings.aws.target != "emulator":
        return "aws.target is not emulator: on real clouds `hybrid up` sets up AWS and OpenStack as they are"
    namespace = settings.openstack.reach_namespace()
    if not namespace:
        return (f"cloud {settings.openstack.cloud!r} has no network namespace to reach its floating IPs from "
                "(openstack.namespace)")
    if not netns.exists(namespace):
        return (f"network namespace {namespace!r} does not exist: the local OpenStack fixture is down or runs "
                "without real compute (sudo bash devstack/minicloud.sh up); `hybrid local up` runs the web tier "
                "as a local process instead")
    return ""


def up(settings: Settings, image: Path | None = None, report: Report = log.info,
       on_poll: OnPoll | None = None, convert: bool = False) -> WebVm:
    """Sets up both sides (idempotent: what exists is kept) and waits until the web tier answers. ``image``: a
    web-tier disk to upload instead of baking and exporting one (a VMDK converted first with ``convert``)."""
    reason = unavailable_reason(settings)
    if reason:
        raise ConfigError(f"the web tier cannot run as a VM here: {reason}")
    namespace = settings.openstack.reach_namespace()
    stages: dict[str, float] = {}
    with _stage(stages, "aws", report):
        local.start_aws_side(settings, report)
    if image is None:
        image = web_tier_disk(settings, stages, report, on_poll)
    with _stage(stages, "relay", report):
        endpoint = start_relay(settings, namespace)
        report(f"relay: the local AWS server is {endpoint} for servers on the fixture")
    with _stage(stages, "openstack", report):
        stack = openstack_stack(settings, image, endpoint, convert)
        stack.up(report=report, on_poll=on_poll)
    url = stack.url()
    with _stage(stages, "ready", report):
        wait_until_answering(url, namespace, on_poll=on_poll)
    return WebVm(url, namespace, stages)


def web_tier_disk(settings: Settings, stages: dict[str, float], report: Report, on_poll: OnPoll | None) -> Path:
    """The web-tier AMI as a qcow2 file: baked (or restored) and exported, once per recipe digest."""
    from hybrid.machine_images.bake import BakeRequest, bake_image
    from hybrid.machine_images.export import ExportOptions, export_to_file

    with _stage(stages, "bake", report):
        # The local server keeps no image of a stack across its restarts, and a second `up` finds this stack's
        # image of the last `up`: replacing it costs a restore from the image cache (seconds).
        baked = bake_image(settings, BakeRequest(ROLE_WEB_TIER, replace=True), report=report, on_poll=on_poll)
    disk = settings.state_path.resolve() / "images" / f"{ROLE_WEB_TIER}-{baked.digest[:16]}.qcow2"
    with _stage(stages, "export", report):
        if disk.exists():
            report(f"export: {disk} holds image {baked.name}'s recipe {baked.digest[:16]} already")
        else:
            result = export_to_file(settings, ExportOptions(ROLE_WEB_TIER, baked.image_id, disk.parent),
                                    report=report, on_poll=on_poll)
            result.qcow2.replace(disk)
    return disk


def openstack_stack(settings: Settings, image: Path | None = None, aws_endpoint: str = "",
                    convert: bool = False) -> OpenStackStack:
    from hybrid.openstack.image import prepare_image

    source = prepare_image(image, convert, settings.state_path / "images") if image else None
    return build_openstack_stack(settings, source, aws_endpoint=aws_endpoint)


# ---------------------------------------------------------------- the relay

def start_relay(settings: Settings, namespace: str) -> str:
    """Starts the relay unless it runs (a service of the state folder, which ``hybrid local down`` stops); returns
    the local AWS server's URL for servers on the fixture."""
    server = read_record(settings.state_path)
    if server is None:
        raise HybridError("the local AWS server is not running: the relay has nothing to offer")
    records = local.read_records(settings)
    record = records.get(RELAY)
    if record and local.is_running(record) and record.command[-1] == f"127.0.0.1:{server.port}":
        return _relay_url(record)
    if record:
        local.stop_service(record)
    address = namespace_address(namespace)
    records[RELAY] = record = local.start_service(settings, RELAY, procs.module_command(
        "hybrid.local.relay", "--namespace", namespace, "--listen", f"{address}:{server.port}",
        "--state-dir", str(settings.state_path.resolve()), "--to", f"127.0.0.1:{server.port}"))
    local.write_records(settings, records)
    wait_for("the relay to listen", lambda: _relay_listens(record, address, server.port, namespace),
             RELAY_TIMEOUT, interval=0.2)
    return _relay_url(record)


def _relay_url(record: local.ServiceRecord) -> str:
    listen = record.command[record.command.index("--listen") + 1]
    return f"http://{listen}"


def _relay_listens(record: local.ServiceRecord, address: str, port: int, namespace: str) -> Poll[bool]:
    if not local.alive(record.pid):
        return Poll(False, done=False, failed=f"the relay exited; see {record.log_path}:\n"
                                              + procs.log_tail(Path(record.log_path)))
    try:
        netns.connect(address, port, 1.0, namespace).close()
        return Poll(True, done=True)
    except OSError as exc:
        return Poll(False, done=False, state=str(exc))


def namespace_address(namespace: str) -> str:
    """The namespace's own IPv4 address (the first that is not loopback), from ``ip -json``."""
    done = subprocess.run(["ip", "-json", "-netns", namespace, "-4", "addr", "show"], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise HybridError(f"cannot read the addresses of network namespace {namespace!r}: {done.stderr.strip()}")
    for interface in json.loads(done.stdout or "[]"):
        for address in interface.get("addr_info", []):
            if address.get("family") == "inet" and address.get("scope") == "global":
                return str(address["local"])
    raise HybridError(f"network namespace {namespace!r} has no IPv4 address to offer the local AWS server on")


# ---------------------------------------------------------------- readiness and teardown

def wait_until_answering(url: str, namespace: str, timeout: float = READY_TIMEOUT,
                         on_poll: OnPoll | None = None) -> None:
    """Polls ``<url>healthz`` from inside ``namespace`` until it answers 200."""
    wait_for(f"the web tier to answer at {url}healthz", lambda: _health(url, namespace), timeout, interval=3.0,
             on_poll=on_poll)


def _health(url: str, namespace: str) -> Poll[bool]:
    try:
        with netns.entered(namespace), urllib.request.urlopen(f"{url}healthz", timeout=5) as reply:
            return Poll(True, done=reply.status == 200, state=f"HTTP {reply.status}")
    except OSError as exc:
        return Poll(False, done=False, state=f"not yet: {getattr(exc, 'reason', exc)}")


def down(settings: Settings, report: Report = log.info) -> list[str]:
    """Deletes the stack's OpenStack side (its uploaded image included), then stops the relay and tears the AWS
    side and the local AWS server down (``hybrid.local.stack.down``); returns what is left over (nothing)."""
    openstack_stack(settings).down(report=report, delete_image=True)
    return local.down(settings, report)


class _stage:
    """Times one stage of ``up`` into ``stages`` and reports it."""

    def __init__(self, stages: dict[str, float], name: str, report: Report) -> None:
        self.stages, self.name, self.report = stages, name, report

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.stages[self.name] = round(time.monotonic() - self.started, 1)
        if exc[0] is None:
            self.report(f"stage {self.name}: {self.stages[self.name]:.1f} s")
