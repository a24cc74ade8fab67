"""How commands print: JSON, tables, plans, status reports and progress bars. A leaf: it imports no command."""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import click

from hybrid.cli.context import EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE
from hybrid.core.contracts import ACTION_KEEP, Change
from hybrid.core.stack_engine import anything_missing
from hybrid.core.wait import Poll

STATUS_COLUMNS = ("kind", "name", "state", "id", "detail")

json_option = click.option("--json", "as_json", is_flag=True,
                           help="print the report as JSON on stdout (the same exit code)")
detailed_exitcode_option = click.option(
    "--detailed-exitcode", is_flag=True,
    help="exit 0 when there is nothing to change, 2 when there are changes (1 on errors), as terraform plan does")


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def echo_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def echo_plan(changes: Sequence[Change], as_json: bool = False, header: dict[str, Any] | None = None) -> None:
    """What `up` would change: one line per change that is not a keep, then the count (or JSON with ``header``)."""
    changes = pending(changes)
    if as_json:
        echo_json({**(header or {}), "changes": [change_record(c) for c in changes]})
        return
    for change in changes:
        click.echo(change.describe())
    click.echo(f"{len(changes)} change(s)" if changes else "no changes")


def pending(changes: Sequence[Change]) -> list[Change]:
    """The changes of a plan that change something (not the keeps)."""
    return [c for c in changes if c.action != ACTION_KEEP]


def echo_preview(cloud: str, stack: str, lines: Sequence[str]) -> None:
    """What a `down` would do on one cloud, one indented line per step."""
    click.echo(f"{cloud}, stack {stack}: " + (f"{len(lines)} step(s)" if lines else "nothing to delete"))
    for line in lines:
        click.echo(f"  {line}")


def change_record(change: Change) -> dict[str, Any]:
    """One change as JSON: action, kind, name and, for an update, the differences."""
    return {"action": change.action, "kind": change.resource.kind, "name": change.resource.name,
            "differences": list(change.differences)}


def plan_exit_code(changes: Sequence[Change], detailed: bool) -> int:
    """``--detailed-exitcode``: 2 when the plan has changes; otherwise 0."""
    return EXIT_USAGE if detailed and pending(changes) else EXIT_OK


def echo_applied(stack: str, changes: Sequence[Change], started: float) -> None:
    """The closing line of an `up`: how many changes it made, and in how long (``started`` on the monotonic clock)."""
    click.echo(f"stack {stack}: {len(changes)} change(s) in {time.monotonic() - started:.1f} s"
               if changes else f"stack {stack}: no changes")


def echo_status(rows: list[dict[str, Any]], as_json: bool, header: dict[str, Any]) -> None:
    """A stack's resources as a table (or JSON with ``header``); exit 3 when any is missing or not the stack's."""
    if as_json:
        echo_json({**header, "resources": rows})
    else:
        echo_table(rows, STATUS_COLUMNS)
    if status_exit_code(rows):
        sys.exit(EXIT_NOT_RUNNING)


def status_exit_code(rows: Sequence[dict[str, Any]]) -> int:
    """3 (not running) when any resource is missing or not the stack's, else 0."""
    return EXIT_NOT_RUNNING if anything_missing(rows) else EXIT_OK


@contextmanager
def progress(description: str) -> Iterator[Callable[[Poll[Any]], None]]:
    """A progress bar on stderr fed by a wait's polls: the fraction done when known, elapsed time and last state.

    Drawn from the first poll on, and only on a terminal (logs and CI get the result lines alone)."""
    from tqdm import tqdm  # only commands that wait draw a bar

    bars: list[Any] = []

    def on_poll(poll: Poll[Any]) -> None:
        if not bars:
            shape = "{percentage:3.0f}%|{bar:20}| " if poll.progress is not None else ""
            bars.append(tqdm(total=100, desc=description, file=sys.stderr, leave=False, mininterval=0.3,
                             disable=None, bar_format="{desc}: " + shape + "{elapsed} {postfix}"))
        if poll.progress is not None:
            bars[0].n = int(poll.progress * 100)
        bars[0].set_postfix_str(poll.state, refresh=False)
        bars[0].refresh()

    try:
        yield on_poll
    finally:
        for bar in bars:
            bar.close()
