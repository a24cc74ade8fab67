"""What every command receives: the top-level options, with the settings loaded on first use, and the exit codes.

Every command takes it the same way, with ``@pass_context``. A command run on its own (a test's ``CliRunner`` on one
group, say) gets a fresh one: settings from ./hybrid.toml and HYBRID_* variables.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from hybrid.core import settings as settings_module
from hybrid.core.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


class Context:
    """What the top-level options decided; settings are loaded on first use so `--help` never fails on config."""

    def __init__(self, config: str | None = None, overrides: dict[str, Any] | None = None,
                 assignments: list[str] | None = None, verbose: int = 0) -> None:
        self.config, self.overrides, self.verbose = config, overrides or {}, verbose
        self.assignments: list[str] = assignments or []
        self.user_data: str | None = None
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = settings_module.load(self.config, os.environ, self.overrides, self.user_data,
                                                  profile_region=profile_region)
        return self._settings

    def child_args(self) -> list[str]:
        """The global options that give a child process the same settings as this one."""
        settings = self.settings
        args = ["--state-dir", str(settings.state_path.resolve()), "--stack", settings.stack]
        if self.config:
            args += ["--config", str(Path(self.config).resolve())]
        for assignment in self.assignments:
            args += ["--set", assignment]
        return args


def profile_region(profile: str) -> tuple[str | None, str]:
    """The AWS profile's region for the settings' region chain (asked only on target aws, where boto3 loads)."""
    from hybrid.aws.session import profile_region as lookup

    return lookup(profile)


pass_context = click.make_pass_decorator(Context, ensure=True)
