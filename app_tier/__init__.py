"""The app tier: an offline EfficientNet-Lite0 ImageNet classifier (ONNX Runtime or PyTorch).

``load_classifier()`` gives a :class:`Classifier`; ``Classifier.classify(images)`` turns encoded images into
:class:`Prediction` objects, or a :class:`BadImageError` for each image that cannot be decoded. The network itself
is in :mod:`app_tier.model`, which imports torch, so it is not imported here.
"""
from app_tier.classifier import Classifier, Prediction, load_classifier, read_labels, weights_path
from hybrid.core.decoding import BadImageError, decode_image

__all__ = ["BadImageError", "Classifier", "Prediction", "decode_image", "load_classifier", "read_labels",
           "weights_path"]
