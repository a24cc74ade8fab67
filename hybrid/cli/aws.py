"""``hybrid aws``: the stack's AWS side on AWS or on the local AWS server (the same code path)."""
from __future__ import annotations

import time

import click

from hybrid.cli.context import Context, pass_context
from hybrid.cli.output import echo_applied, echo_json, echo_plan, echo_status, progress


@click.group()
def aws() -> None:
    """The stack's AWS side: S3 buckets, SQS queues with dead-letter queues, security group, key pair, AMI and
    (on AWS) the workers' instance profile and the web-tier machine's IAM user.

    With aws.target = emulator (the default) the calls go to the local server; with aws.target = aws they go to
    AWS with your usual credentials. The code path is the same.
    """


@aws.command("plan")
@pass_context
def aws_plan(ctx: Context) -> None:
    """Show what `up` would change, without changing anything."""
    from hybrid.aws.stack import build_aws_stack

    echo_plan(build_aws_stack(ctx.settings).plan())


@aws.command("up")
@pass_context
def aws_up(ctx: Context) -> None:
    """Create or converge every AWS resource of the stack. Safe to run again: a second run changes nothing."""
    up(ctx)


@aws.command("down")
@pass_context
def aws_down(ctx: Context) -> None:
    """Terminate the stack's instances (and wait until they are gone), then delete its buckets (emptied first),
    queues, security group, key pair, instance profile, web-tier user and its keys. Only resources tagged for the
    stack are touched; safe after a half-finished `up` and safe to repeat."""
    down(ctx)


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
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_context
def aws_status(ctx: Context, as_json: bool) -> None:
    """Every resource of the stack with its state, queue depths and instance counts. Exit 3 if any is missing."""
    status(ctx, as_json)


def up(ctx: Context) -> None:
    from hybrid.aws.stack import build_aws_stack

    started = time.monotonic()
    echo_applied(ctx.settings.stack, build_aws_stack(ctx.settings).up(report=click.echo), started)


def down(ctx: Context) -> None:
    from hybrid.aws.stack import build_aws_stack

    started = time.monotonic()
    with progress("terminating instances") as on_poll:
        build_aws_stack(ctx.settings).down(report=click.echo, on_poll=on_poll)
    click.echo(f"stack {ctx.settings.stack}: down in {time.monotonic() - started:.1f} s")


def status(ctx: Context, as_json: bool = False) -> None:
    from hybrid.aws.stack import build_aws_stack

    rows = build_aws_stack(ctx.settings).status()
    echo_status(rows, as_json, {"stack": ctx.settings.stack, "target": ctx.settings.aws.target})
