"""The one exit-code table (0 ok, 1 failure, 2 usage or settings, 3 not running or not found), for every command of
the tree: help is 0, a flag it does not have or a bad setting is 2 with one error line. Failures (1) and not running
or not found (3) of each kind are run in tests/integration/test_cli_mistakes.py and the commands' own tests."""
from __future__ import annotations

import click
import pytest

from hybrid.cli import root
from hybrid.core.errors import (ConfigError, EmulatorNotRunning, HybridError, NotFoundError, RegionError,
                                UnreachableError)


def leaf_commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += leaf_commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


COMMANDS = leaf_commands(root.main)


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ended:
        root.run(list(args))
    out, err = capsys.readouterr()
    return ended.value.code, out, err


def test_the_tree_is_all_there():
    assert len(COMMANDS) >= 35 and ("aws", "down") in COMMANDS and ("status",) in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_command_exits_0_on_help_and_2_on_a_flag_it_lacks(capsys, path):
    code, out, _ = run(capsys, *path, "--help")
    assert code == 0 and out.startswith(f"Usage: hybrid {' '.join(path)}")
    code, _, err = run(capsys, *path, "--no-such-flag")
    assert code == 2 and "Error: No such option '--no-such-flag'." in err


NO_SETTINGS = {("models", "prepare"), ("classify",), ("samples", "sample"), ("config", "example"), ("config", "keys")}
OWN_STACK = {("demo",), ("bench", "compare")}
"""Commands that read no settings, and those that make their own stack's settings (and would run in full)."""
REQUIRED_ARGUMENTS = {("submit",): (".",), ("workload",): ("--url", "http://127.0.0.1:9/", "--images", "."),
                      ("image", "bake"): ("--role", "web-tier"),
                      ("image", "user-data"): ("--role", "web-tier", "--boot")}
ARGUMENTS_FIRST = {("submit",), ("workload",)}
"""Commands that check their arguments (here: a folder without images, exit 2 as well) before the settings."""


@pytest.mark.parametrize("path", [p for p in COMMANDS if p not in NO_SETTINGS | OWN_STACK], ids=" ".join)
def test_every_command_that_reads_settings_exits_2_on_a_bad_one(capsys, path):
    code, _, err = run(capsys, "--set", "scaling.max_workers=lots", *path, *REQUIRED_ARGUMENTS.get(path, ()))
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    if path not in ARGUMENTS_FIRST:
        assert lines == ["error: scaling.max_workers = 'lots' is not valid: expected int"]


def test_the_error_tree_carries_the_table():
    assert HybridError.exit_code == 1
    assert ConfigError.exit_code == RegionError.exit_code == 2
    assert EmulatorNotRunning.exit_code == NotFoundError.exit_code == UnreachableError.exit_code == 3


def test_global_options_are_moved_before_the_command_but_a_command_keeps_its_own():
    assert root.hoist_global_options(["aws", "plan", "--stack", "demo", "--json"], root.main) == [
        "--stack", "demo", "aws", "plan", "--json"]
    assert root.hoist_global_options(["aws", "plan", "--set=aws.region=eu-west-1", "-v"], root.main) == [
        "--set=aws.region=eu-west-1", "-v", "aws", "plan"]
    assert root.hoist_global_options(["--stack", "a", "demo", "--count", "5"], root.main) == [
        "--stack", "a", "demo", "--count", "5"]
    assert root.hoist_global_options(["workload", "--", "--stack", "x"], root.main) == [
        "workload", "--", "--stack", "x"]
    assert root.hoist_global_options(["aws", "plan", "--stack"], root.main) == ["aws", "plan", "--stack"]
