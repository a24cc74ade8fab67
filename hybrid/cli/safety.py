"""Asking before a real cloud is changed, as Terraform and SkyPilot do.

On a real cloud (``aws.target = "aws"``, or an OpenStack cloud other than the local fixture) ``up`` shows its plan and
``down`` lists what it would delete (buckets with their object counts), and both ask before going on; ``--yes``
answers for the operator. Without a terminal to ask on, they refuse (exit 2) and change nothing. The embedded default
(the local AWS server and the local OpenStack fixture) never asks.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

import click

from hybrid.cli.output import echo_plan, echo_preview, pending
from hybrid.core.contracts import Change
from hybrid.core.errors import HybridError
from hybrid.core.settings import FIXTURE_CLOUD, Settings

yes_option = click.option("--yes", "-y", is_flag=True,
                          help="do not ask before changing a real cloud (the local ones never ask)")
dry_run_option = click.option("--dry-run", is_flag=True, help="list what would be deleted, and delete nothing")


class Cancelled(HybridError):
    """The operator answered no: nothing was changed."""


def real_aws(settings: Settings) -> list[str]:
    """The AWS account, when the stack's AWS side is on real AWS (not the local server)."""
    return [f"AWS (region {settings.aws.region})"] if settings.aws.target == "aws" else []


def real_openstack(settings: Settings) -> list[str]:
    """The OpenStack cloud, when it is not the local fixture."""
    cloud = settings.openstack.cloud
    return [f"OpenStack cloud {cloud!r}"] if cloud != FIXTURE_CLOUD else []


def can_ask() -> bool:
    """Whether there is an operator to ask: stdin is a terminal."""
    return sys.stdin.isatty()


def confirm(action: str, clouds: list[str], yes: bool) -> None:
    """Asks "<action> on <clouds>?" when ``clouds`` names a real one and ``yes`` is not given; raises
    :class:`Cancelled` on no, and a usage error (exit 2) when there is no terminal to ask on."""
    if not clouds or yes:
        return
    where = " and ".join(clouds)
    if not can_ask():
        raise click.UsageError(f"{action} on {where} needs a confirmation, and stdin is not a terminal: nothing was "
                               "changed; pass --yes to go ahead")
    if not click.confirm(f"{action} on {where}?", default=False, err=True):
        raise Cancelled("cancelled: nothing was changed")


def confirm_plan(stack: str, plan: Callable[[], Sequence[Change]], clouds: list[str], yes: bool) -> None:
    """Before an `up` on a real cloud (unless ``yes``): prints the plan and asks, when it changes anything."""
    if not clouds or yes:
        return
    changes = plan()
    echo_plan(changes)
    if pending(changes):
        confirm(f"apply these changes to stack {stack}", clouds, yes)


def confirm_down(title: str, stack: str, preview: Callable[[], Sequence[str]], clouds: list[str], yes: bool,
                 dry_run: bool) -> bool:
    """Before a `down`: with ``dry_run`` prints what it would do and returns False (do nothing); on a real cloud
    (unless ``yes``) prints the same and asks. True: go ahead."""
    if dry_run or (clouds and not yes):
        echo_preview(title, stack, preview())
        if dry_run:
            return False
        confirm(f"delete all of this of stack {stack}", clouds, yes)
    return True
