"""MobileNetV2 (Sandler et al. 2018) and MobileNetV3 (Howard et al. 2019) trunks, without torchvision.

Module names and state_dict keys are torchvision's (`features.N...`), so `mobilenet_v2-b0353104.pth`,
`mobilenet_v3_large-8738ca79.pth` or `mobilenet_v3_small-047dcff4.pth` load unchanged (their
`classifier.*` keys are dropped by `load_backbone_weights`). Width multiplier 1.0 only, the one
GluonCV's Mobile Pose models use. The trunk is `features` (stride 32); there is no pooling or
classifier.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn
from torch.nn import functional as F

from .resnet import init_like_torchvision


def conv_norm_activation(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    norm: type[nn.Module] | None = nn.BatchNorm2d,
    activation: type[nn.Module] | None = nn.ReLU6,
) -> nn.Sequential:
    """Conv, BN, activation as torchvision's `Conv2dNormActivation` (indices 0, 1, 2)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False)
    ]
    if norm is not None:
        layers.append(norm(out_channels))
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8 without losing more than 10 % (the TF MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


# --------------------------------------------------------------------------------------------
# MobileNetV2
# --------------------------------------------------------------------------------------------

class InvertedResidualV2(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> project 1x1 (linear), residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_norm_activation(in_channels, hidden, kernel_size=1))
        layers += [
            conv_norm_activation(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


# (expand ratio t, output channels c, repeats n, first stride s): Table 2 of the paper.
MOBILENET_V2_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class MobileNetV2(nn.Module):
    """Input (N, 3, H, W) -> features (N, 1280, H/32, W/32)."""

    def __init__(self):
        super().__init__()
        in_channels = 32
        layers: list[nn.Module] = [conv_norm_activation(3, in_channels, stride=2)]
        for expand_ratio, channels, repeats, first_stride in MOBILENET_V2_SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidualV2(in_channels, channels, first_stride if i == 0 else 1, expand_ratio))
                in_channels = channels
        layers.append(conv_norm_activation(in_channels, 1280, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.out_channels = 1280
        self.stride = 32
        init_like_torchvision(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


# --------------------------------------------------------------------------------------------
# MobileNetV3
# --------------------------------------------------------------------------------------------

class SqueezeExcitation(nn.Module):
    """Channel gate (Hu et al. 2018) with a hard sigmoid, as torchvision's (`fc1`, `fc2`)."""

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.fc2(F.relu(self.fc1(scale)))
        return x * F.hardsigmoid(scale)


class BlockV3(NamedTuple):
    """One row of Tables 1 and 2 of the MobileNetV3 paper."""

    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    hardswish: bool  # "HS" rows; "RE" rows use ReLU
    stride: int


# BN as TF's (eps 1e-3, momentum 0.01), which torchvision keeps for its V3 weights.
def _bn_v3(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=0.001, momentum=0.01)


class InvertedResidualV3(nn.Module):
    def __init__(self, in_channels: int, cfg: BlockV3):
        super().__init__()
        activation = nn.Hardswish if cfg.hardswish else nn.ReLU
        self.use_residual = cfg.stride == 1 and in_channels == cfg.out_channels
        layers: list[nn.Module] = []
        if cfg.expanded != in_channels:
            layers.append(conv_norm_activation(in_channels, cfg.expanded, 1, norm=_bn_v3, activation=activation))
        layers.append(
            conv_norm_activation(
                cfg.expanded, cfg.expanded, cfg.kernel, cfg.stride, groups=cfg.expanded, norm=_bn_v3,
                activation=activation
            )
        )
        if cfg.use_se:
            layers.append(SqueezeExcitation(cfg.expanded, make_divisible(cfg.expanded // 4)))
        layers.append(conv_norm_activation(cfg.expanded, cfg.out_channels, 1, norm=_bn_v3, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


# Rows (kernel, expanded, out_channels, use_se, hardswish, stride), three to a line.
MOBILENET_V3_LARGE = [BlockV3(*row) for row in (  # Table 1
    (3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1),
)]

MOBILENET_V3_SMALL = [BlockV3(*row) for row in (  # Table 2
    (3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1),
)]


class MobileNetV3(nn.Module):
    """Input (N, 3, H, W) -> features (N, 6 x last block channels, H/32, W/32): 960 large, 576 small."""

    def __init__(self, blocks: list[BlockV3]):
        super().__init__()
        in_channels = 16
        layers: list[nn.Module] = [conv_norm_activation(3, in_channels, stride=2, norm=_bn_v3, activation=nn.Hardswish)]
        for cfg in blocks:
            layers.append(InvertedResidualV3(in_channels, cfg))
            in_channels = cfg.out_channels
        self.out_channels = 6 * in_channels
        layers.append(conv_norm_activation(in_channels, self.out_channels, 1, norm=_bn_v3, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.stride = 32
        init_like_torchvision(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def mobilenet_v2() -> MobileNetV2:
    return MobileNetV2()


def mobilenet_v3_large() -> MobileNetV3:
    return MobileNetV3(MOBILENET_V3_LARGE)


def mobilenet_v3_small() -> MobileNetV3:
    return MobileNetV3(MOBILENET_V3_SMALL)
