"""``hybrid config``: inspect settings, and where each value came from."""
from __future__ import annotations

import os

import click

from hybrid.cli.context import Context, pass_context, profile_region
from hybrid.cli.output import echo_json
from hybrid.core import settings as settings_module


@click.group()
def config() -> None:
    """Inspect settings."""


def load_with_origins(ctx: Context) -> settings_module.Loaded:
    """The settings of this command line with each value's origin, the AWS profile's region included."""
    return settings_module.load_with_origins(ctx.config, os.environ, ctx.overrides, ctx.user_data,
                                             profile_region=profile_region)


@config.command("show")
@click.option("--origin", is_flag=True,
              help="say where each value came from: default, file PATH, env VARIABLE (HYBRID_*, AWS_REGION, "
                   "OS_CLOUD...), command line, or profile NAME")
@click.option("--json", "as_json", is_flag=True,
              help="JSON on stdout (the default; with --origin: each key's value and origin)")
@pass_context
def config_show(ctx: Context, origin: bool, as_json: bool) -> None:
    """Print the effective settings as JSON (what instances receive as user data); --origin adds their sources."""
    loaded = load_with_origins(ctx)
    if not origin:
        echo_json(loaded.settings.to_dict())
    elif as_json:
        echo_json({key: {"value": value, "origin": source} for key, value, source in loaded.rows()})
    else:
        for key, value, source in loaded.rows():
            click.echo(f"{key} = {settings_module.toml_value(value)}  ({source})")


@config.command("example")
def config_example() -> None:
    """Print a documented hybrid.toml with every key at its default."""
    click.echo(settings_module.example_toml(), nl=False)


@config.command("keys")
def config_keys() -> None:
    """List every setting with its default, environment variable and meaning."""
    variables = {key: name for name, key in settings_module.variable_names().items()}
    for key, default, help_text in settings_module.describe():
        click.echo(f"{key} = {default!r}  ({variables[key]})\n    {help_text}")
