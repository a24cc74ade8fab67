"""The ``hybrid`` group: top-level options, logging, the console-script entry, and every command group below it."""
from __future__ import annotations

import logging
import sys
from typing import Any, Sequence

import click

from hybrid.cli import aws, awsserver, batch, both, config, image, local, openstack, services, tools, workload
from hybrid.cli.classify import classify
from hybrid.cli.context import Context
from hybrid.core import settings as settings_module
from hybrid.core.errors import ConfigError, HybridError

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


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config", "config", metavar="PATH", help="settings file (default: ./hybrid.toml if present)")
@click.option("--stack", metavar="NAME", help="stack name; derives every resource name and tag")
@click.option("--state-dir", metavar="DIR", help="folder for local state (default .hybrid)")
@click.option("--set", "assignments", metavar="SECTION.KEY=VALUE", multiple=True,
              help="override one setting; repeatable")
@click.option("-v", "--verbose", count=True, help="more log output (-vv for SDK debug)")
@click.version_option(package_name="hybrid")
@click.pass_context
def main(ctx: click.Context, config: str | None, stack: str | None, state_dir: str | None,
         assignments: Sequence[str], verbose: int) -> None:
    """hybrid: set up, run and tear down an image-recognition service that spans OpenStack and AWS."""
    _configure_logging(verbose)
    overrides: dict[str, Any] = {"stack": stack, "state_dir": state_dir}
    try:
        overrides.update(settings_module.parse_assignment(a) for a in assignments)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    ctx.obj = Context(config, overrides, list(assignments))


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose < 2:
        for noisy in ("botocore", "boto3", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run() -> None:
    """Console-script entry: project errors become one clear line and a trustworthy exit code."""
    try:
        main.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except HybridError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)


for _command in (config.config, awsserver.emulator, aws.aws, openstack.openstack, image.image, *both.COMMANDS,
                 local.local, services.models, services.worker, services.autoscale, services.web, classify,
                 batch.submit, batch.results, tools.demo, tools.bench, tools.samples, workload.workload):
    main.add_command(_command)
