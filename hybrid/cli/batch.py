"""Batch mode: ``hybrid submit`` a folder of images, collect the labels with ``hybrid results``."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from hybrid.cli.context import EXIT_NOT_RUNNING, Context, pass_context
from hybrid.cli.output import progress


@click.command("submit")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@pass_context
def submit(ctx: Context, folder: Path) -> None:
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


@click.command("results")
@click.option("--wait", "wait_s", is_flag=False, flag_value=600.0, type=float, default=None, metavar="[SECONDS]",
              help="wait until every submitted image has a result (default up to 600 s)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="write results.csv and one <name>.txt per label here")
@pass_context
def results(ctx: Context, wait_s: float | None, out_dir: Path | None) -> None:
    """Show (and optionally download) the labels of images submitted with `hybrid submit`. Exit 3 if some are not
    ready yet."""
    from hybrid.tools.batch import BatchClient

    client = BatchClient(ctx.settings)
    if wait_s is not None:
        with progress("waiting for batch results") as on_poll:
            client.wait(wait_s, on_poll)
    listed = client.list_results()
    for result in listed:
        click.echo(f"{result.name}:{result.label}" if result.label else
                   f"{result.name}: error: {result.error}" if result.error else f"{result.name}: (pending)")
    if out_dir:
        click.echo(f"wrote {client.download(out_dir)}", err=True)
    if not all(r.ready for r in listed):
        sys.exit(EXIT_NOT_RUNNING)
