"""The AWS stack's plan and lifecycle, against state-holding fakes behind the driver and fleet contracts."""
import pytest

from hybrid.aws.stack import AwsStack, desired_resources
from hybrid.core.clock import FakeClock
from hybrid.core.contracts import ACTION_KEEP, ACTION_UPDATE, Observed
from hybrid.core.errors import CloudError, NotFoundError, WaitTimeout
from hybrid.core.settings import load
from tests.fakes import FakeFleet, InMemoryDriver

KINDS = ("bucket", "queue", "notification", "security_group", "key_pair", "image", "instance_profile", "iam_user")


def make_stack(overrides=None, fail_on_create="", fleet=None):
    settings = load(None, {}, {"stack": "unit", **(overrides or {})})
    drivers = {kind: InMemoryDriver(kind, fail_on_create) for kind in KINDS}
    policy = '{"Statement": []}'
    return AwsStack(settings, drivers, fleet or FakeFleet(), desired_resources(settings, policy), FakeClock())


def test_desired_resources_cover_the_stack():
    settings = load(None, {}, {"stack": "shop", "aws.operator_cidr": "203.0.113.7/32"})
    by_name = {r.name: r for r in desired_resources(settings)}
    assert set(by_name) == {"shop-input", "shop-output", "shop-requests", "shop-requests-dlq", "shop-responses",
                            "shop-responses-dlq", "shop-input/batch/", "shop-app-tier", "shop-key"}
    assert by_name["shop-input/batch/"].properties == {"queue": "shop-requests", "prefix": "batch/"}
    assert by_name["shop-requests"].properties["MaximumMessageSize"] == "8192"
    assert by_name["shop-requests"].properties["dead_letter_queue"] == "shop-requests-dlq"
    assert by_name["shop-requests"].properties["max_receive_count"] == "3"
    assert by_name["shop-input"].properties == {"public_access": "blocked", "encryption": "AES256"}
    assert by_name["shop-key"].tags == {"hybrid:stack": "shop", "hybrid:role": "app-tier", "Name": "shop-key"}
    groups = [r for r in desired_resources(settings) if r.kind == "security_group"]
    assert groups[0].properties == {"ingress": "tcp/22 from 203.0.113.7/32"}


def test_instance_profile_only_on_aws_unless_asked():
    emulator = load(None, {}, {"stack": "shop"})
    on_aws = load(None, {}, {"stack": "shop", "aws.target": "aws"})
    asked = load(None, {}, {"stack": "shop", "aws.instance_profile": "yes"})
    policy = '{"Statement": []}'
    assert "instance_profile" not in {r.kind for r in desired_resources(emulator, policy)}
    assert "instance_profile" in {r.kind for r in desired_resources(on_aws, policy)}
    assert "instance_profile" in {r.kind for r in desired_resources(asked, policy)}
    assert "iam_user" not in {r.kind for r in desired_resources(emulator, policy)}
    [user] = [r for r in desired_resources(on_aws, policy, '{"hybrid-web-tier": {}}') if r.kind == "iam_user"]
    assert (user.name, user.tags) == ("shop-web-tier", {"hybrid:stack": "shop", "hybrid:role": "web-tier",
                                                       "Name": "shop-web-tier"})


def test_on_aws_the_ami_must_already_exist():
    settings = load(None, {}, {"stack": "shop", "aws.target": "aws", "aws.instance_profile": "no"})
    [image] = [r for r in desired_resources(settings) if r.kind == "image"]
    assert not image.managed


def test_a_missing_ami_is_refused_with_how_to_provide_it():
    stack = make_stack({"aws.ami_id": "ami-123"})
    with pytest.raises(NotFoundError, match=r"image unit-app-tier does not exist: no AMI has id ami-123; "
                                            r"bake it with `hybrid image bake --role app-tier`"):
        stack.up(report=lambda line: None)
    assert not any(driver.calls for driver in stack.drivers.values()), "refused before anything was made"
    stack.drivers["image"].items["unit-app-tier"] = Observed("image", "unit-app-tier", "ami-123", owned=False)
    assert {c.action for c in stack.plan() if c.resource.kind == "image"} == {ACTION_KEEP}
    assert "image unit-app-tier: kept (referenced by id, not owned)" in stack.down(report=lambda line: None)


def test_up_twice_changes_nothing_the_second_time():
    stack = make_stack()
    first = stack.up(report=lambda line: None)
    assert len(first) == len(stack.desired)
    assert stack.up(report=lambda line: None) == []
    assert all(c.action == ACTION_KEEP for c in stack.plan())


def test_up_converges_drift():
    stack = make_stack()
    stack.up(report=lambda line: None)
    queues = stack.drivers["queue"]
    queues.items["unit-requests"] = Observed("queue", "unit-requests", "id", True, {"MaximumMessageSize": "262144"})
    changes = stack.up(report=lambda line: None)
    assert [c.action for c in changes] == [ACTION_UPDATE]
    assert ("update", "unit-requests") in queues.calls


def test_down_after_a_half_finished_up_removes_everything_created():
    stack = make_stack(fail_on_create="unit-app-tier")
    with pytest.raises(CloudError, match="injected"):
        stack.up(report=lambda line: None)
    assert stack.drivers["bucket"].items and stack.drivers["queue"].items
    lines = stack.down(report=lambda line: None)
    assert all(not driver.items for driver in stack.drivers.values())
    assert "queue unit-requests: deleted" in lines
    assert "security_group unit-app-tier: already absent" in lines


def test_down_leaves_resources_without_the_stack_tag():
    stack = make_stack()
    stack.drivers["bucket"].put_foreign("unit-input")
    lines = stack.down(report=lambda line: None)
    assert "unit-input" in stack.drivers["bucket"].items
    assert "bucket unit-input: left alone (not tagged for stack unit)" in lines


def test_down_terminates_instances_first_and_waits_until_they_are_gone():
    fleet = FakeFleet(polls_to_terminate=3)
    fleet.add("i-1")
    fleet.add("i-2", state="pending")
    stack = make_stack(fleet=fleet)
    stack.up(report=lambda line: None)
    order = []
    stack.drivers["queue"].delete = lambda observed, f=stack.drivers["queue"].delete: (
        order.append(("queue", len(fleet.live))), f(observed))[1]
    lines = stack.down(report=lambda line: None)
    assert lines[0] == "instances: 2 terminated"
    assert fleet.live == {}
    assert all(live == 0 for _, live in order)
    assert stack.clock.sleeps, "the wait slept on the injected clock"


def test_down_gives_up_on_instances_that_never_terminate():
    fleet = FakeFleet(polls_to_terminate=10**9)
    fleet.add("i-stuck")
    stack = make_stack(fleet=fleet)
    with pytest.raises(WaitTimeout, match="terminate"):
        stack.down(report=lambda line: None)


def test_status_marks_missing_taken_and_drifted():
    stack = make_stack()
    stack.up(report=lambda line: None)
    del stack.drivers["key_pair"].items["unit-key"]
    stack.drivers["bucket"].items["unit-output"] = Observed("bucket", "unit-output", "x", owned=False)
    stack.drivers["bucket"].items["unit-input"] = Observed("bucket", "unit-input", "x", True,
                                                           {"public_access": "open", "encryption": "AES256"})
    rows = {r["name"]: r for r in stack.status()}
    assert rows["unit-key"]["state"] == "missing"
    assert rows["unit-output"]["state"].startswith("taken")
    assert rows["unit-input"]["state"] == "drifted"
    assert "public_access: open -> blocked" in rows["unit-input"]["detail"]


def test_the_web_tier_policy_is_scoped_to_the_stack():
    from hybrid.aws.identity import web_tier_policy
    from hybrid.core.naming import StackNames

    policy = web_tier_policy(StackNames("shop"), "eu-west-1", "123456789012")
    scoped = {s["Sid"]: s["Resource"] for s in policy["Statement"] if s["Resource"] != "*"}
    assert all("shop-" in arn for arns in scoped.values() for arn in arns)
    assert scoped["ReplyQueues"] == ["arn:aws:sqs:eu-west-1:123456789012:shop-replies-*"]
    unscoped = {s["Sid"]: s["Action"] for s in policy["Statement"] if s["Resource"] == "*"}
    assert unscoped == {"FindReplyQueues": ["sqs:ListQueues"], "CountWorkers": ["ec2:DescribeInstances"]}
    assert not any("Delete" in a and "Bucket" in a for s in policy["Statement"] for a in s["Action"])
