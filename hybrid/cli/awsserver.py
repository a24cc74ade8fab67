"""``hybrid emulator``: the local AWS-compatible server of this state folder."""
from __future__ import annotations

import sys
import time

import click

from hybrid.cli.context import EXIT_NOT_RUNNING, Context, pass_context
from hybrid.cli.output import echo_json, progress


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
