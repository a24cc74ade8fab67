"""The ``hybrid`` group: top-level options, logging, the console-script entry, and every command group below it."""
from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import click

from hybrid.cli import aws, awsserver, batch, both, config, image, local, openstack, services, tools, workload
from hybrid.cli.classify import classify
from hybrid.cli.context import EXIT_FAILED, Context
from hybrid.core import settings as settings_module
from hybrid.core.errors import ConfigError, HybridError
from hybrid.core.logs import TEXT_FORMAT

EPILOG = """\b
Settings come from hybrid.toml (see hybrid.example.toml), then HYBRID_* variables, then flags:
  hybrid --stack demo --set aws.region=eu-west-1 aws plan
  HYBRID_AWS_TARGET=aws hybrid aws status --json
List every key with `hybrid config keys`.

\b
Quick start on this machine (no cloud account needed):
  hybrid emulator start      # local AWS-compatible server on 127.0.0.1
  hybrid aws up              # buckets, queues, security group, key pair, AMI record
  hybrid aws status
  hybrid aws down
  hybrid emulator stop
"""


GLOBAL_VALUE_OPTIONS = ("--config", "--stack", "--state-dir", "--set", "--profile", "--os-cloud")
GLOBAL_FLAG_OPTIONS = ("-v", "-vv", "-vvv", "--verbose")
ERROR_LOG_NAME = "last-error.log"


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config", "config", metavar="PATH", help="settings file (default: ./hybrid.toml if present)")
@click.option("--stack", metavar="NAME", help="stack name; derives every resource name and tag")
@click.option("--state-dir", metavar="DIR", help="folder for local state (default .hybrid)")
@click.option("--set", "assignments", metavar="SECTION.KEY=VALUE", multiple=True,
              help="override one setting; repeatable")
@click.option("--profile", metavar="NAME", help="AWS profile of ~/.aws/config and credentials (aws.profile)")
@click.option("--os-cloud", metavar="NAME", help="cloud of clouds.yaml (openstack.cloud; else OS_CLOUD)")
@click.option("-v", "--verbose", count=True, help="more log output and tracebacks (-vv for SDK debug)")
@click.version_option(package_name="hybrid")
@click.pass_context
def main(ctx: click.Context, config: str | None, stack: str | None, state_dir: str | None,
         assignments: Sequence[str], profile: str | None, os_cloud: str | None, verbose: int) -> None:
    """hybrid: set up, run and tear down an image-recognition service that spans OpenStack and AWS.

    Global options may also follow the command (`hybrid aws plan --stack demo`).
    Exit codes: 0 ok, 1 failure, 2 usage or settings, 3 not running or not found.
    """
    _configure_logging(verbose)
    assignments = [*assignments, *_flag_assignments(profile=profile, os_cloud=os_cloud)]
    overrides: dict[str, Any] = {"stack": stack, "state_dir": state_dir}
    try:
        overrides.update(settings_module.parse_assignment(a) for a in assignments)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    ctx.obj = Context(config, overrides, list(assignments), verbose)


def _flag_assignments(profile: str | None, os_cloud: str | None) -> list[str]:
    """The shortcut flags as the settings they stand for (so child processes get them as ``--set``)."""
    pairs = (("aws.profile", profile), ("openstack.cloud", os_cloud))
    return [f"{key}={value}" for key, value in pairs if value]


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format=TEXT_FORMAT, stream=sys.stderr)
    if verbose < 2:
        for noisy in ("botocore", "boto3", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # keystoneauth warns on every call to a cloud that does not answer; the error line says it once
        logging.getLogger("keystoneauth").setLevel(logging.WARNING if verbose else logging.ERROR)


def run(argv: Sequence[str] | None = None) -> None:
    """Console-script entry: every error becomes one clear line and an exit code from the one table (0 ok, 1 failure,
    2 usage or settings, 3 not running or not found); anything unexpected also leaves its traceback in a log file."""
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv), main)
    color = False if os.environ.get("NO_COLOR") else None
    try:
        code = main.main(args=args, prog_name="hybrid", standalone_mode=False, color=color)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        code = 130
    except HybridError as exc:
        click.secho(f"error: {exc}", fg="red", err=True, color=color)
        code = exc.exit_code
    except Exception as exc:  # the last resort: one line, the traceback in a file (and on screen with -v)
        code = _report_unexpected(exc, verbose="-v" in args or "--verbose" in args or "-vv" in args, color=color)
    sys.exit(code if isinstance(code, int) else 0)


def _report_unexpected(exc: BaseException, verbose: bool, color: bool | None) -> int:
    details = "".join(traceback.format_exception(exc))
    log_path = error_log_path()
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} hybrid {' '.join(sys.argv[1:])}\n{details}",
                            encoding="utf-8")
        where = f"traceback in {log_path}"
    except OSError:
        where = "no log written"
    if verbose:
        click.echo(details, err=True, nl=False)
    first_line = (str(exc).strip().splitlines() or [""])[0]
    click.secho(f"error: unexpected {type(exc).__name__}: {first_line} ({where}; -v shows it here)",
                fg="red", err=True, color=color)
    return EXIT_FAILED


def error_log_path() -> Path:
    """Where the last unexpected error's traceback goes: $XDG_CACHE_HOME/hybrid (default ~/.cache/hybrid)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hybrid" / ERROR_LOG_NAME


def hoist_global_options(args: list[str], group: click.Group) -> list[str]:
    """Moves the top-level options written after the command (`hybrid aws plan --stack x`) to the front, where
    click expects them. An option the command itself has keeps its place; nothing after `--` moves."""
    head, rest = _split_leading_globals(args)
    leaf_options = _leaf_option_names(group, rest)
    moved: list[str] = []
    kept: list[str] = []
    index = 0
    while index < len(rest):
        token = rest[index]
        if token == "--":
            kept += rest[index:]
            break
        name = token.split("=", 1)[0]
        if name in leaf_options or not (name in GLOBAL_VALUE_OPTIONS or token in GLOBAL_FLAG_OPTIONS):
            kept.append(token)
        elif "=" in token or token in GLOBAL_FLAG_OPTIONS:
            moved.append(token)
        elif index + 1 < len(rest):
            moved += rest[index:index + 2]
            index += 1
        else:
            kept.append(token)  # a value is missing: let click say so
        index += 1
    return head + moved + kept


def _split_leading_globals(args: list[str]) -> tuple[list[str], list[str]]:
    index = 0
    while index < len(args) and args[index].startswith("-") and args[index] != "--":
        index += 2 if args[index] in GLOBAL_VALUE_OPTIONS else 1
    return args[:index], args[index:]


def _leaf_option_names(group: click.Group, rest: list[str]) -> set[str]:
    """The option names of the command that ``rest`` names (group by group), so its own options are never moved."""
    command: click.Command = group
    for token in rest:
        if token.startswith("-") or not isinstance(command, click.Group):
            break
        sub = command.commands.get(token)
        if sub is None:
            break
        command = sub
    if command is group:
        return set()
    return {name for param in command.params if isinstance(param, click.Option)
            for name in (*param.opts, *param.secondary_opts)}


for _command in (config.config, awsserver.emulator, aws.aws, openstack.openstack, image.image, *both.COMMANDS,
                 local.local, services.models, services.worker, services.autoscale, services.web, classify,
                 batch.submit, batch.results, tools.demo, tools.bench, tools.samples, workload.workload):
    main.add_command(_command)
