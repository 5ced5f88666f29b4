"""One bad-data policy: evaluate, validation during training and inference skip and count what
training skips (bad annotations, unreadable images), print one summary line and write the
counts with their results; one corrupt image does not stop the others; outputs of inputs that
share a stem do not overwrite each other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pose_workloads import model_file
from pose_workloads.__main__ import main
from pose_workloads.models import build_model
from pose_workloads.specs import COCO17, BpnetDatasetSpec

TINY = {
    "simple-pose": {"name": "simple_pose_tiny"},
    "bpnet": {"backbone_attributes": {"architecture": "tiny"}, "stages": 2, "heat_channels": 18},
}
UNDECODABLE = "cannot be decoded as an image"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    out = {}
    for network, size in (("simple-pose", (64, 64)), ("bpnet", (64, 64))):
        model = build_model(network, TINY[network], COCO17.num_joints, pretrained=False)
        out[network] = root / f"{network}.pth"
        model_file.write(out[network], model_file.contents(network, model, TINY[network], COCO17, size))
    return out


@pytest.fixture
def damaged(coco_mini, tmp_path) -> Path:
    """coco-mini with one image corrupted and one annotation of the wrong length."""
    root = tmp_path / "coco"
    shutil.copytree(coco_mini.root, root)
    images = sorted((root / "images").glob("*.jpg"))
    images[0].write_bytes(b"not a jpeg at all")
    annotations = root / "annotations" / coco_mini.keypoints.name
    data = json.loads(annotations.read_text())
    bad = next(a for a in data["annotations"] if a.get("num_keypoints", 0) > 0 and a["image_id"] != int(images[0].stem))
    bad["keypoints"] = bad["keypoints"][:-3]
    annotations.write_text(json.dumps(data))
    return root


def summary_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped ")]


def simple_pose_spec(damaged: Path, coco_mini, tmp_path: Path, train: dict) -> Path:
    """A tiny Simple Pose spec that trains and validates on the damaged copy of coco-mini."""
    annotations = damaged / "annotations" / coco_mini.keypoints.name
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "simple_pose_tiny"},
                "data": {
                    "train_images": str(damaged / "images"),
                    "train_annotations": str(annotations),
                    "val_images": str(damaged / "images"),
                    "val_annotations": str(annotations),
                    "workers": 0,
                },
                "train": train,
                "evaluate": {"flip_test": False},
            }
        )
    )
    return spec


def bpnet_argv(action: str, models: dict[str, Path], tmp_path: Path, *rest: str) -> list[str]:
    """`bpnet <action>` of the tiny model at a 64x64 input (inference spec written to tmp_path)."""
    spec = tmp_path / "infer.yaml"
    spec.write_text(yaml.safe_dump({"input_shape": [64, 64]}))
    return ["bpnet", action, "--inference_spec", str(spec), "--model_filename", str(models["bpnet"]), *rest]


def test_simple_pose_inference_skips_the_corrupt_image_and_keeps_same_stem_outputs_apart(
    models, damaged, tmp_path, capsys
):
    images = damaged / "images"
    good = sorted(images.glob("*.jpg"))[1]
    shutil.copy(good, images / f"{good.stem}.png")  # same stem, another extension
    out = tmp_path / "out"
    assert (
        main(["simple-pose", "inference", "-m", str(models["simple-pose"]), "--input", str(images), "-r", str(out)])
        == 0
    )
    lines = summary_lines(capsys)
    assert len(lines) == 1 and f"skipped 1 of 5 images: 1 {UNDECODABLE}" in lines[0], lines
    drawn = sorted(p.name for p in (out / "images").iterdir())
    assert len(drawn) == 4 and f"{good.stem}_jpg.png" in drawn and f"{good.stem}_png.png" in drawn
    summary = json.loads((out / "inference_summary.json").read_text())
    assert summary["images"] == 5 and summary["skipped"] == {UNDECODABLE: 1}
    files = {r["file_name"] for r in json.loads((out / "keypoints_results.json").read_text())}
    assert len(files) == 4


def test_bpnet_inference_skips_the_corrupt_image(models, damaged, tmp_path, capsys):
    out = tmp_path / "out"
    argv = bpnet_argv("inference", models, tmp_path, "--input", str(damaged / "images"), "-r", str(out),
                      "--dump_visualizations")
    assert main(argv) == 0
    assert f"skipped 1 of 4 images: 1 {UNDECODABLE}" in summary_lines(capsys)[0]
    detections = json.loads((out / "detections.json").read_text())
    assert detections["metadata"]["skipped"] == {UNDECODABLE: 1} and len(detections["frames"]) == 3
    assert len(list((out / "images_annotated").iterdir())) == 3


def test_simple_pose_evaluate_skips_and_counts_the_corrupt_image_and_the_bad_annotation(
    models, damaged, coco_mini, tmp_path, capsys
):
    spec = simple_pose_spec(damaged, coco_mini, tmp_path, {"input_size": [64, 64]})
    out = tmp_path / "eval"
    assert main(["simple-pose", "evaluate", "-e", str(spec), "-m", str(models["simple-pose"]), "-r", str(out)]) == 0
    lines = summary_lines(capsys)
    assert len(lines) == 1 and "keypoints has the wrong length" in lines[0] and UNDECODABLE in lines[0], lines
    skipped = json.loads((out / "metrics.json").read_text())["skipped"]
    assert skipped[f"person crops: {UNDECODABLE}"] >= 1
    assert sum(n for reason, n in skipped.items() if "keypoints has the wrong length" in reason) == 1


def test_bpnet_evaluate_skips_and_counts_the_corrupt_image(models, damaged, coco_mini, tmp_path, capsys):
    split = {"images_root_dir_path": "images", "annotation_root_dir_path": coco_mini.keypoints_name}
    dataset = tmp_path / "coco_spec.json"
    dataset.write_text(
        json.dumps(
            BpnetDatasetSpec(root_directory_path=str(damaged), train_data=split, test_data=split).model_dump(
                mode="json"
            )
        )
    )
    out = tmp_path / "eval"
    argv = bpnet_argv("evaluate", models, tmp_path, "--dataset_spec", str(dataset), "-r", str(out))
    assert main(argv) == 0
    assert UNDECODABLE in summary_lines(capsys)[0]
    skipped = json.loads((out / "metrics.json").read_text())["skipped"]
    assert skipped[UNDECODABLE] == 1 and any("keypoints has the wrong length" in reason for reason in skipped)


def test_validation_during_training_skips_and_counts_instead_of_scoring_another_crop(
    damaged, coco_mini, tmp_path, capsys
):
    spec = simple_pose_spec(
        damaged, coco_mini, tmp_path,
        {"input_size": [64, 64], "epochs": 1, "batch_size": 4, "eval_every": 1, "amp": False},
    )
    results = tmp_path / "train"
    assert main(["simple-pose", "train", "-e", str(spec), "-r", str(results)]) == 0
    assert any(UNDECODABLE in line for line in summary_lines(capsys))
    record = json.loads((results / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["val"]["skipped"] >= 2  # the corrupt image's people and the bad annotation
