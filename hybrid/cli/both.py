"""``hybrid up``, ``down`` and ``status``: both clouds in the order that keeps the service whole."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from hybrid.cli import aws, openstack
from hybrid.cli.context import Context, pass_context
from hybrid.cli.output import progress
from hybrid.core.errors import HybridError


@click.command("up")
@openstack.image_option
@openstack.convert_option
@openstack.credentials_option
@openstack.ssh_user_option
@pass_context
def both_up(ctx: Context, image: Path | None, convert: bool, credentials: Path | None, ssh_user: str) -> None:
    """Set up both clouds: the AWS side first (queues and buckets the web tier needs), then OpenStack.

    
    On the embedded default (aws.target = emulator, the local OpenStack fixture with real compute) this is
    the whole service: the local AWS server, the stack's AWS side, the web-tier AMI baked in a VM (or from
    the image cache), exported and uploaded to Glance, and the web-tier server booted from it with a key
    pair, a security group and a floating IP; it returns once the web tier answers there. Needs root.
    """
    if ctx.settings.aws.target == "emulator":
        _embedded_up(ctx, image, convert)
        return
    aws.up(ctx)
    openstack.up(ctx, image, convert, credentials, ssh_user)


def _embedded_up(ctx: Context, image: Path | None, convert: bool) -> None:
    from hybrid.local import web_vm

    with progress("setting up") as on_poll:
        service = web_vm.up(ctx.settings, image, report=click.echo, on_poll=on_poll, convert=convert)
    click.echo("stages: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in service.stages.items()))
    click.echo(f"web tier: {service.url} (reach it from network namespace {service.namespace}, e.g. "
               f"`sudo hybrid workload --namespace {service.namespace} --url {service.url} ...`)")


@click.command("down")
@pass_context
def both_down(ctx: Context) -> None:
    """Tear both clouds down: OpenStack first (the web tier stops sending work), then the AWS side.

    On the embedded default this also deletes the web-tier image the stack uploaded, stops the relay and the
    local AWS server, and fails (exit 1) naming any process of the state folder left running."""
    if ctx.settings.aws.target == "emulator":
        from hybrid.local import web_vm

        started = time.monotonic()
        leftovers = web_vm.down(ctx.settings, report=click.echo)
        if leftovers:
            raise HybridError(f"left running: {'; '.join(leftovers)}")
        click.echo(f"stack {ctx.settings.stack}: down in {time.monotonic() - started:.1f} s")
        return
    openstack.down(ctx)
    aws.down(ctx)


@click.command("status")
@pass_context
def both_status(ctx: Context) -> None:
    """Both clouds' resources; exit 3 if anything is missing on either."""
    codes = []
    for title, status in (("AWS", aws.status), ("OpenStack", openstack.status)):
        click.echo(f"== {title}")
        try:
            status(ctx)
            codes.append(0)
        except SystemExit as exc:
            codes.append(int(exc.code or 0))
    if any(codes):
        sys.exit(max(codes))


COMMANDS = (both_up, both_down, both_status)
