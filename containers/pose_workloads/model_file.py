"""The `.pth` model file: the one place that writes, reads, checks and opens it.

A `torch.save`d dict, self-describing so that evaluate, inference, export and prune need only
the file (docs/ARCHITECTURE.md lists its keys):

    write(path, contents(...))     train's checkpoints and model_*.pth, prune's output
    read(path)                      the dict, checked for the keys every model file has
    check_network(path, found, w)   "this is a bpnet model; use `pose bpnet ...`"
    build_model(ckpt)               the nn.Module (the pickled one of a pruned model)
    model_info(ckpt)                its ModelInfo, as ONNX files and engines carry it
    open_predictor(path)            a Predictor on the model's last (or a chosen) stage

Only load model files you trust: a pruned model is a whole pickled module (TAO's load_graph), so
files are read with `weights_only=False`, as with any PyTorch checkpoint.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from pose_workloads.errors import BadInput
from pose_workloads.files import write_atomic
from pose_workloads.predictor import ModelInfo, Predictor
from pose_workloads.specs import PoseConfig

REQUIRED_KEYS = ("network", "pose_config", "input_size")


def contents(network: str, model, model_config: dict[str, Any], pose_config: PoseConfig | dict[str, Any],
             input_size, spec: Any = None, save_module: bool = False, **extra: Any) -> dict[str, Any]:
    """The model-file dict: metadata, the state_dict on CPU (never DDP-prefixed), the resolved
    spec, `extra` (training state, pruning record) and, with `save_module`, the whole module
    (a pruned model's shapes no longer follow model_config)."""
    if isinstance(pose_config, PoseConfig):
        pose_config = pose_config.model_dump(mode="json")
    return {
        "network": network,
        "model_config": dict(model_config or {}),
        "pose_config": pose_config,
        "input_size": [int(input_size[0]), int(input_size[1])],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "spec": spec.model_dump(mode="json", by_alias=True) if hasattr(spec, "model_dump") else spec,
        **({"module": copy.deepcopy(model).cpu()} if save_module else {}),
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


def load(path: str | Path, weights_only: bool = False) -> Any:
    """The one `torch.load` of model files and checkpoints, on CPU. weights_only=True for files
    known to hold tensors and plain types only (training's own checkpoints without a module)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=weights_only)


def read(path: str | Path) -> dict[str, Any]:
    """The `.pth` dict, checked for the keys every model file has."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: model file not found; pass the .pth written by train (e.g. RESULTS/model_best.pth)")
    ckpt = load(path)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing or ("state_dict" not in ckpt and "module" not in ckpt):
        raise BadInput(f"{path}: not a pose model file (missing {', '.join(missing) or 'state_dict'}); "
                       "pass a checkpoint written by `pose ... train`")
    return ckpt


def check_network(path: str | Path, found: str, wanted: str, fix: str | None = None) -> None:
    """BadInput when a model file of network `found` is given where `wanted` is needed."""
    if found != wanted:
        raise BadInput(f"{path}: network: this is a {found} model; {fix or f'use `pose {found} ...`'}")


def build_model(ckpt: dict[str, Any]):
    """Rebuild the nn.Module: the pickled module of a pruned model, else build + load weights."""
    from pose_workloads.models import build_model as build

    if ckpt.get("module") is not None:
        model = ckpt["module"]
        if ckpt.get("state_dict"):
            model.load_state_dict(ckpt["state_dict"])
        return model
    pose_config = PoseConfig.model_validate(ckpt["pose_config"])
    # pretrained=False: the backbone's weights file was only needed at the start of training.
    model = build(ckpt["network"], ckpt.get("model_config") or {}, pose_config.num_joints, pretrained=False)
    model.load_state_dict(ckpt["state_dict"])
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
    model = build_model(ckpt)
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
