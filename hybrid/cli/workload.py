"""``hybrid workload``: many concurrent uploads to a web tier, every answer checked."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from hybrid.cli.output import echo_json, json_option
from hybrid.core.errors import ConfigError


class WorkloadUsageError(click.ClickException):
    """Bad usage of `hybrid workload`: one line on stderr, exit 2."""

    exit_code = 2


@click.command("workload")
@click.option("--url", required=True, help="the web tier's upload URL, e.g. http://127.0.0.1:8000/")
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path),
              help="folder of images (jpg, jpeg, png, webp, gif, bmp), sent in file-name order")
@click.option("--requests", "count", type=click.IntRange(min=1), default=None,
              help="number of requests [default: one per image; more cycles through the images]")
@click.option("--concurrency", type=click.IntRange(min=1), default=100, show_default=True,
              help="threads sending at once")
@click.option("--expected", "expected_csv", type=click.Path(path_type=Path), default=None,
              help="CSV of name,label to check labels (name = file name without extension; header optional, "
                   "name,label or the course's Image,Results), e.g. DIR.csv beside `hybrid samples sample DIR`")
@click.option("--field", default="inputFile", show_default=True, help="multipart field name of the image")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write a JSON report (summary and one record per request) here [default: no report]")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
              help="seconds to wait for each answer")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="retries after a connection error, 502 or 503 (waits drawn at random up to 0.2 s, doubling "
                   "to at most 5 s: full jitter)")
@click.option("--namespace", default="", metavar="NETNS",
              help="send from inside this network namespace (needs root): minicloud-ext reaches the local "
                   "OpenStack fixture's floating IPs, which exist nowhere else")
@click.option("--quiet", is_flag=True, help="no progress bar (it is drawn only on a terminal anyway)")
@json_option
def workload(url: str, images_dir: Path, count: int | None, concurrency: int, expected_csv: Path | None,
             field: str, report_path: Path | None, timeout: float, retries: int, namespace: str, quiet: bool,
             as_json: bool) -> None:
    """Send many concurrent image uploads to the web tier and check every "name:label" answer.

    \b
    Outcomes: correct; wrong (200 but another name or label); failed (other status, or
    no answer after the retries). Prints counts, latency avg/p50/p95/p99, total time and
    throughput, and the first wrong or failed requests.
    Exit 0 if every request was correct, 1 if any was wrong or failed, 2 for bad usage.

    \b
    Example:
      hybrid workload --url http://127.0.0.1:8000/ --images photos/ --requests 1000 \\
          --concurrency 100 --expected labels.csv --report run.json
      sudo hybrid workload --url http://172.24.4.57:8000/ --namespace minicloud-ext --images photos/
    """
    try:
        from hybrid.tools.workload import run_workload, workload_inputs  # requests: operator only

        images, expected = workload_inputs(images_dir, expected_csv, report_path)
        report = run_workload(url, images, count, concurrency, expected, field, timeout, retries, not quiet,
                              namespace)
    except ConfigError as exc:
        raise WorkloadUsageError(str(exc)) from None
    if as_json:
        echo_json({"summary": report.summary(), "examples": report.to_json()["examples"]})
    else:
        click.echo(report.format_summary())
    if report_path is not None:
        click.echo(f"report written to {report.write_json(report_path)}", err=as_json)
    sys.exit(report.exit_code)
