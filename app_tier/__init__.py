"""The app tier: an offline EfficientNet-Lite0 ImageNet classifier (ONNX Runtime or PyTorch).

``load_classifier()`` gives a :class:`Classifier`; ``Classifier.classify(images)`` turns encoded images into
:class:`Prediction` objects, or a :class:`BadImageError` for each image that cannot be decoded. The network itself
is in :mod:`app_tier.model`, which imports torch, so it is not imported here. The names below load on first use:
the command line imports this package (``app_tier.runtimes``) on machines without numpy (the core install).
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"Classifier": "app_tier.classifier", "Prediction": "app_tier.classifier",
          "load_classifier": "app_tier.classifier", "read_labels": "app_tier.classifier",
          "weights_path": "app_tier.classifier", "BadImageError": "hybrid.core.decoding",
          "decode_image": "hybrid.core.decoding"}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'app_tier' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
