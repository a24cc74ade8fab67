"""Bake a role's AMI: launch a builder from a base image with the recipe's user data, wait until it reports ready,
create the image ``<stack>-<role>`` tagged for the stack, wait until it is available, and always end the builder.

Readiness: on AWS the builder's bake script prints ``HYBRID-BAKE-READY <role>`` (or ``HYBRID-BAKE-FAILED ...``) on
the serial console, read with ``ec2:GetConsoleOutput``. The console needs no credentials or instance profile on the
builder (a tag set by the builder would), at the price of EC2's console buffering (output can lag by minutes). On
the local AWS server nothing boots: a running builder counts as ready. Builders carry ``hybrid:role=bake``, so the
local instance runner (app-tier only) starts no worker for them and the stack's fleet never counts them.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hybrid.aws.compute import ORIGIN_REGISTERED, ORIGIN_TAG, tags_of
from hybrid.aws.images import AmiDriver
from hybrid.aws.session import AwsClients
from hybrid.aws.stack import stack_names
from hybrid.core.clock import Clock, SystemClock
from hybrid.core.errors import ConfigError, HybridError, NameTakenError
from hybrid.core.naming import ROLE_APP_TIER, ROLE_TAG, STACK_TAG
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for
from hybrid.machine_images.recipes import FAILED_MARKER, READY_MARKER, bake_user_data, recipe

log = logging.getLogger(__name__)
Report = Callable[[str], None]
OnPoll = Callable[[Poll[Any]], None]
ROLE_BAKE = "bake"
BAKE_ROLE_TAG = "hybrid:bake-role"
BASE_AMI_TAG = "hybrid:base-ami"
ORIGIN_BAKED = "baked"
READY_TIMEOUT = 1800.0
IMAGE_TIMEOUT = 3600.0
TERMINATE_TIMEOUT = 600.0
IMAGE_FAILED_STATES = ("failed", "invalid", "error", "deregistered")


@dataclass(frozen=True)
class BakeRequest:
    """What to bake: the role, the base AMI (empty: aws.ami_id, or any image on the local server), the builder's
    instance type (empty: aws.instance_type), what pip installs (see ``recipes.requirement``), and whether an
    existing image of the same name may be replaced."""

    role: str
    base_ami: str = ""
    instance_type: str = ""
    source: str = ""
    replace: bool = False


@dataclass(frozen=True)
class BakeResult:
    image_id: str
    name: str
    builder_id: str
    replaced: str = ""


def image_name(settings: Settings, role: str) -> str:
    """``<stack>-<role>``; the app tier follows aws.ami_name, the name ``hybrid aws up`` looks for."""
    recipe(role)
    return stack_names(settings).app_image if role == ROLE_APP_TIER else f"{settings.stack}-{role}"


def image_tags(settings: Settings, role: str, base_ami: str) -> dict[str, str]:
    return {STACK_TAG: settings.stack, ROLE_TAG: role, ORIGIN_TAG: ORIGIN_BAKED, BASE_AMI_TAG: base_ami,
            "Name": image_name(settings, role)}


class Baker:
    """Bakes images through the stack's AMI driver (on AWS or the local server)."""

    def __init__(self, amis: AmiDriver, settings: Settings, clock: Clock | None = None,
                 report: Report = log.info, on_poll: OnPoll | None = None) -> None:
        self.amis, self.settings, self.clock = amis, settings, clock or SystemClock()
        self.report, self.on_poll = report, on_poll

    @property
    def on_emulator(self) -> bool:
        return self.settings.aws.target == "emulator"

    def bake(self, request: BakeRequest) -> BakeResult:
        """Bakes ``request.role``'s image; the builder is terminated (and confirmed gone) whatever happens."""
        name = image_name(self.settings, request.role)
        existing = self.replaceable_image(name, request.replace)
        base = self.base_ami(request.base_ami)
        builder = self.launch_builder(request, base)
        try:
            self.wait_ready(builder, request.role)
            if existing:
                self.deregister(existing)
            image_id = self.create_image(builder, name, request.role, base)
            self.wait_available(image_id, name)
        except BaseException:
            self.terminate_quietly(builder)
            raise
        self.terminate_builder(builder)
        return BakeResult(image_id, name, builder, existing.get("ImageId", "") if existing else "")

    # ------------------------------------------------------------ before: name and base image

    def replaceable_image(self, name: str, replace: bool) -> dict[str, Any] | None:
        """The existing image of that name if it may be replaced (a registered record always may); raises if not."""
        image = self.amis.find_image(name)
        if image is None:
            return None
        if not self.amis.owned(image):
            raise NameTakenError(f"image {name} ({image['ImageId']}) exists but is not tagged for stack "
                                 f"{self.settings.stack}: choose another stack name or aws.ami_name")
        if replace or tags_of(image).get(ORIGIN_TAG) == ORIGIN_REGISTERED:
            return image
        raise HybridError(f"image {name} ({image['ImageId']}) already exists: pass --replace to bake a new one "
                          "(the old one is deregistered once the new builder is ready)")

    def base_ami(self, requested: str) -> str:
        base = requested or self.settings.aws.ami_id
        if base:
            return base
        stock = self.amis.first_image_of("amazon") if self.on_emulator else None
        if stock:
            return stock
        raise ConfigError("no base image to bake from: pass --base-ami (an Ubuntu or Debian AMI with cloud-init) "
                          "or set aws.ami_id")

    # ------------------------------------------------------------ the builder

    def launch_builder(self, request: BakeRequest, base: str) -> str:
        tags = {STACK_TAG: self.settings.stack, ROLE_TAG: ROLE_BAKE, BAKE_ROLE_TAG: request.role,
                "Name": f"{image_name(self.settings, request.role)}-builder"}
        builder = self.amis.launch_builder(base, request.instance_type or self.settings.aws.instance_type,
                                           bake_user_data(request.role, request.source), tags)
        self.report(f"builder {builder} launched from {base} for {request.role}")
        return builder

    def wait_ready(self, builder: str, role: str) -> None:
        how = "running" if self.on_emulator else f"{READY_MARKER} on its console"
        self.report(f"waiting for builder {builder} to report ready ({how})")
        wait_for(f"builder {builder} to bake {role}", lambda: self.readiness(builder, role), READY_TIMEOUT,
                 interval=1.0 if self.on_emulator else 15.0, clock=self.clock, on_poll=self.on_poll)

    def readiness(self, builder: str, role: str) -> Poll[str]:
        state = self.amis.instance_state(builder)
        if state in ("shutting-down", "terminated", "stopping", "stopped"):
            return Poll(state, done=False, failed=f"the builder is {state}", state=state)
        if state != "running":
            return Poll(state, done=False, state=state)
        if self.on_emulator:
            return Poll(state, done=True, state=state)
        return console_readiness(self.amis.console_output(builder), role)

    def terminate_builder(self, builder: str) -> None:
        """Terminates the builder and waits until EC2 reports it terminated."""
        self.amis.terminate(builder)
        wait_for(f"builder {builder} to terminate", lambda: self._termination(builder), TERMINATE_TIMEOUT,
                 interval=1.0 if self.on_emulator else 5.0, clock=self.clock, on_poll=self.on_poll)
        self.report(f"builder {builder} terminated")

    def _termination(self, builder: str) -> Poll[str]:
        state = self.amis.instance_state(builder)
        return Poll(state, done=state == "terminated", state=state)

    def terminate_quietly(self, builder: str) -> None:
        """The builder's end after a failure: never hides the failure, logs if the builder could not be ended."""
        try:
            self.terminate_builder(builder)
        except Exception as exc:  # noqa: BLE001 - the original error is the one to raise
            log.error("could not terminate builder %s (end it by hand): %s", builder, exc)

    # ------------------------------------------------------------ the image

    def create_image(self, builder: str, name: str, role: str, base: str) -> str:
        image_id = self.amis.create_image(builder, name, f"hybrid {self.settings.stack}: {role} (baked from {base})",
                                          image_tags(self.settings, role, base))
        self.report(f"image {name} ({image_id}) being created from builder {builder}")
        return image_id

    def wait_available(self, image_id: str, name: str) -> None:
        """Waits for the image, then tags its snapshots like it."""
        image = wait_for(f"image {name} ({image_id}) to become available", lambda: self.image_state(image_id),
                         IMAGE_TIMEOUT, interval=1.0 if self.on_emulator else 15.0, clock=self.clock,
                         on_poll=self.on_poll)
        self.amis.tag_snapshots_like(image)
        self.report(f"image {name} ({image_id}) available")

    def image_state(self, image_id: str) -> Poll[dict[str, Any]]:
        image = self.amis.image(image_id)
        if image is None:
            return Poll({}, done=False, state="not listed yet")
        state = image.get("State", "available")
        reason = image.get("StateReason", {}).get("Message", "")
        failed = f"image is {state}" + (f": {reason}" if reason else "") if state in IMAGE_FAILED_STATES else ""
        return Poll(image, done=state == "available", failed=failed, state=state)

    def deregister(self, image: dict[str, Any]) -> None:
        """Deregisters an image and deletes its snapshots (tolerates either being gone already)."""
        if self.amis.deregister(image):
            self.report(f"old image {image.get('Name', '')} ({image['ImageId']}) deregistered")


def console_readiness(console: str, role: str) -> Poll[str]:
    """What a builder's console says: done at ``HYBRID-BAKE-READY <role>``, failed at ``HYBRID-BAKE-FAILED``."""
    for line in console.splitlines():
        if FAILED_MARKER in line:
            return Poll("failed", done=False, failed=line.strip(), state="bake failed")
        if f"{READY_MARKER} {role}" in line:
            return Poll("ready", done=True, state="ready")
    return Poll("baking", done=False, state="running, baking")


def bake_image(settings: Settings, request: BakeRequest, clock: Clock | None = None, report: Report = log.info,
               on_poll: OnPoll | None = None) -> BakeResult:
    """Bakes with the stack's EC2 client (AWS or the local server, from ``settings.aws``)."""
    amis = AmiDriver(AwsClients(settings).ec2, settings.stack)
    return Baker(amis, settings, clock, report, on_poll).bake(request)
