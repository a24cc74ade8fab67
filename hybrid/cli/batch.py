"""Batch mode: ``hybrid submit`` a folder of images (or upload under ``batch/`` with any S3 client), collect the labels
with ``hybrid results``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hybrid.cli.context import EXIT_NOT_RUNNING, Context, pass_context
from hybrid.cli.output import echo_json, json_option, progress

if TYPE_CHECKING:
    from hybrid.tools.batch import BatchClient, BatchResult


@click.command("submit")
@click.argument("folder", metavar="PATH", type=click.Path(exists=True, path_type=Path))
@click.option("--requeue", is_flag=True, help="also request again every object under batch/ that is not queued")
@pass_context
def submit(ctx: Context, folder: Path, requeue: bool) -> None:
    """Upload a folder of images, a zip archive of images or one image to the input bucket for batch
    classification. A zip is checked whole before anything is uploaded (limits on entries and sizes, no absolute or
    '..' paths, links or encrypted entries); a refused one is one error line, exit 1.

    The bucket notifies the request queue; workers write each label to the output bucket. Images whose bytes were
    submitted before are skipped (they are listed already). Collect the labels with `hybrid results --wait --out DIR`.
    """
    from hybrid.tools.archives import sources
    from hybrid.tools.batch import BatchClient

    images = sources(folder)
    client = BatchClient(ctx.settings)
    client.init()
    submissions = [client.upload(path, data) for path, data in images]
    uploaded = sum(s.uploaded for s in submissions)
    click.echo(f"submitted {uploaded} image(s); {len(submissions) - uploaded} already submitted (same bytes) skipped")
    if requeue:
        _requeue(client)


@click.command("results")
@click.option("--wait", "wait_s", is_flag=False, flag_value=600.0, type=float, default=None, metavar="[SECONDS]",
              help="wait until no image is pending (default up to 600 s)")
@click.option("--requeue", is_flag=True, help="request again every image that is not queued (before waiting)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="write results.csv and one <name>.txt per label here")
@json_option
@pass_context
def results(ctx: Context, wait_s: float | None, requeue: bool, out_dir: Path | None, as_json: bool) -> None:
    """Show (and optionally download) the state of every image under batch/ in the input bucket: its label, failed
    with the reason, pending, or not queued (nothing will answer it: --requeue requests it again). Exit 3 if some
    are pending or not queued."""
    from hybrid.tools.batch import BatchClient, summary

    client = BatchClient(ctx.settings)
    if requeue:
        _requeue(client)
    if wait_s is None:
        listed = client.list_results()
    else:
        with progress("waiting for batch results") as on_poll:
            listed = client.wait(wait_s, on_poll)
    if as_json:
        echo_json({"stack": ctx.settings.stack, "summary": summary(listed),
                   "results": [_record(result) for result in listed]})
    else:
        for result in listed:
            click.echo(_line(result))
        click.echo(summary(listed), err=True)
    if out_dir:
        click.echo(f"wrote {client.download(out_dir, listed)}", err=True)
    if not all(r.ready for r in listed):
        sys.exit(EXIT_NOT_RUNNING)


def _line(result: "BatchResult") -> str:
    if result.label:
        return f"{result.name}:{result.label}"
    if result.error:
        return f"{result.name}: failed: {result.error}"
    if result.state == "not queued":  # hybrid.tools.batch.NOT_QUEUED (imported lazily, as the client is)
        return f"{result.name}: not queued (no request will answer it: `hybrid results --requeue`)"
    return f"{result.name}: {result.state}"


def _record(result: "BatchResult") -> dict[str, str]:
    return {"name": result.name, "state": result.state, "label": result.label, "error": result.error,
            "key": result.key, "sha256": result.digest}


def _requeue(client: "BatchClient") -> None:
    lost = client.requeue()
    click.echo(f"requeued {len(lost)} image(s) that were not queued", err=True)
