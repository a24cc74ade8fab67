"""`hybrid samples sample`: distinct real-photo JPEGs and the labels the model gives them, from the real classifier.

The model loads once for the module on the runtime workers use ("auto"), exporting ONNX into a temporary cache
(about 10 s); each sample set here is 12-16 images (well under a second).
"""
from __future__ import annotations

import functools

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_tier.classifier import Classifier, load_classifier
from hybrid.cli.tools import samples as samples_command
from hybrid.core.errors import ConfigError
from hybrid.tools.samples import (
    MIN_KEPT,
    MIN_MARGIN,
    SOURCES,
    FolderNotEmptyError,
    Variant,
    build_samples,
    expected_path,
    load_sources,
    manifest_path,
    read_expected,
    render,
)

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

COUNT = 16
SEED = 7
SIZE_RANGE = (240, 640)


@pytest.fixture(scope="module")
def classifier(onnx_cache) -> Classifier:
    """Loaded as a worker loads it: the default runtime, one thread."""
    return load_classifier("auto", threads=1, cache_dir=onnx_cache)


@pytest.fixture(scope="module")
def sample_set(classifier, tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("samples") / "set"
    build_samples(out_dir, COUNT, seed=SEED, size_range=SIZE_RANGE, classifier=classifier)
    return out_dir


@pytest.fixture
def build(classifier, tmp_path):
    def make(folder: str, count: int = 12, seed: int = SEED, **kwargs) -> Path:
        build_samples(tmp_path / folder, count, seed=seed, classifier=classifier, **kwargs)
        return tmp_path / folder
    return make


def jpegs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg"))


def manifest(folder: Path) -> dict:
    return json.loads(manifest_path(folder).read_text())


# ------------------------------------------------------------------ the images

def test_writes_count_distinct_jpegs_named_in_order(sample_set):
    files = jpegs(sample_set)
    assert [f.name for f in files] == [f"test_{i:03d}.jpg" for i in range(COUNT)]
    assert len({hashlib.sha256(f.read_bytes()).hexdigest() for f in files}) == COUNT
    assert sorted(p.name for p in sample_set.iterdir()) == [f.name for f in files], "the folder holds images only"
    assert sorted(p.name for p in sample_set.parent.iterdir()) == ["set", "set.csv", "set.manifest.json"]


def test_every_image_is_a_jpeg_that_decodes_with_both_sides_in_the_size_range(sample_set):
    low, high = SIZE_RANGE
    for path in jpegs(sample_set):
        with Image.open(path) as image:
            image.load()
            assert image.format == "JPEG" and image.mode == "RGB"
            assert low <= image.width <= high and low <= image.height <= high, (path.name, image.size)


def test_images_come_from_every_source_photo(sample_set):
    used = [entry["source"] for entry in manifest(sample_set)["images"]]
    assert set(used) == set(SOURCES)  # 16 images, 10 sources taking turns
    assert max(used.count(source) for source in used) <= 2


def test_the_manifest_rebuilds_each_image_byte_for_byte(sample_set):
    photos = load_sources()
    for entry in manifest(sample_set)["images"]:
        variant = Variant(entry["source"], tuple(entry["box"]), entry["flip"], tuple(entry["size"]),
                          entry["quality"])
        data = (sample_set / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert render(photos[variant.source], variant) == data


def test_crops_keep_most_of_each_side_and_vary(sample_set):
    photos = load_sources()
    entries = manifest(sample_set)["images"]
    for entry in entries:
        width, height = photos[entry["source"]].size
        left, top, right, bottom = entry["box"]
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert right - left >= MIN_KEPT * width and bottom - top >= MIN_KEPT * height
        assert 85 <= entry["quality"] <= 95
    assert {entry["flip"] for entry in entries} == {True, False}
    assert len({tuple(entry["size"]) for entry in entries}) == len(entries)


def test_same_seed_gives_the_same_bytes_and_another_seed_other_bytes(build):
    first, again, other = build("a", seed=3), build("b", seed=3), build("c", seed=4)
    assert [f.read_bytes() for f in jpegs(first)] == [f.read_bytes() for f in jpegs(again)]
    assert expected_path(first).read_bytes() == expected_path(again).read_bytes()
    assert {f.read_bytes() for f in jpegs(first)}.isdisjoint({f.read_bytes() for f in jpegs(other)})


def test_another_size_range(build):
    folder = build("small", count=12, size_range=(64, 100))
    for path in jpegs(folder):
        with Image.open(path) as image:
            assert 64 <= min(image.size) and max(image.size) <= 100


# ------------------------------------------------------------------ the expected labels

def test_expected_csv_has_one_row_per_image_with_a_model_class(sample_set, classifier):
    with expected_path(sample_set).open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["name", "label"]
    assert [name for name, _ in rows[1:]] == [f.stem for f in jpegs(sample_set)]
    assert all(label in classifier.labels for _, label in rows[1:])
    assert len({label for _, label in rows[1:]}) >= 5


def test_the_course_format_writes_image_results_and_reads_back(build, classifier):
    folder = build("course", count=3, csv_format="course")
    rows = expected_path(folder).read_text().splitlines()
    assert rows[0] == "Image,Results" and [row.split(",")[0] for row in rows[1:]] == ["test_000", "test_001",
                                                                                        "test_002"]
    assert list(read_expected(folder)) == ["test_000", "test_001", "test_002"]


def test_force_removes_the_files_earlier_versions_wrote_inside_the_folder(build, tmp_path):
    folder = build("old", count=3)
    (folder / "expected.csv").write_text("name,label\n")
    (folder / "manifest.json").write_text("{}")
    build("old", count=3, force=True)
    assert sorted(p.name for p in folder.iterdir()) == ["test_000.jpg", "test_001.jpg", "test_002.jpg"]


def test_labels_equal_what_the_classifier_answers_for_the_files(sample_set, classifier, onnx_cache):
    """Classified again from the files in other batches: all in one, one at a time, on a freshly loaded classifier."""
    expected = read_expected(sample_set)
    files = jpegs(sample_set)
    fresh = load_classifier("auto", threads=1, cache_dir=onnx_cache)
    together = fresh.classify([f.read_bytes() for f in files])
    alone = [classifier.classify([f.read_bytes()])[0] for f in files]
    assert {f.stem: p.label for f, p in zip(files, together)} == expected
    assert {f.stem: p.label for f, p in zip(files, alone)} == expected
    assert (manifest(sample_set)["model_id"], manifest(sample_set)["runtime"]) == (fresh.model_id, "onnx")


def test_no_label_is_a_near_tie(sample_set, classifier):
    entries = manifest(sample_set)["images"]
    assert all(entry["margin"] >= MIN_MARGIN for entry in entries)
    predictions = classifier.classify([(sample_set / e["file"]).read_bytes() for e in entries])
    for entry, prediction in zip(entries, predictions):
        assert entry["label"] == prediction.label
        assert entry["probability"] == pytest.approx(prediction.top5[0][1], abs=1e-5)


def test_a_near_tie_is_drawn_again(classifier, tmp_path):
    """A model that answers a near tie for its first image: that candidate is replaced, the set stays full."""
    calls: list[int] = []

    def infer(batch: np.ndarray) -> np.ndarray:
        logits = np.zeros((len(batch), 1000), dtype=np.float32)
        logits[:, 1] = 5.0
        logits[:, 0] = 6.0 if calls else 5.0  # first batch: classes 0 and 1 tie
        calls.append(len(batch))
        return logits

    tie = Classifier(infer, model_id="fake", runtime="fake", labels=[f"class {i}" for i in range(1000)])
    samples = build_samples(tmp_path / "set", 3, classifier=tie)
    assert calls == [3, 3]
    assert [s.label for s in samples] == ["class 0"] * 3
    assert read_expected(tmp_path / "set") == {"test_000": "class 0", "test_001": "class 0", "test_002": "class 0"}


# ------------------------------------------------------------------ the folder

def test_a_folder_with_files_is_refused_without_force(build, tmp_path):
    build("set")
    with pytest.raises(FolderNotEmptyError, match="set.csv already exists"):
        build("set")
    expected_path(tmp_path / "set").unlink()
    manifest_path(tmp_path / "set").unlink()
    with pytest.raises(FolderNotEmptyError, match="already holds 12 file"):
        build("set")


def test_force_replaces_an_earlier_set_completely(build):
    folder = build("set", count=14, seed=1)
    build("set", count=12, seed=2, force=True)
    assert [f.name for f in jpegs(folder)] == [f"test_{i:03d}.jpg" for i in range(12)]
    assert list(read_expected(folder)) == [f"test_{i:03d}" for i in range(12)]
    assert manifest(folder)["seed"] == 2


def test_force_never_deletes_files_it_did_not_write(build, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FolderNotEmptyError, match="notes.txt"):
        build("mine", force=True)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("count", "size_range", "message"), [
    (0, (240, 640), "count = 0"),
    (5, (640, 240), "size range 640..240 is not valid"),
    (5, (16, 640), "is not valid"),
    (5, (300, 320), "too narrow"),
])
def test_bad_arguments_are_config_errors_before_anything_is_written(classifier, tmp_path, count, size_range,
                                                                     message):
    with pytest.raises(ConfigError, match=message):
        build_samples(tmp_path / "set", count, size_range=size_range, classifier=classifier)
    assert not (tmp_path / "set").exists()


# ------------------------------------------------------------------ the command

@pytest.fixture
def run_cli(classifier, run_in_process):
    """The command in-process, with the model already exported into the module's cache."""
    return functools.partial(run_in_process, samples_command)


def test_cli_writes_the_set_and_one_summary_line(run_cli, tmp_path, classifier):
    result = run_cli("sample", tmp_path / "set", "--count", 12, "--seed", 5, "--size-range", "200..500")
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert line.startswith(f"wrote 12 images to {tmp_path / 'set'} from 10 sources (astronaut, camera,")
    assert f"labels by {classifier.model_id} on onnx in {tmp_path / 'set.csv'};" in line and line.endswith(" s")
    assert len(jpegs(tmp_path / "set")) == len(read_expected(tmp_path / "set")) == 12
    assert manifest(tmp_path / "set")["size_range"] == [200, 500]


def test_cli_refuses_a_folder_with_files_with_exit_2_and_force_replaces_it(run_cli, tmp_path):
    assert run_cli("sample", tmp_path / "set", "--count", 12).exit_code == 0
    refused = run_cli("sample", tmp_path / "set", "--count", 12)
    assert refused.exit_code == 2
    assert "set.csv already exists" in refused.output and "--force" in refused.output
    replaced = run_cli("sample", tmp_path / "set", "--count", 13, "--seed", 1, "--force")
    assert replaced.exit_code == 0, replaced.output
    assert len(jpegs(tmp_path / "set")) == 13


@pytest.mark.parametrize(("args", "message"), [
    (("--size-range", "big"), "'big' is not MIN..MAX"),
    (("--size-range", "640..240"), "size range 640..240 is not valid"),
    (("--count", "0"), "0 is not in the range"),
    (("--runtime", "tensorflow"), "tensorflow"),
])
def test_cli_bad_options_exit_2(run_cli, tmp_path, args, message):
    result = run_cli("sample", tmp_path / "set", *args)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "set").exists()
