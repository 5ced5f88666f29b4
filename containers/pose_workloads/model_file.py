"""The `.pth` model file: the one place that writes, reads, checks and opens it.

A `torch.save`d dict, self-describing so that evaluate, inference, export and prune need only
the file (docs/ARCHITECTURE.md lists its keys):

    write(path, contents(...))     train's checkpoints and model_*.pth, prune's output
    read(path)                      the dict, checked for the keys every model file has
    check_network(path, found, w)   "this is a bpnet model; use `pose bpnet ...`"
    build_model(ckpt)               the nn.Module: model_config's network, resized to
                                    `layer_channels` (a pruned model), with the saved weights
    model_info(ckpt)                its ModelInfo, as ONNX files and engines carry it
    open_predictor(path)            a Predictor on the model's last (or a chosen) stage

Model files are data: every file is read with `torch.load(weights_only=True)` (tensors and
plain types only), so a file can never run code when opened. A pruned model is stored as its
per-layer channel counts plus the state_dict, not as a pickled module; files from before that
(TAO's load_graph style, a whole pickled module) are refused with the command that converts
them, for files one trusts: `python -m pose_workloads.model_file convert-trusted IN OUT`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pose_workloads.errors import BadInput
from pose_workloads.files import write_atomic
from pose_workloads.predictor import ModelInfo, Predictor
from pose_workloads.specs import PoseConfig

NETWORKS = ("simple-pose", "bpnet")
REQUIRED_KEYS = ("network", "pose_config", "input_size")


def contents(network: str, model, model_config: dict[str, Any], pose_config: PoseConfig | dict[str, Any],
             input_size, spec: Any = None, **extra: Any) -> dict[str, Any]:
    """The model-file dict: metadata, every layer's channel counts (a pruned model's shapes no
    longer follow model_config), the state_dict on CPU (never DDP-prefixed), the resolved spec
    and `extra` (training state, pruning record)."""
    if isinstance(pose_config, PoseConfig):
        pose_config = pose_config.model_dump(mode="json")
    return {
        "network": network,
        "model_config": dict(model_config or {}),
        "pose_config": pose_config,
        "input_size": [int(input_size[0]), int(input_size[1])],
        "layer_channels": layer_channels(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "spec": spec.model_dump(mode="json", by_alias=True) if hasattr(spec, "model_dump") else spec,
        **extra,
    }


def write(path: str | Path, data: dict[str, Any]) -> None:
    """torch.save through a temp file: a reader (or a resume after kill -9) never sees half a file.
    Serialised in memory first, so that a full disk is refused knowing the bytes needed (torch's
    own writer reports only "file write failed")."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(data, buffer)
    write_atomic(path, buffer.getvalue())


CONVERT = "python -m pose_workloads.model_file convert-trusted"


def load(path: str | Path, mmap: bool = False) -> Any:
    """The one `torch.load` of model, checkpoint and weights files: on CPU, `weights_only=True`
    (tensors and plain types; nothing in the file is run). Anything else is one-line BadInput.
    `mmap`: tensors stay in the file until touched (to read a small entry of a big file)."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: file not found; check the path")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: empty file; pass the .pth written by `pose ... train` (or `prune`)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise BadInput(f"{path}: not a PyTorch file ({_first_line(err)}); "
                           "pass the .pth written by `pose ... train`") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if not found:  # refused for its bytes, not for an object it names: damaged
            raise BadInput(f"{path}: not a readable PyTorch file, truncated or damaged ({_first_line(err)}); "
                           "pass the .pth written by `pose ... train`, or copy it again") from None
        what = f"the Python object {found.group(1)}"
        if found.group(1).startswith(("torch.nn.", "pose_workloads.")):
            raise BadInput(f"{path}: holds {what} (a pickled model, as pruned files were once saved), which pose "
                           "does not load because unpickling runs code; if you trust this file, convert it: "
                           f"{CONVERT} {path} NEW.pth") from None
        raise BadInput(f"{path}: holds {what}, which pose never loads (unpickling it would run code); "
                       "pass a model file written by pose") from None
    except Exception as err:  # torch raises RuntimeError, EOFError, KeyError... for a damaged file
        raise BadInput(f"{path}: not a readable PyTorch file, truncated or damaged ({_first_line(err)}); "
                       "pass the .pth written by `pose ... train`, or copy it again") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0][:160] if text else "") or type(err).__name__


def read(path: str | Path) -> dict[str, Any]:
    """The `.pth` dict, checked for the keys every model file has and for metadata that can
    build a model (a known network, a valid pose config, a positive input size)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: model file not found; pass the .pth written by train (e.g. RESULTS/model_best.pth)")
    if path.suffix in (".onnx", ".engine"):
        raise BadInput(f"{path}: a {path.suffix} file where a PyTorch .pth model is needed; "
                       "pass the .pth it was exported from")
    ckpt = load(path)
    if not isinstance(ckpt, dict):
        raise BadInput(f"{path}: not a pose model file (holds a {type(ckpt).__name__}); "
                       "pass a checkpoint written by `pose ... train`")
    missing = [k for k in (*REQUIRED_KEYS, "state_dict") if k not in ckpt]
    if missing:
        raise BadInput(f"{path}: not a pose model file (missing {', '.join(missing)}); "
                       "pass a checkpoint written by `pose ... train`")
    _check_metadata(path, ckpt)
    return ckpt


def _check_metadata(path: Path, ckpt: dict[str, Any]) -> None:
    from pydantic import ValidationError

    if ckpt["network"] not in NETWORKS:
        raise BadInput(f"{path}: network: {ckpt['network']!r} is not one of {', '.join(NETWORKS)}; "
                       "the file is not a pose model")
    size = ckpt["input_size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise BadInput(f"{path}: input_size: {size!r} is not [height, width] in pixels; the file's metadata is damaged")
    try:
        PoseConfig.model_validate(ckpt["pose_config"])
    except ValidationError as err:
        raise BadInput(f"{path}: pose_config: {_first_line(err)}; the file's metadata is damaged") from None
    if not isinstance(ckpt["state_dict"], dict) or not isinstance(ckpt.get("model_config") or {}, dict):
        raise BadInput(f"{path}: state_dict/model_config: not mappings; the file is not a pose model")


def check_network(path: str | Path, found: str, wanted: str, fix: str | None = None) -> None:
    """BadInput when a model file of network `found` is given where `wanted` is needed."""
    if found != wanted:
        raise BadInput(f"{path}: network: this is a {found} model; {fix or f'use `pose {found} ...`'}")


def build_model(ckpt: dict[str, Any], path: str | Path = "model file"):
    """The nn.Module: model_config's network, resized to the file's `layer_channels` (a pruned
    model), with the saved weights. Weights that contradict the metadata are BadInput."""
    from pose_workloads.models import build_model as build

    pose_config = PoseConfig.model_validate(ckpt["pose_config"])
    try:
        # pretrained=False: the backbone's weights file was only needed at the start of training.
        model = build(ckpt["network"], ckpt.get("model_config") or {}, pose_config.num_joints, pretrained=False)
    except BadInput as err:
        raise BadInput(f"{path}: model_config: {err}") from None
    if ckpt.get("layer_channels"):
        model = with_channels(model, ckpt["layer_channels"], path)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, ValueError) as err:
        detail = " ".join(str(err).split())[:240]
        raise BadInput(f"{path}: state_dict does not fit the network its metadata describes ({detail}); "
                       "metadata and weights disagree: use the file as train or prune wrote it") from None
    return model


def layer_channels(model) -> dict[str, list[int]]:
    """{module name: channel counts} of the layers pruning resizes: [in, out, groups] of a conv,
    [features] of a batch norm, [in, out] of a linear layer. Plain ints: weights_only reads them."""
    from torch import nn

    channels = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            channels[name] = [module.in_channels, module.out_channels, module.groups]
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            channels[name] = [module.num_features]
        elif isinstance(module, nn.Linear):
            channels[name] = [module.in_features, module.out_features]
    return channels


def with_channels(model, channels: dict[str, list[int]], path: str | Path = "model file"):
    """`model` with every layer whose counts differ from `channels` replaced by one of the same
    kind and settings, sized as `channels` says (its weights come from the state_dict after)."""
    from torch import nn

    current = layer_channels(model)
    for name, counts in channels.items():
        # Pruning only narrows a layer (and keeps a conv's grouping: 1, or depthwise).
        built = current.get(name)
        fits = (built is not None and isinstance(counts, (list, tuple)) and len(counts) == len(built)
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 < c <= b for c, b in zip(counts, built)))
        if fits and len(built) == 3:
            fits = counts[2] == 1 if built[2] == 1 else counts[2] == counts[0] == counts[1]
        if not fits:
            raise BadInput(f"{path}: layer_channels: {name} {counts!r} does not fit model_config's network "
                           f"({built}); metadata and weights disagree: use the file as train or prune wrote it")
        if list(counts) == built:
            continue
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, attribute)
        if isinstance(old, nn.modules.conv._ConvNd):
            settings = dict(kernel_size=old.kernel_size, stride=old.stride, padding=old.padding, dilation=old.dilation,
                            groups=counts[2], bias=old.bias is not None, padding_mode=old.padding_mode)
            if old.transposed:
                settings["output_padding"] = old.output_padding
            new = type(old)(counts[0], counts[1], **settings)
        elif isinstance(old, nn.modules.batchnorm._BatchNorm):
            new = type(old)(counts[0], eps=old.eps, momentum=old.momentum, affine=old.affine,
                            track_running_stats=old.track_running_stats)
        else:
            new = nn.Linear(counts[0], counts[1], bias=old.bias is not None)
        setattr(parent, attribute, new)
    return model


def model_info(ckpt: dict[str, Any]) -> ModelInfo:
    """The file's ModelInfo; a bpnet model's normalisation comes from its training spec."""
    info = ModelInfo.from_dict(ckpt)
    spec = ckpt.get("spec")
    if info.normalization is None and isinstance(spec, dict):
        info.normalization = (spec.get("dataloader") or {}).get("normalization_params")
    return info


def num_stages(model) -> int | None:
    """How many stages a bpnet model predicts with (initial + refinements); None for others."""
    return 1 + len(model.refinements) if hasattr(model, "refinements") else None


def stage_outputs(network: str, outputs: Any, stage: int | None = None) -> list:
    """The prediction of a forward pass: simple-pose returns heatmaps; bpnet returns a list of
    (heatmaps, pafs) per stage, of which the last (or stage `stage`, from 1) is the prediction."""
    if network == "bpnet":
        heatmaps, pafs = outputs[-1] if stage is None else outputs[stage - 1]
        return [heatmaps, pafs]
    return [outputs]


def open_predictor(path: str | Path, network: str | None = None, output_stage: int | None = None,
                   device: str | None = None) -> Predictor:
    """A `.pth` file as a Predictor (torch, no grad, on `device` or the GPU when there is one).

    Args:
        network: when given, a file of another network is BadInput.
        output_stage: bpnet only: predict with this stage (1 = the initial one); None = the last.
    """
    import torch

    ckpt = read(path)
    if network is not None:
        check_network(path, ckpt["network"], network)
    info = model_info(ckpt)
    model = build_model(ckpt, path)
    stages = num_stages(model)
    if output_stage is not None and stages is not None and output_stage > stages:
        raise BadInput(f"output_stage_to_use: {output_stage}, but {path} has {stages} stages; "
                       f"use 1..{stages} or null (the last)")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).eval()

    @torch.inference_mode()
    def run(images: np.ndarray) -> list[np.ndarray]:
        outputs = model(torch.from_numpy(images).to(dev))
        return [o.float().cpu().numpy() for o in stage_outputs(info.network, outputs, output_stage)]

    return Predictor(info=info, run=run, backend="torch")


def convert_trusted(source: str | Path, target: str | Path) -> None:
    """Rewrite a model file that holds a pickled module (pose's pruned files before layer_channels)
    as data: layer_channels + state_dict. Unpickling runs code: only for files you trust."""
    import torch

    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        raise BadInput(f"{target}: is the file being converted; write the converted model to a new file")
    ckpt = torch.load(source, map_location="cpu", weights_only=False)  # trusted by the caller, explicitly
    if not isinstance(ckpt, dict) or "network" not in ckpt:
        raise BadInput(f"{source}: not a pose model file; nothing to convert")
    module = ckpt.pop("module", None)
    if module is not None:
        ckpt["state_dict"] = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        ckpt["layer_channels"] = layer_channels(module)
    write(target, ckpt)
    read(target)  # the converted file opens with weights_only=True
    print(f"converted {source} -> {target}: layer_channels + state_dict, no pickled objects")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "convert-trusted":
        print(f"usage: {CONVERT} MODEL_WITH_PICKLED_MODULE.pth NEW.pth  (only for files you trust)", file=sys.stderr)
        sys.exit(2)
    try:
        convert_trusted(sys.argv[2], sys.argv[3])
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
