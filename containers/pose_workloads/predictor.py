"""What every model file says about itself (`ModelInfo`) and how any of them runs (`Predictor`).

The same metadata travels in each format: in the `.pth` dict (model_file.py), in the ONNX
`metadata_props` under `pose`, and in a `<engine>.json` sidecar beside a TensorRT engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pose_workloads.specs import PoseConfig


@dataclass
class ModelInfo:
    """What a model file says about itself."""

    network: str  # "simple-pose" | "bpnet"
    pose_config: PoseConfig
    input_size: tuple[int, int]  # (height, width) it was trained at
    model_config: dict[str, Any] = field(default_factory=dict)
    # bpnet: the train spec's dataloader.normalization_params (image_scale, image_offset) the model
    # was trained with, so that an exported file normalises as training did; None = the defaults.
    # Simple Pose always uses ImageNet mean/std.
    normalization: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({
            "network": self.network,
            "pose_config": self.pose_config.model_dump(mode="json"),
            "input_size": list(self.input_size),
            "model_config": self.model_config,
            "normalization": self.normalization,
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(
            network=data["network"],
            pose_config=PoseConfig.model_validate(data["pose_config"]),
            input_size=tuple(data["input_size"]),
            model_config=dict(data.get("model_config") or {}),
            normalization=data.get("normalization"),
        )


@dataclass
class Predictor:
    """`predictor(images)` with images (N,3,H,W) float32, normalised as in training, returns the
    network's outputs as float32 arrays: simple-pose `[heatmaps (N,K,H/4,W/4)]`, bpnet
    `[heatmaps (N,K+1,H/8,W/8), pafs (N,2L,H/8,W/8)]` (the last stage)."""

    info: ModelInfo
    run: Callable[[np.ndarray], list[np.ndarray]]
    backend: str  # "torch" | "onnxruntime" | "tensorrt"
    fixed_input: tuple[int, int] | None = None  # (H, W) when the model cannot change size (engines)

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        return self.run(np.ascontiguousarray(images, dtype=np.float32))
