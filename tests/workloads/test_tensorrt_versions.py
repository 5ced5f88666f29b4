"""Which TensorRT API `build_engine` drives on each major, checked against fake `tensorrt` modules
that record the calls (no TensorRT or GPU here): 10 sets precision builder flags and an INT8
calibrator; 11 has none of them and gets a strongly typed network from an ONNX file that carries
its precision (ModelOpt AutoCast / Q/DQ); other majors are refused in one line."""

from __future__ import annotations

import enum
import json
import sys
import types

import cv2
import numpy as np
import pytest

from pose_workloads.errors import BadInput
from pose_workloads.export import tensorrt
from pose_workloads.export.onnx import export_onnx


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []


def fake_tensorrt(version: str, recorder: Recorder) -> types.ModuleType:
    """A `tensorrt` module shaped like `version`'s Python API, as far as build_engine uses it."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    flags = ["FP16", "INT8", "TF32"] if major == 10 else ["TF32"]  # 11 removed the precision flags
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"], start=5)

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Input:
        name = "images"

    class Network:
        def get_input(self, index):
            return Input()

    class Profile:
        def set_shape(self, name, *shapes):
            recorder.calls.append(("set_shape", name, shapes))

    class Config:
        def set_flag(self, flag):
            recorder.calls.append(("set_flag", flag.name))

        def add_optimization_profile(self, profile):
            pass

        def set_calibration_profile(self, profile):
            recorder.calls.append(("set_calibration_profile",))

        def __setattr__(self, name, value):
            recorder.calls.append(("config." + name,))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            recorder.calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"serialized engine"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            recorder.calls.append(("parse", path))
            return True

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return trt


@pytest.fixture
def exported(model_file, tmp_path):
    """A tiny simple-pose ONNX file, and a folder of calibration images."""
    onnx_path = tmp_path / "m.onnx"
    export_onnx(model_file("simple-pose", (64, 48)), onnx_path)
    images = tmp_path / "cal"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 255, (80, 60, 3), dtype=np.uint8))
    return onnx_path, images


@pytest.fixture
def with_tensorrt(monkeypatch):
    """Install a fake TensorRT of the given version (and pretend a GPU is visible)."""
    import torch

    def install(version: str) -> Recorder:
        recorder = Recorder()
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version, recorder))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(tensorrt, "autocast_fp16", lambda src, out: recorder.calls.append(("autocast", src)) or src)

        def quantize(src, calibration, out):
            recorder.calls.append(("quantize", src, calibration.shape, calibration.dtype))
            out.write_bytes(b"qdq onnx")
            return out

        monkeypatch.setattr(tensorrt, "quantize_int8", quantize)
        return recorder

    return install


PROFILE = tensorrt.EngineProfile((1, 3, 64, 48), (2, 3, 64, 48), (2, 3, 64, 48))


def _build(exported, data_type: str, cache=None):
    onnx_path, images = exported
    engine = onnx_path.with_suffix(".engine")
    calibration = tensorrt.Calibration(images, cache, batches=2)
    tensorrt.build_engine(onnx_path, engine, PROFILE, data_type, calibration)
    return engine


@pytest.mark.parametrize("data_type", ["fp32", "fp16", "int8"])
def test_tensorrt_10_sets_precision_flags_on_a_weakly_typed_network(exported, with_tensorrt, data_type):
    calls = with_tensorrt("10.9.0.34").calls
    engine = _build(exported, data_type)

    flags = [c[1] for c in calls if c[0] == "set_flag"]
    assert flags == {"fp32": [], "fp16": ["FP16"], "int8": ["FP16", "INT8"]}[data_type]
    assert ("config.int8_calibrator",) in calls if data_type == "int8" else ("config.int8_calibrator",) not in calls
    strongly_typed = 1 << 5
    assert [c[1] for c in calls if c[0] == "create_network"] == [strongly_typed if data_type == "fp32" else 0]
    assert not any(c[0] in ("autocast", "quantize") for c in calls)
    assert [c[1] for c in calls if c[0] == "parse"] == [str(exported[0])]
    sidecar = json.loads((engine.parent / (engine.name + ".json")).read_text())
    assert sidecar["engine"]["tensorrt"] == "10.9.0.34" and sidecar["engine"]["precision"] == "builder flags"
    assert engine.read_bytes() == b"serialized engine"


@pytest.mark.parametrize("data_type", ["fp32", "fp16", "int8"])
def test_tensorrt_11_builds_strongly_typed_networks_from_onnx_that_carries_the_precision(exported, with_tensorrt,
                                                                                          data_type):
    calls = with_tensorrt("11.4.0.7").calls
    engine = _build(exported, data_type)

    assert not any(c[0] in ("set_flag", "config.int8_calibrator", "set_calibration_profile") for c in calls)
    assert [c[1] for c in calls if c[0] == "create_network"] == [1 << 5]
    parsed = [c[1] for c in calls if c[0] == "parse"]
    if data_type == "fp16":
        assert [c[1] for c in calls if c[0] == "autocast"] == [exported[0]]
    if data_type == "int8":
        (quantize,) = [c for c in calls if c[0] == "quantize"]
        # Two calibration batches at the profile's opt shape, prepared as evaluation prepares crops.
        assert quantize[1] == exported[0] and quantize[2] == (4, 3, 64, 48) and quantize[3] == np.float32
        assert parsed[0].endswith("int8.onnx")
    else:
        assert parsed == [str(exported[0])]
    assert json.loads((engine.parent / (engine.name + ".json")).read_text())["engine"]["precision"] == "strongly typed"


def test_tensorrt_11_int8_keeps_the_quantized_onnx_as_the_cache_and_reuses_it(exported, with_tensorrt, tmp_path):
    calls = with_tensorrt("11.0.0").calls
    cache = tmp_path / "int8_qdq.onnx"
    _build(exported, "int8", cache)
    assert cache.read_bytes() == b"qdq onnx"
    calls.clear()
    _build(exported, "int8", cache)
    assert not any(c[0] == "quantize" for c in calls) and [c[1] for c in calls if c[0] == "parse"] == [str(cache)]


@pytest.mark.parametrize("version", ["8.6.1", "12.0.0"])
def test_an_untested_major_is_refused_in_one_line_naming_the_supported_ones(exported, with_tensorrt, version):
    with_tensorrt(version)
    with pytest.raises(BadInput) as err:
        _build(exported, "fp16")
    message = str(err.value)
    assert "\n" not in message and f"TensorRT {version}" in message and "10.x or 11.x" in message
    assert not exported[0].with_suffix(".engine").exists()


AUTOCAST_FP16 = tensorrt.autocast_fp16  # the real one, before any test patches it


def test_without_modelopt_the_strongly_typed_path_is_refused_in_one_line(exported, with_tensorrt, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("modelopt") is not None:
        pytest.skip("ModelOpt is installed here")
    with_tensorrt("11.4.0")
    monkeypatch.setattr(tensorrt, "autocast_fp16", AUTOCAST_FP16)
    with pytest.raises(BadInput) as err:
        _build(exported, "fp16")
    assert "\n" not in str(err.value) and "nvidia-modelopt" in str(err.value)
    assert not exported[0].with_suffix(".engine").exists()
