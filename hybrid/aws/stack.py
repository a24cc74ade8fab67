"""A stack's AWS side: what it should have (pure), its drivers, and up / down / status on the shared stack engine
(``hybrid.core.stack_engine``), which plans, applies, deletes and reports.

``up`` observes every resource by name and tag, plans, then creates or converges only what differs, so a second run
changes nothing; among them is the input bucket's event notification for batch mode (objects created under
``batch/`` notify the request queue). ``down`` terminates the stack's instances first and confirms they are gone,
then deletes what carries the stack's tags: the web processes' reply queues and the AMI export bucket (made by other
commands, deleted when present), then the stack's resources in reverse order; anything of the same name without
those tags is left alone.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from hybrid.core.clock import Clock, SystemClock
from hybrid.core.contracts import Change, Fleet, Observed, Resource, ResourceDriver
from hybrid.core.errors import NotFoundError
from hybrid.core.messages import BATCH_PREFIX
from hybrid.core.naming import (ROLE_APP_TIER, ROLE_DEAD_LETTERS, ROLE_EXPORTS, ROLE_INPUT, ROLE_OUTPUT, ROLE_REQUESTS,
                                ROLE_RESPONSES, ROLE_WEB_TIER, StackNames)
from hybrid.core.settings import Settings
from hybrid.core.stack_engine import Report, StackEngine
from hybrid.core.wait import Poll, wait_for

if TYPE_CHECKING:
    from hybrid.aws.compute import LaunchSpec

log = logging.getLogger(__name__)
TERMINATE_TIMEOUT = 600.0
DEPENDENCY_TIMEOUT = 180.0


def stack_names(settings: Settings) -> StackNames:
    return StackNames(settings.stack, settings.aws.ami_name, settings.aws.instance_name_pattern)


def manages_instance_profile(settings: Settings) -> bool:
    """Whether ``up`` makes the stack's IAM identities: the workers' role and instance profile, and the web-tier
    machine's user (``hybrid.aws.identity``)."""
    choice = settings.aws.instance_profile
    return choice == "yes" or (choice == "auto" and settings.aws.target == "aws")


def desired_resources(settings: Settings, policy_document: str = "", web_policies: str = "") -> list[Resource]:
    """Every resource the stack's AWS side should have, in creation order. ``policy_document`` is the workers'
    policy, ``web_policies`` the web-tier machine's (JSON of {name: document}), both from ``hybrid.aws.identity``."""
    names, aws = stack_names(settings), settings.aws
    resources = [_bucket(names.input_bucket, ROLE_INPUT, names), _bucket(names.output_bucket, ROLE_OUTPUT, names)]
    for queue, role, size in ((names.request_queue, ROLE_REQUESTS, aws.request_message_bytes),
                              (names.response_queue, ROLE_RESPONSES, aws.response_message_bytes)):
        resources += [_queue(names.dead_letter_queue(queue), ROLE_DEAD_LETTERS, size, "", settings, names),
                      _queue(queue, role, size, names.dead_letter_queue(queue), settings, names)]
    resources.append(batch_notification_resource(names))
    resources += [
        Resource("security_group", names.app_security_group, ROLE_APP_TIER, {"ingress": _ingress(aws.operator_cidr)},
                 names.tags(ROLE_APP_TIER, names.app_security_group), inputs={"ssh_from": aws.operator_cidr}),
        Resource("key_pair", names.key_pair, ROLE_APP_TIER, {}, names.tags(ROLE_APP_TIER, names.key_pair)),
        Resource("image", names.app_image, ROLE_APP_TIER, {"image_id": aws.ami_id} if aws.ami_id else {},
                 names.tags(ROLE_APP_TIER, names.app_image), managed=not aws.ami_id and aws.target == "emulator",
                 hint=_missing_ami_hint(aws.ami_id)),
    ]
    if manages_instance_profile(settings):
        from hybrid.aws.identity import policy_digest  # lazy, as in build_aws_stack: it loads boto3

        resources.append(Resource("instance_profile", names.instance_profile, ROLE_APP_TIER,
                                  {"policy": policy_digest(json.loads(policy_document)), "profile": "attached"},
                                  names.tags(ROLE_APP_TIER, names.instance_profile),
                                  inputs={"policy_document": policy_document}))
        web_policies = web_policies or "{}"
        resources.append(Resource("iam_user", names.web_tier_user, ROLE_WEB_TIER,
                                  {"policies": policy_digest(json.loads(web_policies))},
                                  names.tags(ROLE_WEB_TIER, names.web_tier_user),
                                  inputs={"policy_documents": web_policies}))
    return resources


def exports_bucket_resource(names: StackNames) -> Resource:
    """The private bucket ``hybrid image export`` writes AMI exports to: not made by ``up``, deleted by ``down``."""
    return _bucket(names.exports_bucket, ROLE_EXPORTS, names)


def _bucket(name: str, role: str, names: StackNames) -> Resource:
    return Resource("bucket", name, role, {"public_access": "blocked", "encryption": "AES256"},
                    names.tags(role, name))


def batch_notification_resource(names: StackNames) -> Resource:
    """Batch mode: every object created under ``batch/`` of the input bucket notifies the request queue."""
    return Resource("notification", f"{names.input_bucket}/{BATCH_PREFIX}", ROLE_INPUT,
                    {"queue": names.request_queue, "prefix": BATCH_PREFIX}, names.tags(ROLE_INPUT),
                    inputs={"bucket": names.input_bucket})


def _queue(name: str, role: str, size: int, dead_letters: str, settings: Settings, names: StackNames) -> Resource:
    aws = settings.aws
    return Resource("queue", name, role, {
        "MaximumMessageSize": str(size), "VisibilityTimeout": str(aws.visibility_timeout),
        "MessageRetentionPeriod": str(aws.retention_seconds), "SqsManagedSseEnabled": "true",
        "dead_letter_queue": dead_letters, "max_receive_count": str(aws.max_receive_count) if dead_letters else ""},
        names.tags(role, name))


def _ingress(cidr: str) -> str:
    return f"tcp/22 from {cidr}" if cidr else "none"


def _missing_ami_hint(ami_id: str) -> str:
    given = f"no AMI has id {ami_id}; " if ami_id else ""
    return f"{given}bake it with `hybrid image bake --role app-tier`, or set aws.ami_id to an existing AMI"


@dataclass
class AwsStack:
    """One stack's AWS side, acting through drivers (boto3 adapters, or fakes in unit tests)."""

    settings: Settings
    drivers: Mapping[str, ResourceDriver]
    fleet: Fleet
    desired: list[Resource]
    clock: Clock = field(default_factory=SystemClock)

    @property
    def engine(self) -> StackEngine:
        """The shared stack engine over this stack's resources and drivers."""
        return StackEngine(self.desired, self.drivers, self.clock, "DependencyViolation", DEPENDENCY_TIMEOUT,
                           not_ours=f"not tagged for stack {self.settings.stack}")

    def observe(self) -> dict[tuple[str, str], Observed | None]:
        return self.engine.observe()

    def plan(self) -> list[Change]:
        return self.engine.plan()

    def up(self, report: Report = log.info) -> list[Change]:
        """Creates what is missing and converges what differs; returns the changes made. A failed run keeps what it
        made (the next ``up`` resumes from there, ``down`` removes it)."""
        return self.engine.apply(self.plan(), report)

    def down(self, report: Report = log.info, on_poll: Callable[[Poll[int]], None] | None = None) -> list[str]:
        """Terminates the stack's instances, then deletes its tagged resources; returns one line per resource."""
        outcomes = [self.terminate_instances(report, on_poll)]
        report(outcomes[0])
        for extra in self._reply_queues():
            outcomes.append(f"queue {extra.name}: {'deleted' if self.drivers['queue'].delete(extra) else 'gone'}")
            report(outcomes[-1])
        exports = exports_bucket_resource(stack_names(self.settings))
        found = self.engine.find(exports)
        if found is not None:  # only stacks that exported an AMI have it
            outcomes.append(self.engine.delete_observed(exports, found))
            report(outcomes[-1])
        return outcomes + self.engine.delete_in_reverse(report)

    def down_preview(self) -> list[str]:
        """What `down` would do, one line per resource, changing nothing: the instances it would terminate, the
        buckets it would empty and delete with their object counts, and every other resource of the stack."""
        live = self.fleet.instances()
        lines = [f"terminate {len(live)} instance(s): {', '.join(i.id for i in live)}"] if live else []
        lines += [f"delete queue {queue.name} (a web process's reply queue)" for queue in self._reply_queues()]
        exports = exports_bucket_resource(stack_names(self.settings))
        found = [(exports, self.engine.find(exports)), *reversed(self.engine.found_each())]
        return lines + self.engine.deletion_preview(found, self._preview_detail)

    def _preview_detail(self, resource: Resource, found: Observed | None) -> str:
        counter = getattr(self.drivers["bucket"], "count_objects", None)
        if resource.kind != "bucket" or found is None or counter is None:
            return ""
        count, more = counter(found.name)
        return f"{count}{'+' if more else ''} object(s), emptied first" if count else "empty"

    def _reply_queues(self) -> list[Observed]:
        """The web processes' own reply queues that carry this stack's tag."""
        discover = getattr(self.drivers["queue"], "discover", None)
        if discover is None:
            return []
        return [q for q in discover(stack_names(self.settings).reply_queue_prefix) if q.owned]

    def terminate_instances(self, report: Report = log.info,
                            on_poll: Callable[[Poll[int]], None] | None = None) -> str:
        live = self.fleet.instances()
        if not live:
            return "instances: none running"
        report(f"terminating {len(live)} instance(s): {', '.join(i.id for i in live)}")
        self.fleet.terminate([i.id for i in live])
        wait_for(f"{len(live)} instance(s) of stack {self.settings.stack} to terminate",
                 lambda: self._termination_poll(len(live)), timeout=TERMINATE_TIMEOUT, interval=1.0,
                 clock=self.clock, on_poll=on_poll)
        return f"instances: {len(live)} terminated"

    def _termination_poll(self, total: int) -> Poll[int]:
        remaining = self.fleet.instances()
        stuck = [i.id for i in remaining if i.state not in ("shutting-down", "terminated")]
        if stuck:
            self.fleet.terminate(stuck)
        done = total - len(remaining)
        return Poll(done, done=not remaining, progress=done / total if total else 1.0,
                    state=f"{len(remaining)} still {', '.join(sorted({i.state for i in remaining}))}")

    def launch_spec(self, user_data: str) -> "LaunchSpec":
        """What the autoscaler launches with: the stack's AMI, security group, key pair and (when ``up`` makes it)
        instance profile. Only those three are observed: the autoscaler's policy grants their ``Describe*`` calls
        and no read of IAM, buckets or queue settings."""
        from hybrid.aws.compute import LaunchSpec  # lazy, as in build_aws_stack: it loads boto3

        wanted = ("image", "security_group", "key_pair")
        found = {r.kind: self.engine.find(r) for r in self.desired if r.kind in wanted}
        missing = [kind for kind in wanted if found.get(kind) is None]
        if missing:
            raise NotFoundError(f"stack {self.settings.stack} is not set up ({', '.join(missing)} missing): "
                                "run `hybrid aws up` first")
        profile = stack_names(self.settings).instance_profile if manages_instance_profile(self.settings) else ""
        return LaunchSpec(found["image"].id, self.settings.aws.instance_type, found["key_pair"].name,
                          found["security_group"].id, user_data, profile,
                          stack_names(self.settings).instance_name("{n}"))

    def status(self) -> list[dict[str, Any]]:
        """One row per resource (kind, name, id, state, detail), then one for the instances."""
        rows = self.engine.status(self._detail)
        counts = Counter(i.state for i in self.fleet.instances())
        rows.append({"kind": "instances", "name": ROLE_APP_TIER, "id": "",
                     "state": f"{sum(counts.values())} live",
                     "detail": ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"})
        return rows

    def _detail(self, resource: Resource, found: Observed | None) -> str:
        if found is None or not found.owned:
            return ""
        detail = list(found.notes)
        if resource.kind == "queue" and hasattr(self.drivers["queue"], "depth"):
            depth = self.drivers["queue"].depth(found.id)  # type: ignore[attr-defined]
            detail.insert(0, f"{depth.visible} visible, {depth.in_flight} in flight")
        return "; ".join(detail)


def build_aws_stack(settings: Settings, clock: Clock | None = None) -> AwsStack:
    """The stack wired to boto3 clients for its target (AWS or the local server)."""
    # lazy for start-up cost: these load boto3 (0.1 s, 20 MB), which the plan and the names do not need
    from hybrid.aws.compute import Ec2Fleet, ImageDriver, KeyPairDriver, SecurityGroupDriver
    from hybrid.aws.identity import InstanceProfileDriver, WebTierUserDriver, web_machine_policies, worker_policy
    from hybrid.aws.session import AwsClients
    from hybrid.aws.storage import BucketDriver, NotificationDriver, QueueDriver

    clients, stack, aws = AwsClients(settings), settings.stack, settings.aws
    policy = web_policies = ""
    if manages_instance_profile(settings):
        account, names = clients.client("sts").get_caller_identity()["Account"], stack_names(settings)
        policy = json.dumps(worker_policy(names, aws.region, account), sort_keys=True)
        web_policies = json.dumps(web_machine_policies(names, aws.region, account, aws.instance_type, aws.ami_id),
                                  sort_keys=True)
    drivers: dict[str, ResourceDriver] = {d.kind: d for d in (
        BucketDriver(clients.s3, stack, settings.aws.region), QueueDriver(clients.sqs, stack),
        NotificationDriver(clients.s3, clients.sqs, stack),
        SecurityGroupDriver(clients.ec2, stack), KeyPairDriver(clients.ec2, stack, settings.state_path / "keys"),
        ImageDriver(clients.ec2, stack, can_register=settings.aws.target == "emulator"),
        InstanceProfileDriver(clients.iam, stack), WebTierUserDriver(clients.iam, stack))}
    return AwsStack(settings, drivers, Ec2Fleet(clients.ec2, stack), desired_resources(settings, policy, web_policies),
                    clock or SystemClock())

