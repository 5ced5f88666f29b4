"""The models: the one door is `build_model(network, model_config, num_joints)`.

* "simple-pose": `simple_pose.VARIANTS` (GluonCV's Simple Pose / Mobile Pose zoo + `simple_pose_tiny`),
  model_config = {"name": ..., "pretrained_backbone": path | None}.
* "bpnet": `bpnet.ARCHITECTURES` (TAO's BodyPoseNet with a VGG19, light or tiny backbone),
  model_config = the BodyPoseNet spec's `model` section as a dict.

Backbones keep torchvision's module names, so a torchvision weights file (resnet18-f37072fd.pth,
vgg19-dcbb9e9d.pth, mobilenet_v2-b0353104.pth, ...) loads into `model.backbone` through
`load_backbone_weights`. Weights are only read from local files; nothing is downloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from pose_workloads.errors import BadInput
from pose_workloads.specs import BpnetBackbone, BpnetModel, format_validation_error

from .bpnet import ARCHITECTURES, BodyPoseNet, body_pose_net, stagewise_param_groups
from .simple_pose import VARIANTS, SimplePose, simple_pose

__all__ = [
    "ARCHITECTURES", "VARIANTS", "BodyPoseNet", "SimplePose", "build_model", "count_flops", "count_parameters",
    "load_backbone_weights", "stagewise_param_groups",
]

log = logging.getLogger(__name__)

NETWORKS = ("simple-pose", "bpnet")


def build_model(network: str, model_config: Mapping[str, Any], num_joints: int, pretrained: bool = True) -> nn.Module:
    """Build a pose model, loading its backbone's pretrained weights when the config names a file.

    Args:
        network: "simple-pose" or "bpnet".
        model_config: for simple-pose {"name": variant, "pretrained_backbone": path | None}; for
            bpnet the spec's `model` section ({"backbone_attributes": {"architecture": "vgg" |
            "light" | "tiny", "pretrained_weights": path | None}, "stages", "heat_channels",
            "paf_channels", "use_self_attention", "use_bias", "data_format"}); keys neither uses
            (e.g. the regularizer settings) are ignored, missing ones take the spec defaults.
        num_joints: heatmaps of a Simple Pose model; bpnet takes its channels from the config.
        pretrained: False skips the backbone weights file, for models whose weights come from a
            checkpoint next (evaluate, inference, export, resume).

    Raises:
        BadInput: unknown network, variant or architecture (listing the valid ones), a field out
            of range, or an unreadable / mismatched weights file. One line with the fix.
    """
    if network == "simple-pose":
        model = simple_pose(model_config.get("name", "simple_pose_resnet50_v1b"), num_joints)
        weights = model_config.get("pretrained_backbone")
        if pretrained and weights:
            load_backbone_weights(model.backbone, weights)
        return model
    if network == "bpnet":
        config = _bpnet_config(model_config)
        backbone = config.backbone_attributes
        model = body_pose_net(
            backbone.architecture,
            stages=config.stages,
            heat_channels=config.heat_channels,
            paf_channels=config.paf_channels,
            use_self_attention=config.use_self_attention,
            use_bias=config.use_bias,
            backbone_bias=config.use_bias if backbone.use_bias is None else backbone.use_bias,
        )
        if pretrained and backbone.pretrained_weights:
            load_backbone_weights(model.backbone, backbone.pretrained_weights)
        if config.data_format == "channels_last":
            # TAO's data_format, kept as what it means here: a memory-format hint (NHWC tensors
            # run faster under AMP on tensor cores). Inputs are NCHW either way.
            model = model.to(memory_format=torch.channels_last)
        return model
    raise BadInput(f"network {network!r}: unknown; use one of: {', '.join(NETWORKS)}")


def _bpnet_config(model_config: Mapping[str, Any]) -> BpnetModel:
    """Validate with the spec's own model (one source of truth), ignoring keys it does not know."""
    data = {k: v for k, v in model_config.items() if k in BpnetModel.model_fields}
    attributes = data.get("backbone_attributes")
    if isinstance(attributes, Mapping):
        # TAO writes nlayers / use_batch_norm here too; they do not apply to these backbones.
        data["backbone_attributes"] = {k: v for k, v in attributes.items() if k in BpnetBackbone.model_fields}
    try:
        return BpnetModel.model_validate(data)
    except ValidationError as err:
        raise BadInput(format_validation_error("bpnet model_config", err)) from None


# Keys of a full torchvision classifier file that no backbone has.
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")
# Wrappers around the keys: DataParallel/DDP ("module."), our own models ("backbone.").
_WRAPPER_PREFIXES = ("module.", "backbone.")


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Fill `backbone` from a local torchvision-layout weights file.

    Accepts a plain state dict, or a checkpoint holding one under "state_dict" or "model".
    Strips "module." and "backbone." prefixes, drops a classifier's "fc." / "classifier." keys,
    then loads non-strictly and logs the missing and unexpected keys by name.

    Raises:
        BadInput: the file is missing or unreadable, shares no key with the backbone, or holds
            a tensor whose shape differs from the backbone's (weights of another architecture).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(
            f"{path}: backbone weights file not found; give a local torchvision-layout .pth "
            "(nothing is downloaded) or set the pretrained weights field to null"
        )
    from pose_workloads.model_file import load

    loaded = load(path)  # weights_only: a weights file is data; damaged or pickled files are one line
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise BadInput(f"{path}: not a state dict of tensors; give a torchvision-layout .pth state dict")

    state = {}
    for key, tensor in loaded.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        if not key.startswith(_CLASSIFIER_PREFIXES):
            state[key] = tensor

    own = backbone.state_dict()
    shared = [k for k in state if k in own]
    if not shared:
        raise BadInput(
            f"{path}: none of its {len(state)} tensors match the backbone (it expects keys like "
            f"{next(iter(own))!r}); give weights of this architecture in torchvision's layout"
        )
    wrong = [k for k in shared if state[k].shape != own[k].shape]
    if wrong:
        k = wrong[0]
        raise BadInput(
            f"{path}: {k} has shape {list(state[k].shape)} but the backbone expects {list(own[k].shape)} "
            f"({len(wrong)} tensors differ); give weights of the same architecture as the model's backbone"
        )

    result = backbone.load_state_dict(state, strict=False)
    # Files saved before PyTorch 0.4.1 (torchvision's own resnet18-f37072fd.pth) lack the BN
    # step counters; BN does not use them unless momentum is None.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    log.info("loaded %d backbone tensors from %s", len(shared), path)
    if missing:
        log.warning("backbone keys not in %s (left at their initial values): %s", path, ", ".join(missing))
    if result.unexpected_keys:
        log.warning("tensors in %s the backbone does not use (ignored): %s", path, ", ".join(result.unexpected_keys))


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on zeros of `input_shape` (N, 3, H, W), counting a multiply-add
    as 2 (torch's FlopCounterMode: convs, transposed convs, matmuls). Divide by 2 for the MACs
    that some papers call FLOPs. The model is run in eval mode and restored after."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
