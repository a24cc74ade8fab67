"""The workers' instance profile: an IAM role limited to this stack's queues, buckets and instances."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from hybrid.aws.session import MappedClient
from hybrid.core.contracts import Observed, Resource
from hybrid.core.errors import NotFoundError
from hybrid.core.naming import STACK_TAG, StackNames

POLICY_NAME = "hybrid-worker"
EC2_TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                     "Action": "sts:AssumeRole"}]}


def worker_policy(names: StackNames, region: str, account: str) -> dict[str, Any]:
    """Least privilege for a worker: its stack's queues (the web processes' own reply queues included) and buckets,
    and terminating its stack's instances."""
    queues = [names.request_queue, names.response_queue, f"{names.reply_queue_prefix}*"]
    buckets = [names.input_bucket, names.output_bucket]
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "Queues", "Effect": "Allow",
         "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage",
                    "sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
         "Resource": [f"arn:aws:sqs:{region}:{account}:{q}" for q in queues]},
        {"Sid": "Objects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": [f"arn:aws:s3:::{b}/*" for b in buckets]},
        {"Sid": "Buckets", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{b}" for b in buckets]},
        {"Sid": "SelfTerminate", "Effect": "Allow", "Action": ["ec2:TerminateInstances"], "Resource": "*",
         "Condition": {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": names.stack}}},
    ]}


def web_tier_policy(names: StackNames, region: str, account: str) -> dict[str, Any]:
    """Least privilege for the web tier's key (it runs on OpenStack, outside AWS): send requests, own its reply
    queues, put images in the input bucket, and look at the fleet for /status."""
    queue = f"arn:aws:sqs:{region}:{account}"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "Requests", "Effect": "Allow", "Action": ["sqs:SendMessage", "sqs:GetQueueUrl",
                                                          "sqs:GetQueueAttributes"],
         "Resource": [f"{queue}:{names.request_queue}"]},
        {"Sid": "ReplyQueues", "Effect": "Allow",
         "Action": ["sqs:CreateQueue", "sqs:DeleteQueue", "sqs:TagQueue", "sqs:ListQueueTags", "sqs:GetQueueUrl",
                    "sqs:GetQueueAttributes", "sqs:SetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility"],
         "Resource": [f"{queue}:{names.reply_queue_prefix}*"]},
        {"Sid": "ListReplyQueues", "Effect": "Allow", "Action": ["sqs:ListQueues"], "Resource": "*"},
        {"Sid": "Images", "Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{names.input_bucket}/*"]},
        {"Sid": "Fleet", "Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*"},
    ]}


def policy_digest(policy: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:12]


class InstanceProfileDriver:
    """Role + inline policy + instance profile, all named for the stack. Property ``policy`` is the JSON document."""

    kind = "instance_profile"

    def __init__(self, iam: MappedClient, stack: str) -> None:
        self.iam, self.stack = iam, stack

    def observe(self, resource: Resource) -> Observed | None:
        try:
            role = self.iam.get_role(RoleName=resource.name)["Role"]
        except NotFoundError:
            return None
        tags = {t["Key"]: t["Value"] for t in self.iam.list_role_tags(RoleName=resource.name).get("Tags", [])}
        return Observed(self.kind, resource.name, role["Arn"], tags.get(STACK_TAG) == self.stack,
                        {"policy": self._policy(resource.name), "profile": self._profile_state(resource.name)})

    def create(self, resource: Resource) -> Observed:
        tags = [{"Key": k, "Value": v} for k, v in resource.tags.items()]
        arn = self.iam.create_role(RoleName=resource.name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST),
                                   Description=f"hybrid {self.stack}: app-tier workers", Tags=tags)["Role"]["Arn"]
        observed = Observed(self.kind, resource.name, arn, True)
        self.update(resource, observed)
        return observed

    def update(self, resource: Resource, observed: Observed) -> None:
        self.iam.put_role_policy(RoleName=resource.name, PolicyName=POLICY_NAME,
                                 PolicyDocument=resource.inputs["policy_document"])
        state = self._profile_state(resource.name)
        if state == "missing":
            self.iam.create_instance_profile(InstanceProfileName=resource.name,
                                             Tags=[{"Key": k, "Value": v} for k, v in resource.tags.items()])
        if state != "attached":
            self.iam.add_role_to_instance_profile(InstanceProfileName=resource.name, RoleName=resource.name)

    def delete(self, observed: Observed) -> bool:
        steps = (lambda: self.iam.remove_role_from_instance_profile(InstanceProfileName=observed.name,
                                                                    RoleName=observed.name),
                 lambda: self.iam.delete_instance_profile(InstanceProfileName=observed.name),
                 lambda: self.iam.delete_role_policy(RoleName=observed.name, PolicyName=POLICY_NAME),
                 lambda: self.iam.delete_role(RoleName=observed.name))
        done = [_tolerant(step) for step in steps]
        return done[-1]

    def _policy(self, role: str) -> str:
        try:
            document = self.iam.get_role_policy(RoleName=role, PolicyName=POLICY_NAME)["PolicyDocument"]
        except NotFoundError:
            return "none"
        return policy_digest(json.loads(document) if isinstance(document, str) else document)

    def _profile_state(self, name: str) -> str:
        try:
            profile = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except NotFoundError:
            return "missing"
        return "attached" if profile.get("Roles") else "without role"


def _tolerant(step: Any) -> bool:
    try:
        step()
    except NotFoundError:
        return False
    return True

