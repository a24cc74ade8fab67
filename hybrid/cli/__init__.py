"""The ``hybrid`` command line. Exit codes: 0 done, 1 an operation failed, 2 bad usage or config,
3 (``status`` only) the thing asked about is not running or not set up."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import click

from hybrid.core import settings as settings_module
from hybrid.core.errors import ConfigError, HybridError
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll

EXIT_NOT_RUNNING = 3

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


class Context:
    """What the top-level options decided; settings are loaded on first use so `--help` never fails on config."""

    def __init__(self, config: str | None, overrides: dict[str, Any]) -> None:
        self.config, self.overrides = config, overrides
        self.assignments: list[str] = []
        self.user_data: str | None = None
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = settings_module.load(self.config, os.environ, self.overrides, self.user_data)
        return self._settings


pass_context = click.make_pass_decorator(Context)


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
    ctx.obj = Context(config, overrides)
    ctx.obj.assignments = list(assignments)


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


# ---------------------------------------------------------------- output helpers

def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def echo_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


@contextmanager
def progress(description: str) -> Iterator[Callable[[Poll[Any]], None]]:
    """A progress bar on stderr fed by a wait's polls: the fraction done when known, elapsed time and last state.

    Drawn from the first poll on, and only on a terminal (logs and CI get the result lines alone)."""
    from tqdm import tqdm

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


# ---------------------------------------------------------------- config

@main.group()
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


# ---------------------------------------------------------------- emulator

@main.group()
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
    from hybrid.local.awsserver.process import rss_mb

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


# ---------------------------------------------------------------- aws

@main.group()
def aws() -> None:
    """The stack's AWS side: S3 buckets, SQS queues with dead-letter queues, security group, key pair, AMI and
    (on AWS) the workers' instance profile.

    With aws.target = emulator (the default) the calls go to the local server; with aws.target = aws they go to
    AWS with your usual credentials. The code path is the same.
    """


@aws.command("plan")
@pass_context
def aws_plan(ctx: Context) -> None:
    """Show what `up` would change, without changing anything."""
    from hybrid.aws.stack import build_aws_stack

    changes = [c for c in build_aws_stack(ctx.settings).plan() if c.action != "keep"]
    for change in changes:
        click.echo(change.describe())
    click.echo(f"{len(changes)} change(s)" if changes else "no changes")


@aws.command("up")
@pass_context
def aws_up(ctx: Context) -> None:
    """Create or converge every AWS resource of the stack. Safe to run again: a second run changes nothing."""
    from hybrid.aws.stack import build_aws_stack

    started = time.monotonic()
    changes = build_aws_stack(ctx.settings).up(report=click.echo)
    click.echo(f"stack {ctx.settings.stack}: {len(changes)} change(s) in {time.monotonic() - started:.1f} s"
               if changes else f"stack {ctx.settings.stack}: no changes")


@aws.command("down")
@pass_context
def aws_down(ctx: Context) -> None:
    """Terminate the stack's instances (and wait until they are gone), then delete its buckets (emptied first),
    queues, security group, key pair and instance profile. Only resources tagged for the stack are touched; safe
    after a half-finished `up` and safe to repeat."""
    from hybrid.aws.stack import build_aws_stack

    started = time.monotonic()
    with progress("terminating instances") as on_poll:
        build_aws_stack(ctx.settings).down(report=click.echo, on_poll=on_poll)
    click.echo(f"stack {ctx.settings.stack}: down in {time.monotonic() - started:.1f} s")


@aws.command("web-policy")
@click.option("--account", default="<account-id>", show_default=True, help="the AWS account id to put in the ARNs")
@pass_context
def aws_web_policy(ctx: Context, account: str) -> None:
    """Print the least-privilege IAM policy for the web tier's access key (it runs on OpenStack, outside AWS).

    Attach it to an IAM user of its own, create an access key, and pass the credentials file to
    `hybrid openstack up --credentials FILE`.
    """
    from hybrid.aws.identity import web_tier_policy
    from hybrid.aws.stack import stack_names

    echo_json(web_tier_policy(stack_names(ctx.settings), ctx.settings.aws.region, account))


@aws.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_context
def aws_status(ctx: Context, as_json: bool) -> None:
    """Every resource of the stack with its state, queue depths and instance counts. Exit 3 if any is missing."""
    from hybrid.aws.stack import build_aws_stack

    rows = build_aws_stack(ctx.settings).status()
    if as_json:
        echo_json({"stack": ctx.settings.stack, "target": ctx.settings.aws.target, "resources": rows})
    else:
        echo_table(rows, ("kind", "name", "state", "id", "detail"))
    if any(r["state"] in ("missing", "taken (not this stack's)") for r in rows):
        sys.exit(EXIT_NOT_RUNNING)


# ---------------------------------------------------------------- app tier

def _register_commands_defined_elsewhere() -> None:
    from hybrid.cli.classify import classify
    from hybrid.tools.bench import bench
    from hybrid.cli.image import image
    from hybrid.cli.openstack import openstack
    from hybrid.tools.samples import images
    from hybrid.tools.workload import workload

    for command in (classify, bench, image, images, openstack, workload):
        main.add_command(command)


_register_commands_defined_elsewhere()


@main.group()
def models() -> None:
    """The classifier's model files."""


@models.command("prepare")
def models_prepare() -> None:
    """Export the ONNX model into the cache once (workers then start without importing torch)."""
    from app_tier.classifier import load_classifier

    started = time.monotonic()
    classifier = load_classifier("auto", 1)
    click.echo(f"{classifier.model_id} ready on {classifier.runtime} in {time.monotonic() - started:.1f} s")


@main.command("worker")
@click.option("--instance-id", default="", help="the instance this worker runs on (given by the local instance "
                                                 "runner; on AWS read from the instance metadata service)")
@click.option("--user-data", type=click.Path(exists=True, dir_okay=False),
              help="settings JSON written at boot (replaces hybrid.toml)")
@pass_context
def worker_command(ctx: Context, instance_id: str, user_data: str | None) -> None:
    """Run an app-tier worker: long-poll the request queue, classify batches, store labels, reply.

    It terminates its own instance after worker.idle_timeout seconds without work and exits 0.
    """
    from app_tier.service import run_worker

    logging.getLogger("app_tier").setLevel(logging.INFO)
    ctx.user_data = user_data
    run_worker(ctx.settings, instance_id)


# ---------------------------------------------------------------- autoscaler

@main.command("autoscale")
@click.option("--ticks", type=int, default=None, help="stop after N ticks (default: run until interrupted)")
@click.option("--plot", "plot_to", metavar="PNG", help="do not scale: draw the recorded timeline into PNG and exit")
@pass_context
def autoscale_command(ctx: Context, ticks: int | None, plot_to: str | None) -> None:
    """Size the app-tier fleet from the request backlog, every scaling.poll_interval seconds.

    Wants ceil((waiting + in flight) / scaling.messages_per_worker) workers, between scaling.min_workers and
    scaling.max_workers, counting pending instances as capacity and launching the difference in one call. It never
    terminates a running worker: workers end themselves after worker.idle_timeout. It does end instances stuck
    pending, leaked (stopped) ones, and any beyond the maximum. Each tick is one log line and one row in
    <state_dir>/autoscale/<stack>-timeline.jsonl.
    """
    from hybrid.autoscale.loop import read_timeline
    from hybrid.autoscale.plot import plot_timeline

    settings = ctx.settings
    if plot_to:
        out = plot_timeline(read_timeline(settings.timeline_path), Path(plot_to), f"stack {settings.stack}")
        click.echo(f"timeline written to {out}")
        return
    import threading

    from hybrid.autoscale.service import build_autoscaler

    logging.getLogger("hybrid.autoscale").setLevel(logging.INFO)
    scaler = build_autoscaler(settings, settings.timeline_path)
    click.echo(f"autoscaling stack {settings.stack}: {settings.scaling.min_workers}..{settings.scaling.max_workers}"
               f" workers, tick every {settings.scaling.poll_interval:g} s", err=True)
    try:
        scaler.run(threading.Event(), max_ticks=ticks)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


# ---------------------------------------------------------------- web tier

@main.command("web")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="gunicorn worker processes (each with web.threads threads and its own reply queue)")
@pass_context
def web_command(ctx: Context, processes: int) -> None:
    """Serve the web tier with gunicorn on web.bind (default 127.0.0.1:8000).

    \b
    POST / or /upload with one image (multipart field inputFile or myfile) -> "name:label"
    GET /healthz, /status (JSON), /metrics (Prometheus)
    Try: curl -F inputFile=@cat.jpg http://127.0.0.1:8000/
    """
    from hybrid.aws.session import AwsClients
    from hybrid.aws.storage import QueueDriver
    from web_tier.runtime import require_stack
    from web_tier.server import WebServer

    settings = ctx.settings
    require_stack(QueueDriver(AwsClients(settings).sqs, settings.stack), settings)
    click.echo(f"web tier of stack {settings.stack} on http://{settings.web.bind}/", err=True)
    WebServer(settings, processes).run()


# ---------------------------------------------------------------- the local stack

def child_args(ctx: Context) -> list[str]:
    """The global options that give a child process the same settings as this one."""
    settings = ctx.settings
    args = ["--state-dir", str(settings.state_path.resolve()), "--stack", settings.stack]
    if ctx.config:
        args += ["--config", str(Path(ctx.config).resolve())]
    for assignment in ctx.assignments:
        args += ["--set", assignment]
    return args


@main.group()
def local() -> None:
    """The whole service on this machine: local AWS server, stack, autoscaler, web tier, workers.

    \b
    hybrid local up        start everything not yet running; prints the URL
    hybrid local status    processes and cloud resources
    hybrid local down      stop everything, remove the stack; nothing is left
    """


@local.command("up")
@pass_context
def local_up(ctx: Context) -> None:
    """Start the local AWS server, set up the stack, start the autoscaler and the web tier (idempotent)."""
    from hybrid.local import stack as local_stack

    url = local_stack.up(ctx.settings, child_args(ctx), report=click.echo)
    click.echo(f"web tier: {url}/   (try: curl -F inputFile=@cat.jpg {url}/)")


@local.command("down")
@pass_context
def local_down(ctx: Context) -> None:
    """Stop the web tier and autoscaler, remove the stack (instances first), stop the local server."""
    from hybrid.local import stack as local_stack

    leftovers = local_stack.down(ctx.settings, report=click.echo)
    if leftovers:
        raise HybridError(f"{len(leftovers)} process(es) of {ctx.settings.state_path} are still running")
    click.echo("local stack is down: no process and no resource left")


@local.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_context
def local_status(ctx: Context, as_json: bool) -> None:
    """Processes of the local stack and the stack's cloud resources. Exit 3 if the web tier is not running."""
    from hybrid.local import stack as local_stack
    from hybrid.local.awsserver import emulator_status

    processes = local_stack.status(ctx.settings)
    resources = []
    if emulator_status(ctx.settings.state_path):
        from hybrid.aws.stack import build_aws_stack

        resources = build_aws_stack(ctx.settings).status()
    if as_json:
        echo_json({"processes": processes, "resources": resources})
    else:
        echo_table(processes, ("process", "pid", "state", "detail"))
        if resources:
            click.echo()
            echo_table(resources, ("kind", "name", "state", "detail"))
    if not any(p["process"] == "web" and p["state"] == "running" for p in processes):
        sys.exit(EXIT_NOT_RUNNING)


# ---------------------------------------------------------------- batch mode

@main.command("submit")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@pass_context
def submit_command(ctx: Context, folder: Path) -> None:
    """Upload a folder of images to the input bucket for batch classification.

    The bucket notifies the request queue; workers write each label to the output bucket. Images whose bytes were
    submitted before are skipped. Collect the labels with `hybrid results --wait --out DIR`.
    """
    from hybrid.tools.batch import BatchClient, image_files

    client = BatchClient(ctx.settings)
    client.init()
    submissions = [client.upload(path) for path in image_files(folder)]
    uploaded = sum(s.uploaded for s in submissions)
    click.echo(f"submitted {uploaded} image(s); {len(submissions) - uploaded} already known (same bytes) skipped")


@main.command("results")
@click.option("--wait", "wait_s", is_flag=False, flag_value=600.0, type=float, default=None, metavar="[SECONDS]",
              help="wait until every submitted image has a result (default up to 600 s)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="write results.csv and one <name>.txt per label here")
@pass_context
def results_command(ctx: Context, wait_s: float | None, out_dir: Path | None) -> None:
    """Show (and optionally download) the labels of images submitted with `hybrid submit`. Exit 3 if some are not
    ready yet."""
    from hybrid.tools.batch import BatchClient

    client = BatchClient(ctx.settings)
    if wait_s is not None:
        with progress("waiting for batch results") as on_poll:
            client.wait(wait_s, on_poll)
    results = client.list_results()
    for result in results:
        click.echo(f"{result.name}:{result.label}" if result.label else
                   f"{result.name}: error: {result.error}" if result.error else f"{result.name}: (pending)")
    if out_dir:
        click.echo(f"wrote {client.download(out_dir)}", err=True)
    if not all(r.ready for r in results):
        sys.exit(EXIT_NOT_RUNNING)


@main.command("demo")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="report folder (default reports/demo-<time>)")
@click.option("--count", type=click.IntRange(1, 1000), default=100, show_default=True, help="sample images")
@click.option("--concurrency", type=click.IntRange(1, 500), default=100, show_default=True)
@pass_context
def demo_command(ctx: Context, report_dir: Path | None, count: int, concurrency: int) -> None:
    """The main job on this machine: local stack up, 100 concurrent requests from 0 workers, the same again from
    the cache, a report with a timeline picture, and everything down again. Exit 0 only if every answer was right
    and the fleet came back to zero."""
    from hybrid.tools.demo import demo_settings, run_demo

    stamp = time.strftime("%Y%m%d-%H%M%S")
    stack = ctx.overrides.get("stack") or f"demo-{time.strftime('%H%M%S')}"
    state_dir = Path(ctx.overrides.get("state_dir") or ".hybrid/demo")
    settings, args = demo_settings(state_dir, stack, ctx.assignments)
    report_dir = report_dir or Path("reports") / f"demo-{stamp}"
    result = run_demo(settings, args, report_dir, count, concurrency, report=click.echo)
    cold, warm = result.summaries.get("cold", {}), result.summaries.get("warm", {})
    click.echo("\n== summary")
    for name, run in (("cold", cold), ("warm", warm)):
        if run:
            click.echo(f"{name}: {run['correct']}/{run['requests']} right, average "
                       f"{run['latency_s']['avg']:.3f} s per request, p95 {run['latency_s']['p95']:.3f} s")
    zero = f"{result.time_to_zero:.1f} s" if result.time_to_zero is not None else "never"
    click.echo(f"fleet: up to {result.max_fleet} workers, back to 0 {zero} after the last answer")
    click.echo(f"report: {report_dir}/report.json, {report_dir}/timeline.png")
    if not result.passed:
        raise HybridError("the demo did not pass: see the summary above")
    click.echo("demo passed")


# ---------------------------------------------------------------- both clouds

@main.command("up")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="web-tier disk image (qcow2, or VMDK with --convert) to upload to Glance if needed")
@click.option("--convert", is_flag=True, help="convert a VMDK --image to qcow2 with qemu-img first")
@click.option("--credentials", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the web tier's AWS credentials file, installed on the server over SSH (routable clouds only)")
@click.option("--ssh-user", default="debian", show_default=True, help="login user of the web-tier image")
@click.pass_context
def both_up(ctx: click.Context, image: Path | None, convert: bool, credentials: Path | None, ssh_user: str) -> None:
    """Set up both clouds: the AWS side first (queues and buckets the web tier needs), then OpenStack."""
    from hybrid.cli.openstack import openstack_up

    ctx.invoke(aws_up)
    ctx.invoke(openstack_up, image=image, convert=convert, credentials=credentials, ssh_user=ssh_user)


@main.command("down")
@click.pass_context
def both_down(ctx: click.Context) -> None:
    """Tear both clouds down: OpenStack first (the web tier stops sending work), then the AWS side."""
    from hybrid.cli.openstack import openstack_down

    ctx.invoke(openstack_down)
    ctx.invoke(aws_down)


@main.command("status")
@click.pass_context
def both_status(ctx: click.Context) -> None:
    """Both clouds' resources; exit 3 if anything is missing on either."""
    from hybrid.cli.openstack import openstack_status

    codes = []
    for title, command in (("AWS", aws_status), ("OpenStack", openstack_status)):
        click.echo(f"== {title}")
        try:
            ctx.invoke(command)
            codes.append(0)
        except SystemExit as exc:
            codes.append(int(exc.code or 0))
    if any(codes):
        sys.exit(max(codes))
