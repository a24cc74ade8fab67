"""``hybrid up``, ``down`` and ``status``: both clouds in the order that keeps the service whole."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from hybrid.cli import aws, openstack
from hybrid.cli.context import Context, pass_context
from hybrid.cli.output import (STATUS_COLUMNS, echo_json, echo_plan, echo_preview, echo_table, json_option, pending,
                               progress, status_exit_code)
from hybrid.cli.safety import confirm, dry_run_option, real_aws, real_openstack, yes_option
from hybrid.core.errors import HybridError, NotFoundError


@click.command("up")
@openstack.image_option
@openstack.convert_option
@openstack.credentials_option
@openstack.ssh_user_option
@yes_option
@pass_context
def both_up(ctx: Context, image: Path | None, convert: bool, credentials: Path | None, ssh_user: str,
            yes: bool) -> None:
    """Set up both clouds: the AWS side first (queues and buckets the web tier needs), then OpenStack.

    \b
    On the embedded default (aws.target = emulator, the local OpenStack fixture with real compute) this is
    the whole service: the local AWS server, the stack's AWS side, the web-tier AMI baked in a VM (or from
    the image cache), exported and uploaded to Glance, and the web-tier server booted from it with a key
    pair, a security group and a floating IP; it returns once the web tier answers there. Needs root.
    On real clouds it first shows both plans and asks once (--yes does not ask).
    """
    if ctx.settings.aws.target == "emulator":
        _embedded_up(ctx, image, convert)
        return
    real = real_aws(ctx.settings) + real_openstack(ctx.settings)
    if real and not yes:
        aws_changes, openstack_changes = _aws_plan(ctx), _openstack_plan(ctx, image, convert)
        for title, changes in (("AWS", aws_changes), ("OpenStack", openstack_changes)):
            click.echo(f"== {title}")
            echo_plan(changes)
        if not pending([*aws_changes, *openstack_changes]):
            return
        confirm(f"apply these changes to stack {ctx.settings.stack}", real, yes)
    aws.up(ctx, yes=True)
    openstack.up(ctx, image, convert, credentials, ssh_user, yes=True)


def _aws_plan(ctx: Context) -> list[Any]:
    from hybrid.aws.stack import build_aws_stack

    return build_aws_stack(ctx.settings).plan()


def _openstack_plan(ctx: Context, image: Path | None, convert: bool) -> list[Any]:
    try:
        return openstack.plan(ctx, image, convert)
    except NotFoundError as exc:  # the image is not in Glance yet, say: `up` will say so and stop
        click.echo(f"  (cannot plan: {exc})")
        return []


def _embedded_up(ctx: Context, image: Path | None, convert: bool) -> None:
    from hybrid.local import web_vm

    with progress("setting up") as on_poll:
        service = web_vm.up(ctx.settings, image, report=click.echo, on_poll=on_poll, convert=convert)
    click.echo("stages: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in service.stages.items()))
    click.echo(f"web tier: {service.url} (reach it from network namespace {service.namespace}, e.g. "
               f"`sudo hybrid workload --namespace {service.namespace} --url {service.url} ...`)")


@click.command("down")
@yes_option
@dry_run_option
@pass_context
def both_down(ctx: Context, yes: bool, dry_run: bool) -> None:
    """Tear both clouds down: OpenStack first (the web tier stops sending work), then the AWS side.

    On the embedded default this also deletes the web-tier image the stack uploaded, stops the relay and the
    local AWS server, and fails (exit 1) naming any process of the state folder left running; it never asks.
    On real clouds it first lists what it will delete on both (buckets with their object counts) and asks once
    (--yes does not ask); --dry-run only lists."""
    embedded = ctx.settings.aws.target == "emulator"
    real = real_aws(ctx.settings) + real_openstack(ctx.settings)
    if dry_run or (real and not yes and not embedded):
        listed = _echo_previews(ctx, delete_image=embedded)
        if dry_run:
            sys.exit(listed)
        confirm(f"delete all of this of stack {ctx.settings.stack}", real, yes)
    if embedded:
        from hybrid.local import web_vm

        started = time.monotonic()
        leftovers = web_vm.down(ctx.settings, report=click.echo)
        if leftovers:
            raise HybridError(f"left running: {'; '.join(leftovers)}")
        click.echo(f"stack {ctx.settings.stack}: down in {time.monotonic() - started:.1f} s")
        return
    openstack.down(ctx, yes=True)  # asked above, for both clouds
    aws.down(ctx, yes=True)


def _echo_previews(ctx: Context, delete_image: bool) -> int:
    """Both clouds' `down` previews, OpenStack first; a cloud that cannot be asked says why in its place. Returns
    the worst exit code of the two (0 when both were listed)."""
    codes = [0]
    for title, preview in (("OpenStack", lambda: openstack.down_preview(ctx, delete_image)),
                           ("AWS", lambda: aws.down_preview(ctx))):
        try:
            echo_preview(title, ctx.settings.stack, preview())
        except HybridError as exc:
            click.echo(f"{title}, stack {ctx.settings.stack}: cannot list ({exc})")
            codes.append(exc.exit_code)
    return max(codes)


@click.command("status")
@json_option
@pass_context
def both_status(ctx: Context, as_json: bool) -> None:
    """Both clouds' resources, each whatever the other says; exit 3 if anything is missing on either (or a cloud
    cannot be reached: its error is shown in its place, and the exit code is the worst of the two)."""
    stack = ctx.settings.stack  # a bad setting is one error, not one per cloud
    reports: dict[str, Any] = {}
    codes = []
    for key, title, report_of in (("aws", "AWS", aws.status_report), ("openstack", "OpenStack",
                                                                       openstack.status_report)):
        try:
            rows, named = report_of(ctx)
            reports[key] = {**named, "resources": rows}
            codes.append(status_exit_code(rows))
        except HybridError as exc:
            reports[key] = {"error": str(exc), "exit_code": exc.exit_code}
            codes.append(exc.exit_code)
        if not as_json:
            click.echo(f"== {title}")
            if "error" in reports[key]:
                click.secho(f"error: {reports[key]['error']}", fg="red", err=True)
            else:
                echo_table(reports[key]["resources"], STATUS_COLUMNS)
    if as_json:
        echo_json({"stack": stack, **reports})
    sys.exit(max(codes))


COMMANDS = (both_up, both_down, both_status)
