"""`bpnet train` (bpnet/train.py): specs, the loss, optimizer and weights set-up, and a
short real run on coco-mini's shards that checkpoints, resumes and hands TAO's settings to the loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from pose_workloads import model_file
from pose_workloads.__main__ import main
from pose_workloads.bpnet import train as bpnet_train
from pose_workloads.errors import SpecError
from pose_workloads.models import build_model
from pose_workloads.runtime import load_predictor
from pose_workloads.specs import BpnetTrainSpec, load_pose_config, load_spec

ROOT = Path(__file__).resolve().parents[2]
POSE_18 = ROOT / "specs/bpnet/bpnet_18joints.json"


def tiny_spec_data(records: Path, **top) -> dict:
    """A spec small enough to train in seconds: tiny backbone, 64x96 input, 2 stages."""
    return {
        "num_epoch": 1,
        "checkpoint_n_epoch": 1,
        "amp": False,
        "dataloader": {
            "batch_size": 4,
            "workers": 0,
            "pose_config": {"target_shape": [8, 12], "pose_config_path": str(POSE_18)},
            "image_config": {"image_dims": {"height": 64, "width": 96}},
            "dataset_config": {"root_data_path": str(records.parent), "train_records_folder_path": str(records.parent),
                               "train_records_path": [records.name], "dataset_specs": {}},
        },
        "model": {"backbone_attributes": {"architecture": "tiny"}, "stages": 2},
        **top,
    }


def write_spec(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --- shipped specs ---

@pytest.mark.parametrize("name", ["bpnet_train_m1_coco.yaml", "demo_train.yaml"])
def test_shipped_train_specs_validate_and_fit_their_pose_config(name):
    spec = load_spec(BpnetTrainSpec, ROOT / "specs/bpnet" / name)
    pose_path = spec.dataloader.pose_config.pose_config_path
    # The blog's container path names the same file this repository ships.
    pose_config = load_pose_config(POSE_18 if pose_path.startswith("/workspace") else ROOT / pose_path)
    bpnet_train.check_channels(spec, pose_config, name)


def test_blog_spec_keeps_the_blog_values():
    spec = load_spec(BpnetTrainSpec, ROOT / "specs/bpnet/bpnet_train_m1_coco.yaml")
    assert (spec.checkpoint_n_epoch, spec.num_epoch, spec.use_stagewise_lr_multipliers) == (5, 20, True)
    loader = spec.dataloader
    assert (loader.batch_size, tuple(loader.pose_config.target_shape)) == (10, (32, 32))
    assert loader.pose_config.pose_config_path == "/workspace/examples/bpnet/model_pose_config/bpnet_18joints.json"
    assert loader.augmentation_config.spatial_augmentation_mode == "person_centric"
    aug = loader.augmentation_config.spatial_aug_params
    got = (aug.flip_lr_prob, aug.rotate_deg_max, aug.translate_max_x, aug.target_person_scale)
    assert got == (0.5, 40.0, 40.0, 0.6)
    labels = loader.label_processor_config
    assert (labels.heatmap_gaussian_sigma, labels.paf_ortho_dist_thresh) == (7.0, 1.0)
    model = spec.model
    got = (model.backbone_attributes.architecture, model.stages, model.heat_channels, model.paf_channels)
    assert got == ("vgg", 3, 19, 38)
    assert (model.regularization_type, model.kernel_regularization_factor) == ("l1", 5e-4)
    schedule = spec.optimizer.learning_rate_schedule
    assert (spec.optimizer.class_name, spec.optimizer.momentum) == ("WeightedMomentumOptimizer", 0.9)
    got = (schedule.soft_start, schedule.annealing, schedule.base_learning_rate, schedule.min_learning_rate)
    assert got == (0.05, 0.5, 2e-5, 8e-8)


def test_18_joint_config_is_coco_plus_neck_with_openpose_limbs():
    pose = load_pose_config(POSE_18)
    names = pose.keypoints
    assert pose.num_joints == 18 and "neck" in names and len(pose.paf_limbs) == 19
    limbs = {(names[a], names[b]) for a, b in pose.paf_limbs}
    assert ("neck", "right_shoulder") in limbs and ("left_shoulder", "left_ear") in limbs
    for a, b in pose.flip_pairs:
        assert names[a].replace("right_", "left_") == names[b].replace("right_", "left_")
    assert pose.oks_sigmas[names.index("neck")] == pose.oks_sigmas[names.index("left_shoulder")] == 0.079


# --- bad input: one line, exit code 2 ---

@pytest.mark.parametrize("field,value,fix", [
    ("heat_channels", 18, "set model.heat_channels: 19"),
    ("paf_channels", 36, "set model.paf_channels: 38"),
])
def test_channels_that_do_not_fit_the_pose_config_name_the_field_and_the_fix(field, value, fix, tmp_path, capsys):
    data = tiny_spec_data(tmp_path / "nowhere")
    data["model"][field] = value
    spec = write_spec(tmp_path / "spec.yaml", data)
    assert main(["bpnet", "train", "-e", str(spec), "-r", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(spec) in err and f"model.{field}" in err and fix in err
    assert not (tmp_path / "r").exists()


def test_unconverted_records_name_the_field_and_dataset_convert(tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec_data(tmp_path / "missing"))
    assert main(["bpnet", "train", "-e", str(spec), "-r", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "dataloader.dataset_config.train_records_path[0]" in err and "pose bpnet dataset_convert" in err


# --- pieces ---

def test_loss_is_masked_l2_summed_over_stages():
    target = {"heatmaps": torch.zeros(2, 3, 4, 4), "pafs": torch.zeros(2, 2, 4, 4), "mask": torch.ones(2, 1, 4, 4)}
    heat, paf = torch.zeros(2, 3, 4, 4), torch.zeros(2, 2, 4, 4)
    heat[0, 1, 2, 2] = 2.0  # squared error 4
    paf[1, 0, 0, 0] = 1.0  # squared error 1
    loss, parts = bpnet_train.bpnet_loss([(heat, paf), (heat, paf)], target)
    # 0.5 x (4 + 1) / batch 2, twice.
    assert loss.item() == pytest.approx(2 * 0.5 * 5 / 2)
    assert parts["heatmaps"].item() == pytest.approx(2.0) and parts["pafs"].item() == pytest.approx(0.5)
    target["mask"][0, 0, 2, 2] = 0.0  # an ignored pixel costs nothing
    target["mask"][1, 0, 0, 0] = 0.5
    loss, _ = bpnet_train.bpnet_loss([(heat, paf)], target)
    assert loss.item() == pytest.approx(0.5 * 0.5 / 2)


@pytest.mark.parametrize("optimizer,expected", [
    ({"__class_name__": "WeightedMomentumOptimizer", "momentum": 0.8, "use_nesterov": True}, ("sgd", 0.8, True)),
    ({"__class_name__": "AdamOptimizer"}, ("adam", 0.9, False)),
])
def test_optimizer_section_becomes_the_loop_settings(optimizer, expected, tmp_path):
    spec = BpnetTrainSpec.model_validate(tiny_spec_data(tmp_path / "x", optimizer=optimizer))
    settings = bpnet_train.optimizer_settings(spec)
    assert (settings["optimizer"], settings["momentum"], settings["nesterov"]) == expected
    assert settings["lr"] == 2e-5
    assert settings["schedule"].kind == "soft_start_annealing" and settings["schedule"].min_lr == 8e-8
    constant = BpnetTrainSpec.model_validate(tiny_spec_data(tmp_path / "x", optimizer={
        **optimizer, "learning_rate_schedule": {"__class_name__": "ConstantLearningRateSchedule"}}))
    assert bpnet_train.optimizer_settings(constant)["schedule"].kind == "constant"


def save_pose_model(path: Path, model, config: dict) -> Path:
    from pose_workloads import model_file

    model_file.write(path, model_file.contents("bpnet", model, config, load_pose_config(POSE_18), [64, 96]))
    return path


def test_pretrained_pose_model_loads_every_tensor_that_fits(tmp_path):
    torch.manual_seed(1)
    donor_config = {"backbone_attributes": {"architecture": "tiny"}, "stages": 3}
    donor = build_model("bpnet", donor_config, 18, pretrained=False)
    path = save_pose_model(tmp_path / "donor.pth", donor, donor_config)
    data = tiny_spec_data(tmp_path / "x", pretrained_weights=str(path))  # 2 stages: the third is not taken
    spec = BpnetTrainSpec.model_validate(data)
    model, config = bpnet_train.build_train_model(spec, load_pose_config(POSE_18), "spec.yaml")
    assert config["backbone_attributes"]["pretrained_weights"] is None
    own = model.state_dict()
    for key, tensor in donor.state_dict().items():
        if key in own:
            assert torch.equal(own[key], tensor), key
    assert len(model.refinements) == 1


def test_load_graph_rebuilds_the_pruned_model_from_its_layer_channels(tmp_path):
    pruned_config = {"backbone_attributes": {"architecture": "tiny"}, "stages": 3}
    pruned = build_model("bpnet", pruned_config, 18, pretrained=False)
    # Thinner than its config says, as `bpnet prune` leaves a model.
    stage = pruned.refinements[0]
    stage.heat_hidden[0] = torch.nn.Conv2d(64, 40, 1)
    stage.heat_out = torch.nn.Conv2d(40, 19, 1)
    path = save_pose_model(tmp_path / "pruned.pth", pruned, pruned_config)
    spec = BpnetTrainSpec.model_validate(tiny_spec_data(tmp_path / "x", pretrained_weights=str(path), load_graph=True))
    model, config = bpnet_train.build_train_model(spec, load_pose_config(POSE_18), "spec.yaml")
    assert config == pruned_config
    assert model.refinements[0].heat_out.in_channels == 40 and len(model.refinements) == 2


def test_load_graph_of_another_joint_set_is_refused(tmp_path):
    config = {"backbone_attributes": {"architecture": "tiny"}, "stages": 2, "heat_channels": 18, "paf_channels": 38}
    path = save_pose_model(tmp_path / "other.pth", build_model("bpnet", config, 17, pretrained=False), config)
    spec = BpnetTrainSpec.model_validate(tiny_spec_data(tmp_path / "x", pretrained_weights=str(path), load_graph=True))
    with pytest.raises(SpecError, match="pretrained_weights: .* outputs 18 heatmap"):
        bpnet_train.build_train_model(spec, load_pose_config(POSE_18), "spec.yaml")


# --- a real run ---

def test_train_checkpoints_resumes_and_uses_tao_settings(coco_mini, converted, tmp_path, capsys):
    torch.set_num_threads(1)
    data = tiny_spec_data(converted, validation_every_n_epoch=1)
    data["model"].update(regularization_type="l1", kernel_regularization_factor=1e-4)
    split = {"images_root_dir_path": "images", "annotation_root_dir_path": coco_mini.keypoints_name}
    dataset_spec = tmp_path / "coco_mini_spec.json"
    dataset_spec.write_text(json.dumps({"root_directory_path": str(coco_mini.root), "train_data": split,
                                        "test_data": split}))
    data["dataloader"]["dataset_config"]["dataset_specs"] = {"coco": str(dataset_spec)}
    spec = write_spec(tmp_path / "spec.yaml", data)
    results = tmp_path / "results"
    assert main(["bpnet", "train", "-e", str(spec), "-r", str(results), "-k", "tlt_encode"]) == 0
    out, err = capsys.readouterr()
    assert "-k/--key is ignored" in err
    for name in ("checkpoint_last.pth", "checkpoint_epoch_001.pth", "model_final.pth", "model_best.pth",
                 "metrics.jsonl", "spec.yaml"):
        assert (results / name).is_file(), name
    ckpt = torch.load(results / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    # WeightedMomentumOptimizer: SGD, momentum 0.9; stagewise multipliers: backbone and stage 1 x1
    # (biases x2), refinement stages x4 (biases x8), TAO's / OpenPose's.
    groups = ckpt["optimizer"]["param_groups"]
    assert sorted(g["lr_mult"] for g in groups) == [1.0, 2.0, 4.0, 8.0]
    assert all(g["momentum"] == 0.9 and not g["nesterov"] for g in groups)
    record = json.loads((results / "metrics.jsonl").read_text().splitlines()[0])
    assert record["loss_parts"]["regularization"] > 0 and record["loss_parts"]["pafs"] > 0
    assert 0.0 <= record["val"]["AP"] <= 1.0  # validation_every_n_epoch: COCO AP on the test split

    # The model file is self-describing and opens without the spec.
    predictor = load_predictor(results / "model_final.pth")
    heatmaps, pafs = predictor(torch.zeros(1, 3, 64, 96).numpy())
    assert heatmaps.shape == (1, 19, 8, 12) and pafs.shape == (1, 38, 8, 12)

    # Rerun with more epochs: resumes after epoch 1, as TAO does on the same command.
    assert main(["bpnet", "train", "-e", str(spec), "-r", str(results), "--set", "num_epoch=2"]) == 0
    out, _ = capsys.readouterr()
    assert "resuming from" in out and "after epoch 1" in out
    assert [json.loads(line)["epoch"] for line in (results / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_retraining_a_pruned_model_keeps_its_channels(converted, tmp_path, capsys):
    torch.set_num_threads(1)
    config = {"backbone_attributes": {"architecture": "tiny"}, "stages": 2}
    pruned = build_model("bpnet", config, 18, pretrained=False)
    pruned.refinements[0].paf_hidden[0] = torch.nn.Conv2d(64, 24, 1)
    pruned.refinements[0].paf_out = torch.nn.Conv2d(24, 38, 1)
    path = save_pose_model(tmp_path / "pruned.pth", pruned, config)
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec_data(converted, pretrained_weights=str(path), load_graph=True))
    results = tmp_path / "results"
    assert main(["bpnet", "train", "-e", str(spec), "-r", str(results)]) == 0
    final = torch.load(results / "model_final.pth", map_location="cpu", weights_only=True)  # data only
    assert final["layer_channels"]["refinements.0.paf_out"] == [24, 38, 1]
    assert model_file.build_model(final).refinements[0].paf_out.in_channels == 24
    heatmaps, pafs = load_predictor(results / "model_final.pth")(torch.zeros(1, 3, 64, 96).numpy())
    assert pafs.shape == (1, 38, 8, 12)
    assert main(["bpnet", "train", "-e", str(spec), "-r", str(results), "--set", "num_epoch=2"]) == 0
    assert "after epoch 1" in capsys.readouterr().out
