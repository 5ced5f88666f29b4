"""Simple Pose (Xiao et al. 2018, "Simple Baselines") and GluonCV's Mobile Pose, as one table.

A model is a trunk (stride 32, or 16 for the tiny one) and an upsampling head that brings it back
to stride 4, ending in a 1x1 conv with one heatmap per joint:

    image (N, 3, H, W) -> backbone -> (N, C, H/32, W/32) -> head -> heatmaps (N, J, H/4, W/4)

* `deconv_head` (Simple Baselines, GluonCV `simple_pose_*`): n x (ConvTranspose2d 4x4 stride 2,
  BN, ReLU) with 256 filters, then a 1x1 conv.
* `pixel_shuffle_head` (GluonCV `mobile_pose_*`): a 1x1 conv to 256, then n x DUC (3x3 conv,
  BN, ReLU, PixelShuffle(2): "dense upsampling convolution", Wang et al. 2018), then a 1x1 conv.
  Cheaper than 4x4 transposed convs and exported by ONNX as DepthToSpace.

`model.backbone` is the trunk alone, in torchvision's layout, so `load_backbone_weights` can fill
it from a torchvision file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from pose_workloads.errors import BadInput

from . import mobilenet, resnet


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyTrunk(nn.Module):
    """Plain 3x3 conv blocks to stride 16, for CPU training, tests and edge devices.

    Sized by experiment: on synthetic stick-figure crops at 128x96 (Adam 2e-3, batch 16, 2 CPU
    threads), this trunk with a (40, 40) deconv head, 194k parameters, puts 96 % of joints within
    8 px after 60 s of training, while simple_pose_resnet18_v1b (15.4M) is still near chance.
    Each heatmap pixel sees ~80 px of the crop: context for the whole body.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 32, 64, 64, 80),
                 strides: tuple[int, ...] = (2, 2, 1, 2, 1, 2)):
        super().__init__()
        layers, in_channels = [], 3
        for out_channels, stride in zip(channels, strides):
            layers.append(conv_bn_relu(in_channels, out_channels, stride))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.out_channels = in_channels
        self.stride = math.prod(strides)
        resnet.init_like_torchvision(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def tiny_trunk() -> TinyTrunk:
    return TinyTrunk()


def deconv_head(in_channels: int, filters: tuple[int, ...], num_joints: int) -> nn.Sequential:
    """len(filters) x (ConvTranspose2d 4x4 s2 p1, BN, ReLU) + 1x1 conv: x 2^len(filters)."""
    layers: list[nn.Module] = []
    for out_channels in filters:
        # No bias: BN follows (Simple Baselines' deconv_with_bias=False).
        layers += [
            nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    layers.append(nn.Conv2d(in_channels, num_joints, 1))
    head = nn.Sequential(*layers)
    for m in head.modules():
        # Simple Baselines' init_weights(): N(0, 0.001) for deconvs and the final conv, bias 0.
        if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return head


class DUC(nn.Sequential):
    """Dense upsampling convolution: conv to `channels`, then PixelShuffle(2) -> channels / 4."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.PixelShuffle(2),
        )


def pixel_shuffle_head(in_channels: int, filters: tuple[int, ...], num_joints: int) -> nn.Sequential:
    """GluonCV mobile_pose: 1x1 conv to 256, one DUC per entry of `filters`, 1x1 conv to joints."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 256, 1, bias=False)]
    in_channels = 256
    for channels in filters:
        layers.append(DUC(in_channels, channels))
        in_channels = channels // 4
    layers.append(nn.Conv2d(in_channels, num_joints, 1, bias=False))
    head = nn.Sequential(*layers)
    resnet.init_like_torchvision(head)
    nn.init.normal_(head[-1].weight, std=0.001)  # start from flat heatmaps, as the deconv head
    return head


@dataclass(frozen=True)
class SimplePoseVariant:
    backbone: Callable[[], nn.Module]  # builds the trunk; it has .out_channels and .stride
    head: Callable[[int, tuple[int, ...], int], nn.Sequential] = deconv_head  # (in, filters, joints)
    filters: tuple[int, ...] = (256, 256, 256)  # one x2 upsampling per entry


_DUC_FILTERS = (512, 256, 128)  # GluonCV mobile_pose: DUC(512), DUC(256), DUC(128)

# Names as in GluonCV's model zoo table; `simple_pose_tiny` is ours, for CPU and edge.
VARIANTS: dict[str, SimplePoseVariant] = {
    "simple_pose_resnet18_v1b": SimplePoseVariant(resnet.resnet18_v1b),
    "simple_pose_resnet34_v1b": SimplePoseVariant(resnet.resnet34_v1b),
    "simple_pose_resnet50_v1b": SimplePoseVariant(resnet.resnet50_v1b),
    "simple_pose_resnet101_v1b": SimplePoseVariant(resnet.resnet101_v1b),
    "simple_pose_resnet152_v1b": SimplePoseVariant(resnet.resnet152_v1b),
    "simple_pose_resnet18_v1d": SimplePoseVariant(resnet.resnet18_v1d),
    "simple_pose_resnet34_v1d": SimplePoseVariant(resnet.resnet34_v1d),
    "simple_pose_resnet50_v1d": SimplePoseVariant(resnet.resnet50_v1d),
    "simple_pose_resnet101_v1d": SimplePoseVariant(resnet.resnet101_v1d),
    "simple_pose_resnet152_v1d": SimplePoseVariant(resnet.resnet152_v1d),
    "mobile_pose_resnet18_v1b": SimplePoseVariant(resnet.resnet18_v1b, pixel_shuffle_head, _DUC_FILTERS),
    "mobile_pose_resnet50_v1b": SimplePoseVariant(resnet.resnet50_v1b, pixel_shuffle_head, _DUC_FILTERS),
    "mobile_pose_mobilenetv2_1.0": SimplePoseVariant(mobilenet.mobilenet_v2, pixel_shuffle_head, _DUC_FILTERS),
    "mobile_pose_mobilenetv3_large": SimplePoseVariant(mobilenet.mobilenet_v3_large, pixel_shuffle_head, _DUC_FILTERS),
    "mobile_pose_mobilenetv3_small": SimplePoseVariant(mobilenet.mobilenet_v3_small, pixel_shuffle_head, _DUC_FILTERS),
    # Stride-16 trunk + two deconvs: still stride 4 out. 194k parameters with 17 joints.
    "simple_pose_tiny": SimplePoseVariant(tiny_trunk, deconv_head, (40, 40)),
}

class SimplePose(nn.Module):
    """image (N, 3, H, W), ImageNet-normalised -> heatmaps (N, num_joints, H/4, W/4), logits-free
    (trained with L2 against Gaussians)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, stride: int = 4):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def simple_pose(name: str, num_joints: int) -> SimplePose:
    """Build a VARIANTS entry with `num_joints` heatmaps.

    Raises:
        BadInput (a ValueError): an unknown name; the message lists the valid ones.
    """
    if name not in VARIANTS:
        raise BadInput(f"model.name: unknown Simple Pose model {name!r}; use one of: {', '.join(VARIANTS)}")
    variant = VARIANTS[name]
    backbone = variant.backbone()
    head = variant.head(backbone.out_channels, variant.filters, num_joints)
    stride = backbone.stride // 2 ** len(variant.filters)
    return SimplePose(backbone, head, stride)
