"""A small IAM evaluator for the least-privilege tests: AWS calls (as botocore makes them) -> IAM requests (action,
resource ARN, condition context) -> is each allowed by a policy's Allow statements, and is each grant used.

What it models: ``Action`` / ``Resource`` lists with ``*`` and ``?`` wildcards (actions case-insensitive), and the
condition operators the project's policies use (``StringEquals``, ``StringLike``, ``ArnEquals``, ``ArnLike``) with
``${key}`` policy variables taken from the request's context. A condition key missing from the context fails its
condition, as in IAM. Not modelled (the policies use none): Deny, NotAction, NotResource, other operators.

The action of an operation is ``<prefix>:<Operation>`` but for the exceptions in ``ACTION_OF``; a call may need more
than its own action: ``RunInstances`` with tags needs ``ec2:CreateTags`` and with an instance profile
``iam:PassRole``; ``CreateQueue`` with tags needs ``sqs:TagQueue``; a ``GetObject``/``HeadObject`` answered 404 needs
``s3:ListBucket`` (without it S3 answers 403 and the code cannot tell a missing object from a refusal).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

ACTION_OF = {
    ("s3", "HeadObject"): "s3:GetObject", ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "ListObjectsV2"): "s3:ListBucket", ("s3", "ListObjects"): "s3:ListBucket",
    ("sqs", "SendMessageBatch"): "sqs:SendMessage", ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
}
NEEDS_NO_PERMISSION = {("sts", "GetCallerIdentity")}  # answers for any valid credentials, whatever the policy


@dataclass(frozen=True)
class Call:
    """One AWS call as recorded: service, operation, the caller's parameters, and the error code it got (or '')."""

    service: str
    operation: str
    params: dict[str, Any]
    error: str = ""


@dataclass(frozen=True)
class Request:
    """One authorization IAM makes for a call: the action on one resource, with its condition context."""

    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}"


Tags = Callable[[str], dict[str, str]]  # a resource ARN -> its tags (looked up on the server after the run)


@dataclass
class Account:
    """Where the calls went, and what the condition context needs to know about their caller and resources."""

    region: str
    account: str
    tags_of: Tags = lambda arn: {}
    source_instance: str = ""  # the caller's instance id, for a role used on an EC2 instance

    def ec2(self, path: str) -> str:
        return f"arn:aws:ec2:{self.region}:{self.account}:{path}"

    def queue(self, url_or_name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{url_or_name.rstrip('/').rsplit('/', 1)[-1]}"

    def caller(self) -> dict[str, str]:
        return {"ec2:SourceInstanceARN": self.ec2(f"instance/{self.source_instance}")} if self.source_instance else {}


def requests_of(call: Call, where: Account) -> list[Request]:
    """The IAM requests one call makes."""
    if (call.service, call.operation) in NEEDS_NO_PERMISSION:
        return []
    action = ACTION_OF.get((call.service, call.operation), f"{call.service}:{call.operation}")
    special = _SPECIAL.get(action)
    if special:
        return special(call, where)
    return [Request(action, resource, _resource_context(resource, where)) for resource in _resources(call, where)]


def _resources(call: Call, where: Account) -> list[str]:
    p = call.params
    if call.service == "sqs":
        named = p.get("QueueUrl") or p.get("QueueName")
        return [where.queue(named)] if named else ["*"]
    if call.service == "s3":
        bucket = f"arn:aws:s3:::{p['Bucket']}"
        return [f"{bucket}/{p['Key']}" if "Key" in p else bucket]
    if call.service == "ec2" and call.operation.startswith("Describe"):
        return ["*"]  # Describe* take no resource-level permissions
    raise AssertionError(f"no resource mapping for {call.service}.{call.operation}: add one to tests/iam_policy.py")


def _resource_context(resource: str, where: Account) -> dict[str, str]:
    context = where.caller()
    if resource.startswith("arn:aws:ec2:"):
        context.update({f"aws:ResourceTag/{k}": v for k, v in where.tags_of(resource).items()})
        if ":instance/" in resource:
            context["ec2:InstanceID"] = resource.rsplit("/", 1)[-1]
    return context


def _get_object(call: Call, where: Account) -> list[Request]:
    p = call.params
    requests = [Request("s3:GetObject", f"arn:aws:s3:::{p['Bucket']}/{p['Key']}")]
    if call.error in ("NoSuchKey", "404", "NotFound"):
        requests.append(Request("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}"))
    return requests


def _terminate(call: Call, where: Account) -> list[Request]:
    return [Request("ec2:TerminateInstances", arn, _resource_context(arn, where))
            for arn in (where.ec2(f"instance/{i}") for i in call.params["InstanceIds"])]


def _run_instances(call: Call, where: Account) -> list[Request]:
    p = call.params
    instance = where.ec2("instance/i-launched")
    request_tags = {f"aws:RequestTag/{t['Key']}": t["Value"] for spec in p.get("TagSpecifications", [])
                    if spec["ResourceType"] == "instance" for t in spec["Tags"]}
    launched = {**request_tags, "ec2:InstanceType": p["InstanceType"]}
    profile = p.get("IamInstanceProfile", {}).get("Name", "")
    if profile:
        launched["ec2:InstanceProfile"] = f"arn:aws:iam::{where.account}:instance-profile/{profile}"
    image = f"arn:aws:ec2:{where.region}::image/{p['ImageId']}"
    used = [Request("ec2:RunInstances", instance, launched),
            Request("ec2:RunInstances", image, _tagged(image, where)),
            Request("ec2:RunInstances", where.ec2(f"key-pair/{p['KeyName']}"))]
    used += [Request("ec2:RunInstances", arn, _tagged(arn, where))
             for arn in (where.ec2(f"security-group/{g}") for g in p.get("SecurityGroupIds", []))]
    used += [Request("ec2:RunInstances", where.ec2(path))  # the default VPC's subnet, the NIC, the root volume
             for path in ("subnet/subnet-default", "network-interface/eni-launched", "volume/vol-launched")]
    if request_tags:
        used.append(Request("ec2:CreateTags", instance, {**request_tags, "ec2:CreateAction": "RunInstances"}))
    if profile:  # the project names the worker role as its instance profile
        used.append(Request("iam:PassRole", f"arn:aws:iam::{where.account}:role/{profile}",
                            {"iam:PassedToService": "ec2.amazonaws.com"}))
    return used


def _tagged(arn: str, where: Account) -> dict[str, str]:
    return {f"aws:ResourceTag/{k}": v for k, v in where.tags_of(arn).items()}


def _create_queue(call: Call, where: Account) -> list[Request]:
    queue = where.queue(call.params["QueueName"])
    return [Request("sqs:CreateQueue", queue)] + ([Request("sqs:TagQueue", queue)] if call.params.get("tags") else [])


_SPECIAL: dict[str, Callable[[Call, Account], list[Request]]] = {
    "s3:GetObject": _get_object, "ec2:TerminateInstances": _terminate, "ec2:RunInstances": _run_instances,
    "sqs:CreateQueue": _create_queue}


def _listed(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def statement_matches(statement: dict[str, Any], request: Request) -> bool:
    return (statement["Effect"] == "Allow"
            and any(fnmatch.fnmatchcase(request.action.lower(), a.lower()) for a in _listed(statement["Action"]))
            and any(fnmatch.fnmatchcase(request.resource, r) for r in _listed(statement["Resource"]))
            and conditions_hold(statement.get("Condition", {}), request.context))


def conditions_hold(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    """Every key of every operator holds (a key missing from the context does not); ``ArnEquals`` takes wildcards
    as ``ArnLike`` does."""
    for operator, pairs in condition.items():
        if operator not in ("StringEquals", "StringLike", "ArnEquals", "ArnLike"):
            raise AssertionError(f"condition operator {operator} is not modelled")
        for key, wanted in pairs.items():
            values = [_substitute(w, context) for w in _listed(wanted)]
            if key not in context or not any(v is not None and _compare(operator, context[key], v) for v in values):
                return False
    return True


def _compare(operator: str, actual: str, wanted: str) -> bool:
    return actual == wanted if operator == "StringEquals" else fnmatch.fnmatchcase(actual, wanted)


def _substitute(value: str, context: dict[str, str]) -> str | None:
    missing = [key for key in re.findall(r"\$\{([^}]+)\}", value) if key not in context]
    if missing:
        return None
    return re.sub(r"\$\{([^}]+)\}", lambda m: context[m.group(1)], value)


def denied(policy: dict[str, Any], requests: Iterable[Request]) -> list[str]:
    """The requests no Allow statement of the policy grants."""
    return sorted({str(r) for r in requests if not any(statement_matches(s, r) for s in policy["Statement"])})


def grants(policy: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Every (Sid, action, resource pattern) the policy grants; wildcard actions are refused (list what is used)."""
    found = []
    for statement in policy["Statement"]:
        for action in _listed(statement["Action"]):
            assert "*" not in action and "?" not in action, f"{statement['Sid']}: wildcard action {action}"
            found += [(statement["Sid"], action, resource) for resource in _listed(statement["Resource"])]
    return found


def unused(policy: dict[str, Any], requests: Iterable[Request]) -> list[tuple[str, str, str]]:
    """The grants that no allowed request used: a (Sid, action, resource) is used when a request of that action on a
    resource the pattern matches was granted by that statement."""
    requests = list(requests)
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    return [(sid, action, pattern) for sid, action, pattern in grants(policy)
            if not any(r.action.lower() == action.lower() and fnmatch.fnmatchcase(r.resource, pattern)
                       and statement_matches(by_sid[sid], r) for r in requests)]
