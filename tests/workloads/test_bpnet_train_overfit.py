"""`bpnet train` end to end on real data: a tiny BodyPoseNet overfits coco-mini's four images
(dataset_convert -> train -> `bpnet evaluate`) and reaches COCO AP >= 0.8 on them, on CPU.

What this proves: labels, masks, the affine, the loss and the loop teach a network maps that the
grouping turns back into the annotated people, on the right pixels. Overfitting, so no
augmentation, and the training geometry is the one evaluate uses (stretch to the input, mode
None): a network that memorised four images does not generalise to another scale or offset.
Budget: ~400 steps of batch 4 at 160x240 (the ground-truth labels at this size decode to AP 0.99).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from pose_workloads.__main__ import main
from pose_workloads.data.convert import convert_dataset
from pose_workloads.specs import BpnetDatasetSpec

ROOT = Path(__file__).resolve().parents[2]
REPEATS = 25  # the four samples 25 times per epoch: fewer epochs, so less checkpoint/plot overhead
EPOCHS = 16


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_bpnet_overfits_coco_mini_to_ap_0_8_and_groups_as_well_as_tao(coco_mini, tmp_path):
    torch.set_num_threads(1)  # the machine is shared; one thread wastes nothing on spinning

    split = {"images_root_dir_path": "images", "annotation_root_dir_path": coco_mini.keypoints_name}
    dataset_spec = tmp_path / "coco_mini_spec.json"
    dataset_spec.write_text(json.dumps({
        "root_directory_path": str(coco_mini.root), "train_data": split, "test_data": split,
        # One sample per image: without augmentation the person-centric copies are all the same.
        "duplicate_data_with_each_person_as_center": False,
    }))
    convert_dataset(BpnetDatasetSpec.model_validate_json(dataset_spec.read_text()), "train", tmp_path / "train",
                    show_progress=False)

    train_spec = tmp_path / "overfit.yaml"
    train_spec.write_text(yaml.safe_dump({
        "num_epoch": EPOCHS,
        "checkpoint_n_epoch": EPOCHS,
        "use_stagewise_lr_multipliers": False,
        "amp": False,
        "dataloader": {
            "batch_size": 4,
            "shuffle_buffer_size": 1,  # in order: every batch holds the four images
            "workers": 0,
            "pose_config": {"target_shape": [20, 30],
                            "pose_config_path": str(ROOT / "specs/bpnet/bpnet_18joints.json")},
            "image_config": {"image_dims": {"height": 160, "width": 240}},
            "dataset_config": {"root_data_path": str(tmp_path), "train_records_folder_path": str(tmp_path),
                               "train_records_path": ["train"] * REPEATS, "dataset_specs": {"coco": str(dataset_spec)}},
            "augmentation_config": {
                "spatial_augmentation_mode": "standard_with_fixed_aspect_ratio",
                "spatial_aug_params": {"flip_lr_prob": 0.0, "rotate_deg_max": 0.0, "translate_max_x": 0.0,
                                       "translate_max_y": 0.0},
            },
        },
        "model": {"backbone_attributes": {"architecture": "tiny"}, "regularization_type": "none"},
        "optimizer": {
            "__class_name__": "AdamOptimizer",
            "learning_rate_schedule": {"soft_start": 0.0, "annealing": 0.6, "base_learning_rate": 3.0e-3,
                                       "min_learning_rate": 1.5e-4},
        },
    }))
    results = tmp_path / "results"
    assert main(["bpnet", "train", "-e", str(train_spec), "-r", str(results)]) == 0
    records = [json.loads(line) for line in (results / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == EPOCHS and records[-1]["loss"] < 0.1 * records[0]["loss"]

    def evaluate(inference_spec: dict, folder: str) -> dict:
        """`bpnet evaluate` of the trained model with this inference spec: its metrics.json."""
        infer_spec = tmp_path / "infer.yaml"
        infer_spec.write_text(yaml.safe_dump(inference_spec))
        assert main(["bpnet", "evaluate", "--inference_spec", str(infer_spec), "--model_filename",
                     str(results / "model_final.pth"),
                     "--dataset_spec", str(dataset_spec), "--results_dir", str(tmp_path / folder)]) == 0
        return json.loads((tmp_path / folder / "metrics.json").read_text())

    metrics = evaluate({"input_shape": [160, 240], "keep_aspect_ratio_mode": "None"}, "eval")
    print(f"coco-mini AP {metrics['AP']:.3f} AP50 {metrics['AP50']:.3f} after {EPOCHS * REPEATS} steps")
    assert metrics["AP"] >= 0.8

    # The trained network's maps grouped as TAO does (upsampled x8): the default grouping at the
    # network's resolution scores no less.
    tao = evaluate({"input_shape": [160, 240], "keep_aspect_ratio_mode": "None", "upsample_maps": True},
                   "eval_upsampled")
    print(f"  upsampled x8 (TAO's decode): AP {tao['AP']:.3f}")
    assert metrics["AP"] >= tao["AP"] - 0.001
