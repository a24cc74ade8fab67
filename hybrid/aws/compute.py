"""EC2 parts of a stack: app-tier security group, key pair, AMI, and the fleet of app-tier instances."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hybrid.aws.session import MappedClient
from hybrid.core.contracts import Instance, Observed, Resource
from hybrid.core.errors import CloudError, HybridError, NotFoundError
from hybrid.core.keys import KeyPairDriverBase
from hybrid.core.naming import NAME_TAG, ROLE_APP_TIER, ROLE_TAG, STACK_TAG

log = logging.getLogger(__name__)
LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
ORIGIN_TAG = "hybrid:origin"
ORIGIN_REGISTERED = "registered"
LAUNCH_TOKEN_TAG = "hybrid:launch-token"


def tag_specification(resource_type: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def tags_of(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


class SecurityGroupDriver:
    """The app-tier security group: no inbound rule but SSH from the operator CIDR (property ``ssh_from``)."""

    kind = "security_group"

    def __init__(self, ec2: MappedClient, stack: str) -> None:
        self.ec2, self.stack = ec2, stack

    def observe(self, resource: Resource) -> Observed | None:
        groups = self.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [resource.name]}])["SecurityGroups"]
        if not groups:
            return None
        group = groups[0]
        return Observed(self.kind, resource.name, group["GroupId"], tags_of(group).get(STACK_TAG) == self.stack,
                        {"ingress": describe_ingress(group.get("IpPermissions", []))})

    def create(self, resource: Resource) -> Observed:
        group_id = self.ec2.create_security_group(
            GroupName=resource.name, Description=f"hybrid {self.stack}: app-tier workers",
            TagSpecifications=tag_specification("security-group", dict(resource.tags)))["GroupId"]
        observed = Observed(self.kind, resource.name, group_id, True, {"ingress": "none"})
        self.update(resource, observed)
        return observed

    def update(self, resource: Resource, observed: Observed) -> None:
        group = self.ec2.describe_security_groups(GroupIds=[observed.id])["SecurityGroups"][0]
        if group.get("IpPermissions"):
            self.ec2.revoke_security_group_ingress(GroupId=observed.id, IpPermissions=group["IpPermissions"])
        cidr = resource.inputs.get("ssh_from", "")
        if cidr:
            self.ec2.authorize_security_group_ingress(GroupId=observed.id, IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                "IpRanges": [{"CidrIp": cidr, "Description": "operator SSH"}]}])

    def delete(self, observed: Observed) -> bool:
        try:
            self.ec2.delete_security_group(GroupId=observed.id)
        except NotFoundError:
            return False
        return True


def describe_ingress(permissions: list[dict[str, Any]]) -> str:
    """Inbound rules as one comparable string: '' for none, else 'tcp/22 from 203.0.113.7/32, ...'."""
    rules = sorted(f"{p.get('IpProtocol')}/{p.get('FromPort', '')} from {r['CidrIp']}"
                   for p in permissions for r in p.get("IpRanges", []))
    return ", ".join(rules) or "none"


class KeyPairDriver(KeyPairDriverBase):
    """The stack's EC2 key pair, tagged for the stack; a created private key is written to ``key_dir`` with mode
    0600."""

    kind = "key_pair"
    without_key = "SSH to workers is not possible; `hybrid aws down` then `up` makes a new pair"

    def __init__(self, ec2: MappedClient, stack: str, key_dir: Path) -> None:
        super().__init__(stack, key_dir)
        self.ec2 = ec2

    def find_pair(self, name: str) -> tuple[str, bool] | None:
        try:
            pairs = self.ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"]
        except NotFoundError:
            return None
        if not pairs:
            return None
        return pairs[0].get("KeyPairId", name), tags_of(pairs[0]).get(STACK_TAG) == self.stack

    def make_pair(self, resource: Resource) -> tuple[str, str]:
        reply = self.ec2.create_key_pair(KeyName=resource.name,
                                         TagSpecifications=tag_specification("key-pair", dict(resource.tags)))
        return reply.get("KeyPairId", resource.name), reply["KeyMaterial"]

    def delete_pair(self, name: str) -> None:
        self.ec2.delete_key_pair(KeyName=name)


class ImageDriver:
    """The app-tier AMI: found by id or by name; on the emulator a missing one is registered as a record.

    A registered record (tag ``hybrid:origin=registered``) is deregistered on teardown; baked or given AMIs are kept.
    """

    kind = "image"

    def __init__(self, ec2: MappedClient, stack: str, can_register: bool) -> None:
        self.ec2, self.stack, self.can_register = ec2, stack, can_register

    def observe(self, resource: Resource) -> Observed | None:
        image_id = resource.properties.get("image_id", "")
        try:
            images = self.ec2.describe_images(ImageIds=[image_id])["Images"] if image_id else \
                self.ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [resource.name]}])[
                    "Images"]
        except NotFoundError:
            return None
        images = [i for i in images if i.get("State", "available") != "deregistered"]
        if not images:
            return None
        image = images[0]
        tags = tags_of(image)
        return Observed(self.kind, image.get("Name", resource.name), image["ImageId"],
                        tags.get(STACK_TAG) == self.stack, {"image_id": image_id} if image_id else {},
                        state=image.get("State", "available"), notes=(f"origin: {tags.get(ORIGIN_TAG, 'external')}",))

    def create(self, resource: Resource) -> Observed:
        if not self.can_register:
            raise HybridError(f"app-tier AMI {resource.name!r} not found in this account and region: bake it with "
                              "`hybrid image bake --role app-tier`, or set aws.ami_id")
        image_id = self.ec2.register_image(
            Name=resource.name, Description=f"hybrid {self.stack}: app-tier worker image record",
            Architecture="x86_64", RootDeviceName="/dev/sda1", VirtualizationType="hvm")["ImageId"]
        tags = {**resource.tags, ORIGIN_TAG: ORIGIN_REGISTERED}
        self.ec2.create_tags(Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        return Observed(self.kind, resource.name, image_id, True)

    def update(self, resource: Resource, observed: Observed) -> None:
        return None

    def delete(self, observed: Observed) -> bool:
        if f"origin: {ORIGIN_REGISTERED}" not in observed.notes:
            return False
        try:
            self.ec2.deregister_image(ImageId=observed.id)
        except NotFoundError:
            return False
        return True


@dataclass(frozen=True)
class LaunchSpec:
    """How app-tier instances are launched. ``user_data`` is the workers' settings JSON: never credentials."""

    image_id: str
    instance_type: str
    key_name: str
    security_group_id: str
    user_data: str
    instance_profile: str = ""
    name_pattern: str = ""
    """The instances' ``Name`` tag with ``{n}`` left to fill (``StackNames.instance_name``); empty: no Name."""

    def instance_name(self, n: int) -> str:
        return self.name_pattern.replace("{n}", str(n))


class Ec2Fleet:
    """The stack's app-tier instances, found by the ``hybrid:stack`` tag."""

    def __init__(self, ec2: MappedClient, stack: str, spec: LaunchSpec | None = None) -> None:
        self.ec2, self.stack, self.spec = ec2, stack, spec

    def launch(self, count: int, token: str) -> list[str]:
        """``count`` instances, each named by the spec's pattern with the lowest numbers no live instance of the
        stack carries, so the fleet reads 1..N in the console. One run_instances call per instance (tags are per
        call, and an instance is never seen unnamed); each is sent ClientToken ``<token>-<i>`` and tagged with the
        token, and instances already carrying it are returned instead (the local server ignores ClientToken)."""
        if self.spec is None:
            raise HybridError("this fleet has no launch specification")
        launched = self._with_token(token)
        if launched:
            return launched
        spec = self.spec
        names = [""] * count if not spec.name_pattern else [spec.instance_name(n) for n in free_numbers(
            {i.tags.get(NAME_TAG, "") for i in self.instances()}, spec.instance_name, count)]
        return [self._run_one(spec, f"{token}-{index}", token, name) for index, name in enumerate(names)]

    def _run_one(self, spec: LaunchSpec, client_token: str, token: str, name: str) -> str:
        tags = {STACK_TAG: self.stack, ROLE_TAG: ROLE_APP_TIER, LAUNCH_TOKEN_TAG: token}
        if name:
            tags[NAME_TAG] = name
        extra = {"IamInstanceProfile": {"Name": spec.instance_profile}} if spec.instance_profile else {}
        reply = self.ec2.run_instances(
            ImageId=spec.image_id, InstanceType=spec.instance_type, KeyName=spec.key_name,
            SecurityGroupIds=[spec.security_group_id], UserData=spec.user_data, MinCount=1, MaxCount=1,
            ClientToken=client_token, InstanceInitiatedShutdownBehavior="terminate",
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
            TagSpecifications=tag_specification("instance", tags), **extra)
        return reply["Instances"][0]["InstanceId"]

    def _with_token(self, token: str) -> list[str]:
        filters = [{"Name": f"tag:{LAUNCH_TOKEN_TAG}", "Values": [token]},
                   {"Name": f"tag:{STACK_TAG}", "Values": [self.stack]}]
        reservations = self.ec2.describe_instances(Filters=filters)["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    def instances(self) -> list[Instance]:
        filters = [{"Name": f"tag:{STACK_TAG}", "Values": [self.stack]},
                   {"Name": f"tag:{ROLE_TAG}", "Values": [ROLE_APP_TIER]},
                   {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
        found = []
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            found += [_instance(i) for r in page["Reservations"] for i in r["Instances"]]
        return found

    def terminate(self, instance_ids: Sequence[str]) -> None:
        if not instance_ids:
            return
        try:
            self.ec2.terminate_instances(InstanceIds=list(instance_ids))
        except NotFoundError:
            for instance_id in instance_ids:
                self._terminate_one(instance_id)

    def _terminate_one(self, instance_id: str) -> None:
        try:
            self.ec2.terminate_instances(InstanceIds=[instance_id])
        except NotFoundError:
            log.info("instance %s is already gone", instance_id)
        except CloudError:
            raise


def free_numbers(taken: set[str], name_of: Callable[[int], str], count: int) -> list[int]:
    """The ``count`` lowest numbers from 1 whose name (``name_of(n)``) is not in ``taken``."""
    numbers: list[int] = []
    n = 0
    while len(numbers) < count:
        n += 1
        if name_of(n) not in taken:
            numbers.append(n)
    return numbers


def _instance(raw: dict[str, Any]) -> Instance:
    return Instance(id=raw["InstanceId"], state=raw["State"]["Name"], launched_at=raw["LaunchTime"].timestamp(),
                    image_id=raw.get("ImageId", ""), tags=tags_of(raw))
