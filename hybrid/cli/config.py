"""``hybrid config``: inspect settings."""
from __future__ import annotations

import click

from hybrid.cli.context import Context, pass_context
from hybrid.cli.output import echo_json
from hybrid.core import settings as settings_module


@click.group()
def config() -> None:
    """Inspect settings."""


@config.command("show")
@pass_context
def config_show(ctx: Context) -> None:
    """Print the effective settings as JSON (what instances receive as user data)."""
    echo_json(ctx.settings.to_dict())


@config.command("example")
def config_example() -> None:
    """Print a documented hybrid.toml with every key at its default."""
    click.echo(settings_module.example_toml(), nl=False)


@config.command("keys")
def config_keys() -> None:
    """List every setting with its default and meaning."""
    for key, default, help_text in settings_module.describe():
        click.echo(f"{key} = {default!r}\n    {help_text}")
