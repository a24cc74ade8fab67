"""``hybrid aws``: the stack's AWS side on AWS or on the local AWS server (the same code path)."""
from __future__ import annotations

import sys
import time
from typing import Any

import click

from hybrid.cli.context import Context, pass_context
from hybrid.cli.output import (detailed_exitcode_option, echo_applied, echo_json, echo_plan, echo_status, json_option,
                               plan_exit_code, progress)
from hybrid.cli.safety import confirm_down, confirm_plan, dry_run_option, real_aws, yes_option


@click.group()
def aws() -> None:
    """The stack's AWS side: S3 buckets, SQS queues with dead-letter queues, security group, key pair, AMI and
    (on AWS) the workers' instance profile and the web-tier machine's IAM user.

    With aws.target = emulator (the default) the calls go to the local server; with aws.target = aws they go to
    AWS with your usual credentials. The code path is the same.
    """


@aws.command("plan")
@json_option
@detailed_exitcode_option
@pass_context
def aws_plan(ctx: Context, as_json: bool, detailed_exitcode: bool) -> None:
    """Show what `up` would change, without changing anything."""
    from hybrid.aws.stack import build_aws_stack

    changes = build_aws_stack(ctx.settings).plan()
    echo_plan(changes, as_json, header(ctx))
    sys.exit(plan_exit_code(changes, detailed_exitcode))


@aws.command("up")
@yes_option
@pass_context
def aws_up(ctx: Context, yes: bool) -> None:
    """Create or converge every AWS resource of the stack. Safe to run again: a second run changes nothing.

    On real AWS it first shows the plan and asks (--yes does not ask)."""
    up(ctx, yes)


@aws.command("down")
@yes_option
@dry_run_option
@pass_context
def aws_down(ctx: Context, yes: bool, dry_run: bool) -> None:
    """Terminate the stack's instances (and wait until they are gone), then delete its buckets (emptied first),
    queues, security group, key pair, instance profile, web-tier user and its keys. Only resources tagged for the
    stack are touched; safe after a half-finished `up` and safe to repeat.

    On real AWS it first lists what it will delete (buckets with their object counts) and asks (--yes does not
    ask); --dry-run only lists."""
    down(ctx, yes, dry_run)


@aws.command("web-policy")
@click.option("--account", default="<account-id>", show_default=True, help="the AWS account id to put in the ARNs")
@pass_context
def aws_web_policy(ctx: Context, account: str) -> None:
    """Print the least-privilege IAM policies of the web-tier machine (it runs on OpenStack, outside AWS), by name:
    its web tier's and its autoscaler's.

    On AWS, `hybrid aws up` puts both on the IAM user <stack>-web-tier (aws.instance_profile); make its access key
    with `aws iam create-access-key --user-name <stack>-web-tier` and pass the credentials file to
    `hybrid openstack up --credentials FILE`. Elsewhere, attach them to an IAM user of its own.
    """
    from hybrid.aws.identity import web_machine_policies
    from hybrid.aws.stack import manages_instance_profile, stack_names

    aws = ctx.settings.aws
    echo_json(web_machine_policies(stack_names(ctx.settings), aws.region, account, aws.instance_type, aws.ami_id,
                                   manages_instance_profile(ctx.settings)))


@aws.command("status")
@json_option
@pass_context
def aws_status(ctx: Context, as_json: bool) -> None:
    """Every resource of the stack with its state, queue depths and instance counts. Exit 3 if any is missing."""
    status(ctx, as_json)


def header(ctx: Context) -> dict[str, Any]:
    """What names the AWS side in a JSON report."""
    return {"stack": ctx.settings.stack, "target": ctx.settings.aws.target, "region": ctx.settings.aws.region}


def up(ctx: Context, yes: bool = False) -> None:
    """Applies the stack's plan; on real AWS (unless ``yes``) shows it and asks first."""
    from hybrid.aws.stack import build_aws_stack

    started = time.monotonic()
    stack = build_aws_stack(ctx.settings)
    confirm_plan(ctx.settings.stack, stack.plan, real_aws(ctx.settings), yes)
    echo_applied(ctx.settings.stack, stack.up(report=click.echo), started)


def down_preview(ctx: Context) -> list[str]:
    from hybrid.aws.stack import build_aws_stack

    return build_aws_stack(ctx.settings).down_preview()


def down(ctx: Context, yes: bool = False, dry_run: bool = False) -> None:
    """Tears the AWS side down; on real AWS (unless ``yes``) lists what it would delete and asks first; with
    ``dry_run`` only lists."""
    from hybrid.aws.stack import build_aws_stack

    if not confirm_down("AWS", ctx.settings.stack, lambda: down_preview(ctx), real_aws(ctx.settings), yes, dry_run):
        return
    started = time.monotonic()
    with progress("terminating instances") as on_poll:
        build_aws_stack(ctx.settings).down(report=click.echo, on_poll=on_poll)
    click.echo(f"stack {ctx.settings.stack}: down in {time.monotonic() - started:.1f} s")


def status_report(ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The AWS side's status rows and what names it."""
    from hybrid.aws.stack import build_aws_stack

    return build_aws_stack(ctx.settings).status(), header(ctx)


def status(ctx: Context, as_json: bool = False) -> None:
    rows, named = status_report(ctx)
    echo_status(rows, as_json, named)
