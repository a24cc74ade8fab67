"""``classify``: label image files from the command line with the offline classifier.

Prints ``name:label`` per image (name = file name without extension), and with ``--top N`` (N > 1) the N most
likely classes with their probabilities underneath. An image that cannot be decoded prints ``name: error: ...`` on
stderr; the others are still classified, and the command then exits 1.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import click

from app_tier.runtimes import RUNTIMES, TOP_K
from hybrid.cli.context import EXIT_FAILED

if TYPE_CHECKING:
    from app_tier.classifier import Prediction

BATCH_SIZE = 16


@click.command("classify")
@click.argument("images", metavar="IMG...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--top", type=click.IntRange(1, TOP_K), default=1, show_default=True,
              help="also list the N most likely classes with their probabilities")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True,
              help="auto: ONNX Runtime when installed, else PyTorch")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="compute threads")
def classify(images: Sequence[Path], top: int, runtime: str, threads: int) -> None:
    """Classify IMG files with the offline ImageNet model (EfficientNet-Lite0)."""
    from app_tier.classifier import load_classifier  # numpy, Pillow: the worker extra, not the core
    from hybrid.core.decoding import BadImageError

    classifier = load_classifier(runtime, threads)
    failed = False
    for paths in _batches(images, BATCH_SIZE):
        for path, result in zip(paths, classifier.classify([path.read_bytes() for path in paths]), strict=True):
            if isinstance(result, BadImageError):
                click.echo(f"{path.stem}: error: {result}", err=True)
                failed = True
            else:
                _echo_prediction(path.stem, result, top)
    if failed:
        sys.exit(EXIT_FAILED)


def _batches(paths: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start:start + size]


def _echo_prediction(name: str, prediction: Prediction, top: int) -> None:
    click.echo(f"{name}:{prediction.label}")
    if top > 1:
        for label, probability in prediction.top5[:top]:
            click.echo(f"    {probability:.4f}  {label}")
