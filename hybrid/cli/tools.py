"""Operator tools: ``hybrid demo`` (the main job on this machine), ``hybrid bench`` and ``hybrid samples``."""
from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import click

from app_tier.runtimes import RUNTIMES
from hybrid.cli.context import Context, pass_context
from hybrid.cli.output import echo_json, json_option
from hybrid.core.errors import ConfigError, HybridError

if TYPE_CHECKING:
    from hybrid.tools.demo import DemoResult

DEMO_STATE_DIR = ".hybrid/demo"
OPENSTACK_DEMO_SETTINGS = ("web.bind=127.0.0.1:8000", "scaling.poll_interval=1.0")
"""The OpenStack demo's web tier listens on its VM's port 8000 (on every interface there), and its autoscaler ticks
once a second: in the VM every call costs about ten times its native CPU."""
Size = tuple[int, int]


# ---------------------------------------------------------------- demo

@click.command("demo")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="report folder (default reports/demo-<time>)")
@click.option("--count", type=click.IntRange(1, 1000), default=100, show_default=True, help="sample images")
@click.option("--concurrency", type=click.IntRange(1, 500), default=100, show_default=True)
@click.option("--openstack", "on_openstack", is_flag=True,
              help="the web tier as a VM on the local OpenStack fixture, from the baked and exported web-tier AMI, "
                   "reached through its floating IP (needs root and `devstack/minicloud.sh up`; about 3 minutes "
                   "with the image cache, 5 with a bake)")
@pass_context
def demo(ctx: Context, report_dir: Path | None, count: int, concurrency: int, on_openstack: bool) -> None:
    """The main job on this machine: local stack up, 100 concurrent requests from 0 workers, the same again from
    the cache, a report with a timeline picture, and everything down again. Exit 0 only if every answer was right
    and the fleet came back to zero.

    
    With --openstack the web tier and its autoscaler run in a real VM on the local OpenStack
    (devstack/minicloud.sh): the web-tier AMI is baked in a VM (or taken from the image cache),
    exported as on AWS, uploaded to Glance and booted with a key pair, a security group and a
    floating IP; the requests go to that floating IP from inside the fixture's network namespace;
    `hybrid openstack check` runs on the VM over SSH; the report adds each stage's time."""
    from hybrid.tools.demo import own_stack_settings, run_demo, run_openstack_demo

    kind = "demo-os" if on_openstack else "demo"
    assignments = [*(OPENSTACK_DEMO_SETTINGS if on_openstack else ()), *ctx.assignments]
    settings, args = own_stack_settings(ctx.overrides, assignments, kind, DEMO_STATE_DIR)
    report_dir = report_dir or Path("reports") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    if on_openstack:
        result = run_openstack_demo(settings, report_dir, count, concurrency, report=click.echo)
    else:
        result = run_demo(settings, args, report_dir, count, concurrency, report=click.echo)
    _echo_demo_summary(result, report_dir)
    if not result.passed:
        raise HybridError("the demo did not pass: see the summary above")
    click.echo("demo passed")


def _echo_demo_summary(result: DemoResult, report_dir: Path) -> None:
    click.echo("\n== summary")
    for name in ("cold", "warm"):
        run = result.summaries.get(name, {})
        if run:
            click.echo(f"{name}: {run['correct']}/{run['requests']} right, average "
                       f"{run['latency_s']['avg']:.3f} s per request, p95 {run['latency_s']['p95']:.3f} s")
    zero = f"{result.time_to_zero:.1f} s" if result.time_to_zero is not None else "never"
    click.echo(f"fleet: up to {result.max_fleet} workers, back to 0 {zero} after the last answer")
    if result.stages:
        click.echo("stages: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.stages.items()))
    if result.first_answer_s is not None:
        click.echo(f"from nothing to the first answer: {result.first_answer_s:.1f} s")
    click.echo(f"report: {report_dir}/report.json, {report_dir}/timeline.png")


# ---------------------------------------------------------------- bench

class BenchError(click.ClickException):
    """A failure that stops the command with one line and the project's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@click.group("bench")
def bench() -> None:
    """Benchmarks that compare two ways of doing the same work in one run."""


@bench.command("compare")
@click.option("--count", type=click.IntRange(min=1, max=500), default=40, show_default=True,
              help="images classified both ways (each sent once: no cache hits)")
@click.option("--concurrency", type=click.IntRange(min=1, max=500), default=20, show_default=True,
              help="client threads sending at once in the pipeline run")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=2, show_default=True,
              help="fixed app-tier fleet (scaling.min_workers = max_workers); 2 = this machine's cores")
@click.option("--out", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write every figure as JSON to this file")
@json_option
@pass_context
def compare(ctx: Context, count: int, concurrency: int, workers: int, json_path: Path | None, as_json: bool) -> None:
    """Classify the same images in-process and through the whole local pipeline; print both side by side.

    \b
    In-process: load_classifier("onnx", threads=1), batches of worker.batch_size.
    Pipeline: the local stack as `hybrid demo` starts it, WORKERS workers fixed,
    COUNT requests CONCURRENCY at a time, plus 10 sequential requests with JSON timings.
    Prints the throughput ratio and PASS/FAIL against the goal (at least 80 %), and
    the CPU each process group used. The stack is always torn down.
    Exit 0 when the run completed (whatever the ratio), 1 if an answer was wrong or
    failed or the run could not complete, 2 for bad usage.
    """
    from hybrid.tools.bench import BenchResult, bench_settings, format_report, run_bench

    if json_path is not None and not json_path.resolve().parent.is_dir():
        raise click.BadParameter(f"folder {json_path.resolve().parent} does not exist", param_hint="--out")
    try:
        settings, child_args = bench_settings(ctx.overrides, ctx.assignments, workers)
    except HybridError as exc:
        raise BenchError(str(exc), exc.exit_code) from None
    result = BenchResult(count, concurrency, workers, os.cpu_count() or 1, secrets.randbelow(1_000_000),
                         settings.stack, str(settings.state_path.resolve()))
    run_bench(settings, child_args, result)
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo("\n".join(format_report(result)))
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
        click.echo(f"figures written to {json_path}", err=as_json)
    sys.exit(result.exit_code)


# ---------------------------------------------------------------- samples

class SizeRangeType(click.ParamType):
    """``MIN..MAX`` in pixels, e.g. ``240..640``."""

    name = "MIN..MAX"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Size:
        if isinstance(value, tuple):
            return value  # type: ignore[return-value]
        match = re.fullmatch(r"\s*(\d+)\s*\.\.\s*(\d+)\s*", str(value))
        if not match:
            self.fail(f"{value!r} is not MIN..MAX in pixels, e.g. 240..640", param, ctx)
        return int(match.group(1)), int(match.group(2))


@click.group("samples")
def samples() -> None:
    """Sample images for trying the service end to end."""


@samples.command("sample")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", type=click.IntRange(min=1), default=100, show_default=True, help="how many images")
@click.option("--seed", type=int, default=0, show_default=True, help="same seed, same bytes")
@click.option("--size-range", type=SizeRangeType(), default="240..640", show_default=True,
              help="both sides of every image lie in this range of pixels")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True,
              help="runtime that labels the images; use the workers' (worker.runtime)")
@click.option("--force", is_flag=True, help="replace an earlier sample set in DIR (other files are never deleted)")
@click.option("--format", "csv_format", type=click.Choice(["hybrid", "course"]), default="hybrid", show_default=True,
              help="header of DIR.csv: name,label (hybrid) or the course's Image,Results (course)")
def sample_command(directory: Path, count: int, seed: int, size_range: Size, runtime: str, force: bool,
                   csv_format: str) -> None:
    """Write COUNT distinct JPEGs made from real photos into DIR (images only), with DIR.csv beside it (the
    label the model answers for each file, name without extension) and DIR.manifest.json (how each image was made).

    \b
    Sources: photos shipped by scikit-image, scikit-learn and matplotlib; nothing is downloaded.
    Refuses a DIR that holds files unless --force.
    """
    from app_tier.classifier import load_classifier
    from hybrid.tools.samples import FolderNotEmptyError, build_samples, check_arguments, check_folder, expected_path

    started = time.monotonic()
    try:
        check_arguments(count, size_range, csv_format)
        check_folder(directory, force)
    except (ConfigError, FolderNotEmptyError) as exc:
        raise click.UsageError(str(exc)) from None
    classifier = load_classifier(runtime, threads=1)
    with _progress_bar(count) as on_progress:
        made = build_samples(directory, count, seed, size_range, runtime, force=force, classifier=classifier,
                             on_progress=on_progress, csv_format=csv_format)
    sources = sorted({sample.variant.source for sample in made})
    click.echo(f"wrote {len(made)} images to {directory} from {len(sources)} sources ({', '.join(sources)}); "
               f"labels by {classifier.model_id} on {classifier.runtime} in {expected_path(directory)}; "
               f"{time.monotonic() - started:.1f} s")


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int], None]]:
    """tqdm on stderr, drawn only on a terminal; yields the callback that advances it."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="sample images", unit="img", file=sys.stderr, leave=False, disable=None)
    try:
        yield bar.update
    finally:
        bar.close()
