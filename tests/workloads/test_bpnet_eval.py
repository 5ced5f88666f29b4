"""`bpnet evaluate` and `bpnet inference`: input sizing per keep_aspect_ratio_mode, the map -> image
geometry, COCO AP end to end, detections.json, drawn skeletons, and bad input.

The geometry is checked with an oracle model: it is shown flat grey images whose grey level names
the coco-mini image, finds the image content inside the network input (padding is black), and
answers with that image's ground truth drawn as training labels. Whatever the resizing, padding and
scales did, the people must come back on the original image's pixels: COCO AP near 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose_workloads import media
from pose_workloads.__main__ import main
from pose_workloads.bpnet import pipeline
from pose_workloads.data import coco as coco_module
from pose_workloads.data.bottomup import joint_sources, to_model_joints
from pose_workloads.data.bpnet_labels import bpnet_labels
from pose_workloads.predictor import ModelInfo, Predictor
from pose_workloads.specs import COCO17, BpnetInferenceSpec, BpnetNormalization, load_pose_config, load_spec

ROOT = Path(__file__).resolve().parents[2]
POSE_18 = load_pose_config(ROOT / "specs/bpnet/bpnet_18joints.json")


# ------------------------------------------------------------------------------------------------
# fixtures: a dataset spec over coco-mini, a tiny real model, the oracle
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset_spec(coco_mini, tmp_path_factory) -> Path:
    split = {"images_root_dir_path": "images", "annotation_root_dir_path": coco_mini.keypoints_name}
    path = tmp_path_factory.mktemp("specs") / "coco_mini_spec.json"
    path.write_text(json.dumps({"root_directory_path": str(coco_mini.root), "train_data": split, "test_data": split}))
    return path


def save_tiny_model(path: Path, output_std: float | None = None) -> Path:
    """A 2-stage tiny BodyPoseNet with random weights, saved as train writes models. Fresh, its
    outputs are ~0 (output convs start near zero); `output_std` makes them O(1), so that tests
    comparing outputs compare something."""
    from pose_workloads.models import build_model

    torch.manual_seed(0)
    config = {"backbone_attributes": {"architecture": "tiny"}, "stages": 2, "heat_channels": 19, "paf_channels": 38}
    model = build_model("bpnet", config, POSE_18.num_joints, pretrained=False)
    if output_std is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()  # (in / groups) x kernel
                torch.nn.init.normal_(module.weight, std=output_std * (2.0 / fan_in) ** 0.5)
    torch.save({"network": "bpnet", "model_config": config, "pose_config": POSE_18.model_dump(),
                "input_size": [64, 64], "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pth")


@pytest.fixture(scope="module")
def lively_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "lively.pth", output_std=1.0)


def infer_spec(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "infer_spec.yaml"
    path.write_text(json.dumps(fields))
    return path


def grey_level(index: int) -> int:
    return 60 + 40 * index


@pytest.fixture()
def oracle(coco_mini, monkeypatch):
    """Replace image reading and the model: images are flat grey (level = image index), the model
    draws the ground truth of the image whose grey it sees, where that image sits in its input."""
    dataset = coco_module.load_coco(coco_mini.images, coco_mini.keypoints)
    sources = joint_sources(COCO17.keypoints, POSE_18.keypoints)
    by_level = {}
    for i, record in enumerate(dataset.images):
        people = np.stack([dataset.people[p].keypoints for p in record.people])
        by_level[grey_level(i)] = (to_model_joints(people, sources), (record.height, record.width))
    index = {Path(record.image_path).name: i for i, record in enumerate(dataset.images)}

    def read_image(path, expected_hw=None):
        level = grey_level(index[Path(path).name])
        height, width = by_level[level][1]
        return np.full((height, width, 3), level, np.uint8)

    def run(images: np.ndarray) -> list[np.ndarray]:
        net_h, net_w = images.shape[2:]
        image = images[0, 0]
        level = int(round((image[0, 0] + 0.5) * 256))
        people, (height, width) = by_level[level]
        content_h = int(np.count_nonzero(image[:, 0] != -0.5))
        content_w = int(np.count_nonzero(image[0, :] != -0.5))
        in_input = people.copy()
        in_input[:, :, 0] = (people[:, :, 0] + 0.5) * content_w / width - 0.5
        in_input[:, :, 1] = (people[:, :, 1] + 0.5) * content_h / height - 0.5
        labels = bpnet_labels(in_input, POSE_18.paf_limbs, (net_h // 8, net_w // 8), 8, 7.0, 1.0)
        return [labels.heatmaps[None], labels.pafs[None]]

    predictor = Predictor(info=ModelInfo("bpnet", POSE_18, (368, 368)), run=run, backend="oracle")
    monkeypatch.setattr(media, "read_image", read_image)
    monkeypatch.setattr(pipeline, "open_model", lambda path, stage=None: pipeline.OpenModel(predictor, None))
    return dataset


# ------------------------------------------------------------------------------------------------
# specs and sizing
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, shape, mode, multi_scale", [
    ("infer_spec.yaml", (368, 368), "adjust_network_input", False),
    ("infer_spec_refine.yaml", (368, 368), "adjust_network_input", True),
    ("infer_spec_strict.yaml", (288, 384), "pad_image_input", False),
])
def test_shipped_inference_specs_validate_with_the_blog_values(name, shape, mode, multi_scale):
    spec = load_spec(BpnetInferenceSpec, ROOT / "specs/bpnet" / name)
    got = (tuple(spec.input_shape), spec.keep_aspect_ratio_mode, spec.multi_scale_inference)
    assert got == (shape, mode, multi_scale)
    assert spec.scales == [0.5, 1.0, 1.5, 2.0]
    assert (spec.heatmap_threshold, spec.paf_threshold, tuple(spec.output_upsampling_factor)) == (0.1, 0.05, (8, 8))
    assert spec.model_path.startswith("/workspace/") and spec.train_spec.startswith("/workspace/")


def test_adjust_network_input_fixes_the_height_and_follows_the_image_aspect():
    plan = pipeline.plan_input((425, 640), (368, 368), "adjust_network_input")
    assert plan.content_hw == (368, 554)  # 640 * 368 / 425 = 554.2
    assert plan.network_hw == (368, 560)  # rounded up to a multiple of 8
    assert pipeline.plan_input((425, 640), (368, 368), "adjust_network_input", scale=0.5).network_hw == (184, 280)


def test_pad_image_input_letterboxes_into_the_fixed_shape():
    plan = pipeline.plan_input((425, 640), (288, 384), "pad_image_input")
    assert plan.network_hw == (288, 384)
    assert plan.content_hw == (255, 384)  # scale 0.6: width-bound


def test_mode_none_stretches_the_image():
    plan = pipeline.plan_input((425, 640), (368, 368), None)
    assert plan.network_hw == plan.content_hw == (368, 368)


def test_a_fixed_size_engine_runs_single_scale_padded_with_a_notice():
    spec = BpnetInferenceSpec(multi_scale_inference=True, keep_aspect_ratio_mode="adjust_network_input")
    settings, notice = pipeline.inference_settings(spec, BpnetNormalization(), fixed_input=(288, 384))
    assert (settings.scales, settings.mode, settings.input_shape) == ((1.0,), "pad_image_input", (288, 384))
    assert notice is not None and "\n" not in notice and "288x384" in notice
    settings, notice = pipeline.inference_settings(spec, BpnetNormalization())
    assert settings.scales == (0.5, 1.0, 1.5, 2.0) and notice is None


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    {},  # TAO's infer_spec.yaml: 368 high, aspect kept
    {"multi_scale_inference": True, "scales": [0.5, 1.0, 1.5]},
    {"input_shape": [288, 384], "keep_aspect_ratio_mode": "pad_image_input"},
    {"keep_aspect_ratio_mode": "None"},
    {"upsample_maps": True},  # TAO's exact decode
    {"upsample_maps": True, "output_upsampling_factor": [4, 4]},
    {"upsample_maps": True, "multi_scale_inference": True, "scales": [0.5, 1.0, 1.5]},
], ids=["adjust", "multi_scale", "pad", "stretch", "upsample_x8", "upsample_x4", "upsample_multi_scale"])
def test_evaluate_puts_people_back_on_the_image_whatever_the_sizing(fields, oracle, dataset_spec, tmp_path, capsys):
    results_dir = tmp_path / "eval"
    argv = ["bpnet", "evaluate", "--inference_spec", str(infer_spec(tmp_path, **fields)), "--model_filename",
            "oracle.pth",
            "--dataset_spec", str(dataset_spec), "--results_dir", str(results_dir)]
    assert main(argv) == 0
    metrics = json.loads((results_dir / "metrics.json").read_text())
    assert set(metrics) == {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl",
                            "per_joint_error_px", "skipped"}
    assert list(metrics["per_joint_error_px"]) == COCO17.keypoints  # the neck is not a COCO joint
    assert metrics["AP"] >= 0.95, metrics
    results = json.loads((results_dir / "keypoints_results.json").read_text())
    assert len(results) == sum(1 for p in oracle.people if p.num_keypoints > 0)
    assert all(len(r["keypoints"]) == 3 * 17 for r in results)
    assert "AP50" in capsys.readouterr().out  # the table is printed


def test_evaluate_with_pycocotools_gives_the_same_ap(oracle, dataset_spec, tmp_path):
    aps = []
    for backend in ("faster", "pycocotools"):
        out = tmp_path / backend
        argv = ["bpnet", "evaluate", "-i", str(infer_spec(tmp_path)), "-m", "oracle.pth", "-d", str(dataset_spec),
                "-r", str(out), "--set", f"backend={backend}"]
        assert main(argv) == 0
        aps.append(json.loads((out / "metrics.json").read_text())["AP"])
    assert aps[0] == pytest.approx(aps[1], abs=1e-6)


def test_evaluate_runs_a_real_model_file(tiny_model, dataset_spec, tmp_path):
    # Random weights find nobody: the files are still written, AP is 0 and the errors are null.
    out = tmp_path / "eval"
    spec = infer_spec(tmp_path, input_shape=[96, 96])
    assert main(["bpnet", "evaluate", "-i", str(spec), "-m", str(tiny_model), "-d", str(dataset_spec), "-r",
                 str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["AP"] == 0.0
    assert json.loads((out / "keypoints_results.json").read_text()) == []


# ------------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------------

def test_inference_on_a_directory_writes_detections_and_drawings(coco_mini, oracle, tmp_path):
    out = tmp_path / "infer"
    argv = ["bpnet", "inference", "-i", str(infer_spec(tmp_path)), "-m", "oracle.pth", "--input_type", "dir",
            "--input", str(coco_mini.images), "-r", str(out), "--dump_visualizations"]
    assert main(argv) == 0
    detections = json.loads((out / "detections.json").read_text())
    meta = detections["metadata"]
    assert meta["input_shape"] == [368, 368] and meta["scales"] == [1.0] and meta["frames"] == 4
    assert set(meta["mean_timings_ms"]) == {"network", "grouping"}
    frames = detections["frames"]
    assert [f["file"] for f in frames] == sorted(p.name for p in coco_mini.images.iterdir())
    people = [p for f in frames for p in f["people"]]
    assert len(people) == sum(1 for p in oracle.people if p.num_keypoints > 0)
    assert all(set(p["keypoints"]) <= set(POSE_18.keypoints) and p["num_joints"] >= 4 for p in people)
    assert any("neck" in p["keypoints"] for p in people)
    drawn = sorted(p.name for p in (out / "images_annotated").iterdir())
    assert drawn == [f["file"] for f in frames]


def test_inference_on_one_image_places_joints_on_the_ground_truth(oracle, tmp_path):
    record = oracle.images[0]  # 000000000785.jpg: one person, all 17 joints
    out = tmp_path / "infer"
    argv = ["bpnet", "inference", "-i", str(infer_spec(tmp_path)), "-m", "oracle.pth", "--input_type", "image",
            "--input", record.image_path, "-r", str(out)]
    assert main(argv) == 0
    frames = json.loads((out / "detections.json").read_text())["frames"]
    (person,) = frames[0]["people"]
    truth = oracle.people[record.people[0]].keypoints
    for k, name in enumerate(COCO17.keypoints):
        x, y, _ = person["keypoints"][name]
        assert np.hypot(x - truth[k, 0], y - truth[k, 1]) < 4.0, name
    assert not (out / "images_annotated").exists()  # only with --dump_visualizations


def test_inference_on_a_video_writes_every_frame(lively_model, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for i in range(3):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "infer"
    spec = infer_spec(tmp_path, input_shape=[64, 64])
    argv = ["bpnet", "inference", "-i", str(spec), "-m", str(lively_model), "--input_type", "video",
            "--input", str(video), "-r", str(out), "--dump_visualizations"]
    assert main(argv) == 0
    frames = json.loads((out / "detections.json").read_text())["frames"]
    got = [(f["file"], f["frame"], f["width"], f["height"]) for f in frames]
    assert got == [("clip.mp4", i, 96, 64) for i in range(3)]
    capture = cv2.VideoCapture(str(out / "images_annotated" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


def test_output_stage_to_use_picks_that_stage(lively_model):
    from pose_workloads.model_file import build_model as model_from_file
    from pose_workloads.model_file import read as read_model_file

    model = model_from_file(read_model_file(lively_model)).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 48)).astype(np.float32)
    with torch.inference_mode():
        stages = [[t.numpy() for t in stage] for stage in model(torch.from_numpy(x))]
    assert np.abs(stages[0][1] - stages[1][1]).max() > 0.1  # the stages differ
    for stage in (1, 2):
        heatmaps, pafs = pipeline.open_model(lively_model, stage).predictor(x)
        np.testing.assert_allclose(heatmaps, stages[stage - 1][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(pafs, stages[stage - 1][1], rtol=1e-4, atol=1e-5)
    last = pipeline.open_model(lively_model).predictor(x)
    np.testing.assert_allclose(last[1], stages[-1][1], rtol=1e-4, atol=1e-5)


def test_an_exported_onnx_model_gives_the_maps_of_its_pth(lively_model, tmp_path):
    from pose_workloads.export.onnx import export_onnx

    onnx_path = tmp_path / "lively.onnx"
    export_onnx(lively_model, onnx_path)
    from_pth, from_onnx = pipeline.open_model(lively_model), pipeline.open_model(onnx_path)
    assert from_onnx.predictor.backend == "onnxruntime"
    # TAO's upsampled grid: the finest maps to compare
    settings, _ = pipeline.inference_settings(BpnetInferenceSpec(input_shape=(64, 64), upsample_maps=True),
                                              BpnetNormalization())
    image = np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8)  # adjusted to 64x120
    expected = pipeline.predict_maps(from_pth.predictor, image, settings, POSE_18)
    got = pipeline.predict_maps(from_onnx.predictor, image, settings, POSE_18)
    assert got.pafs.shape == expected.pafs.shape == (64, 115, 38)
    assert np.abs(expected.pafs).max() > 0.1
    np.testing.assert_allclose(got.heatmaps, expected.heatmaps, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got.pafs, expected.pafs, rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# bad input: exit 2, one line naming the field and the fix
# ------------------------------------------------------------------------------------------------

def run_bad(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_no_model_anywhere_names_model_path(dataset_spec, tmp_path, capsys):
    err = run_bad(["bpnet", "evaluate", "-i", str(infer_spec(tmp_path)), "-d", str(dataset_spec), "-r",
                   str(tmp_path / "r")], capsys)
    assert "model_path" in err and "--model_filename" in err


def test_a_file_given_as_a_directory_is_refused(tiny_model, tmp_path, capsys):
    argv = ["bpnet", "inference", "-i", str(infer_spec(tmp_path)), "-m", str(tiny_model), "--input_type", "dir",
            "--input", str(tiny_model), "-r", str(tmp_path / "r")]
    assert "--input_type" in run_bad(argv, capsys)
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_a_stage_the_model_does_not_have_is_refused(tiny_model, dataset_spec, tmp_path, capsys):
    argv = ["bpnet", "evaluate", "-i", str(infer_spec(tmp_path, output_stage_to_use=3)), "-m", str(tiny_model),
            "-d", str(dataset_spec), "-r", str(tmp_path / "r")]
    assert "output_stage_to_use" in run_bad(argv, capsys)
