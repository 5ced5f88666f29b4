"""export's accuracy gate: the written ONNX file against PyTorch on real images (coco-mini), per
output and, with --val_dataset, in AP; beyond its precision's limits the export exits 1 and
leaves nothing at the output path."""

from __future__ import annotations

import json

import pytest

from pose_workloads.__main__ import main as workload
from pose_workloads.export import gate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BPNET_CONFIG = {"backbone_attributes": {"architecture": "tiny"}, "stages": 2, "heat_channels": 18, "paf_channels": 38}


@pytest.fixture
def val_dataset(coco_mini, tmp_path):
    split = {"images_root_dir_path": "images", "annotation_root_dir_path": coco_mini.keypoints_name}
    path = tmp_path / "coco_mini_spec.json"
    path.write_text(json.dumps({"root_directory_path": str(coco_mini.root), "train_data": split, "test_data": split}))
    return path


def test_the_gate_prints_each_outputs_difference_and_both_aps(model_file, val_dataset, tmp_path, capsys):
    model = model_file("simple-pose", (64, 48))
    assert workload(["simple-pose", "export", "-m", str(model), "-o", str(tmp_path / "m.onnx"),
                     "--val_dataset", str(val_dataset)]) == 0
    out = capsys.readouterr().out
    assert "ONNX (onnxruntime) vs PyTorch on 4 images: max abs difference heatmaps" in out
    assert "ONNX (onnxruntime): AP " in out and "PyTorch AP" in out and "delta +0.00 points" in out
    assert (tmp_path / "m.onnx").is_file()


def test_bpnet_is_compared_on_the_calibration_images_output_by_output(write_model, coco_mini, tmp_path, capsys):
    model = write_model(tmp_path / "m.pth", "bpnet", (64, 64), BPNET_CONFIG)
    assert workload(["bpnet", "export", "-m", str(model), "-o", str(tmp_path / "m.onnx"),
                     "--cal_image_dir", str(coco_mini.images)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("ONNX (onnxruntime) vs PyTorch"))
    assert "on 4 images" in line and "heatmaps" in line and "pafs" in line


@pytest.mark.parametrize("limits, reason", [
    (gate.Gate(0.0, 0.1), "differs from PyTorch"),  # no difference at all allowed: float32 rounding fails it
    (gate.Gate(1.0, -1.0), "AP points"),  # even an unchanged AP is a drop beyond -1 point
])
def test_beyond_the_gate_export_exits_1_and_leaves_nothing(model_file, val_dataset, tmp_path, capsys, monkeypatch,
                                                          limits, reason):
    monkeypatch.setitem(gate.GATES, "fp32", limits)
    model = model_file("simple-pose", (64, 48))
    out = tmp_path / "out"
    out.mkdir()
    code = workload(["simple-pose", "export", "-m", str(model), "-o", str(out / "m.onnx"),
                     "--val_dataset", str(val_dataset), "--triton_repository", str(out / "triton")])
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "accuracy gate" in errors[0] and reason in errors[0]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("precision, drop, passes", [
    ("fp16", 0.4, True), ("fp16", 0.6, False), ("int8", 1.9, True), ("int8", 2.1, False), ("fp32", 0.2, False),
])
def test_each_precision_has_its_documented_ap_limit(precision, drop, passes):
    comparison = gate.Comparison("engine", precision, {"heatmaps": 0.0}, 1.0, 4, (0.700, 0.700 - drop / 100))
    assert (comparison.failure() is None) == passes


@pytest.mark.parametrize("precision, diff, passes", [
    ("fp32", 5e-4, True), ("fp32", 2e-3, False), ("fp16", 5e-3, True), ("fp16", 2e-2, False), ("int8", 5e-2, True),
])
def test_each_precision_has_its_documented_output_limit(precision, diff, passes):
    comparison = gate.Comparison("engine", precision, {"heatmaps": diff, "pafs": 0.0}, 1.0, 4, None)
    assert (comparison.failure() is None) == passes
