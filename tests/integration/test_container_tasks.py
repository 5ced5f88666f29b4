"""Real tasks through `pose --runner docker` in the real pose-pytorch image: host paths in, the
dataset mounted read-only, results written to the host as the invoking user, and no container
left behind. Tiny on purpose (a few 96x96 images, one epoch, the tiny models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from pose_in_docker import REPO, RESULTS_IN_CONTAINER, owners, pose_user

pytestmark = pytest.mark.docker


def test_synth_in_container_writes_host_files_owned_by_the_invoking_user(docker_client, workspace):
    out = workspace.results / "synth"

    result = workspace.pose("dataset", "synth", "-o", str(out), "--images", "2", "--size", "64x64")

    assert result.returncode == 0, result.stdout
    assert (out / "annotations" / "person_keypoints.json").is_file()
    assert len(list((out / "images").glob("*.jpg"))) == 2
    assert owners(out) == {pose_user()}
    # The task printed container paths; pose shows them as the host paths the user gave.
    assert str(out) in result.stdout
    assert RESULTS_IN_CONTAINER not in result.stdout
    assert workspace.containers(docker_client) == []


def test_index_jpegs_in_container_copies_the_read_only_images_with_an_index(docker_client, workspace):
    # The image has jpegtran; the copies land on the host, owned by the user, each one indexed.
    from pose_workloads.data.jpeg_regions import is_indexed

    source, out = workspace.data / "synth" / "images", workspace.results / "indexed"

    result = workspace.pose("dataset", "index_jpegs", "-i", str(source), "-o", str(out))

    assert result.returncode == 0, result.stdout
    names = sorted(p.name for p in source.glob("*.jpg"))
    assert len(names) == 6 and sorted(p.name for p in out.glob("*.jpg")) == names
    assert all(is_indexed((out / name).read_bytes()[:32]) for name in names)
    assert "6 of 6 files indexed" in result.stdout
    assert owners(out) == {pose_user()}
    assert workspace.containers(docker_client) == []


def _simple_pose_spec(path: Path, data: Path) -> Path:
    synth = data / "synth"
    path.write_text(yaml.safe_dump({
        "model": {"name": "simple_pose_tiny"},
        "data": {
            "train_images": str(synth / "images"),
            "train_annotations": str(synth / "annotations" / "person_keypoints.json"),
            "val_images": str(synth / "images"),
            "val_annotations": str(synth / "annotations" / "person_keypoints.json"),
            "workers": 0,
        },
        "train": {"input_size": [64, 64], "batch_size": 4, "epochs": 1, "eval_every": 0, "amp": False},
        "evaluate": {"batch_size": 8, "flip_test": False},
    }))
    return path


def _export_is_valid_onnx_and_nothing_is_left(docker_client, workspace, network: str, model: Path, run: Path) -> None:
    """The model exports to a valid ONNX file; everything under `run` is the user's and no container stays."""
    onnx_file = run / "model.onnx"
    export = workspace.pose(network, "export", "-m", str(model), "-o", str(onnx_file))
    assert export.returncode == 0, export.stdout
    import onnx

    onnx.checker.check_model(onnx.load(str(onnx_file)))

    assert owners(run) == {pose_user()}
    assert workspace.containers(docker_client) == []


def test_simple_pose_train_evaluate_export_with_read_only_dataset(docker_client, workspace):
    spec = _simple_pose_spec(workspace.specs / "simple_pose.yaml", workspace.data)
    run = workspace.results / "simple_pose"

    train = workspace.pose("simple-pose", "train", "-e", str(spec), "-r", str(run), timeout=300)
    assert train.returncode == 0, train.stdout
    model = run / "model_final.pth"
    assert model.is_file()

    evaluate = workspace.pose("simple-pose", "evaluate", "-e", str(spec), "-m", str(model), "-r", str(run / "eval"))
    assert evaluate.returncode == 0, evaluate.stdout
    assert "AP" in evaluate.stdout

    _export_is_valid_onnx_and_nothing_is_left(docker_client, workspace, "simple-pose", model, run)


def _bpnet_specs(root: Path, data: Path, shards: Path) -> tuple[Path, Path, Path]:
    split = {"images_root_dir_path": "images", "annotation_root_dir_path": "annotations/person_keypoints.json"}
    dataset_spec = root / "coco_spec.json"
    dataset_spec.write_text(json.dumps({
        "root_directory_path": str(data / "synth"), "train_data": split, "test_data": split,
        "min_person_size_px": 8.0, "min_keypoints": 1,
    }))
    coco17 = root / "coco17.json"
    shutil.copy(REPO / "specs" / "pose_configs" / "coco17.json", coco17)
    train_spec = root / "bpnet_train.yaml"
    train_spec.write_text(yaml.safe_dump({
        "num_epoch": 1, "checkpoint_n_epoch": 1, "amp": False,
        "dataloader": {
            "batch_size": 2, "workers": 0, "shuffle_buffer_size": 8,
            "pose_config": {"target_shape": [8, 8], "pose_config_path": str(coco17)},
            "image_config": {"image_dims": {"height": 64, "width": 64, "channels": 3}},
            "dataset_config": {
                "root_data_path": str(shards), "train_records_folder_path": str(shards),
                "train_records_path": ["train"], "dataset_specs": {"coco": str(dataset_spec)},
            },
        },
        # COCO-17: 17 joints + background, 19 limbs x (x, y).
        "model": {"backbone_attributes": {"architecture": "tiny"}, "stages": 2, "heat_channels": 18,
                  "paf_channels": 38},
    }))
    inference_spec = root / "infer_spec.yaml"
    inference_spec.write_text(yaml.safe_dump({
        "train_spec": str(train_spec), "input_shape": [64, 64], "multi_scale_inference": False,
    }))
    return dataset_spec, train_spec, inference_spec


def test_bpnet_convert_train_evaluate_export_with_read_only_dataset(docker_client, workspace):
    run = workspace.results / "bpnet"
    shards = run / "data"
    dataset_spec, train_spec, inference_spec = _bpnet_specs(workspace.specs, workspace.data, shards)

    convert = workspace.pose("bpnet", "dataset_convert", "-m", "train", "-o", str(shards / "train"),
                             "--dataset_spec", str(dataset_spec))
    assert convert.returncode == 0, convert.stdout
    assert (shards / "train" / "manifest.json").is_file()

    train = workspace.pose("bpnet", "train", "-e", str(train_spec), "-r", str(run / "model"), timeout=300)
    assert train.returncode == 0, train.stdout
    model = run / "model" / "model_final.pth"
    assert model.is_file()

    evaluate = workspace.pose("bpnet", "evaluate", "--inference_spec", str(inference_spec), "--model_filename",
                              str(model), "--dataset_spec", str(dataset_spec), "--results_dir", str(run / "eval"))
    assert evaluate.returncode == 0, evaluate.stdout
    assert "AP" in evaluate.stdout

    _export_is_valid_onnx_and_nothing_is_left(docker_client, workspace, "bpnet", model, run)
