"""Simple Pose's actions (pose_workloads.simple_pose): loss, accuracy, train / evaluate / inference.

Real data: coco-mini (4 COCO val2017 images, 12 labelled people) and the synthetic generator.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from pose_workloads.__main__ import main as workload_main
from pose_workloads.data.jpeg_regions import indexed_copy
from pose_workloads.data.synth import write_synthetic_dataset
from pose_workloads.detections import read_boxes
from pose_workloads.errors import BadInput
from pose_workloads.evaluate import METRIC_NAMES, coco_keypoint_metrics
from pose_workloads.models import build_model
from pose_workloads.simple_pose.evaluate import main as evaluate
from pose_workloads.simple_pose.inference import main as inference
from pose_workloads.simple_pose.train import heatmap_accuracy, heatmap_loss
from pose_workloads.simple_pose.train import main as train
from pose_workloads.specs import COCO17, PoseConfig

# CrowdPose's 14 joints (Li et al. 2019) with its OKS sigmas.
CROWDPOSE = PoseConfig(
    name="crowdpose14",
    keypoints=["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
               "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"],
    skeleton=[(12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (13, 6), (13, 7), (6, 8), (8, 10),
              (7, 9), (9, 11)],
    flip_pairs=[(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)],
    sigmas=[0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079],
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_spec(path: Path, data: dict, **sections) -> Path:
    spec = {"model": {"name": "simple_pose_tiny"}, "data": {"workers": 0, **data}}
    for name, values in sections.items():
        spec[name] = values
    path.write_text(yaml.safe_dump(spec))
    return path


def mini_data(coco_mini, **extra) -> dict:
    return {"train_images": str(coco_mini.images), "train_annotations": str(coco_mini.keypoints),
            "val_images": str(coco_mini.images), "val_annotations": str(coco_mini.keypoints), **extra}


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    """A simple_pose_tiny model file (untrained) in the checkpoint format, 128x96, COCO-17."""
    torch.manual_seed(0)
    model = build_model("simple-pose", {"name": "simple_pose_tiny"}, 17)
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    torch.save({"network": "simple-pose", "model_config": {"name": "simple_pose_tiny"},
                "pose_config": COCO17.model_dump(mode="json"), "input_size": [128, 96],
                "state_dict": model.state_dict()}, path)
    return path


# ---- loss and training metric ------------------------------------------------------------------


def test_unlabelled_joints_do_not_count_in_the_loss():
    target = torch.zeros(2, 3, 8, 6)
    target[:, :, 4, 3] = 1.0
    weight = torch.ones(2, 3, 1)
    weight[1, 2] = 0.0
    perfect = target.clone()
    perfect[1, 2] = 5.0  # garbage on the unlabelled joint only
    loss, parts = heatmap_loss(perfect, {"target": target, "target_weight": weight})
    assert loss.item() == 0.0 and parts["heatmap"].item() == 0.0
    off = target.clone()
    off[0, 0] = 0.0
    assert heatmap_loss(off, {"target": target, "target_weight": weight})[0].item() == pytest.approx(0.5 / (2 * 3 * 48))


def test_heatmap_accuracy_counts_peaks_within_half_a_tenth_of_the_map():
    target = np.zeros((4, 2, 32, 24), np.float32)
    target[:, :, 16, 12] = 1.0
    target[3, 1] = 0.0  # joint 1 of crop 3 is unlabelled
    predicted = np.zeros_like(target)
    predicted[:, :, 16, 13] = 1.0  # 1 px off: within 0.5 x 24/10 px
    predicted[0, 0, 16, 13] = 0.0
    predicted[0, 0, 16, 20] = 1.0  # 8 px off in x: wrong
    # joint 0: 3 of 4 right, joint 1: 3 of 3 right.
    assert heatmap_accuracy(predicted, target) == pytest.approx((0.75 + 1.0) / 2)
    assert np.isnan(heatmap_accuracy(predicted, np.zeros_like(target)))


# ---- evaluate ----------------------------------------------------------------------------------


def test_evaluate_with_detected_boxes_writes_results_and_every_metric(coco_mini, tmp_path, untrained_model, capsys):
    spec = write_spec(tmp_path / "spec.yaml",
                      mini_data(coco_mini, val_detections=str(coco_mini.detections), detection_score_threshold=0.5),
                      evaluate={"flip_test": False, "decoder": "argmax"})
    args = argparse.Namespace(spec=str(spec), model=str(untrained_model), results_dir=str(tmp_path / "eval"),
                              overrides=[])
    assert evaluate(args) == 0
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert set(METRIC_NAMES) <= set(metrics)
    assert list(metrics["per_joint_error_px"]) == COCO17.keypoints
    results = json.loads((tmp_path / "eval/keypoints_results.json").read_text())
    boxes = [d for d in json.loads(coco_mini.detections.read_text()) if d["score"] >= 0.5]
    assert 0 < len(results) <= len(boxes)
    assert {r["image_id"] for r in results} <= {b["image_id"] for b in boxes}
    assert all(len(r["keypoints"]) == 51 for r in results)
    assert "AP50" in capsys.readouterr().out


def test_evaluate_refuses_a_model_of_another_joint_set(coco_mini, tmp_path, untrained_model):
    config = tmp_path / "crowdpose.json"
    config.write_text(CROWDPOSE.model_dump_json())
    spec = write_spec(tmp_path / "spec.yaml", mini_data(coco_mini, pose_config=str(config)))
    code = workload_main(["simple-pose", "evaluate", "-e", str(spec), "-m", str(untrained_model), "-r",
                          str(tmp_path / "r")])
    assert code == 2
    assert not (tmp_path / "r/metrics.json").exists()


def test_bad_spec_field_exits_2_naming_the_field(coco_mini, tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", mini_data(coco_mini), train={"input_size": [100, 96]})
    assert workload_main(["simple-pose", "train", "-e", str(spec), "-r", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "train.input_size" in err and "multiples of 32" in err and "\n" not in err.strip()


# ---- inference ---------------------------------------------------------------------------------


def test_inference_on_a_directory_uses_boxes_keyed_by_image_id(coco_mini, tmp_path, untrained_model):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("000000000785.jpg", "000000040083.jpg"):
        (images / name).write_bytes((coco_mini.images / name).read_bytes())
    boxes = tmp_path / "boxes.json"
    detections = json.loads(coco_mini.detections.read_text())
    chosen = [d for d in detections if d["image_id"] in (785, 40083) and d["score"] > 0.3]
    boxes.write_text(json.dumps(chosen))
    args = argparse.Namespace(model=str(untrained_model), input=str(images), results_dir=str(tmp_path / "out"),
                              boxes=str(boxes), spec=None, overrides=[])
    assert inference(args) == 0
    results = json.loads((tmp_path / "out/keypoints_results.json").read_text())
    assert len(results) == len(chosen)
    assert sorted(r["image_id"] for r in results) == sorted(d["image_id"] for d in chosen)
    for name in ("000000000785", "000000040083"):
        drawn = cv2.imread(str(tmp_path / f"out/images/{name}.png"))
        assert drawn.shape == cv2.imread(str(images / f"{name}.jpg")).shape


def test_inference_on_a_video_without_boxes_writes_an_annotated_video(coco_mini, tmp_path, untrained_model):
    video = tmp_path / "clip.mp4"
    frame = cv2.imread(str(coco_mini.images / "000000000785.jpg"))[:424]  # mp4v wants even sides
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (w, h))
    for shift in range(3):
        writer.write(np.roll(frame, 10 * shift, axis=1))
    writer.release()
    args = argparse.Namespace(model=str(untrained_model), input=str(video), results_dir=str(tmp_path / "out"),
                              boxes=None, spec=None, overrides=[])
    assert inference(args) == 0
    results = json.loads((tmp_path / "out/keypoints_results.json").read_text())
    assert [r["frame"] for r in results] == [0, 1, 2]  # one whole-frame box per frame
    assert all(r["bbox"] == [0, 0, w, h] for r in results)
    out = cv2.VideoCapture(str(tmp_path / "out/clip_pose.mp4"))
    assert int(out.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert not list((tmp_path / "out").glob(".*"))


def test_boxes_file_with_a_bad_entry_names_it(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 5, 5]}, {"bbox": [1, 2, 3]}]))
    with pytest.raises(BadInput, match=r"\[1\]: needs file_name or image_id"):
        read_boxes(path)


# ---- train, end to end -------------------------------------------------------------------------


def test_custom_14_joint_set_trains_and_evaluates_with_its_own_sigmas(tmp_path):
    config = tmp_path / "crowdpose.json"
    config.write_text(CROWDPOSE.model_dump_json())
    for split, seed in (("train", 1), ("val", 2)):
        write_synthetic_dataset(tmp_path / split, images=4, seed=seed, max_people=2, size=(128, 128),
                                pose_config=CROWDPOSE, show_progress=False)
    data = {"pose_config": str(config)}
    for split in ("train", "val"):
        data[f"{split}_images"] = str(tmp_path / split / "images")
        data[f"{split}_annotations"] = str(tmp_path / split / "annotations/person_keypoints.json")
    spec = write_spec(tmp_path / "spec.yaml", data,
                      train={"input_size": [64, 64], "batch_size": 4, "epochs": 1, "eval_every": 1})
    results = tmp_path / "results"
    # Batches by image (data.shuffle) here; the default order is trained by the overfit test.
    args = argparse.Namespace(spec=str(spec), results_dir=str(results),
                              overrides=["train.lr=0.001", "data.shuffle=images"])
    assert train(args) == 0

    model = torch.load(results / "model_final.pth", weights_only=True)
    assert model["pose_config"]["keypoints"] == CROWDPOSE.keypoints
    final_conv = [v for k, v in model["state_dict"].items() if k.startswith("head.") and k.endswith(".weight")][-1]
    assert final_conv.shape[0] == 14  # one heatmap per joint
    record = json.loads((results / "metrics.jsonl").read_text().splitlines()[-1])
    assert "AP" in record["val"] and record["loss"] > 0

    args = argparse.Namespace(spec=str(spec), model=str(results / "model_final.pth"),
                              results_dir=str(tmp_path / "eval"), overrides=[])
    assert evaluate(args) == 0
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert list(metrics["per_joint_error_px"]) == CROWDPOSE.keypoints
    detections = json.loads((tmp_path / "eval/keypoints_results.json").read_text())
    assert detections and all(len(d["keypoints"]) == 14 * 3 for d in detections)
    # The AP written is the AP under CrowdPose's sigmas (COCO's 17 would not even fit these joints).
    again = coco_keypoint_metrics(data["val_annotations"], detections, CROWDPOSE.sigmas)
    assert metrics["AP"] == pytest.approx(again["AP"])


def _repeated_annotations(coco_mini, path: Path, times: int) -> Path:
    """coco-mini's annotations with every person repeated: longer epochs, the same 12 people."""
    data = json.loads(coco_mini.keypoints.read_text())
    data["annotations"] = [{**ann, "id": ann["id"] * 100 + r} for ann in data["annotations"] for r in range(times)]
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
def test_small_model_overfits_coco_mini_to_ap_0_9(coco_mini, tmp_path):
    """Issue 3 item 9b: the whole pipeline (crops, targets, loss, decode, OKS AP) can fit real data."""
    spec = write_spec(
        tmp_path / "spec.yaml",
        mini_data(coco_mini, train_annotations=str(_repeated_annotations(coco_mini, tmp_path / "train.json", 6))),
        augmentation={"scale_factor": 0.0, "rotation_prob": 0.0, "flip": False, "half_body_prob": 0.0},
        train={"input_size": [128, 96], "batch_size": 12, "epochs": 30, "lr": 0.002, "lr_schedule": "step",
               "lr_steps": [24], "eval_every": 0, "checkpoint_every": 30},
        evaluate={"flip_test": False, "decoder": "dark"},
    )
    args = argparse.Namespace(spec=str(spec), results_dir=str(tmp_path / "results"), overrides=[])
    assert train(args) == 0
    record = json.loads((tmp_path / "results/metrics.jsonl").read_text().splitlines()[-1])
    assert record["val"]["AP"] >= 0.9, record


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("jpegtran") is None and os.environ.get("POSE_REQUIRE_JPEGTRAN") != "1",
                    reason="jpegtran not installed (libjpeg-turbo-progs)")
def test_training_on_indexed_jpegs_reaches_the_same_ap(coco_mini, tmp_path, capsys):
    """Issue 11 item 4: training on `pose dataset index_jpegs` copies (crops decoded by region),
    people shuffled and augmented, ends at the AP of training on the originals within 0.001."""
    indexed = tmp_path / "indexed"
    indexed.mkdir()
    for path in coco_mini.images.glob("*.jpg"):
        (indexed / path.name).write_bytes(indexed_copy(path.read_bytes()))
    aps = []
    for images in (coco_mini.images, indexed):
        run = tmp_path / f"run-{len(aps)}"
        run.mkdir()
        spec = write_spec(
            run / "spec.yaml",
            mini_data(coco_mini, train_images=str(images),
                      train_annotations=str(_repeated_annotations(coco_mini, run / "train.json", 6))),
            train={"input_size": [128, 96], "batch_size": 12, "epochs": 30, "lr": 0.002, "lr_schedule": "step",
                   "lr_steps": [24], "eval_every": 0, "checkpoint_every": 30},
            evaluate={"flip_test": False, "decoder": "dark"},
        )
        assert train(argparse.Namespace(spec=str(spec), results_dir=str(run / "results"), overrides=[])) == 0
        aps.append(json.loads((run / "results/metrics.jsonl").read_text().splitlines()[-1])["val"]["AP"])
        # Plain JPEGs get a one-line pointer to index_jpegs; indexed ones do not.
        assert ("without an MCU index" in capsys.readouterr().out) == (images == coco_mini.images)
    assert aps[0] > 0.1 and abs(aps[0] - aps[1]) <= 0.001, aps


# ---- specs/simple_pose -------------------------------------------------------------------------


SPECS = sorted((Path(__file__).parents[2] / "specs/simple_pose").glob("*.yaml"))


@pytest.mark.parametrize("spec_file", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_validates_and_names_a_known_model(spec_file):
    from pose_workloads.models import VARIANTS
    from pose_workloads.specs import SimplePoseSpec, load_spec

    spec = load_spec(SimplePoseSpec, spec_file)
    assert spec.model.name in VARIANTS
    if spec_file.stem != "demo":
        # GluonCV's recipe (train_simple_pose.py) and a README row with the zoo's AP.
        got = (spec.train.optimizer, spec.train.lr, spec.train.lr_steps, spec.train.epochs)
        assert got == ("adam", 1e-3, [90, 120], 140)
        assert f"`{spec_file.name}`" in (spec_file.parent / "README.md").read_text()
