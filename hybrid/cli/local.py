"""``hybrid local``: the whole service on this machine."""
from __future__ import annotations

import sys

import click

from hybrid.cli.context import EXIT_NOT_RUNNING, Context, pass_context
from hybrid.cli.output import STATUS_COLUMNS, echo_json, echo_table
from hybrid.core.errors import HybridError


@click.group()
def local() -> None:
    """The whole service on this machine: local AWS server, stack, autoscaler, web tier, workers.

    \b
    hybrid local up        start everything not yet running; prints the URL
    hybrid local status    processes and cloud resources
    hybrid local down      stop everything, remove the stack; nothing is left
    """


@local.command("up")
@pass_context
def local_up(ctx: Context) -> None:
    """Start the local AWS server, set up the stack, start the autoscaler and the web tier (idempotent)."""
    from hybrid.local import stack as local_stack

    url = local_stack.up(ctx.settings, ctx.child_args(), report=click.echo)
    click.echo(f"web tier: {url}/   (try: curl -F inputFile=@cat.jpg {url}/)")


@local.command("down")
@pass_context
def local_down(ctx: Context) -> None:
    """Stop the web tier and autoscaler, remove the stack (instances first), stop the local server."""
    from hybrid.local import stack as local_stack

    leftovers = local_stack.down(ctx.settings, report=click.echo)
    if leftovers:
        raise HybridError(f"{len(leftovers)} process(es) of {ctx.settings.state_path} are still running")
    click.echo("local stack is down: no process and no resource left")


@local.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_context
def local_status(ctx: Context, as_json: bool) -> None:
    """Processes of the local stack and the stack's cloud resources. Exit 3 if the web tier is not running."""
    from hybrid.local import stack as local_stack

    processes = local_stack.status(ctx.settings)
    resources = local_stack.resources(ctx.settings)
    if as_json:
        echo_json({"processes": processes, "resources": resources})
    else:
        echo_table(processes, ("process", "pid", "state", "detail"))
        if resources:
            click.echo()
            echo_table(resources, STATUS_COLUMNS)
    if not any(p["process"] == "web" and p["state"] == "running" for p in processes):
        sys.exit(EXIT_NOT_RUNNING)
