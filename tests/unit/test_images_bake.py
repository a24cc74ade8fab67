"""Bake (botocore Stubber for EC2 and S3): readiness from the builder's console on AWS and on the local server, the
recipe digest on builder and image, an image of the same digest reused on AWS, the builder ended and the uploaded
wheelhouse deleted when baking fails, and the presigned URL signed for the address a local VM reaches."""
from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.stub import ANY, Stubber

from hybrid.aws.compute import tag_specification
from hybrid.aws.images import AmiDriver
from hybrid.aws.session import AwsClients, MappedClient
from hybrid.core.clock import FakeClock
from hybrid.core.errors import HybridError
from hybrid.core.localserver import GUEST_AWS_ENDPOINT
from hybrid.core.settings import load
from hybrid.machine_images.bake import (
    Baker,
    BakeRequest,
    WheelhouseShipping,
    console_readiness,
    guest_settings,
)
from hybrid.machine_images.recipes import bake_user_data
from hybrid.machine_images.wheelhouse import Wheelhouse

BUILDER = "i-0123456789abcdef0"
DIGEST = "d1" * 32
URL = "https://shop-exports.s3.amazonaws.com/bake/wheelhouse.tar?X-Amz-Signature=abc"


@pytest.fixture
def stubbed():
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield AmiDriver(MappedClient(client, "aws"), "shop"), stub
        stub.assert_no_pending_responses()


def settings(target: str = "aws"):
    return load(None, {}, {"stack": "shop", "aws.target": target})


class FakeShipping:
    """The wheelhouse's way to the builder, remembered: what was built, published and withdrawn."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.built, self.published, self.withdrawn = tmp, [], [], []

    def prepare(self, role: str) -> Wheelhouse:
        tar = self.tmp / f"{role}.tar"
        tar.write_bytes(b"tar")
        self.built.append(role)
        return Wheelhouse(role, "worker", tar, "5" * 64, DIGEST, ("hybrid==0.1.0",), (), 3, 0.1)

    def publish(self, house: Wheelhouse) -> str:
        self.published.append(house.digest)
        return URL

    def withdraw(self, house: Wheelhouse) -> None:
        self.withdrawn.append(house.digest)


@pytest.fixture
def shipping(tmp_path):
    return FakeShipping(tmp_path)


def baker(amis, shipping, target: str = "aws", clock=None) -> Baker:
    return Baker(amis, settings(target), shipping, clock or FakeClock(), report=lambda line: None)


def state(stub, name: str) -> None:
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [
        {"InstanceId": BUILDER, "State": {"Name": name, "Code": 0},
         "LaunchTime": datetime(2026, 1, 1, tzinfo=UTC)}]}]}, {"InstanceIds": [BUILDER]})


def console(stub, text: str) -> None:
    stub.add_response("get_console_output", {"InstanceId": BUILDER,
                                             "Output": base64.b64encode(text.encode()).decode()},
                      {"InstanceId": BUILDER})


def builder_tags(role: str = "app-tier") -> dict[str, str]:
    return {"hybrid:stack": "shop", "hybrid:role": "bake", "hybrid:bake-role": role, "hybrid:recipe-digest": DIGEST,
            "Name": f"shop-{role}-builder"}


def launch(stub, images=(), role: str = "app-tier") -> None:
    stub.add_response("describe_images", {"Images": list(images)}, {"Owners": ["self"], "Filters": ANY})
    stub.add_response("run_instances", {"Instances": [{"InstanceId": BUILDER}]}, {
        "ImageId": "ami-base", "InstanceType": "t3.micro", "MinCount": 1, "MaxCount": 1,
        "UserData": bake_user_data(role, URL, "5" * 64), "ClientToken": ANY, "MetadataOptions": ANY,
        "TagSpecifications": tag_specification("instance", builder_tags(role)) + tag_specification(
            "volume", builder_tags(role))})


def image_record(image_id: str, digest: str, state: str = "available", role: str = "app-tier") -> dict:
    return {"ImageId": image_id, "Name": f"shop-{role}", "State": state, "Tags": [
        {"Key": "hybrid:stack", "Value": "shop"}, {"Key": "hybrid:role", "Value": role},
        {"Key": "hybrid:origin", "Value": "baked"}, {"Key": "hybrid:recipe-digest", "Value": digest}]}


def terminate(stub) -> None:
    stub.add_response("terminate_instances", {}, {"InstanceIds": [BUILDER]})
    state(stub, "terminated")


def test_console_markers_decide_readiness():
    assert console_readiness("boot...\nHYBRID-BAKE-READY app-tier\n", "app-tier").done
    assert not console_readiness("HYBRID-BAKE-READY web-tier\n", "app-tier").done
    failed = console_readiness("HYBRID-BAKE-FAILED app-tier at line 20: pip install\n", "app-tier")
    assert failed.failed.startswith("HYBRID-BAKE-FAILED")


def created_image(stub) -> None:
    image_tags = {"hybrid:stack": "shop", "hybrid:role": "app-tier", "hybrid:origin": "baked",
                  "hybrid:base-ami": "ami-base", "hybrid:recipe-digest": DIGEST, "Name": "shop-app-tier"}
    stub.add_response("create_image", {"ImageId": "ami-new"}, {
        "InstanceId": BUILDER, "Name": "shop-app-tier", "Description": ANY,
        "TagSpecifications": tag_specification("image", image_tags)})
    stub.add_response("describe_images", {"Images": [{"ImageId": "ami-new", "State": "pending"}]},
                      {"ImageIds": ["ami-new"]})
    stub.add_response("describe_images", {"Images": [{"ImageId": "ami-new", "State": "available", "Tags": [
        {"Key": "hybrid:stack", "Value": "shop"}], "BlockDeviceMappings": [
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snap-1"}}]}]}, {"ImageIds": ["ami-new"]})
    stub.add_response("create_tags", {}, {"Resources": ["snap-1"], "Tags": [{"Key": "hybrid:stack",
                                                                              "Value": "shop"}]})


def test_bake_on_aws_waits_for_the_console_then_images_and_terminates(stubbed, shipping):
    amis, stub = stubbed
    launch(stub)
    state(stub, "pending")
    state(stub, "running")
    console(stub, "cloud-init: installing\n")
    state(stub, "running")
    console(stub, "HYBRID-BAKE-READY app-tier\n")
    created_image(stub)
    terminate(stub)
    clock = FakeClock()

    result = baker(amis, shipping, clock=clock).bake(BakeRequest("app-tier", "ami-base"))

    assert (result.image_id, result.name, result.builder_id) == ("ami-new", "shop-app-tier", BUILDER)
    assert (result.digest, result.reused) == (DIGEST, False)
    assert clock.sleeps[:3] == [15.0, 15.0, 15.0]
    assert shipping.published == [DIGEST] and shipping.withdrawn == [DIGEST]


def test_on_the_local_server_the_console_decides_too_every_2_s(stubbed, shipping):
    """The local server boots builders as VMs and answers GetConsoleOutput from their serial console."""
    amis, stub = stubbed
    launch(stub)
    state(stub, "running")
    console(stub, "[  OK  ] Started cloud-final.service\n")
    state(stub, "running")
    console(stub, "HYBRID-BAKE-READY app-tier\n")
    created_image(stub)
    terminate(stub)
    clock = FakeClock()

    result = baker(amis, shipping, "emulator", clock).bake(BakeRequest("app-tier", "ami-base"))

    assert result.image_id == "ami-new" and clock.sleeps[0] == 2.0


def test_on_aws_an_image_of_the_same_recipe_digest_is_reused_without_baking(stubbed, shipping):
    amis, stub = stubbed
    stub.add_response("describe_images", {"Images": [image_record("ami-old", DIGEST)]},
                      {"Owners": ["self"], "Filters": ANY})
    lines = []

    result = Baker(amis, settings(), shipping, FakeClock(), report=lines.append).bake(
        BakeRequest("app-tier", "ami-base"))

    assert (result.image_id, result.builder_id, result.reused) == ("ami-old", "", True)
    assert shipping.published == [] and shipping.withdrawn == [DIGEST]
    assert any("reused, nothing baked" in line for line in lines)


@pytest.mark.parametrize("record", [image_record("ami-old", "0" * 64), image_record("ami-old", DIGEST, "pending"),
                                    image_record("ami-old", DIGEST, role="web-tier")],
                         ids=["another digest", "not available", "another role"])
def test_an_image_of_another_recipe_is_not_reused_and_needs_replace(stubbed, shipping, record):
    amis, stub = stubbed
    stub.add_response("describe_images", {"Images": [record]}, {"Owners": ["self"], "Filters": ANY})
    with pytest.raises(HybridError, match="--replace"):
        baker(amis, shipping).bake(BakeRequest("app-tier", "ami-base"))
    assert shipping.published == [] and shipping.withdrawn == [DIGEST]


def builder_reports_failure(stub) -> None:
    state(stub, "running")
    console(stub, "HYBRID-BAKE-FAILED app-tier at line 22: pip install\n")


def builder_stops(stub) -> None:
    state(stub, "stopped")


@pytest.mark.parametrize("builder_ends, message", [
    (builder_reports_failure, "HYBRID-BAKE-FAILED app-tier at line 22"),
    (builder_stops, "the builder is stopped"),
])
def test_a_failed_bake_still_terminates_the_builder_and_deletes_the_wheelhouse(stubbed, shipping, builder_ends,
                                                                               message):
    amis, stub = stubbed
    launch(stub)
    builder_ends(stub)
    terminate(stub)
    with pytest.raises(HybridError, match=message):
        baker(amis, shipping).bake(BakeRequest("app-tier", "ami-base"))
    assert shipping.withdrawn == [DIGEST]


def test_no_base_image_on_aws_is_a_config_error(stubbed, shipping):
    amis, stub = stubbed
    stub.add_response("describe_images", {"Images": []}, {"Owners": ["self"], "Filters": ANY})
    with pytest.raises(HybridError, match="--base-ami"):
        baker(amis, shipping).bake(BakeRequest("app-tier"))
    assert shipping.built == []


# ---------------------------------------------------------------- the wheelhouse's upload and presigned URL

def test_the_presigned_url_is_signed_for_the_address_a_local_vm_reaches():
    emulator = AwsClients(guest_settings(settings("emulator"))).s3_presigner
    url = emulator.generate_presigned_url("get_object", Params={"Bucket": "shop-exports", "Key": "bake/x.tar"},
                                          ExpiresIn=60)
    assert url.startswith(f"{GUEST_AWS_ENDPOINT}/shop-exports/bake/x.tar?")
    assert guest_settings(settings("aws")) == settings("aws")


def test_shipping_uploads_under_the_digest_presigns_for_3_hours_and_deletes_after(tmp_path):
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    signer = AwsClients(guest_settings(settings("emulator"))).s3_presigner
    tar = tmp_path / "bake" / "wheelhouse.tar"
    tar.parent.mkdir()
    tar.write_bytes(b"wheels")
    house = Wheelhouse("app-tier", "worker", tar, "5" * 64, DIGEST, (), (), 6, 0.1)
    key = f"bake/{DIGEST}/wheelhouse.tar"
    with Stubber(s3) as stub:
        stub.add_response("put_object", {})
        stub.add_response("delete_object", {}, {"Bucket": "shop-exports", "Key": key})
        shipping = WheelhouseShipping(None, MappedClient(s3, "emulator"), signer, lambda: "shop-exports",
                                      report=lambda line: None)
        url = shipping.publish(house)
        shipping.withdraw(house)
        stub.assert_no_pending_responses()
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == GUEST_AWS_ENDPOINT and parts.path == f"/shop-exports/{key}"
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in parts.query and "X-Amz-Expires=10800" in parts.query
    assert not tar.parent.exists()


def test_withdrawing_tolerates_an_object_already_gone(tmp_path):
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    tar = tmp_path / "bake" / "wheelhouse.tar"
    tar.parent.mkdir()
    tar.write_bytes(b"wheels")
    house = Wheelhouse("web-tier", "web", tar, "5" * 64, DIGEST, (), (), 6, 0.1)
    with Stubber(s3) as stub:
        stub.add_client_error("delete_object", "NoSuchBucket", http_status_code=404)
        shipping = WheelhouseShipping(None, MappedClient(s3, "aws"), MappedClient(s3, "aws"), lambda: "shop-exports",
                                      report=lambda line: None)
        shipping.uploaded[WheelhouseShipping.key(house)] = "shop-exports"
        shipping.withdraw(house)
    assert not tar.parent.exists()
