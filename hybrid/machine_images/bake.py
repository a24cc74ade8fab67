"""Bake a role's AMI: build the role's wheelhouse here, upload it, launch a builder from a base image with the
recipe's user data (which fetches the wheelhouse by a presigned URL), wait until it reports ready, create the image
``<stack>-<role>`` tagged for the stack, wait until it is available, and always end the builder and delete the
uploaded wheelhouse.

Wheelhouse (``hybrid.machine_images.wheelhouse``): one tar, uploaded to the stack's private exports bucket as
``bake/<recipe digest>/wheelhouse.tar``; the builder gets a presigned GET valid for 3 h (user data is capped at
16 KB) and checks the tar's SHA-256. On the local AWS server the URL is signed for ``GUEST_AWS_ENDPOINT``, the
address at which the server's VMs reach it. The builder and the image carry ``hybrid:recipe-digest=<digest>``; on
AWS an available image of the stack with the same name, role and digest is reused and nothing is baked (the local
server's image cache does the same for its VMs, keyed by the builder's digest tag).

Readiness, on AWS and the local server alike: the builder's bake script prints ``HYBRID-BAKE-READY <role>`` (or
``HYBRID-BAKE-FAILED ...``) on the serial console, read with ``ec2:GetConsoleOutput`` (the local server answers it
from the VM's serial console). The console needs no credentials or instance profile on the builder (a tag set by
the builder would), at the price of EC2's console buffering (output can lag by minutes): polled every 15 s on AWS,
2 s locally. Builders carry ``hybrid:role=bake``, so the stack's fleet never counts them, and the local instance
runner boots them as VMs.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid.aws.compute import ORIGIN_REGISTERED, ORIGIN_TAG, tags_of
from hybrid.aws.images import AmiDriver
from hybrid.aws.session import AwsClients, MappedClient
from hybrid.core.clock import Clock, SystemClock
from hybrid.core.errors import ConfigError, HybridError, NameTakenError
from hybrid.core.localserver import GUEST_AWS_ENDPOINT
from hybrid.core.naming import RECIPE_DIGEST_TAG, ROLE_TAG, STACK_TAG
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for
from hybrid.machine_images.export import ensure_export_bucket
from hybrid.machine_images.recipes import FAILED_MARKER, READY_MARKER, bake_user_data, image_name
from hybrid.machine_images.wheelhouse import Wheelhouse, WheelhouseBuilder

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
EMULATOR_BUILDER_TYPE = "t3.micro"
WHEELHOUSE_URL_TTL = 3 * 3600
BAKE_PREFIX = "bake/"


@dataclass(frozen=True)
class BakeRequest:
    """What to bake: the role, the base AMI (empty: aws.ami_id, or any image on the local server), the builder's
    instance type (empty: aws.instance_type on AWS, t3.micro on the local server), and whether an existing image of
    the same name may be replaced."""

    role: str
    base_ami: str = ""
    instance_type: str = ""
    replace: bool = False


@dataclass(frozen=True)
class BakeResult:
    """The image; ``reused``: an image of the same recipe digest was there already and nothing was baked."""

    image_id: str
    name: str
    builder_id: str
    replaced: str = ""
    digest: str = ""
    reused: bool = False


def image_tags(settings: Settings, role: str, base_ami: str, digest: str) -> dict[str, str]:
    return {STACK_TAG: settings.stack, ROLE_TAG: role, ORIGIN_TAG: ORIGIN_BAKED, BASE_AMI_TAG: base_ami,
            RECIPE_DIGEST_TAG: digest, "Name": image_name(settings, role)}


class WheelhouseShipping:
    """A role's wheelhouse on its way to a builder: built here into a temp folder, uploaded to the stack's exports
    bucket as ``bake/<digest>/wheelhouse.tar``, fetched by the builder with a presigned GET (signed by ``signer``,
    whose endpoint is the one the builder reaches), and deleted, object and folder, once the bake is over."""

    def __init__(self, builder: WheelhouseBuilder, s3: MappedClient, signer: MappedClient,
                 ensure_bucket: Callable[[], str], report: Report = log.info) -> None:
        self.builder, self.s3, self.signer, self.ensure_bucket = builder, s3, signer, ensure_bucket
        self.report = report
        self.uploaded: dict[str, str] = {}

    @staticmethod
    def key(house: Wheelhouse) -> str:
        return f"{BAKE_PREFIX}{house.digest}/wheelhouse.tar"

    def prepare(self, role: str) -> Wheelhouse:
        house = self.builder.build(role, Path(tempfile.mkdtemp(prefix=f"hybrid-bake-{role}-")))
        self.report(house.summary())
        return house

    def publish(self, house: Wheelhouse) -> str:
        """Uploads the tar; returns the presigned GET the builder fetches it with (never logged)."""
        bucket = self.ensure_bucket()
        key = self.key(house)
        self.s3.upload_file(str(house.tar), bucket, key)
        self.uploaded[key] = bucket
        self.report(f"wheelhouse uploaded to s3://{bucket}/{key} ({house.size / 2**20:.1f} MiB, sha256 "
                    f"{house.sha256[:16]}...)")
        return self.signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                  ExpiresIn=WHEELHOUSE_URL_TTL)

    def withdraw(self, house: Wheelhouse) -> None:
        """Deletes the uploaded object (tolerant: a failure is logged, never raised) and the local tar."""
        key = self.key(house)
        bucket = self.uploaded.pop(key, "")
        if bucket:
            try:
                self.s3.delete_object(Bucket=bucket, Key=key)
            except HybridError as exc:
                log.warning("could not delete s3://%s/%s (delete it by hand): %s", bucket, key, exc)
        shutil.rmtree(house.tar.parent, ignore_errors=True)


class Baker:
    """Bakes images through the stack's AMI driver (on AWS or the local server) from wheelhouses it ships."""

    def __init__(self, amis: AmiDriver, settings: Settings, shipping: WheelhouseShipping,
                 clock: Clock | None = None, report: Report = log.info, on_poll: OnPoll | None = None) -> None:
        self.amis, self.settings, self.shipping, self.clock = amis, settings, shipping, clock or SystemClock()
        self.report, self.on_poll = report, on_poll

    @property
    def on_emulator(self) -> bool:
        return self.settings.aws.target == "emulator"

    def bake(self, request: BakeRequest) -> BakeResult:
        """Bakes ``request.role``'s image (or, on AWS, reuses one of the same recipe digest); the builder is
        terminated (and confirmed gone) and the uploaded wheelhouse deleted whatever happens."""
        name = image_name(self.settings, request.role)
        images = self.amis.images_named(name)
        self.check_name_is_ours(images, name)
        base = self.base_ami(request.base_ami)
        house = self.shipping.prepare(request.role)
        try:
            reusable = None if self.on_emulator else self.reusable_image(images, request.role, house.digest)
            if reusable:
                self.report(f"image {name} ({reusable['ImageId']}) was baked from the same recipe (digest "
                            f"{house.digest[:16]}): reused, nothing baked")
                return BakeResult(reusable["ImageId"], name, "", digest=house.digest, reused=True)
            existing = self.replaceable_image(images, name, request.replace)
            return self.bake_from(request, name, base, house, existing)
        finally:
            self.shipping.withdraw(house)

    def bake_from(self, request: BakeRequest, name: str, base: str, house: Wheelhouse,
                  existing: dict[str, Any] | None) -> BakeResult:
        builder = self.launch_builder(request, base, house, self.shipping.publish(house))
        try:
            self.wait_ready(builder, request.role)
            if existing:
                self.deregister(existing)
            image_id = self.create_image(builder, name, request.role, base, house.digest)
            self.wait_available(image_id, name)
        except BaseException:
            self.terminate_quietly(builder)
            raise
        self.terminate_builder(builder)
        return BakeResult(image_id, name, builder, existing.get("ImageId", "") if existing else "", house.digest)

    # ------------------------------------------------------------ before: name and base image

    def check_name_is_ours(self, images: list[dict[str, Any]], name: str) -> None:
        """Raises if an image of that name exists that is not this stack's."""
        if images and not self.amis.owned(images[0]):
            raise NameTakenError(f"image {name} ({images[0]['ImageId']}) exists but is not tagged for stack "
                                 f"{self.settings.stack}: choose another stack name or aws.ami_name")

    def reusable_image(self, images: list[dict[str, Any]], role: str, digest: str) -> dict[str, Any] | None:
        """This stack's available image of the same role baked from the same recipe digest, if there is one."""
        for image in images:
            tags = tags_of(image)
            if (self.amis.owned(image) and image.get("State") == "available" and tags.get(ROLE_TAG) == role
                    and tags.get(RECIPE_DIGEST_TAG) == digest):
                return image
        return None

    def replaceable_image(self, images: list[dict[str, Any]], name: str, replace: bool) -> dict[str, Any] | None:
        """The existing image of that name if it may be replaced (a registered record always may); raises if not."""
        if not images:
            return None
        image = images[0]
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

    def launch_builder(self, request: BakeRequest, base: str, house: Wheelhouse, wheelhouse_url: str) -> str:
        tags = {STACK_TAG: self.settings.stack, ROLE_TAG: ROLE_BAKE, BAKE_ROLE_TAG: request.role,
                RECIPE_DIGEST_TAG: house.digest, "Name": f"{image_name(self.settings, request.role)}-builder"}
        builder = self.amis.launch_builder(base, self.builder_type(request),
                                           bake_user_data(request.role, wheelhouse_url, house.sha256), tags)
        self.report(f"builder {builder} launched from {base} for {request.role} (recipe digest {house.digest[:16]})")
        return builder

    def builder_type(self, request: BakeRequest) -> str:
        if request.instance_type:
            return request.instance_type
        return EMULATOR_BUILDER_TYPE if self.on_emulator else self.settings.aws.instance_type

    def wait_ready(self, builder: str, role: str) -> None:
        self.report(f"waiting for builder {builder} to report {READY_MARKER} on its console")
        wait_for(f"builder {builder} to bake {role}", lambda: self.readiness(builder, role), READY_TIMEOUT,
                 interval=2.0 if self.on_emulator else 15.0, clock=self.clock, on_poll=self.on_poll)

    def readiness(self, builder: str, role: str) -> Poll[str]:
        state = self.amis.instance_state(builder)
        if state in ("shutting-down", "terminated", "stopping", "stopped"):
            return Poll(state, done=False, failed=f"the builder is {state}", state=state)
        if state != "running":
            return Poll(state, done=False, state=state)
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

    def create_image(self, builder: str, name: str, role: str, base: str, digest: str) -> str:
        image_id = self.amis.create_image(builder, name, f"hybrid {self.settings.stack}: {role} (baked from {base})",
                                          image_tags(self.settings, role, base, digest))
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


def guest_settings(settings: Settings) -> Settings:
    """The settings as a builder sees AWS: on the local server its endpoint is ``GUEST_AWS_ENDPOINT`` (the address
    QEMU forwards to the server); on AWS nothing changes."""
    if settings.aws.target != "emulator":
        return settings
    return dataclasses.replace(settings, aws=dataclasses.replace(settings.aws, endpoint_url=GUEST_AWS_ENDPOINT))


def bake_image(settings: Settings, request: BakeRequest, clock: Clock | None = None, report: Report = log.info,
               on_poll: OnPoll | None = None, builder: WheelhouseBuilder | None = None) -> BakeResult:
    """Bakes with the stack's clients (AWS or the local server, from ``settings.aws``)."""
    clients = AwsClients(settings)
    signer = AwsClients(guest_settings(settings)).s3_presigner
    shipping = WheelhouseShipping(builder or WheelhouseBuilder(), clients.s3, signer,
                                  lambda: ensure_export_bucket(clients.s3, settings), report)
    amis = AmiDriver(clients.ec2, settings.stack)
    return Baker(amis, settings, shipping, clock, report, on_poll).bake(request)
