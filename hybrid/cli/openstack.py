"""``hybrid openstack``: the stack's web tier on OpenStack."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from hybrid.cli.context import EXIT_NOT_RUNNING, Context, pass_context
from hybrid.cli.output import (detailed_exitcode_option, echo_applied, echo_json, echo_plan, echo_status, json_option,
                               plan_exit_code, progress)
from hybrid.cli.safety import confirm_down, confirm_plan, dry_run_option, real_openstack, yes_option
from hybrid.core.naming import IMAGE_LOGIN_USER
DEFAULT_USER = IMAGE_LOGIN_USER

ssh_user_option = click.option("--ssh-user", default=DEFAULT_USER, show_default=True,
                               help="login user of the web-tier image")
image_option = click.option("--image", "image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                            help="local web-tier disk image (qcow2 or VMDK) to upload unless Glance has it")
convert_option = click.option("--convert", is_flag=True,
                              help="convert a VMDK to qcow2 with qemu-img before uploading")
credentials_option = click.option(
    "--credentials", "credentials", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="AWS credentials file (a key scoped to this stack) to install on the server over SSH as "
         "/etc/hybrid/aws-credentials, mode 0600 (where the floating IPs are reachable: openstack.routable, or "
         "openstack.namespace as on the local fixture). SSH waits for the server's console to print its host keys "
         "and refuses any other key")


@click.group()
def openstack() -> None:
    """The stack's web tier on OpenStack: image, key pair, security group, server and floating IP.

    \b
    The cloud is openstack.cloud in clouds.yaml (default hybrid-local, the local fixture of devstack/minicloud.sh).
    hybrid openstack up --image web.qcow2   upload the image if needed, boot the server, attach a floating IP
    hybrid openstack status                 every resource and the web tier's URL
    hybrid openstack down                   delete what belongs to the stack, nothing else
    """


@openstack.command("plan")
@image_option
@convert_option
@json_option
@detailed_exitcode_option
@pass_context
def openstack_plan(ctx: Context, image: Path | None, convert: bool, as_json: bool, detailed_exitcode: bool) -> None:
    """Show what `up` would change, without changing anything."""
    changes = _stack(ctx, image, convert).plan()
    echo_plan(changes, as_json, header(ctx))
    sys.exit(plan_exit_code(changes, detailed_exitcode))


@openstack.command("up")
@image_option
@convert_option
@credentials_option
@ssh_user_option
@yes_option
@pass_context
def openstack_up(ctx: Context, image: Path | None, convert: bool, credentials: Path | None, ssh_user: str,
                 yes: bool) -> None:
    """Create or converge the web tier on OpenStack and print its URL. Safe to run again: a second run changes
    nothing. A failed run removes what it created. On a cloud other than the local fixture it first shows the plan
    and asks (--yes does not ask)."""
    up(ctx, image, convert, credentials, ssh_user, yes)


@openstack.command("down")
@click.option("--delete-image", is_flag=True, help="also delete the web-tier image if this stack uploaded it")
@yes_option
@dry_run_option
@pass_context
def openstack_down(ctx: Context, delete_image: bool, yes: bool, dry_run: bool) -> None:
    """Delete the stack's floating IP, server, security group and key pair. Only what carries the stack's marker
    is touched; safe after a half-finished `up` and safe to repeat. On a cloud other than the local fixture it first
    lists what it will delete and asks (--yes does not ask); --dry-run only lists."""
    down(ctx, delete_image, yes, dry_run)


@openstack.command("status")
@json_option
@pass_context
def openstack_status(ctx: Context, as_json: bool) -> None:
    """Every resource of the stack with its state, and the web tier's URL. Exit 3 if any is missing."""
    status(ctx, as_json)


@openstack.command("check")
@ssh_user_option
@json_option
@pass_context
def openstack_check(ctx: Context, ssh_user: str, as_json: bool) -> None:
    """SSH into the server (paramiko, the stack's key; its host key must be one its console printed) and check the
    web tier there: its systemd unit is active, /healthz answers from inside, the server's clock is within 2 s of this
    machine's, and show the unit's last log lines. Exit 3 if any check fails. Skipped (exit 0) where the cloud's
    floating IPs are not reachable from here: neither openstack.routable nor a network namespace (openstack.namespace;
    on the local fixture its own, which needs root)."""
    stack = _stack(ctx)
    skipped = stack.ssh_skip_reason()
    if skipped:
        if as_json:
            echo_json({"skipped": skipped})
        else:
            click.echo(f"check: {skipped}")
        return
    result = stack.check(ssh_user)
    if as_json:
        echo_json({"ok": result.ok, "detail": result.detail, "clock": result.clock_detail,
                   "log_lines": list(result.log_lines)})
    else:
        click.echo(f"check: {'ok' if result.ok else 'failing'}: {result.detail}")
        click.echo(f"check: {result.clock_detail}")
        click.echo("last log lines:")
        for line in result.log_lines or ("(none)",):
            click.echo(f"  {line}")
    if not result.ok:
        sys.exit(EXIT_NOT_RUNNING)


def header(ctx: Context) -> dict[str, Any]:
    """What names the OpenStack side in a JSON report."""
    return {"stack": ctx.settings.stack, "cloud": ctx.settings.openstack.cloud}


def up(ctx: Context, image: Path | None = None, convert: bool = False, credentials: Path | None = None,
       ssh_user: str = DEFAULT_USER, yes: bool = False) -> None:
    started = time.monotonic()
    stack = _stack(ctx, image, convert)
    confirm_plan(ctx.settings.stack, stack.plan, real_openstack(ctx.settings), yes)
    with progress("booting the web-tier server") as on_poll:
        changes = stack.up(report=click.echo, on_poll=on_poll)
    echo_applied(ctx.settings.stack, changes, started)
    if credentials:
        skipped = stack.ssh_skip_reason()
        click.echo(f"credentials: {skipped}" if skipped else "credentials: installed at "
                   + stack.deliver_credentials(credentials.read_bytes(), ssh_user))
    click.echo(f"web tier: {stack.url()}")


def plan(ctx: Context, image: Path | None = None, convert: bool = False) -> list[Any]:
    return _stack(ctx, image, convert).plan()


def down_preview(ctx: Context, delete_image: bool = False) -> list[str]:
    return _stack(ctx).down_preview(delete_image)


def down(ctx: Context, delete_image: bool = False, yes: bool = False, dry_run: bool = False) -> None:
    """Tears the OpenStack side down; on a real cloud (unless ``yes``) lists what it would delete and asks first;
    with ``dry_run`` only lists."""
    if not confirm_down("OpenStack", ctx.settings.stack, lambda: down_preview(ctx, delete_image),
                        real_openstack(ctx.settings), yes, dry_run):
        return
    started = time.monotonic()
    _stack(ctx).down(report=click.echo, delete_image=delete_image)
    click.echo(f"stack {ctx.settings.stack}: down in {time.monotonic() - started:.1f} s")


def status_report(ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The OpenStack side's status rows and what names it."""
    return _stack(ctx).status(), header(ctx)


def status(ctx: Context, as_json: bool = False) -> None:
    rows, named = status_report(ctx)
    echo_status(rows, as_json, named)


def _stack(ctx: Context, image: Path | None = None, convert: bool = False) -> Any:
    from hybrid.openstack.image import prepare_image
    from hybrid.openstack.stack import build_openstack_stack

    settings = ctx.settings
    source = prepare_image(image, convert, settings.state_path / "images") if image else None
    return build_openstack_stack(settings, source)
