"""EfficientNet-Lite0 for ImageNet-1k, inference only, with the parameter names of the shipped weights.

Lite0 differs from EfficientNet-B0 in ways that matter for the weights: ReLU6 instead of swish, no
squeeze-and-excitation, fixed 32-channel stem and 1280-channel head. Convolutions pad TensorFlow-style ("same"):
stride-2 convolutions put the odd padding pixel on the bottom/right edge. This module imports torch; the ONNX path
of :mod:`app_tier.classifier` imports it only to export.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
# One row per stage: (repeats, kernel, stride of the first block, expansion ratio, input channels, output channels).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) for one spatial dimension: the output is ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow "same" padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        # Stride 1 with an odd kernel pads symmetrically, which Conv2d does itself; stride 2 pads in forward.
        super().__init__(in_channels, out_channels, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            top, bottom = _same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = _same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; a skip connection when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expands = expand_ratio != 1
        if self.expands:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _batch_norm(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.has_skip else y


def _blocks() -> list[MBConvBlock]:
    blocks = []
    for repeats, kernel, stride, expand_ratio, in_channels, out_channels in STAGES:
        blocks.append(MBConvBlock(in_channels, out_channels, kernel, stride, expand_ratio))
        blocks += [MBConvBlock(out_channels, out_channels, kernel, 1, expand_ratio) for _ in range(repeats - 1)]
    return blocks


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: N x 3 x 224 x 224 images normalised as (x - 127) / 128 in, N x 1000 logits out."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _batch_norm(STEM_CHANNELS)
        self._blocks = nn.ModuleList(_blocks())
        self._conv_head = SameConv2d(STAGES[-1][5], HEAD_CHANNELS, 1)
        self._bn1 = _batch_norm(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def load_efficientnet_lite0(weights: Path) -> EfficientNetLite0:
    """The network with `weights` (a plain state_dict file; every key must match), in eval mode."""
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def export_onnx(model: EfficientNetLite0, path: Path, opset: int = 18) -> None:
    """Write `model` as ONNX to `path` (plus `path`.data beside it) with a dynamic batch dimension."""
    example = torch.zeros(2, 3, 224, 224)
    torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset, verbose=False,
                      input_names=["images"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
