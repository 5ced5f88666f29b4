"""ResNet trunks (He et al. 2016) for Simple Pose, written without torchvision.

Two GluonCV flavours:

* `v1b`: torchvision's ResNet (the stride sits on the 3x3 conv of a bottleneck, "ResNet v1.5").
  Module names and state_dict keys are torchvision's, so `resnet18-f37072fd.pth` or
  `resnet50-0676ba61.pth` loads into it unchanged (its `fc.*` keys are dropped by
  `load_backbone_weights`).
* `v1d`: GluonCV's v1d ("Bag of Tricks", He et al. 2019, arXiv 1812.01187): a deep stem of three
  3x3 convs (32, 32, 64 channels) instead of one 7x7, and an average pool before the 1x1 conv of
  every downsampling shortcut so the shortcut sees all pixels rather than one in four.
  torchvision has no such model, so the extra modules follow timm's `resnet*d`, the field's
  PyTorch layout for it: `conv1.{0,1,3,4,6}` (conv, BN, ReLU, conv, BN, ReLU, conv) and
  `downsample.{0: AvgPool2d, 1: conv, 2: BN}`; every other key is torchvision's. timm's
  `resnet50d` weights therefore load into `resnet50_v1d`.

The trunk stops after `layer4` (stride 32): pose models need the feature map, not the classifier,
so there is no `avgpool` / `fc`.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        # Stride on the 3x3 rather than the first 1x1 (torchvision, GluonCV v1b): +0.5 % top-1.
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = conv1x1(channels, channels * self.expansion)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_deep_stem(stem_width: int = 32, out_channels: int = 64) -> nn.Sequential:
    """Three 3x3 convs in place of the 7x7 (v1c/v1d). The last BN + ReLU are the trunk's bn1/relu,
    so the indices are timm's: conv1.0, conv1.1, conv1.3, conv1.4, conv1.6."""
    return nn.Sequential(
        conv3x3(3, stem_width, stride=2),
        nn.BatchNorm2d(stem_width),
        nn.ReLU(inplace=True),
        conv3x3(stem_width, stem_width),
        nn.BatchNorm2d(stem_width),
        nn.ReLU(inplace=True),
        conv3x3(stem_width, out_channels),
    )


def shortcut(in_channels: int, out_channels: int, stride: int, avg_down: bool) -> nn.Sequential:
    """The projection on a block's identity path when its shape changes."""
    if not avg_down:
        return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    # v1d: average the stride x stride window instead of skipping 3 of 4 pixels. Identity at
    # stride 1 keeps the conv at index 1 in every block (timm's layout).
    pool = (
        nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
    )
    return nn.Sequential(pool, conv1x1(in_channels, out_channels), nn.BatchNorm2d(out_channels))


def make_layer(
    block: type[BasicBlock] | type[Bottleneck], in_channels: int, channels: int, blocks: int, stride: int,
    avg_down: bool
) -> nn.Sequential:
    out_channels = channels * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = shortcut(in_channels, out_channels, stride, avg_down)
    layers = [block(in_channels, channels, stride, downsample)]
    layers += [block(out_channels, channels) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """A ResNet trunk: input (N, 3, H, W) -> features (N, out_channels, H/32, W/32)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        deep_stem: bool = False,
        avg_down: bool = False,
    ):
        super().__init__()
        self.conv1 = make_deep_stem() if deep_stem else nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        # "layer{n}": torchvision's names, kept so its weight files load.
        self.layer1 = make_layer(block, 64, 64, layers[0], 1, avg_down)
        self.layer2 = make_layer(block, 64 * block.expansion, 128, layers[1], 2, avg_down)
        self.layer3 = make_layer(block, 128 * block.expansion, 256, layers[2], 2, avg_down)
        self.layer4 = make_layer(block, 256 * block.expansion, 512, layers[3], 2, avg_down)
        self.out_channels = 512 * block.expansion
        self.stride = 32
        init_like_torchvision(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def init_like_torchvision(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs, BN at identity: torchvision's ResNet/MobileNet init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _resnet(block: type[BasicBlock] | type[Bottleneck], layers: list[int], *, deep_stem: bool = False,
            avg_down: bool = False) -> ResNet:
    return ResNet(block, layers, deep_stem=deep_stem, avg_down=avg_down)


def resnet18_v1b() -> ResNet:
    return _resnet(BasicBlock, [2, 2, 2, 2])


def resnet34_v1b() -> ResNet:
    return _resnet(BasicBlock, [3, 4, 6, 3])


def resnet50_v1b() -> ResNet:
    return _resnet(Bottleneck, [3, 4, 6, 3])


def resnet101_v1b() -> ResNet:
    return _resnet(Bottleneck, [3, 4, 23, 3])


def resnet152_v1b() -> ResNet:
    return _resnet(Bottleneck, [3, 8, 36, 3])


def resnet18_v1d() -> ResNet:
    return _resnet(BasicBlock, [2, 2, 2, 2], deep_stem=True, avg_down=True)


def resnet34_v1d() -> ResNet:
    return _resnet(BasicBlock, [3, 4, 6, 3], deep_stem=True, avg_down=True)


def resnet50_v1d() -> ResNet:
    return _resnet(Bottleneck, [3, 4, 6, 3], deep_stem=True, avg_down=True)


def resnet101_v1d() -> ResNet:
    return _resnet(Bottleneck, [3, 4, 23, 3], deep_stem=True, avg_down=True)


def resnet152_v1d() -> ResNet:
    return _resnet(Bottleneck, [3, 8, 36, 3], deep_stem=True, avg_down=True)
