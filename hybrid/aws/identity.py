"""The stack's IAM identities and their least-privilege policies (pure functions: settings in, JSON out).

Three processes talk to AWS, each with only what its code calls (``tests/integration/test_least_privilege.py``
records every call each one makes against the local server and checks it against its policy, both ways):

- **worker** (app tier, on EC2): the instance profile's role. Requests from the request queue, replies to the web
  processes' reply queues, images read from the input bucket, labels and results written to the output bucket, and
  ``TerminateInstances`` on its own instance only (``ec2:SourceInstanceARN`` is the caller's instance).
- **web tier** (on OpenStack): sends requests, owns its processes' reply queues, uploads images, counts the fleet.
- **autoscaler** (beside the web tier, on the same machine): reads the backlog and the launch specification,
  ``RunInstances`` only as an app-tier worker of this stack (its tags, its AMI, its security group and key pair, the
  worker role passed to EC2 only) and ``TerminateInstances`` only on this stack's app-tier instances.

The web tier and the autoscaler run on one machine as one Unix user from one credentials file, so a second key
would not keep one from the other: the machine's principal is one IAM user, ``<stack>-web-tier``, holding the two
documents as separate managed policies (``<stack>-web-tier`` and ``<stack>-autoscaler``), each tested against its own
process. ``hybrid aws up`` makes the role, profile, user and policies on AWS (``aws.instance_profile``), never
access keys; ``down`` deletes them, the user's access keys included.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from hybrid.aws.session import MappedClient
from hybrid.core.contracts import Observed, Resource
from hybrid.core.errors import NotFoundError
from hybrid.core.naming import ROLE_APP_TIER, ROLE_TAG, STACK_TAG, StackNames

POLICY_NAME = "hybrid-worker"
POLICY_PATH = "/hybrid/"
MAX_POLICY_VERSIONS = 5  # IAM keeps at most five versions of a managed policy
VERSION = "2012-10-17"
EC2_TRUST = {"Version": VERSION, "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}


def _allow(sid: str, actions: list[str], resources: list[str] | str, **condition: dict[str, Any]) -> dict[str, Any]:
    statement = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _queue_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:sqs:{region}:{account}:{name}"


def _ec2_arn(region: str, account: str, path: str) -> str:
    return f"arn:aws:ec2:{region}:{account}:{path}"


def worker_policy(names: StackNames, region: str, account: str) -> dict[str, Any]:
    """A worker: receive, extend and delete requests; reply to the web processes' reply queues; read the input
    bucket (``ListBucket`` only so that a missing image is a 404, not a 403); write the output bucket, and read its
    results by content hash only (``results/*``: a batch object whose bytes were classified before is answered from
    that result; ``ListBucket`` so that a result not there yet is a 404); terminate
    its own instance and no other (the caller's instance, ``ec2:SourceInstanceARN``, must be the one terminated)."""
    instance = _ec2_arn(region, account, "instance/${ec2:InstanceID}")
    return {"Version": VERSION, "Statement": [
        _allow("Requests", ["sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:DeleteMessage",
                            "sqs:GetQueueUrl"], [_queue_arn(region, account, names.request_queue)]),
        _allow("Replies", ["sqs:SendMessage", "sqs:GetQueueUrl"],
               [_queue_arn(region, account, f"{names.reply_queue_prefix}*")]),
        _allow("ReadImages", ["s3:GetObject"], [f"arn:aws:s3:::{names.input_bucket}/*"]),
        _allow("MissingImagesAre404", ["s3:ListBucket"], [f"arn:aws:s3:::{names.input_bucket}"]),
        _allow("WriteLabels", ["s3:PutObject"], [f"arn:aws:s3:::{names.output_bucket}/*"]),
        _allow("ReadSharedResults", ["s3:GetObject"], [f"arn:aws:s3:::{names.output_bucket}/results/*"]),
        _allow("MissingResultsAre404", ["s3:ListBucket"], [f"arn:aws:s3:::{names.output_bucket}"]),
        _allow("TerminateItself", ["ec2:TerminateInstances"], [_ec2_arn(region, account, "instance/*")],
               ArnEquals={"ec2:SourceInstanceARN": instance},
               StringEquals={f"aws:ResourceTag/{STACK_TAG}": names.stack}),
    ]}


def web_tier_policy(names: StackNames, region: str, account: str) -> dict[str, Any]:
    """The web tier (on OpenStack, outside AWS): send requests and read the backlog; create, use and delete its
    processes' own reply queues (``TagQueue``: they are tagged as they are created); upload images; check that both
    buckets answer (``HeadBucket``, for /readyz); count the fleet for /status."""
    return {"Version": VERSION, "Statement": [
        _allow("Requests", ["sqs:GetQueueUrl", "sqs:SendMessage", "sqs:GetQueueAttributes"],
               [_queue_arn(region, account, names.request_queue)]),
        _allow("ReplyQueues", ["sqs:CreateQueue", "sqs:TagQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
                               "sqs:ListQueueTags", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteQueue"],
               [_queue_arn(region, account, f"{names.reply_queue_prefix}*")]),
        _allow("FindReplyQueues", ["sqs:ListQueues"], "*"),
        _allow("UploadImages", ["s3:PutObject"], [f"arn:aws:s3:::{names.input_bucket}/*"]),
        _allow("BucketsAnswer", ["s3:ListBucket"],
               [f"arn:aws:s3:::{names.input_bucket}", f"arn:aws:s3:::{names.output_bucket}"]),
        _allow("CountWorkers", ["ec2:DescribeInstances"], "*"),
    ]}


def autoscaler_policy(names: StackNames, region: str, account: str, instance_type: str, image_id: str = "",
                      instance_profile: bool = True) -> dict[str, Any]:
    """The autoscaler: read the backlog and the launch specification; launch only app-tier workers of this stack
    (its tags on the instance, its instance type, its AMI: ``image_id`` when given, else an image tagged for the
    stack; its security group and key pair; the worker role, passed to EC2 only); terminate only this stack's
    app-tier instances. ``Describe*`` take no resource-level permissions, hence ``*``."""
    stack_tag = {f"aws:ResourceTag/{STACK_TAG}": names.stack}
    launched = {f"aws:RequestTag/{STACK_TAG}": names.stack, f"aws:RequestTag/{ROLE_TAG}": ROLE_APP_TIER,
                "ec2:InstanceType": instance_type}
    if instance_profile:
        launched["ec2:InstanceProfile"] = f"arn:aws:iam::{account}:instance-profile/{names.instance_profile}"
    image = f"arn:aws:ec2:{region}::image/{image_id or '*'}"
    statements = [
        _allow("Backlog", ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
               [_queue_arn(region, account, names.request_queue)]),
        _allow("Observe", ["ec2:DescribeInstances", "ec2:DescribeImages", "ec2:DescribeSecurityGroups",
                           "ec2:DescribeKeyPairs"], "*"),
        _allow("LaunchWorkers", ["ec2:RunInstances"], [_ec2_arn(region, account, "instance/*")],
               StringEquals=launched),
        _allow("TagWorkersAtLaunch", ["ec2:CreateTags"], [_ec2_arn(region, account, "instance/*")],
               StringEquals={"ec2:CreateAction": "RunInstances", f"aws:RequestTag/{STACK_TAG}": names.stack}),
        _allow("LaunchFromTheStackImage", ["ec2:RunInstances"], [image],
               **({} if image_id else {"StringEquals": stack_tag})),
        _allow("LaunchInTheStackGroup", ["ec2:RunInstances"], [_ec2_arn(region, account, "security-group/*")],
               StringEquals=stack_tag),
        _allow("LaunchWithTheStackKey", ["ec2:RunInstances"],
               [_ec2_arn(region, account, f"key-pair/{names.key_pair}")]),
        _allow("LaunchNetworkAndDisk", ["ec2:RunInstances"],
               [_ec2_arn(region, account, kind) for kind in ("subnet/*", "network-interface/*", "volume/*")]),
        _allow("TerminateStackWorkers", ["ec2:TerminateInstances"], [_ec2_arn(region, account, "instance/*")],
               StringEquals={**stack_tag, f"aws:ResourceTag/{ROLE_TAG}": ROLE_APP_TIER}),
    ]
    if instance_profile:
        statements.append(_allow("PassTheWorkerRole", ["iam:PassRole"],
                                 [f"arn:aws:iam::{account}:role/{names.worker_role}"],
                                 StringEquals={"iam:PassedToService": "ec2.amazonaws.com"}))
    return {"Version": VERSION, "Statement": statements}


def web_tier_policy_name(names: StackNames) -> str:
    return f"{names.stack}-web-tier"


def autoscaler_policy_name(names: StackNames) -> str:
    return f"{names.stack}-autoscaler"


def web_machine_policies(names: StackNames, region: str, account: str, instance_type: str, image_id: str = "",
                         instance_profile: bool = True) -> dict[str, dict[str, Any]]:
    """The web-tier machine's user's managed policies, by name: its web tier's and its autoscaler's."""
    return {web_tier_policy_name(names): web_tier_policy(names, region, account),
            autoscaler_policy_name(names): autoscaler_policy(names, region, account, instance_type, image_id,
                                                             instance_profile)}


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


class WebTierUserDriver:
    """The web-tier machine's IAM user, tagged for the stack, with one customer managed policy per process (input
    ``policy_documents``: JSON of {policy name: document}; property ``policies``: their digest). Managed, not inline:
    a user's inline policies may total 2,048 characters, which the two documents exceed; a managed policy may have
    6,144. A changed document becomes the policy's new default version (the oldest is deleted at IAM's five).
    ``up`` makes no access key: the operator makes one (`aws iam create-access-key --user-name <stack>-web-tier`);
    ``down`` deletes the user's keys, the user and its policies."""

    kind = "iam_user"

    def __init__(self, iam: MappedClient, stack: str) -> None:
        self.iam, self.stack = iam, stack

    def observe(self, resource: Resource) -> Observed | None:
        try:
            user = self.iam.get_user(UserName=resource.name)["User"]
            tags = {t["Key"]: t["Value"] for t in self.iam.list_user_tags(UserName=resource.name).get("Tags", [])}
            attached = self._attached(resource.name)
        except NotFoundError:
            return None
        documents = {name: self._document(attached[name]) for name in json.loads(resource.inputs["policy_documents"])
                     if name in attached}
        return Observed(self.kind, resource.name, user["Arn"], tags.get(STACK_TAG) == self.stack,
                        {"policies": policy_digest(documents)})

    def create(self, resource: Resource) -> Observed:
        tags = [{"Key": k, "Value": v} for k, v in resource.tags.items()]
        arn = self.iam.create_user(UserName=resource.name, Tags=tags)["User"]["Arn"]
        observed = Observed(self.kind, resource.name, arn, True)
        self.update(resource, observed)
        return observed

    def update(self, resource: Resource, observed: Observed) -> None:
        account = observed.id.split(":")[4]
        for name, document in json.loads(resource.inputs["policy_documents"]).items():
            arn = self._ensure_policy(f"arn:aws:iam::{account}:policy{POLICY_PATH}{name}", name, document, resource)
            self.iam.attach_user_policy(UserName=resource.name, PolicyArn=arn)

    def delete(self, observed: Observed) -> bool:
        name = observed.name
        try:
            for key in self.iam.list_access_keys(UserName=name).get("AccessKeyMetadata", []):
                _tolerant(lambda: self.iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"]))
            attached = self._attached(name)
        except NotFoundError:
            return False
        for arn in attached.values():
            _tolerant(lambda: self.iam.detach_user_policy(UserName=name, PolicyArn=arn))
        account, names = observed.id.split(":")[4], StackNames(self.stack)
        ours = {f"arn:aws:iam::{account}:policy{POLICY_PATH}{policy}"
                for policy in (web_tier_policy_name(names), autoscaler_policy_name(names))}
        for arn in sorted(ours | set(attached.values())):  # the stack's own even if an up stopped before attaching
            self._delete_policy(arn)
        return _tolerant(lambda: self.iam.delete_user(UserName=name))

    def _attached(self, user: str) -> dict[str, str]:
        """This stack's managed policies attached to the user, name -> ARN."""
        found = self.iam.list_attached_user_policies(UserName=user, PathPrefix=POLICY_PATH)["AttachedPolicies"]
        return {p["PolicyName"]: p["PolicyArn"] for p in found if p["PolicyName"].startswith(f"{self.stack}-")}

    def _document(self, arn: str) -> Any:
        version = self.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        document = self.iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
        return json.loads(document) if isinstance(document, str) else document

    def _ensure_policy(self, arn: str, name: str, document: Any, resource: Resource) -> str:
        text = json.dumps(document, sort_keys=True)
        try:
            if policy_digest(self._document(arn)) == policy_digest(document):
                return arn
        except NotFoundError:
            return self.iam.create_policy(PolicyName=name, Path=POLICY_PATH, PolicyDocument=text,
                                          Description=f"hybrid {self.stack}: the web-tier machine",
                                          Tags=[{"Key": k, "Value": v} for k, v in resource.tags.items()]
                                          )["Policy"]["Arn"]
        self._make_room(arn)
        self.iam.create_policy_version(PolicyArn=arn, PolicyDocument=text, SetAsDefault=True)
        return arn

    def _make_room(self, arn: str) -> None:
        versions = self.iam.list_policy_versions(PolicyArn=arn)["Versions"]
        old = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
        if len(versions) >= MAX_POLICY_VERSIONS and old:
            self.iam.delete_policy_version(PolicyArn=arn, VersionId=old[0]["VersionId"])

    def _delete_policy(self, arn: str) -> None:
        try:
            for version in self.iam.list_policy_versions(PolicyArn=arn)["Versions"]:
                if not version["IsDefaultVersion"]:
                    self.iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
            self.iam.delete_policy(PolicyArn=arn)
        except NotFoundError:
            return


def _tolerant(step: Any) -> bool:
    try:
        step()
    except NotFoundError:
        return False
    return True

