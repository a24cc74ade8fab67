"""``hybrid up``, ``down`` and ``status``: both clouds in the order that keeps the service whole."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from hybrid.cli import aws, openstack
from hybrid.cli.context import Context, pass_context


@click.command("up")
@openstack.image_option
@openstack.convert_option
@openstack.credentials_option
@openstack.ssh_user_option
@pass_context
def both_up(ctx: Context, image: Path | None, convert: bool, credentials: Path | None, ssh_user: str) -> None:
    """Set up both clouds: the AWS side first (queues and buckets the web tier needs), then OpenStack."""
    aws.up(ctx)
    openstack.up(ctx, image, convert, credentials, ssh_user)


@click.command("down")
@pass_context
def both_down(ctx: Context) -> None:
    """Tear both clouds down: OpenStack first (the web tier stops sending work), then the AWS side."""
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
