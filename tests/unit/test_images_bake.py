"""Bake on AWS (botocore Stubber): readiness from the builder's console, and the builder ended when baking fails."""
from __future__ import annotations

import base64
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import ANY, Stubber

from hybrid.aws.images import AmiDriver
from hybrid.aws.session import MappedClient
from hybrid.core.clock import FakeClock
from hybrid.core.errors import HybridError
from hybrid.core.settings import load
from hybrid.machine_images.bake import Baker, BakeRequest, console_readiness

BUILDER = "i-0123456789abcdef0"


@pytest.fixture
def stubbed():
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield AmiDriver(MappedClient(client, "aws"), "shop"), stub
        stub.assert_no_pending_responses()


def settings():
    return load(None, {}, {"stack": "shop", "aws.target": "aws"})


def state(stub, name: str) -> None:
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [
        {"InstanceId": BUILDER, "State": {"Name": name, "Code": 0},
         "LaunchTime": datetime(2026, 1, 1, tzinfo=UTC)}]}]}, {"InstanceIds": [BUILDER]})


def console(stub, text: str) -> None:
    stub.add_response("get_console_output", {"InstanceId": BUILDER,
                                             "Output": base64.b64encode(text.encode()).decode()},
                      {"InstanceId": BUILDER})


def launch(stub) -> None:
    stub.add_response("describe_images", {"Images": []}, {"Owners": ["self"], "Filters": ANY})
    stub.add_response("run_instances", {"Instances": [{"InstanceId": BUILDER}]}, {
        "ImageId": "ami-base", "InstanceType": "t3.micro", "MinCount": 1, "MaxCount": 1, "UserData": ANY,
        "ClientToken": ANY, "MetadataOptions": ANY, "TagSpecifications": ANY})


def terminate(stub) -> None:
    stub.add_response("terminate_instances", {}, {"InstanceIds": [BUILDER]})
    state(stub, "terminated")


def test_console_markers_decide_readiness():
    assert console_readiness("boot...\nHYBRID-BAKE-READY app-tier\n", "app-tier").done
    assert not console_readiness("HYBRID-BAKE-READY web-tier\n", "app-tier").done
    failed = console_readiness("HYBRID-BAKE-FAILED app-tier at line 20: pip install\n", "app-tier")
    assert failed.failed.startswith("HYBRID-BAKE-FAILED")


def test_bake_on_aws_waits_for_the_console_then_images_and_terminates(stubbed):
    amis, stub = stubbed
    launch(stub)
    state(stub, "pending")
    state(stub, "running")
    console(stub, "cloud-init: installing\n")
    state(stub, "running")
    console(stub, "HYBRID-BAKE-READY app-tier\n")
    stub.add_response("create_image", {"ImageId": "ami-new"}, {
        "InstanceId": BUILDER, "Name": "shop-app-tier", "Description": ANY, "TagSpecifications": ANY})
    stub.add_response("describe_images", {"Images": [{"ImageId": "ami-new", "State": "pending"}]},
                      {"ImageIds": ["ami-new"]})
    stub.add_response("describe_images", {"Images": [{"ImageId": "ami-new", "State": "available", "Tags": [
        {"Key": "hybrid:stack", "Value": "shop"}], "BlockDeviceMappings": [
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snap-1"}}]}]}, {"ImageIds": ["ami-new"]})
    stub.add_response("create_tags", {}, {"Resources": ["snap-1"], "Tags": [{"Key": "hybrid:stack",
                                                                              "Value": "shop"}]})
    terminate(stub)
    clock = FakeClock()

    result = Baker(amis, settings(), clock, report=lambda line: None).bake(BakeRequest("app-tier", "ami-base"))

    assert (result.image_id, result.name, result.builder_id) == ("ami-new", "shop-app-tier", BUILDER)
    assert clock.sleeps[:3] == [15.0, 15.0, 15.0]


def builder_reports_failure(stub) -> None:
    state(stub, "running")
    console(stub, "HYBRID-BAKE-FAILED app-tier at line 22: pip install\n")


def builder_stops(stub) -> None:
    state(stub, "stopped")


@pytest.mark.parametrize("builder_ends, message", [
    (builder_reports_failure, "HYBRID-BAKE-FAILED app-tier at line 22"),
    (builder_stops, "the builder is stopped"),
])
def test_a_failed_bake_still_terminates_the_builder(stubbed, builder_ends, message):
    amis, stub = stubbed
    launch(stub)
    builder_ends(stub)
    terminate(stub)
    with pytest.raises(HybridError, match=message):
        Baker(amis, settings(), FakeClock(), report=lambda line: None).bake(BakeRequest("app-tier", "ami-base"))


def test_no_base_image_on_aws_is_a_config_error(stubbed):
    amis, stub = stubbed
    stub.add_response("describe_images", {"Images": []}, {"Owners": ["self"], "Filters": ANY})
    with pytest.raises(HybridError, match="--base-ami"):
        Baker(amis, settings(), FakeClock()).bake(BakeRequest("app-tier"))
