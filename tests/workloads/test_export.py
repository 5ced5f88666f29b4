"""`pose <network> export`: ONNX files that match PyTorch, carry their metadata and keep the axes
inference varies; bad flags fail in one line before any work, and nothing is half-written."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pose_workloads.__main__ import build_parser
from pose_workloads.errors import BadInput
from pose_workloads.export import action
from pose_workloads.export import onnx as onnx_export
from pose_workloads.export.onnx import ExportFailed, export_onnx
from pose_workloads.export.tensorrt import tensorrt_unavailable
from pose_workloads.runtime import ONNX_METADATA_KEY, load_predictor

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


def test_simple_pose_onnx_matches_pytorch_and_has_a_dynamic_batch(model_file, tmp_path):
    pth = model_file("simple-pose", (64, 48))
    onnx_path = tmp_path / "out" / "model.onnx"

    checks = export_onnx(pth, onnx_path)

    assert [c.input_shape for c in checks] == [(1, 3, 64, 48), (3, 3, 64, 48)]
    assert all(c.max_abs_diff <= 1e-4 and c.output_scale > 0.1 for c in checks)  # outputs O(1): conftest
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto)
    assert _dims(proto.graph.input[0]) == ["batch", 3, 64, 48]
    assert [o.name for o in proto.graph.output] == ["heatmaps"]
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[ONNX_METADATA_KEY])
    assert meta["network"] == "simple-pose" and meta["input_size"] == [64, 48]
    assert meta["model_config"] == {"name": "simple_pose_tiny"}

    # Through the runtime, at a batch size the export never saw.
    images = np.random.default_rng(1).normal(size=(5, 3, 64, 48)).astype(np.float32)
    from_onnx, from_torch = load_predictor(onnx_path), load_predictor(pth, device="cpu")
    assert from_onnx.backend == "onnxruntime" and from_onnx.info.pose_config.num_joints == 17
    (heatmaps,), (expected,) = from_onnx(images), from_torch(images)
    assert heatmaps.shape == (5, 17, 16, 12)
    assert np.abs(heatmaps - expected).max() <= 1e-4


def test_bpnet_onnx_keeps_batch_height_and_width_dynamic(model_file, tmp_path):
    pth = model_file("bpnet", (64, 64))
    onnx_path = tmp_path / "bpnet.onnx"

    checks = export_onnx(pth, onnx_path)

    # Compared at two different HxW, neither with the trained aspect.
    assert {c.input_shape[2:] for c in checks} == {(64, 64), (32, 48)}
    assert {c.input_shape[0] for c in checks} == {1, 2}
    assert all(c.max_abs_diff <= 1e-4 and c.output_scale > 0.1 for c in checks)
    proto = onnx.load(str(onnx_path))
    assert _dims(proto.graph.input[0]) == ["batch", 3, "height", "width"]
    assert [o.name for o in proto.graph.output] == ["heatmaps", "pafs"]

    images = np.random.default_rng(2).normal(size=(2, 3, 40, 96)).astype(np.float32)
    got, expected = load_predictor(onnx_path)(images), load_predictor(pth, device="cpu")(images)
    assert [a.shape for a in got] == [(2, 19, 5, 12), (2, 38, 5, 12)]
    assert max(np.abs(a - b).max() for a, b in zip(got, expected)) <= 1e-4


def test_export_command_prints_the_difference_per_input(model_file, tmp_path, capsys):
    pth = model_file("simple-pose", (64, 48))
    out = tmp_path / "m.onnx"

    assert action.main(_args("simple-pose", "export", "-m", str(pth), "-o", str(out))) == 0

    lines = [line for line in capsys.readouterr().out.splitlines() if "max abs difference" in line]
    assert len(lines) == 2
    assert all(float(line.split("max abs difference ")[1].split()[0]) <= 1e-4 for line in lines)
    assert out.is_file()


def test_model_of_the_other_network_is_refused_naming_the_right_command(model_file, tmp_path):
    pth = model_file("bpnet", (64, 64))
    out = tmp_path / "m.onnx"

    with pytest.raises(BadInput, match=r"this is a bpnet model; use `pose bpnet export`"):
        action.main(_args("simple-pose", "export", "-m", str(pth), "-o", str(out)))
    assert not out.exists()


def test_an_export_that_does_not_match_pytorch_writes_nothing(model_file, tmp_path, monkeypatch):
    pth = model_file("simple-pose", (64, 48))
    out = tmp_path / "m.onnx"
    monkeypatch.setattr(onnx_export, "MAX_RELATIVE_DIFF", -1.0)  # any difference at all is now a mismatch

    with pytest.raises(ExportFailed, match="differs from PyTorch"):
        export_onnx(pth, out)
    assert list(tmp_path.iterdir()) == [pth]  # no output, no temp file


@pytest.mark.parametrize("flags, message", [
    (["-o", "{tmp}/model.etlt"], "must end in .onnx"),
    (["-o", "{tmp}/m.onnx", "--engine_file", "{tmp}/model.trt"], "must end in .engine"),
    (["-o", "{tmp}/m.onnx", "--engine_file", "{tmp}/m.engine", "--data_type", "int8"], "needs --cal_image_dir"),
    (["-o", "{tmp}/m.onnx", "--engine_file", "{tmp}/m.engine", "--data_type", "int8", "--cal_image_dir", "{tmp}/none"],
     "not a directory"),
    (["-o", "{tmp}/m.onnx", "--max_batch_size", "0"], "must be at least 1"),
])
def test_bad_flags_fail_before_any_work(flags, message, tmp_path):
    # The model file does not exist either: the flag error must come first.
    argv = ["bpnet", "export", "-m", str(tmp_path / "absent.pth"), *(f.format(tmp=tmp_path) for f in flags)]

    with pytest.raises(BadInput, match=message):
        action.main(_args(*argv))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(tensorrt_unavailable() is None, reason="TensorRT and a GPU are here: the guard does not apply")
def test_engine_without_tensorrt_exits_2_in_one_line_and_keeps_the_onnx(model_file, tmp_path):
    pth = model_file("bpnet", (64, 64))
    onnx_path, engine = tmp_path / "m.onnx", tmp_path / "m.engine"

    run = subprocess.run(
        [sys.executable, "-m", "pose_workloads", "bpnet", "export", "-m", str(pth), "-o", str(onnx_path),
         "--engine_file", str(engine), "--data_type", "fp16"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120,
    )

    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "TensorRT image" in errors[0] and "GPU" in errors[0] and "--engine_file" in errors[0]
    assert onnx_path.is_file() and not engine.exists()
    assert importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available()
