"""The offline classifier on real photos that installed packages ship, on both runtimes, and its `classify` command.

The model loads once per runtime for the module; the ONNX export goes to a temporary cache folder (about 10 s).
"""
from __future__ import annotations

import functools

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data
from sklearn.datasets import load_sample_image

from app_tier import classifier as classifier_module
from app_tier.classifier import Classifier, Prediction, load_classifier
from hybrid.cli.classify import classify as classify_command
from hybrid.core.decoding import BadImageError, decode_image
from hybrid.core.errors import ConfigError

pytestmark = pytest.mark.timeout(600)

CATS = {"tiger cat", "Egyptian cat", "tabby"}
# photo -> (labels accepted as top-1, its probability). The probabilities are those of the reference implementation
# (PyPI efficientnet-lite-pytorch with the same weights, which app_tier.model matches exactly): a subtly wrong
# padding or normalisation keeps most labels but moves them by 0.02 or more.
EXPECTED = {
    "coffee": ({"espresso"}, 0.9542),
    "camera": ({"tripod"}, 0.9605),
    "motorcycle": ({"moped"}, 0.5142),
    "china": ({"palace"}, 0.3735),
    "chelsea": (CATS, 0.3862),
}


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Real photos as JPEG bytes; none of these loaders needs the network."""
    return {
        "coffee": jpeg(skimage_data.coffee()),
        "camera": jpeg(skimage_data.camera()),
        "motorcycle": jpeg(skimage_data.stereo_motorcycle()[0]),
        "china": jpeg(load_sample_image("china.jpg")),
        "chelsea": jpeg(skimage_data.chelsea()),
    }


@pytest.fixture(scope="module")
def torch_classifier() -> Classifier:
    return load_classifier("torch")


@pytest.fixture(scope="module")
def onnx_classifier(onnx_cache) -> Classifier:
    return load_classifier("onnx", cache_dir=onnx_cache)


@pytest.fixture(params=["torch", "onnx"])
def any_classifier(request) -> Classifier:
    return request.getfixturevalue(f"{request.param}_classifier")


# ------------------------------------------------------------------ accuracy and agreement

@pytest.mark.parametrize("name", EXPECTED)
def test_top1_on_real_photos(any_classifier, photos, name):
    labels, probability = EXPECTED[name]
    [prediction] = any_classifier.classify([photos[name]])
    assert prediction.label in labels
    assert prediction.top5[0] == (prediction.label, pytest.approx(probability, abs=0.01))


def test_chelsea_top3_are_all_cats(onnx_classifier, photos):
    [prediction] = onnx_classifier.classify([photos["chelsea"]])
    assert {label for label, _ in prediction.top5[:3]} == CATS


def test_top5_is_five_distinct_classes_best_first(onnx_classifier, photos):
    [prediction] = onnx_classifier.classify([photos["china"]])
    probabilities = [p for _, p in prediction.top5]
    assert len({label for label, _ in prediction.top5}) == 5
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-6


def test_runtimes_agree_on_every_photo(torch_classifier, onnx_classifier, photos):
    batch = np.stack([decode_image(photo) for photo in photos.values()])
    for on_torch, on_onnx in zip(torch_classifier.predict(batch), onnx_classifier.predict(batch), strict=True):
        assert [label for label, _ in on_torch.top5] == [label for label, _ in on_onnx.top5]
        np.testing.assert_allclose([p for _, p in on_torch.top5], [p for _, p in on_onnx.top5], atol=1e-4)


def test_both_runtimes_name_the_same_model(torch_classifier, onnx_classifier):
    assert re.fullmatch(r"efficientnet-lite0/imagenet@[0-9a-f]{12}", torch_classifier.model_id)
    assert onnx_classifier.model_id == torch_classifier.model_id
    assert (torch_classifier.runtime, onnx_classifier.runtime) == ("torch", "onnx")


def test_batch_gives_the_same_as_one_at_a_time(any_classifier, photos):
    batch = np.stack([decode_image(photo) for photo in photos.values()])
    together = any_classifier.predict(batch)
    alone = [any_classifier.predict(batch[i:i + 1])[0] for i in range(len(batch))]
    assert [p.label for p in together] == [p.label for p in alone]
    np.testing.assert_allclose([[p for _, p in x.top5] for x in together],
                               [[p for _, p in x.top5] for x in alone], atol=1e-5)


# ------------------------------------------------------------------ classify: order, bad images, one batch

def test_classify_keeps_order_with_bad_images_between(onnx_classifier, photos):
    truncated = photos["coffee"][:len(photos["coffee"]) // 2]
    results = onnx_classifier.classify([photos["coffee"], b"not an image", photos["camera"], b"", truncated,
                                        photos["motorcycle"]])
    assert [r.label if isinstance(r, Prediction) else type(r) for r in results] == [
        "espresso", BadImageError, "tripod", BadImageError, BadImageError, "moped"]
    assert [str(r).split(":")[0] for r in results if isinstance(r, BadImageError)] == [
        "not an image in a supported format (JPEG, PNG, WEBP, GIF, BMP)", "empty image", "truncated image"]


def test_classify_runs_the_good_images_as_one_batch(photos):
    batches: list[int] = []

    def infer(batch: np.ndarray) -> np.ndarray:
        batches.append(len(batch))
        logits = np.zeros((len(batch), 1000), dtype=np.float32)
        logits[np.arange(len(batch)), np.arange(len(batch))] = 10.0  # image i -> class i
        return logits

    fake = Classifier(infer, model_id="fake", runtime="fake", labels=[f"class {i}" for i in range(1000)])
    results = fake.classify([photos["coffee"], b"junk", photos["camera"], photos["china"]])
    assert batches == [3]
    assert [r.label if isinstance(r, Prediction) else "bad" for r in results] == [
        "class 0", "bad", "class 1", "class 2"]


def test_classify_with_only_bad_images_never_runs_the_model():
    def infer(batch: np.ndarray) -> np.ndarray:
        raise AssertionError("the model ran")

    fake = Classifier(infer, model_id="fake", runtime="fake", labels=["x"] * 1000)
    assert all(isinstance(r, BadImageError) for r in fake.classify([b"", b"junk"]))
    assert fake.classify([]) == []


def test_predict_refuses_a_wrongly_shaped_batch(onnx_classifier):
    with pytest.raises(ValueError, match="N x 3 x 224 x 224"):
        onnx_classifier.predict(np.zeros((1, 224, 224, 3), dtype=np.float32))


def test_unknown_runtime_is_a_config_error():
    with pytest.raises(ConfigError, match="runtime = 'tensorflow' is not valid"):
        load_classifier("tensorflow")


# ------------------------------------------------------------------ the ONNX export cache

def test_onnx_export_is_reused(onnx_classifier, onnx_cache, caplog):
    [folder] = [p for p in onnx_cache.iterdir()]  # one export folder, no staging leftovers
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["model.onnx", "model.onnx.data"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    with caplog.at_level(logging.INFO, logger="app_tier.classifier"):
        again = load_classifier("onnx", cache_dir=onnx_cache)
    assert "using cached ONNX export" in caplog.text and "exporting" not in caplog.text
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert again.model_id == onnx_classifier.model_id


def test_a_worker_that_loses_the_export_race_uses_the_winners_files(tmp_path, monkeypatch):
    winner = tmp_path / "efficientnet-lite0-imagenet-abc"

    def export_while_another_worker_finishes_first(weights: Path, model_file: Path) -> None:
        model_file.write_bytes(b"mine")
        winner.mkdir()
        (winner / "model.onnx").write_bytes(b"theirs")

    monkeypatch.setattr(classifier_module, "_export_onnx", export_while_another_worker_finishes_first)
    model_file = classifier_module._ensure_onnx_export(Path("weights.pth"), "efficientnet-lite0/imagenet@abc", tmp_path)
    assert model_file.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == [winner.name]  # no staging folder left behind


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    def failing_export(weights: Path, model_file: Path) -> None:
        model_file.write_bytes(b"half")
        raise RuntimeError("export failed")

    monkeypatch.setattr(classifier_module, "_export_onnx", failing_export)
    with pytest.raises(RuntimeError, match="export failed"):
        classifier_module._ensure_onnx_export(Path("weights.pth"), "efficientnet-lite0/imagenet@abc", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cached_onnx_path_never_imports_torch(onnx_classifier, onnx_cache, photos, tmp_path):
    (tmp_path / "coffee.jpg").write_bytes(photos["coffee"])
    script = (
        "import sys; from pathlib import Path; from app_tier import load_classifier\n"
        f"c = load_classifier('onnx', cache_dir=Path({str(onnx_cache)!r}))\n"
        f"print(c.classify([Path({str(tmp_path / 'coffee.jpg')!r}).read_bytes()])[0].label)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'onnxscript', 'onnx'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["espresso", "[]"]


# ------------------------------------------------------------------ the classify command

@pytest.fixture
def image_files(photos, tmp_path) -> list[Path]:
    paths = [tmp_path / "coffee.jpg", tmp_path / "broken.jpg", tmp_path / "camera.png"]
    paths[0].write_bytes(photos["coffee"])
    paths[1].write_bytes(b"this is not a jpeg")
    Image.open(io.BytesIO(photos["camera"])).save(paths[2], "PNG")
    return paths


@pytest.fixture
def run_cli(onnx_classifier, run_in_process):
    """The command in-process, with the model already exported into the module's cache."""
    return functools.partial(run_in_process, classify_command)


def test_cli_prints_labels_in_order_and_exits_1_on_a_bad_image(run_cli, image_files):
    result = run_cli(*image_files, "--runtime", "onnx")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["coffee:espresso", "camera:tripod"]
    assert result.stderr.splitlines() == [
        "broken: error: not an image in a supported format (JPEG, PNG, WEBP, GIF, BMP)"]


def test_cli_top5_lists_probabilities_under_each_label(run_cli, image_files):
    result = run_cli(image_files[0], image_files[2], "--top", "5", "--runtime", "torch", "--threads", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [lines[0], lines[6]] == ["coffee:espresso", "camera:tripod"]
    for block in (lines[1:6], lines[7:12]):
        probabilities = [float(re.fullmatch(r" {4}(0\.\d{4})  \S.*", line).group(1)) for line in block]
        assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] > 0.9
    assert lines[7].endswith("  tripod")


def test_cli_refuses_an_unknown_runtime(run_cli, image_files):
    result = run_cli(image_files[0], "--runtime", "tensorflow")
    assert result.exit_code == 2 and "tensorflow" in result.output


def test_cli_as_a_process(onnx_classifier, onnx_cache, image_files):
    """The real entry point in a fresh process, with HOME pointing the default cache at the module's export."""
    home = onnx_cache.parent / "home"
    (home / ".cache" / "hybrid").mkdir(parents=True, exist_ok=True)
    models = home / ".cache" / "hybrid" / "models"
    if not models.exists():
        models.symlink_to(onnx_cache)
    command = [sys.executable, "-c", "from hybrid.cli.classify import classify; classify()", *map(str, image_files)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(home)})
    assert (done.returncode, done.stdout) == (1, "coffee:espresso\ncamera:tripod\n")
    assert "broken: error: not an image" in done.stderr
