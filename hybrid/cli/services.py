"""The service processes: ``hybrid worker`` (app tier), ``hybrid web`` (web tier), ``hybrid autoscale``, and the
model files they load (``hybrid models``)."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import click

from hybrid.cli.context import Context, pass_context


@click.group()
def models() -> None:
    """The classifier's model files."""


@models.command("prepare")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="the model cache to fill (default ~/.cache/hybrid/models, where workers look)")
def models_prepare(cache_dir: Path | None) -> None:
    """Export the ONNX model into the cache once (workers then start without importing torch)."""
    from app_tier.classifier import load_classifier

    started = time.monotonic()
    classifier = load_classifier("auto", 1, cache_dir)
    click.echo(f"{classifier.model_id} ready on {classifier.runtime} in {time.monotonic() - started:.1f} s")


@click.command("worker")
@click.option("--instance-id", default="", help="the instance this worker runs on (given by the local instance "
                                                 "runner; on AWS read from the instance metadata service)")
@click.option("--user-data", type=click.Path(exists=True, dir_okay=False),
              help="settings JSON written at boot (replaces hybrid.toml)")
@pass_context
def worker(ctx: Context, instance_id: str, user_data: str | None) -> None:
    """Run an app-tier worker: long-poll the request queue, classify batches, store labels, reply.

    It terminates its own instance after worker.idle_timeout seconds without work and exits 0.
    """
    from app_tier.service import run_worker

    logging.getLogger("app_tier").setLevel(logging.INFO)
    ctx.user_data = user_data
    run_worker(ctx.settings, instance_id)


@click.command("autoscale")
@click.option("--ticks", type=int, default=None, help="stop after N ticks (default: run until interrupted)")
@click.option("--plot", "plot_to", metavar="PNG", help="do not scale: draw the recorded timeline into PNG and exit")
@pass_context
def autoscale(ctx: Context, ticks: int | None, plot_to: str | None) -> None:
    """Size the app-tier fleet from the request backlog, every scaling.poll_interval seconds.

    Wants ceil((waiting + in flight) / scaling.messages_per_worker) workers, between scaling.min_workers and
    scaling.max_workers, counting pending instances as capacity and launching the difference in one call. It never
    terminates a running worker: workers end themselves after worker.idle_timeout. It does end instances stuck
    pending, leaked (stopped) ones, and any beyond the maximum. Each tick is one log line and one row in
    <state_dir>/autoscale/<stack>-timeline.jsonl. With scaling.metrics_bind (e.g. 127.0.0.1:9101) it serves
    Prometheus metrics at http://<that address>/metrics; log.format = json makes its log lines JSON.

    With --plot: exit 3 if the stack has no timeline (or an empty one), 1 if it is damaged.
    """
    settings = ctx.settings
    if plot_to:
        from hybrid.autoscale.plot import load_timeline, plot_timeline  # matplotlib: operator only

        out = plot_timeline(load_timeline(settings.timeline_path), Path(plot_to), settings=settings)
        click.echo(f"timeline written to {out}")
        return
    from hybrid.autoscale.service import build_autoscaler

    logging.getLogger("hybrid.autoscale").setLevel(logging.INFO)
    scaler = build_autoscaler(settings, settings.timeline_path)
    click.echo(f"autoscaling stack {settings.stack}: {settings.scaling.min_workers}..{settings.scaling.max_workers}"
               f" workers, tick every {settings.scaling.poll_interval:g} s", err=True)
    try:
        scaler.run(threading.Event(), max_ticks=ticks)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


@click.command("web")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="gunicorn worker processes (each with web.threads threads and its own reply queue)")
@pass_context
def web(ctx: Context, processes: int) -> None:
    """Serve the web tier with gunicorn on web.bind (default 127.0.0.1:8000).

    \b
    POST / or /upload with one image (multipart field inputFile or myfile) -> "name:label"
    GET /healthz, /readyz, /status (JSON), /metrics (Prometheus: every process's counts together)
    /status and /metrics answer only from this machine. Every answer carries an X-Request-Id header.
    log.format = json: JSON log lines, with the request id on the web tier's and the worker's lines.
    Try: curl -F inputFile=@cat.jpg http://127.0.0.1:8000/
    """
    from web_tier.runtime import require_stack_exists
    from web_tier.server import WebServer

    settings = ctx.settings
    require_stack_exists(settings)
    click.echo(f"web tier of stack {settings.stack} on http://{settings.web.bind}/", err=True)
    WebServer(settings, processes).run()
