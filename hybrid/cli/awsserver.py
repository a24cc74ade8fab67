"""``hybrid emulator``: the local AWS-compatible server of this state folder."""
from __future__ import annotations

import shlex
import sys
import time

import click

from hybrid.cli.context import EXIT_NOT_RUNNING, Context, pass_context
from hybrid.cli.output import echo_json, progress
from hybrid.core.errors import EmulatorNotRunning


@click.group()
def emulator() -> None:
    """The local AWS-compatible server (moto with the project's SQS fixes) on 127.0.0.1.

    It keeps all state in memory: stopping it forgets every bucket, queue and instance.
    """


@emulator.command("start")
@pass_context
def emulator_start(ctx: Context) -> None:
    """Start the server on a free port (does nothing if it already runs) and print its URL."""
    from hybrid.local.awsserver import start_emulator

    with progress("starting local AWS server") as on_poll:
        info = start_emulator(ctx.settings.state_path, on_poll=on_poll)
    click.echo(f"local AWS server running at {info.url} (pid {info.pid}, log {info.log_path})")


@emulator.command("stop")
@pass_context
def emulator_stop(ctx: Context) -> None:
    """Stop the server (its state is lost). Fine if it is not running."""
    from hybrid.local.awsserver import stop_emulator

    stopped = stop_emulator(ctx.settings.state_path)
    click.echo(f"stopped local AWS server (pid {stopped.pid})" if stopped else "local AWS server was not running")


@emulator.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_context
def emulator_status_command(ctx: Context, as_json: bool) -> None:
    """Say whether the server runs; exit 3 if it does not."""
    from hybrid.local.awsserver import emulator_status
    from hybrid.core.procs import rss_mb

    info = emulator_status(ctx.settings.state_path)
    report = {"running": bool(info)}
    if info:
        report.update(url=info.url, pid=info.pid, uptime_s=round(time.time() - info.started_at, 1),
                      rss_mb=rss_mb(info.pid), log=info.log_path)
    if as_json:
        echo_json(report)
    elif info:
        click.echo(f"running at {info.url} (pid {info.pid}, up {report['uptime_s']} s, {report['rss_mb']:.0f} MB)")
    else:
        click.echo("not running: start it with `hybrid emulator start`")
    if not info:
        sys.exit(EXIT_NOT_RUNNING)


@emulator.command("env")
@click.option("--shell", type=click.Choice(["sh", "fish"]), default="sh", show_default=True,
              help="the syntax of the lines (sh also suits bash and zsh)")
@pass_context
def emulator_env(ctx: Context, shell: str) -> None:
    """Print the shell lines that point the AWS CLI (or any AWS SDK) at the running server; exit 3 if it does not run.

    \b
    eval "$(hybrid emulator env)"        # sh, bash, zsh
    hybrid emulator env --shell fish | source
    aws s3 ls

    The credentials are the fixed test values the project itself uses on the local server, which accepts any:
    they are not secrets and open nothing on AWS.
    """
    from hybrid.core.localserver import client_environment

    try:
        variables = client_environment(ctx.settings.state_path, ctx.settings.aws.region)
    except EmulatorNotRunning as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_NOT_RUNNING)
    click.echo(f"# the local AWS server of {ctx.settings.state_path}; "
               "fixed test credentials that it accepts, not secrets")
    for name, value in variables.items():
        click.echo(shell_assignment(shell, name, value))


def shell_assignment(shell: str, name: str, value: str) -> str:
    """One exported variable in the syntax of `shell` ("sh" or "fish"), the value quoted where it needs it."""
    if shell == "fish":
        return f"set -gx {name} {shlex.quote(value)};"
    return f"export {name}={shlex.quote(value)}"
