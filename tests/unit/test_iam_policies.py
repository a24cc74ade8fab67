"""The IAM policies' conditions, request by request, through the evaluator of the least-privilege test
(``tests/iam_policy.py``): what each role may do, and the neighbouring requests it may not."""
from __future__ import annotations

import json

import pytest

from hybrid.aws.identity import autoscaler_policy, web_machine_policies, web_tier_policy, worker_policy
from hybrid.core.naming import StackNames
from hybrid.aws.storage import s3_may_send
from tests.iam_policy import Account, Call, Request, conditions_hold, denied, requests_of

NAMES, REGION, ACCOUNT = StackNames("shop"), "eu-west-1", "123456789012"
INSTANCE_TAGS = {"i-me": {"hybrid:stack": "shop", "hybrid:role": "app-tier"},
                 "i-peer": {"hybrid:stack": "shop", "hybrid:role": "app-tier"},
                 "i-other": {"hybrid:stack": "other", "hybrid:role": "app-tier"},
                 "i-web": {"hybrid:stack": "shop", "hybrid:role": "web-tier"}}
IMAGE_TAGS = {"ami-shop": {"hybrid:stack": "shop"}, "ami-public": {}}
GROUP_TAGS = {"sg-shop": {"hybrid:stack": "shop"}, "sg-other": {"hybrid:stack": "other"}}


def tags_of(arn: str) -> dict[str, str]:
    name = arn.rsplit("/", 1)[-1]
    return {**INSTANCE_TAGS, **IMAGE_TAGS, **GROUP_TAGS}.get(name, {})


def allowed(policy, service, operation, params, source_instance="", error=""):
    where = Account(REGION, ACCOUNT, tags_of, source_instance)
    return denied(policy, requests_of(Call(service, operation, params, error), where)) == []


def launch(**changes):
    params = {"ImageId": "ami-shop", "InstanceType": "t3.micro", "KeyName": "shop-key",
              "SecurityGroupIds": ["sg-shop"], "IamInstanceProfile": {"Name": "shop-worker"},
              "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                  {"Key": "hybrid:stack", "Value": "shop"}, {"Key": "hybrid:role", "Value": "app-tier"},
                  {"Key": "hybrid:launch-token", "Value": "scale-1"}]}]}
    params.update(changes)
    return params


def test_a_worker_terminates_its_own_instance_and_no_other():
    policy = worker_policy(NAMES, REGION, ACCOUNT)
    assert allowed(policy, "ec2", "TerminateInstances", {"InstanceIds": ["i-me"]}, source_instance="i-me")
    assert not allowed(policy, "ec2", "TerminateInstances", {"InstanceIds": ["i-peer"]}, source_instance="i-me")
    assert not allowed(policy, "ec2", "TerminateInstances", {"InstanceIds": ["i-me"]}), "only from an instance"


def test_a_worker_reads_only_the_input_and_writes_only_the_output():
    policy = worker_policy(NAMES, REGION, ACCOUNT)
    assert allowed(policy, "s3", "GetObject", {"Bucket": "shop-input", "Key": "sha256/x"})
    assert allowed(policy, "s3", "GetObject", {"Bucket": "shop-input", "Key": "x"}, error="NoSuchKey"), \
        "a missing image is a 404 (ListBucket on the input bucket)"
    assert allowed(policy, "s3", "PutObject", {"Bucket": "shop-output", "Key": "results/x.json"})
    assert not allowed(policy, "s3", "PutObject", {"Bucket": "shop-input", "Key": "sha256/x"})
    assert allowed(policy, "s3", "GetObject", {"Bucket": "shop-output", "Key": "results/x.json"}, error="NoSuchKey"), \
        "a batch object's bytes looked up by content hash; not there yet is a 404"
    assert not allowed(policy, "s3", "GetObject", {"Bucket": "shop-output", "Key": "batch/a.jpg.json"})
    assert not allowed(policy, "s3", "GetObject", {"Bucket": "shop-output", "Key": "cat"})


def test_a_worker_replies_only_to_reply_queues():
    policy = worker_policy(NAMES, REGION, ACCOUNT)
    assert allowed(policy, "sqs", "SendMessageBatch", {"QueueUrl": "https://q/1/shop-replies-abc-s0"})
    assert not allowed(policy, "sqs", "SendMessageBatch", {"QueueUrl": "https://q/1/shop-requests"})
    assert not allowed(policy, "sqs", "ReceiveMessage", {"QueueUrl": "https://q/1/shop-replies-abc-s0"})


def test_the_autoscaler_launches_only_stack_workers():
    policy = autoscaler_policy(NAMES, REGION, ACCOUNT, "t3.micro")
    assert allowed(policy, "ec2", "RunInstances", launch())
    foreign_tags = [{"ResourceType": "instance", "Tags": [{"Key": "hybrid:stack", "Value": "other"},
                                                          {"Key": "hybrid:role", "Value": "app-tier"}]}]
    for wrong in ({"TagSpecifications": foreign_tags}, {"TagSpecifications": []}, {"InstanceType": "p5.48xlarge"},
                  {"ImageId": "ami-public"}, {"SecurityGroupIds": ["sg-other"]}, {"KeyName": "someone-key"},
                  {"IamInstanceProfile": {"Name": "admin"}}):
        assert not allowed(policy, "ec2", "RunInstances", launch(**wrong)), wrong


def test_with_a_given_ami_the_autoscaler_launches_that_image_only():
    policy = autoscaler_policy(NAMES, REGION, ACCOUNT, "t3.micro", image_id="ami-public")
    assert allowed(policy, "ec2", "RunInstances", launch(ImageId="ami-public"))
    assert not allowed(policy, "ec2", "RunInstances", launch(ImageId="ami-shop"))


def test_the_autoscaler_passes_the_worker_role_to_ec2_only():
    policy = autoscaler_policy(NAMES, REGION, ACCOUNT, "t3.micro")
    role = f"arn:aws:iam::{ACCOUNT}:role/shop-worker"
    assert denied(policy, [Request("iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"})]) == []
    assert denied(policy, [Request("iam:PassRole", role, {"iam:PassedToService": "lambda.amazonaws.com"})])
    assert denied(policy, [Request("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin",
                                   {"iam:PassedToService": "ec2.amazonaws.com"})])
    without = autoscaler_policy(NAMES, REGION, ACCOUNT, "t3.micro", instance_profile=False)
    assert not any("iam:PassRole" in s["Action"] for s in without["Statement"])
    params = launch()
    del params["IamInstanceProfile"]
    assert allowed(without, "ec2", "RunInstances", params)


@pytest.mark.parametrize("instance, ok", [("i-me", True), ("i-other", False), ("i-web", False)])
def test_the_autoscaler_terminates_only_the_stacks_app_tier(instance, ok):
    policy = autoscaler_policy(NAMES, REGION, ACCOUNT, "t3.micro")
    assert allowed(policy, "ec2", "TerminateInstances", {"InstanceIds": [instance]}) == ok


def test_the_web_tier_cannot_launch_read_images_or_write_labels():
    policy = web_tier_policy(NAMES, REGION, ACCOUNT)
    assert allowed(policy, "s3", "PutObject", {"Bucket": "shop-input", "Key": "sha256/x"})
    assert not allowed(policy, "s3", "GetObject", {"Bucket": "shop-input", "Key": "sha256/x"})
    assert not allowed(policy, "s3", "PutObject", {"Bucket": "shop-output", "Key": "x"})
    assert not allowed(policy, "ec2", "RunInstances", launch())
    assert not allowed(policy, "sqs", "DeleteQueue", {"QueueUrl": "https://q/1/shop-requests"})


def test_the_web_machine_holds_both_documents_apart():
    policies = web_machine_policies(NAMES, REGION, ACCOUNT, "t3.micro")
    assert set(policies) == {"shop-web-tier", "shop-autoscaler"}, "managed policy names are the account's: per stack"
    assert policies["shop-web-tier"] == web_tier_policy(NAMES, REGION, ACCOUNT)
    long_stack = StackNames("s" * 40)
    sizes = [len(json.dumps(p, separators=(",", ":"))) for p in web_machine_policies(
        long_stack, "ap-southeast-2", ACCOUNT, "t3.micro", "ami-0123456789abcdef0").values()]
    assert max(sizes) <= 6144, "a managed policy holds at most 6,144 characters"


def test_s3_may_notify_the_request_queue_only_for_this_accounts_input_bucket():
    policy = s3_may_send(f"arn:aws:sqs:{REGION}:{ACCOUNT}:shop-requests", "shop-input")
    [statement] = policy["Statement"]
    assert statement["Condition"] == {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::shop-input"},
                                      "StringEquals": {"aws:SourceAccount": ACCOUNT}}
    assert conditions_hold(statement["Condition"], {"aws:SourceArn": "arn:aws:s3:::shop-input",
                                                    "aws:SourceAccount": ACCOUNT})
    assert not conditions_hold(statement["Condition"], {"aws:SourceArn": "arn:aws:s3:::shop-input",
                                                        "aws:SourceAccount": "999999999999"})


def test_the_evaluator_flags_a_grant_nothing_used_and_a_request_nothing_granted():
    from tests.iam_policy import unused

    policy = {"Statement": [
        {"Sid": "Read", "Effect": "Allow", "Action": ["s3:GetObject", "s3:DeleteObject"],
         "Resource": ["arn:aws:s3:::shop-input/*", "arn:aws:s3:::shop-output/*"]}]}
    read = Request("s3:GetObject", "arn:aws:s3:::shop-input/a")
    assert unused(policy, [read]) == [("Read", "s3:GetObject", "arn:aws:s3:::shop-output/*"),
                                      ("Read", "s3:DeleteObject", "arn:aws:s3:::shop-input/*"),
                                      ("Read", "s3:DeleteObject", "arn:aws:s3:::shop-output/*")]
    assert denied(policy, [read, Request("s3:PutObject", "arn:aws:s3:::shop-input/a")]) == [
        "s3:PutObject on arn:aws:s3:::shop-input/a"]
    with pytest.raises(AssertionError, match="wildcard action"):
        unused({"Statement": [{"Sid": "All", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}, [read])
