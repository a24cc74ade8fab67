"""A 16-bit greyscale PNG gets the label its 8-bit conversion gets, from the real classifier in-process (before,
PIL's clipping conversion made it all white, and the model named whatever all-white looks like)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from app_tier.classifier import load_classifier

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def sixteen_bit(grey: np.ndarray) -> bytes:
    """The grey pixels in 16 bits (v * 257, so each value's top byte is v), as a 16-bit greyscale PNG."""
    wide = (grey.astype(np.uint16) * 257).astype(">u2")
    image = Image.frombytes("I;16B", (grey.shape[1], grey.shape[0]), wide.tobytes())
    data = png(image)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    return data


@pytest.mark.parametrize("photo, label", [("camera", "tripod"), ("coffee", None)])
def test_a_16_bit_greyscale_png_gets_the_label_of_its_8_bit_conversion(onnx_cache, photo, label):
    grey = np.asarray(Image.fromarray(getattr(skimage_data, photo)()).convert("L"))
    classifier = load_classifier("onnx", cache_dir=onnx_cache)
    eight, sixteen = classifier.classify([png(Image.fromarray(grey)), sixteen_bit(grey)])
    assert sixteen.label == eight.label and sixteen.top5 == eight.top5
    assert label is None or eight.label == label
