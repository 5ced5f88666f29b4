"""BpnetShardDataset (data/bottomup.py) over dataset_convert's shards of coco-mini."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pose_workloads.bpnet.train import shard_dataset
from pose_workloads.data import bottomup
from pose_workloads.data.bottomup import shuffled
from pose_workloads.errors import BadInput
from pose_workloads.specs import BpnetTrainSpec, load_pose_config

ROOT = Path(__file__).resolve().parents[2]
POSE_18 = load_pose_config(ROOT / "specs/bpnet/bpnet_18joints.json")


def train_spec(records: Path, **dataloader) -> BpnetTrainSpec:
    return BpnetTrainSpec.model_validate({
        "seed": 3,
        "dataloader": {
            "batch_size": 2,
            "pose_config": {"target_shape": [12, 16],
                            "pose_config_path": str(ROOT / "specs/bpnet/bpnet_18joints.json")},
            "image_config": {"image_dims": {"height": 96, "width": 128}},
            "dataset_config": {"root_data_path": str(records.parent), "train_records_folder_path": str(records.parent),
                               "train_records_path": [records.name], "dataset_specs": {}},
            **dataloader,
        },
    })


def as_arrays(example: dict) -> dict:
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in example.items()}


def test_samples_have_the_spec_shapes_and_tao_normalisation(converted):
    dataset = shard_dataset(train_spec(converted), [converted], POSE_18)
    examples = list(dataset)
    assert len(examples) == len(dataset) == json.loads((converted / "manifest.json").read_text())["samples"]
    first = examples[0]
    assert first["image"].shape == (3, 96, 128) and first["image"].dtype == torch.float32
    assert first["heatmaps"].shape == (19, 12, 16) and first["pafs"].shape == (38, 12, 16)
    assert first["mask"].shape == (1, 12, 16)
    # pixel / 256 - 0.5: black padding is -0.5, nothing reaches 0.5.
    assert first["image"].min() >= -0.5 and first["image"].max() < 0.5
    # Person-centric: the main person is in the middle of every sample, so some joint peaks there.
    for example in examples:
        assert example["heatmaps"][:18].amax() > 0.5
        assert example["heatmaps"][:18, 3:9, 4:12].amax() > 0.3
    assert sorted(e["index"] for e in examples) == list(range(len(dataset)))


def test_an_epoch_is_a_function_of_seed_and_epoch(converted):
    dataset = shard_dataset(train_spec(converted), [converted], POSE_18)
    dataset.set_epoch(1)
    first = [as_arrays(e) for e in dataset]
    again = [as_arrays(e) for e in dataset]
    dataset.set_epoch(2)
    other = [as_arrays(e) for e in dataset]
    assert [e["index"] for e in first] == [e["index"] for e in again]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["pafs"], b["pafs"])
    by_index = {e["index"]: e for e in other}
    assert any(not np.array_equal(a["image"], by_index[a["index"]]["image"]) for a in first)


def test_parts_cover_every_sample_once_and_augment_it_as_one_process_would(converted, monkeypatch):
    spec = train_spec(converted)
    dataset = shard_dataset(spec, [converted], POSE_18)
    dataset.set_epoch(4)
    whole = {e["index"]: as_arrays(e) for e in dataset}

    seen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        for worker in range(2):
            monkeypatch.setattr(bottomup, "get_worker_info", lambda w=worker: SimpleNamespace(num_workers=2, id=w))
            for example in dataset:
                seen.append(example["index"])
                np.testing.assert_array_equal(as_arrays(example)["heatmaps"], whole[example["index"]]["heatmaps"])
                np.testing.assert_array_equal(as_arrays(example)["image"], whole[example["index"]]["image"])
    assert sorted(seen) == sorted(whole)


def test_several_splits_are_one_stream(converted):
    single = len(shard_dataset(train_spec(converted), [converted], POSE_18))
    dataset = shard_dataset(train_spec(converted), [converted, converted], POSE_18, train=False)
    indices = [e["index"] for e in dataset]
    assert indices == list(range(2 * single)) and len(dataset) == 2 * single


def test_eval_mode_is_in_order_without_augmentation(converted):
    spec = train_spec(converted)
    dataset = shard_dataset(spec, [converted], POSE_18, train=False)
    dataset.set_epoch(0)
    a = [as_arrays(e) for e in dataset]
    dataset.set_epoch(5)
    b = [as_arrays(e) for e in dataset]
    assert [e["index"] for e in a] == list(range(len(a)))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])


def test_annotations_without_a_model_joint_are_refused_naming_it(converted, tmp_path):
    odd = POSE_18.model_copy(update={"keypoints": ["head_top"] + POSE_18.keypoints[1:]})
    with pytest.raises(BadInput, match="'head_top'"):
        shard_dataset(train_spec(converted), [converted], odd)


def test_streaming_shuffle_keeps_every_item_and_depends_on_the_seed():
    a = list(shuffled(iter(range(100)), 10, np.random.default_rng(0)))
    b = list(shuffled(iter(range(100)), 10, np.random.default_rng(1)))
    assert sorted(a) == list(range(100)) and a != list(range(100)) and a != b
    assert list(shuffled(iter(range(5)), 1, np.random.default_rng(0))) == list(range(5))
