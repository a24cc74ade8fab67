"""Wires the autoscaler from settings: the stack's request queue, its fleet and launch specification."""
from __future__ import annotations

from pathlib import Path

from hybrid.autoscale.loop import Autoscaler, Timeline
from hybrid.aws.channels import SqsQueue
from hybrid.aws.compute import Ec2Fleet
from hybrid.aws.session import AwsClients
from hybrid.aws.stack import build_aws_stack, stack_names
from hybrid.core.clock import WallClock
from hybrid.core.settings import Settings


def build_autoscaler(settings: Settings, timeline: Path | None) -> Autoscaler:
    """The workers get the stack's settings as user data: no credentials are in them."""
    clients = AwsClients(settings)
    spec = build_aws_stack(settings).launch_spec(user_data=settings.to_json())
    fleet = Ec2Fleet(clients.ec2, settings.stack, spec)
    requests = SqsQueue(clients.sqs, stack_names(settings).request_queue)
    return Autoscaler(settings.scaling, requests, fleet, WallClock(), Timeline(timeline) if timeline else None)
