"""Sample images for end-to-end runs, with the labels the service must answer for them.

``hybrid samples sample DIR --count 100`` writes COUNT distinct JPEGs made from real photos that installed packages
ship (scikit-image ``skimage.data``, scikit-learn's sample images, matplotlib's ``grace_hopper.jpg``; nothing is
downloaded). Each image is one source photo, cropped to a random box that keeps at least 60 % of each side, maybe
mirrored, scaled so both sides lie in the size range, and saved at JPEG quality 85-95; all from one
``random.Random(seed)``, so the same seed gives the same bytes (with the same Pillow). Every file is byte-distinct.

DIR holds the images and nothing else (a generator that posts every file of a folder, as the course's do, must find
only images there). Beside DIR, named after it, go

- ``DIR.csv``: the expected labels, name = file name without extension: the label the project's classifier gives
  each file's bytes, run in-process exactly as a worker runs it (``load_classifier(runtime, threads=1)``). The
  service must answer these labels. Its header is ``name,label`` (``hybrid``, the default) or the course's
  ``Image,Results`` (``course``); ``read_expected`` and the workload generator read both.
- ``DIR.manifest.json``: per image its source, crop box, flip, size, JPEG quality, sha256, label, top-1
  probability and top-1/top-2 margin, plus the model id and runtime, to rebuild or audit the set.

A candidate whose two best classes are within ``MIN_MARGIN`` of each other is drawn again: such a label could flip
with the batch it is classified in or with the thread count, and the expected label must not depend on either.

A folder that already holds files is refused; ``force`` replaces an earlier sample set (``test_*.jpg`` and the two
files beside DIR; also ``expected.csv`` and ``manifest.json`` inside DIR, where earlier versions wrote them) but
never deletes a file this module did not write.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from app_tier.classifier import Classifier, Prediction, load_classifier
from hybrid.core.decoding import BadImageError
from hybrid.core.errors import ConfigError, HybridError

log = logging.getLogger(__name__)

BATCH_SIZE = 16
MIN_KEPT = 0.6
QUALITY_RANGE = (85, 95)
MIN_MARGIN = 1e-3
SIZE_LIMITS = (32, 4096)
MIN_RANGE_RATIO = 1.25
EXPECTED_SUFFIX = ".csv"
MANIFEST_SUFFIX = ".manifest.json"
LEGACY_FILES = ("expected.csv", "manifest.json")  # inside DIR, where earlier versions wrote them
CSV_HEADERS = {"hybrid": ("name", "label"), "course": ("Image", "Results")}
NAME_PATTERN = re.compile(r"test_\d+\.jpg")
CROP_TRIES = 1000
SPARE_BATCHES = 10

Box = tuple[int, int, int, int]
Size = tuple[int, int]


class FolderNotEmptyError(HybridError):
    """The output folder holds files; the message says which and whether ``force`` would help."""

    exit_code = 2


@dataclass(frozen=True)
class Variant:
    """How one image is made from its source photo: crop box (left, top, right, bottom), mirror, output size, quality."""

    source: str
    box: Box
    flip: bool
    size: Size
    quality: int


@dataclass(frozen=True)
class Sample:
    """One written image: where it is, how it was made, and the label the model gives its bytes."""

    name: str
    path: Path
    variant: Variant
    sha256: str
    label: str
    probability: float
    margin: float

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "file": self.path.name, **asdict(self.variant), "sha256": self.sha256,
                "label": self.label, "probability": round(self.probability, 6), "margin": round(self.margin, 6)}


@dataclass(frozen=True)
class _Candidate:
    variant: Variant
    data: bytes


# ---------------------------------------------------------------- source photos

def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        pixels = getattr(data, name)()
        return pixels[0] if isinstance(pixels, tuple) else pixels  # stereo_motorcycle: (left, right, disparity)
    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    return load


def _matplotlib(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib

        with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / name) as image:
            return np.asarray(image.convert("RGB"))
    return load


SOURCES: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    "astronaut": ("skimage.data.astronaut()", _skimage("astronaut")),
    "camera": ("skimage.data.camera()", _skimage("camera")),
    "cat": ("skimage.data.cat()", _skimage("cat")),
    "chelsea": ("skimage.data.chelsea()", _skimage("chelsea")),
    "coffee": ("skimage.data.coffee()", _skimage("coffee")),
    "rocket": ("skimage.data.rocket()", _skimage("rocket")),
    "motorcycle": ("skimage.data.stereo_motorcycle()[0]", _skimage("stereo_motorcycle")),
    "china": ("sklearn.datasets.load_sample_image('china.jpg')", _sklearn("china.jpg")),
    "flower": ("sklearn.datasets.load_sample_image('flower.jpg')", _sklearn("flower.jpg")),
    "grace_hopper": ("matplotlib mpl-data/sample_data/grace_hopper.jpg", _matplotlib("grace_hopper.jpg")),
}
"""Real photos that installed packages ship: name -> (where it comes from, loader). No loader touches the network."""


def load_sources() -> dict[str, Image.Image]:
    """Every source photo whose package is installed, as an RGB image, by name in name order."""
    photos = {}
    for name, (origin, load) in sorted(SOURCES.items()):
        try:
            photos[name] = Image.fromarray(load()).convert("RGB")
        except ImportError as exc:
            log.info("source %s (%s) skipped: %s", name, origin, exc)
    if not photos:
        raise HybridError("no sample photos available: install scikit-image, scikit-learn or matplotlib")
    return photos


# ---------------------------------------------------------------- drawing and rendering one image

def draw_variant(rng: random.Random, source: str, source_size: Size, size_range: Size) -> Variant:
    """A random crop, mirror, output size and quality for one image of `source`."""
    for _ in range(CROP_TRIES):
        box = _draw_box(rng, source_size)
        size = _draw_size(rng, box, size_range)
        if size:
            return Variant(source, box, rng.random() < 0.5, size, rng.randint(*QUALITY_RANGE))
    raise ConfigError(f"size range {size_range[0]}..{size_range[1]} is too narrow for the shape of {source}")


def _draw_box(rng: random.Random, source_size: Size) -> Box:
    width, height = source_size
    crop_w = rng.randint(math.ceil(MIN_KEPT * width), width)
    crop_h = rng.randint(math.ceil(MIN_KEPT * height), height)
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    return left, top, left + crop_w, top + crop_h


def _draw_size(rng: random.Random, box: Box, size_range: Size) -> Size | None:
    """An output size with the box's shape and both sides in `size_range`, or None if the shape cannot fit."""
    low, high = size_range
    crop_w, crop_h = box[2] - box[0], box[3] - box[1]
    aspect = min(crop_w, crop_h) / max(crop_w, crop_h)
    shortest_long_side = max(low, math.ceil(low / aspect))
    if shortest_long_side > high:
        return None
    long_side = rng.randint(shortest_long_side, high)
    short_side = min(max(round(long_side * aspect), low), long_side)
    return (long_side, short_side) if crop_w >= crop_h else (short_side, long_side)


def render(photo: Image.Image, variant: Variant) -> bytes:
    """The JPEG bytes of `variant` of `photo`: crop and scale in one resample, then mirror, then encode."""
    image = photo.resize(variant.size, Image.Resampling.LANCZOS, box=variant.box)
    if variant.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=variant.quality)
    return buffer.getvalue()


# ---------------------------------------------------------------- the output folder

def check_folder(out_dir: Path, force: bool = False) -> None:
    """Raise FolderNotEmptyError unless `out_dir` is missing, empty, or (with `force`) holds only a sample set, and
    unless (without `force`) the files beside it that a sample set writes are absent."""
    beside = [path for path in (expected_path(out_dir), manifest_path(out_dir)) if path.exists()]
    if beside and not force:
        raise FolderNotEmptyError(f"{beside[0]} already exists: use --force to replace an earlier sample set, or "
                                  "pick another folder")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FolderNotEmptyError(f"{out_dir} is not a folder")
    entries = sorted(p.name for p in out_dir.iterdir())
    if not entries:
        return
    if not force:
        raise FolderNotEmptyError(f"{out_dir} already holds {len(entries)} file(s) (e.g. {entries[0]}): "
                                  "use --force to replace an earlier sample set, or pick an empty folder")
    foreign = [name for name in entries if not _is_sample_file(name)]
    if foreign:
        raise FolderNotEmptyError(f"{out_dir} holds {len(foreign)} file(s) that are not a sample set's "
                                  f"(e.g. {foreign[0]}); --force only replaces test_*.jpg (and "
                                  f"{' and '.join(LEGACY_FILES)} of earlier versions): move the others away or pick "
                                  "an empty folder")


def expected_path(out_dir: Path) -> Path:
    """Where a sample set's expected labels go: ``DIR.csv`` beside the folder ``DIR``."""
    return _beside(out_dir, EXPECTED_SUFFIX)


def manifest_path(out_dir: Path) -> Path:
    """Where a sample set's manifest goes: ``DIR.manifest.json`` beside the folder ``DIR``."""
    return _beside(out_dir, MANIFEST_SUFFIX)


def _beside(out_dir: Path, suffix: str) -> Path:
    folder = Path(out_dir).absolute()
    if not folder.name:
        raise ConfigError(f"{out_dir}: a sample folder needs a name (its labels go beside it as NAME{suffix})")
    return folder.parent / f"{folder.name}{suffix}"


def _is_sample_file(name: str) -> bool:
    return name in LEGACY_FILES or bool(NAME_PATTERN.fullmatch(name))


def _clear_sample_set(out_dir: Path) -> None:
    for path in out_dir.iterdir():
        if _is_sample_file(path.name) and path.is_file():
            path.unlink()
    for path in (expected_path(out_dir), manifest_path(out_dir)):
        path.unlink(missing_ok=True)


def _write_expected(out_dir: Path, samples: Sequence[Sample], csv_format: str) -> None:
    with expected_path(out_dir).open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(CSV_HEADERS[csv_format])
        writer.writerows([sample.name, sample.label] for sample in samples)


def _write_manifest(out_dir: Path, samples: Sequence[Sample], classifier: Classifier, settings: dict) -> None:
    manifest = {**settings, "model_id": classifier.model_id, "runtime": classifier.runtime,
                "sources": {name: SOURCES[name][0] for name in sorted({s.variant.source for s in samples})},
                "images": [s.to_dict() for s in samples]}
    manifest_path(out_dir).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_expected(out_dir: Path) -> dict[str, str]:
    """The expected labels of the sample set in ``out_dir`` (``DIR.csv``, either header) as {name: label}, in file
    order."""
    from hybrid.tools.workload import read_expected as read_csv

    return read_csv(expected_path(out_dir))


# ---------------------------------------------------------------- building a set

def build_samples(out_dir: Path, count: int, seed: int = 0, size_range: Size = (240, 640), runtime: str = "auto",
                  *, force: bool = False, classifier: Classifier | None = None,
                  on_progress: Callable[[int], None] | None = None, csv_format: str = "hybrid") -> list[Sample]:
    """Write `count` distinct JPEGs into `out_dir`, and ``DIR.csv`` (header by `csv_format`: ``hybrid`` or
    ``course``) and ``DIR.manifest.json`` beside it; return the samples.

    `classifier` (default: ``load_classifier(runtime, threads=1)``, as a worker loads it) labels the images;
    `on_progress` is called with the number of images written since its last call. With `force`, an earlier sample
    set in `out_dir` is deleted first (see `check_folder`).
    """
    check_arguments(count, size_range, csv_format)
    check_folder(out_dir, force)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_sample_set(out_dir)
    classifier = classifier or load_classifier(runtime, threads=1)
    samples = _draw_samples(out_dir, count, random.Random(seed), size_range, classifier, on_progress)
    _write_expected(out_dir, samples, csv_format)
    _write_manifest(out_dir, samples, classifier, {"count": count, "seed": seed, "size_range": list(size_range),
                                                   "min_margin": MIN_MARGIN})
    return samples


def check_arguments(count: int, size_range: Size, csv_format: str = "hybrid") -> None:
    if csv_format not in CSV_HEADERS:
        raise ConfigError(f"CSV format {csv_format!r} is not valid: expected one of {', '.join(CSV_HEADERS)}")
    if count < 1:
        raise ConfigError(f"count = {count} is not valid: expected at least 1")
    low, high = size_range
    if not SIZE_LIMITS[0] <= low <= high <= SIZE_LIMITS[1]:
        raise ConfigError(f"size range {low}..{high} is not valid: expected MIN..MAX with "
                          f"{SIZE_LIMITS[0]} <= MIN <= MAX <= {SIZE_LIMITS[1]}")
    if high < MIN_RANGE_RATIO * low:
        raise ConfigError(f"size range {low}..{high} is too narrow for photos of varied shape: "
                          f"MAX must be at least {MIN_RANGE_RATIO:g} x MIN")


def _draw_samples(out_dir: Path, count: int, rng: random.Random, size_range: Size, classifier: Classifier,
                  on_progress: Callable[[int], None] | None) -> list[Sample]:
    """Draw, label and write candidates in batches of up to BATCH_SIZE until `count` are accepted.

    The sources take turns in an order shuffled by the seed, so every source is used once `count` reaches their
    number. Gives up after SPARE_BATCHES more batches than `count` needs with none rejected.
    """
    photos = load_sources()
    order = rng.sample(sorted(photos), len(photos))
    digits = max(3, len(str(count - 1)))
    samples: list[Sample] = []
    seen: set[str] = set()
    batches = math.ceil(count / BATCH_SIZE) + SPARE_BATCHES
    for _ in range(batches):
        done = len(samples)
        batch = [_candidate(rng, photos, order[(done + i) % len(order)], size_range)
                 for i in range(min(BATCH_SIZE, count - done))]
        for candidate, prediction in zip(batch, _predictions(classifier, batch), strict=True):
            sample = _accept(candidate, prediction, seen, out_dir / f"test_{len(samples):0{digits}d}.jpg")
            samples += [sample] if sample else []
        if on_progress:
            on_progress(len(samples) - done)
        if len(samples) == count:
            return samples
    raise HybridError(f"could not draw {count} distinct, unambiguous images in {batches} batches of {BATCH_SIZE}")


def _candidate(rng: random.Random, photos: dict[str, Image.Image], source: str, size_range: Size) -> _Candidate:
    variant = draw_variant(rng, source, photos[source].size, size_range)
    return _Candidate(variant, render(photos[source], variant))


def _predictions(classifier: Classifier, batch: Sequence[_Candidate]) -> list[Prediction]:
    results = classifier.classify([candidate.data for candidate in batch])
    for candidate, result in zip(batch, results, strict=True):
        if isinstance(result, BadImageError):  # our own JPEG: a bug, not a bad input
            raise HybridError(f"the classifier cannot decode a sample made from {candidate.variant}: {result}")
    return results  # type: ignore[return-value]


def _accept(candidate: _Candidate, prediction: Prediction, seen: set[str], path: Path) -> Sample | None:
    """Write the candidate to `path` and return its sample, unless its bytes repeat or its label is a near tie."""
    digest = hashlib.sha256(candidate.data).hexdigest()
    margin = prediction.top5[0][1] - prediction.top5[1][1]
    if digest in seen or margin < MIN_MARGIN:
        log.info("candidate %s drawn again (%s)", candidate.variant,
                 "same bytes as an earlier image" if digest in seen else f"top-2 margin {margin:.2g}")
        return None
    seen.add(digest)
    path.write_bytes(candidate.data)
    return Sample(path.stem, path, candidate.variant, digest, prediction.label, prediction.top5[0][1], margin)
