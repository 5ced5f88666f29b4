"""runtime: every model file carries the same metadata, and a file that cannot be opened says why
in one line with the fix."""

from __future__ import annotations

import json

import pytest
import torch

from pose_workloads.errors import BadInput
from pose_workloads.export.tensorrt import tensorrt_unavailable
from pose_workloads.model_file import model_info
from pose_workloads.predictor import ModelInfo
from pose_workloads.runtime import engine_sidecar, load_predictor
from pose_workloads.specs import COCO17

NORMALIZATION = {"image_scale": [255.0, 255.0, 255.0], "image_offset": [0.5, 0.5, 0.5], "mask_scale": [255.0] * 3}


def test_model_info_round_trips_through_the_json_exported_files_carry():
    info = ModelInfo("bpnet", COCO17, (288, 384), {"stages": 2}, normalization=NORMALIZATION)

    again = ModelInfo.from_dict(json.loads(info.to_json()))

    assert again == info and again.input_size == (288, 384)


def test_checkpoint_info_carries_the_training_normalization():
    ckpt = {"network": "bpnet", "pose_config": COCO17.model_dump(), "input_size": [64, 64],
            "spec": {"dataloader": {"normalization_params": NORMALIZATION}}}

    assert model_info(ckpt).normalization == NORMALIZATION
    assert model_info({**ckpt, "spec": None}).normalization is None


# The TorchScript exporter's notice (see pose_workloads/export).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_file_without_pose_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False)

    with pytest.raises(BadInput,
                       match=r"plain.onnx: ONNX file has no 'pose' metadata; export it with `pose ... export`"):
        load_predictor(path)


@pytest.mark.parametrize("name, content, message", [
    ("model.tlt", b"x", r"unknown model file type '.tlt'; use one of .pth, .pt, .onnx, .engine"),
    ("missing.pth", None, r"model file not found"),
    ("model.engine", b"x",
     r"missing model.engine.json beside the engine; build engines with `pose ... export --engine_file`"),
])
def test_unusable_model_files_say_what_to_do(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(BadInput, match=message):
        load_predictor(path)


def test_a_checkpoint_that_is_not_a_pose_model_names_the_missing_keys(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {}}, path)

    with pytest.raises(BadInput, match=r"not a pose model file \(missing network, pose_config, input_size\)"):
        load_predictor(path)


def test_engine_without_tensorrt_points_to_the_onnx_file(tmp_path):
    if tensorrt_unavailable() is None:
        pytest.skip("TensorRT and a GPU are here")
    path = tmp_path / "model.engine"
    path.write_bytes(b"not built here")
    engine_sidecar(path).write_text(ModelInfo("bpnet", COCO17, (64, 64)).to_json())

    with pytest.raises(BadInput, match=r"use the \.onnx file"):
        load_predictor(path)
