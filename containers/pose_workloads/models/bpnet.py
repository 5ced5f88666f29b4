"""BodyPoseNet: OpenPose-style bottom-up network (Cao et al. 2017) as TAO's `BpNetLiteModel`.

    image (N, 3, H, W)
      -> backbone (stride 8) -> interface -> features F (N, C, H/8, W/8)
      -> initial stage(F)                        -> heat_1, paf_1
      -> refinement stage t(cat(F, heat, paf))   -> heat_t, paf_t      for t = 2 .. stages

`forward` returns every stage's (heatmaps, pafs): all are supervised (per-stage loss) and the
last is the prediction. heatmaps: (N, heat_channels, H/8, W/8), joints then one background
channel; pafs: (N, paf_channels, H/8, W/8), (x, y) per limb. Both are regressed with L2, so there
is no activation on the outputs.

The stages follow TAO's lite model: the initial stage is 3 x 3x3 convs then, per branch, a
1x1 conv to 512 and a 1x1 conv out; a refinement stage is 5 x 7x7 convs then, per branch, a
1x1 conv and a 1x1 conv out. `use_self_attention` gates each refinement branch as TAO does: the
heat branch by sigmoid(conv3x3), the PAF branch by tanh(conv3x3) (a signed gate, as PAFs are).

Backbones, chosen in one table (ARCHITECTURES):

* "vgg": VGG19 up to conv4_2 in torchvision's `features.*` layout (a local vgg19-dcbb9e9d.pth
  loads), then OpenPose's conv4_3_CPM (256) and conv4_4_CPM (128). Plain convs without BN, as
  torchvision's vgg19 and OpenPose (TAO's own VGG adds BN, but its weights are not public).
* "light": lightweight OpenPose (Osokin 2018, arXiv 1811.12004): MobileNetV1 to conv5_5 with a
  dilated conv5 to stay at stride 8, its residual CPM, and depthwise-separable stage convs. The
  7x7 stage kernels are kept (as depthwise 7x7) so the stages see what TAO's see, at 1/35 of
  the weights. For CPU and edge; run it channels_last (the default `data_format`): PyTorch's
  CPU depthwise kernels are 3-5x faster in NHWC.
* "tiny": the same design at 64 channels and ~0.17M parameters, for tests and the CPU demo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pose_workloads.errors import BadInput
from pose_workloads.specs.bpnet import BPNET_STRIDE

from .resnet import init_like_torchvision


def separable_conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                   dilation: int = 1) -> nn.Sequential:
    """Depthwise kxk + BN + ReLU, pointwise 1x1 + BN + ReLU (MobileNetV1's block)."""
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def plain_conv(in_channels: int, out_channels: int, kernel_size: int, use_bias: bool = True) -> nn.Sequential:
    """kxk conv + ReLU, no BN: TAO's and OpenPose's stage layers."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=use_bias),
        nn.ReLU(inplace=True),
    )


# --------------------------------------------------------------------------------------------
# Backbones: input (N, 3, H, W) -> (N, out_channels, H/8, W/8)
# --------------------------------------------------------------------------------------------

# VGG19 conv1_1 .. conv4_2 ("M" = 2x2 max-pool): the first 23 modules of torchvision's
# vgg19().features, so the indices (features.0, .2, .5, ... .21) are its keys.
VGG19_TO_CONV4_2 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512]


class VggTrunk(nn.Module):
    def __init__(self, use_bias: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in VGG19_TO_CONV4_2:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, item, 3, padding=1, bias=use_bias), nn.ReLU(inplace=True)]
                in_channels = item
        self.features = nn.Sequential(*layers)
        self.out_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


# (out_channels, stride, dilation) of MobileNetV1 conv2_1 .. conv5_5 as lightweight OpenPose
# cuts it: conv5's stride 2 becomes dilation 2 so the map stays at stride 8.
LIGHT_TRUNK = [
    (64, 1, 1), (128, 2, 1), (128, 1, 1), (256, 2, 1), (256, 1, 1),
    (512, 1, 1), (512, 1, 2), (512, 1, 1), (512, 1, 1), (512, 1, 1), (512, 1, 1),
]

# The tiny trunk: stride 8 in three steps, then a dilated block for context.
TINY_TRUNK = [(32, 2, 1), (64, 2, 1), (64, 1, 1), (64, 1, 2)]


class SeparableTrunk(nn.Module):
    """A 3x3 stride-2 stem conv, then depthwise-separable blocks from a (out, stride, dilation) table."""

    def __init__(self, stem_channels: int, blocks: list[tuple[int, int, int]]):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_channels),
                          nn.ReLU(inplace=True))
        ]
        in_channels = stem_channels
        for out_channels, stride, dilation in blocks:
            layers.append(separable_conv(in_channels, out_channels, 3, stride, dilation))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.out_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def vgg_backbone(use_bias: bool) -> VggTrunk:
    return VggTrunk(use_bias)


def light_backbone(use_bias: bool) -> SeparableTrunk:
    return SeparableTrunk(32, LIGHT_TRUNK)


def tiny_backbone(use_bias: bool) -> SeparableTrunk:
    return SeparableTrunk(16, TINY_TRUNK)


# --------------------------------------------------------------------------------------------
# Interfaces: backbone channels -> stage width C
# --------------------------------------------------------------------------------------------

def cpm_interface(in_channels: int, channels: int, use_bias: bool) -> nn.Sequential:
    """OpenPose's conv4_3_CPM (3x3, 256) and conv4_4_CPM (3x3, C)."""
    return nn.Sequential(plain_conv(in_channels, 256, 3, use_bias), plain_conv(256, channels, 3, use_bias))


class ResidualCpm(nn.Module):
    """Lightweight OpenPose's CPM: 1x1 align, residual 3 x separable 3x3, 3x3 conv."""

    def __init__(self, in_channels: int, channels: int, use_bias: bool):
        super().__init__()
        self.align = plain_conv(in_channels, channels, 1, use_bias)
        self.trunk = nn.Sequential(*[separable_conv(channels, channels) for _ in range(3)])
        self.conv = plain_conv(channels, channels, 3, use_bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.align(x)
        return self.conv(x + self.trunk(x))


def residual_cpm_interface(in_channels: int, channels: int, use_bias: bool) -> nn.Module:
    return ResidualCpm(in_channels, channels, use_bias)


def align_interface(in_channels: int, channels: int, use_bias: bool) -> nn.Sequential:
    """A 1x1 conv: all the tiny model can afford (a 3x3 at 64 channels would be a fifth of it)."""
    return plain_conv(in_channels, channels, 1, use_bias)


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------

def stage_trunk(in_channels: int, channels: int, kernels: tuple[int, ...], separable: bool,
                use_bias: bool) -> nn.Sequential:
    layers = []
    for kernel_size in kernels:
        if separable:
            layers.append(separable_conv(in_channels, channels, kernel_size))
        else:
            layers.append(plain_conv(in_channels, channels, kernel_size, use_bias))
        in_channels = channels
    return nn.Sequential(*layers)


def branch(channels: int, hidden: int, out_channels: int, use_bias: bool) -> nn.Sequential:
    """1x1 conv + ReLU, then the 1x1 output conv (no activation: L2-regressed maps)."""
    return nn.Sequential(plain_conv(channels, hidden, 1, use_bias), nn.Conv2d(hidden, out_channels, 1, bias=use_bias))


def gate_conv(channels: int, separable: bool, use_bias: bool) -> nn.Module:
    """The 3x3 conv whose sigmoid / tanh gates a branch (TAO's attention_conv); depthwise +
    pointwise in the separable models, without BN or ReLU so the gate keeps its full range."""
    if not separable:
        return nn.Conv2d(channels, channels, 3, padding=1, bias=use_bias)
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=use_bias),
    )


class InitialStage(nn.Module):
    def __init__(self, channels: int, kernels: tuple[int, ...], hidden: int, heat_channels: int, paf_channels: int,
                 separable: bool, use_bias: bool):
        super().__init__()
        self.trunk = stage_trunk(channels, channels, kernels, separable, use_bias)
        self.heat = branch(channels, hidden, heat_channels, use_bias)
        self.paf = branch(channels, hidden, paf_channels, use_bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        x = self.trunk(features)
        return self.heat(x), self.paf(x)


class RefinementStage(nn.Module):
    def __init__(self, in_channels: int, channels: int, kernels: tuple[int, ...], heat_channels: int, paf_channels: int,
                 separable: bool, use_bias: bool, use_self_attention: bool):
        super().__init__()
        self.trunk = stage_trunk(in_channels, channels, kernels, separable, use_bias)
        self.heat_hidden = plain_conv(channels, channels, 1, use_bias)
        self.paf_hidden = plain_conv(channels, channels, 1, use_bias)
        self.heat_attention = gate_conv(channels, separable, use_bias) if use_self_attention else None
        self.paf_attention = gate_conv(channels, separable, use_bias) if use_self_attention else None
        self.heat_out = nn.Conv2d(channels, heat_channels, 1, bias=use_bias)
        self.paf_out = nn.Conv2d(channels, paf_channels, 1, bias=use_bias)

    def forward(self, features: Tensor, heatmaps: Tensor, pafs: Tensor) -> tuple[Tensor, Tensor]:
        x = self.trunk(torch.cat([features, heatmaps, pafs], dim=1))
        heat, paf = self.heat_hidden(x), self.paf_hidden(x)
        if self.heat_attention is not None:
            heat = heat * torch.sigmoid(self.heat_attention(heat))
            paf = paf * torch.tanh(self.paf_attention(paf))
        return self.heat_out(heat), self.paf_out(paf)


# --------------------------------------------------------------------------------------------
# The table and the model
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BpnetArchitecture:
    backbone: Callable[[bool], nn.Module]  # use_bias -> trunk at stride 8 with .out_channels
    interface: Callable[[int, int, bool], nn.Module]  # (in, channels, use_bias) -> module
    channels: int = 128  # width of the features and of every stage (TAO: 128)
    initial_kernels: tuple[int, ...] = (3, 3, 3)  # TAO's stage1_kernel_sizes
    refinement_kernels: tuple[int, ...] = (7, 7, 7, 7, 7)  # TAO's stageT_kernel_sizes
    initial_hidden: int = 512  # the 1x1 conv of the initial stage's branches
    separable: bool = False  # depthwise-separable + BN stage convs instead of plain ones


ARCHITECTURES: dict[str, BpnetArchitecture] = {
    "vgg": BpnetArchitecture(vgg_backbone, cpm_interface),
    "light": BpnetArchitecture(light_backbone, residual_cpm_interface, separable=True),
    "tiny": BpnetArchitecture(tiny_backbone, align_interface, channels=64, initial_hidden=128, separable=True),
}


class BodyPoseNet(nn.Module):
    def __init__(self, architecture: BpnetArchitecture, stages: int = 3, heat_channels: int = 19,
                 paf_channels: int = 38,
                 use_self_attention: bool = False, use_bias: bool = True, backbone_bias: bool = True):
        super().__init__()
        arch, channels = architecture, architecture.channels
        self.backbone = arch.backbone(backbone_bias)
        self.interface = arch.interface(self.backbone.out_channels, channels, use_bias)
        self.initial = InitialStage(channels, arch.initial_kernels, arch.initial_hidden, heat_channels, paf_channels,
                                    arch.separable, use_bias)
        self.refinements = nn.ModuleList(
            RefinementStage(channels + heat_channels + paf_channels, channels, arch.refinement_kernels, heat_channels,
                            paf_channels, arch.separable, use_bias, use_self_attention)
            for _ in range(stages - 1)
        )
        self.stride = BPNET_STRIDE
        self.heat_channels = heat_channels
        self.paf_channels = paf_channels
        init_like_torchvision(self)
        for m in self.output_convs():
            # Output convs start near zero (TAO: N(0, 0.01) for all its convs): the first
            # predictions are flat maps rather than noise the refinement stages must undo.
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def output_convs(self) -> list[nn.Conv2d]:
        convs = [self.initial.heat[-1], self.initial.paf[-1]]
        for stage in self.refinements:
            convs += [stage.heat_out, stage.paf_out]
        return convs

    def forward(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        features = self.interface(self.backbone(x))
        heatmaps, pafs = self.initial(features)
        outputs = [(heatmaps, pafs)]
        for stage in self.refinements:
            heatmaps, pafs = stage(features, heatmaps, pafs)
            outputs.append((heatmaps, pafs))
        return outputs


def body_pose_net(
    architecture: str = "vgg",
    stages: int = 3,
    heat_channels: int = 19,
    paf_channels: int = 38,
    use_self_attention: bool = False,
    use_bias: bool = True,
    backbone_bias: bool = True,
) -> BodyPoseNet:
    """Build from the spec's `model` section values.

    Raises:
        BadInput (a ValueError): an unknown architecture (listing the valid ones) or stages < 2.
    """
    if architecture not in ARCHITECTURES:
        raise BadInput(f"model.backbone_attributes.architecture: unknown {architecture!r}; "
                       f"use one of: {', '.join(ARCHITECTURES)}")
    if stages < 2:
        raise BadInput(f"model.stages: {stages} is too few; use at least 2 (the initial stage and one refinement)")
    return BodyPoseNet(ARCHITECTURES[architecture], stages, heat_channels, paf_channels, use_self_attention, use_bias,
                       backbone_bias)


def stagewise_param_groups(model: BodyPoseNet) -> list[dict[str, Any]]:
    """TAO's `use_stagewise_lr_multipliers`: optimizer param groups with an `lr_mult`.

    Backbone, interface and initial stage learn at 1x (biases 2x); refinement stages at 4x
    (biases 8x), TAO's `get_lr_multipiers()` (itself from the original OpenPose Caffe prototxt).
    BN weights count as weights. Empty groups are left out.
    """
    groups: dict[float, list[nn.Parameter]] = {1.0: [], 2.0: [], 4.0: [], 8.0: []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        refinement = name.startswith("refinements.")
        is_bias = name.endswith("bias") and param.ndim == 1 and not _is_norm_param(model, name)
        mult = (4.0 if refinement else 1.0) * (2.0 if is_bias else 1.0)
        groups[mult].append(param)
    return [{"params": params, "lr_mult": mult} for mult, params in groups.items() if params]


def _is_norm_param(model: nn.Module, name: str) -> bool:
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(module, nn.modules.batchnorm._BatchNorm)
