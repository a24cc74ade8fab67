"""Wires the autoscaler from settings: the stack's request queue, its fleet and launch specification, the log format
(``log.format``) and, when ``scaling.metrics_bind`` names an address, its metrics server."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from hybrid.autoscale import metrics as autoscale_metrics
from hybrid.autoscale.loop import Autoscaler, Timeline
from hybrid.aws.channels import SqsQueue
from hybrid.aws.compute import Ec2Fleet, LaunchSpec
from hybrid.aws.session import AwsClients
from hybrid.aws.stack import build_aws_stack, stack_names
from hybrid.core import logs
from hybrid.core.clock import WallClock
from hybrid.core.contracts import Instance
from hybrid.core.errors import NotFoundError
from hybrid.core.settings import Settings

log = logging.getLogger(__name__)


def build_autoscaler(settings: Settings, timeline: Path | None) -> Autoscaler:
    """The workers get the stack's settings as user data: no credentials are in them."""
    clients = AwsClients(settings)

    def read_spec() -> LaunchSpec:
        return build_aws_stack(settings).launch_spec(user_data=settings.to_json())

    logs.use_format(settings.log.format)
    fleet = FollowingFleet(Ec2Fleet(clients.ec2, settings.stack, read_spec()), read_spec)
    requests = SqsQueue(clients.sqs, stack_names(settings).request_queue)
    return Autoscaler(settings.scaling, requests, fleet, WallClock(), Timeline(timeline) if timeline else None,
                      metrics=serve_metrics(settings.scaling.metrics_bind))


def serve_metrics(bind: str) -> autoscale_metrics.AutoscaleMetrics | None:
    """The autoscaler's metrics, served on ``bind`` from now on (a daemon thread), or None when ``bind`` is empty."""
    if not bind:
        return None
    metrics = autoscale_metrics.AutoscaleMetrics()
    autoscale_metrics.serve(metrics, bind)
    return metrics


@dataclass
class FollowingFleet:
    """The stack's fleet, whose launch specification is read again when a launch finds part of it gone: the stack
    was set up again (a restarted local AWS server starts empty, and ``local up`` makes a new image and security
    group), and the autoscaler goes on without a restart."""

    fleet: Ec2Fleet
    read_spec: Callable[[], LaunchSpec]

    def instances(self) -> list[Instance]:
        return self.fleet.instances()

    def terminate(self, instance_ids: Sequence[str]) -> None:
        self.fleet.terminate(instance_ids)

    def launch(self, count: int, token: str) -> list[str]:
        try:
            return self.fleet.launch(count, token)
        except NotFoundError as exc:
            log.info("launch: %s; reading the stack's launch specification again", exc)
            self.fleet.spec = self.read_spec()
            return self.fleet.launch(count, token)
