"""`hybrid image bake` on the local AWS server: the baked image is what `hybrid aws up` then finds and keeps.

The builder is a real VM (``hybrid.local.machines``); the first bake of a checkout boots it (a few minutes under
TCG), later ones restore the disk from the image cache by recipe digest. Skipped, with the reason, where no VM can
start."""
from __future__ import annotations

import pytest

from hybrid.aws.stack import build_aws_stack
from hybrid.core.contracts import ACTION_CREATE, ACTION_KEEP
from hybrid.core.errors import HybridError
from hybrid.local.machines import missing_tools
from hybrid.machine_images.bake import BakeRequest, bake_image

pytestmark = [pytest.mark.timeout(1800),
              pytest.mark.skipif(bool(missing_tools()), reason=f"no VM can start here: {', '.join(missing_tools())} "
                                 "missing (devstack/minicloud.sh install installs them)")]


def instance(raw_client, instance_id: str) -> dict:
    reservations = raw_client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]


def tags(item: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


def image_change(settings):
    return next(c for c in build_aws_stack(settings).plan() if c.resource.kind == "image")


def test_bake_app_tier_makes_the_image_aws_up_keeps(settings_for, stack_name, raw_client):
    settings = settings_for(stack_name)
    assert image_change(settings).action == ACTION_CREATE
    lines: list[str] = []

    result = bake_image(settings, BakeRequest("app-tier"), report=lines.append)

    image = raw_client("ec2").describe_images(ImageIds=[result.image_id])["Images"][0]
    assert image["Name"] == f"{stack_name}-app-tier" and image["State"] == "available"
    assert {"hybrid:stack": stack_name, "hybrid:role": "app-tier", "hybrid:origin": "baked"}.items() <= \
        tags(image).items()
    builder = instance(raw_client, result.builder_id)
    assert builder["State"]["Name"] == "terminated"
    assert tags(builder)["hybrid:role"] == "bake"
    assert any("terminated" in line for line in lines)
    change = image_change(settings)
    assert change.action == ACTION_KEEP
    assert build_aws_stack(settings).drivers["image"].observe(change.resource).id == result.image_id


def test_second_bake_needs_replace_and_then_swaps_the_image(settings_for, stack_name, raw_client):
    settings = settings_for(stack_name)
    first = bake_image(settings, BakeRequest("app-tier"))
    with pytest.raises(HybridError, match="--replace"):
        bake_image(settings, BakeRequest("app-tier"))

    second = bake_image(settings, BakeRequest("app-tier", replace=True))

    assert second.replaced == first.image_id and second.image_id != first.image_id
    found = raw_client("ec2").describe_images(Owners=["self"], Filters=[
        {"Name": "name", "Values": [f"{stack_name}-app-tier"]}])["Images"]
    assert [i["ImageId"] for i in found if i.get("State") != "deregistered"] == [second.image_id]


def test_bake_replaces_the_record_aws_up_registered(stack, raw_client):
    made = stack()  # runs `hybrid aws up`, which registers an image record on the local server
    record = made.aws.drivers["image"].observe(next(r for r in made.aws.desired if r.kind == "image"))
    assert "origin: registered" in record.notes

    result = bake_image(made.settings, BakeRequest("app-tier"))

    assert result.replaced == record.id
    assert image_change(made.settings).action == ACTION_KEEP


def test_bake_web_tier_names_the_image_after_the_role(settings_for, stack_name, raw_client):
    result = bake_image(settings_for(stack_name), BakeRequest("web-tier"))
    assert result.name == f"{stack_name}-web-tier"
    image = raw_client("ec2").describe_images(ImageIds=[result.image_id])["Images"][0]
    assert tags(image)["hybrid:role"] == "web-tier"
