"""The shipped pose configs: they load, their indices make sense, their flips mirror names."""

from __future__ import annotations

from pathlib import Path

import pytest

from pose_workloads.specs import COCO17, load_pose_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "specs/pose_configs").glob("*.json"))


def test_both_pose_configs_are_shipped():
    assert {p.name for p in CONFIGS} >= {"coco17.json", "crowdpose14.json"}


def test_coco17_file_is_the_builtin_config():
    assert load_pose_config(ROOT / "specs/pose_configs/coco17.json") == COCO17


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_pose_config_loads_with_one_sigma_per_unique_joint(path):
    config = load_pose_config(path)
    assert len(set(config.keypoints)) == config.num_joints
    assert len(config.oks_sigmas) == config.num_joints
    assert all(0.0 < s < 0.2 for s in config.oks_sigmas)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_flip_pairs_are_left_right_pairs_of_the_same_joint(path):
    config = load_pose_config(path)
    names = config.keypoints
    for a, b in config.flip_pairs:
        assert names[a].startswith("left_") and names[b] == "right_" + names[a][len("left_"):]
    paired = {i for pair in config.flip_pairs for i in pair}
    for i, name in enumerate(names):
        # Every sided joint has its mirror; midline joints (nose, neck, head) map to themselves.
        assert (i in paired) == name.startswith(("left_", "right_")), name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_skeleton_connects_every_joint_into_one_body(path):
    config = load_pose_config(path)
    neighbours = {i: set() for i in range(config.num_joints)}
    for a, b in config.skeleton:
        assert a != b
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen, todo = {0}, [0]
    while todo:
        for j in neighbours[todo.pop()] - seen:
            seen.add(j)
            todo.append(j)
    assert seen == set(range(config.num_joints))


def test_crowdpose14_has_head_and_neck_after_the_limbs():
    config = load_pose_config(ROOT / "specs/pose_configs/crowdpose14.json")
    assert config.num_joints == 14
    assert config.keypoints[12:] == ["head", "neck"]
    # OKS constants per CrowdPose's toolkit: the COCO body values, 0.079 for head and neck.
    assert config.oks_sigmas[12:] == [0.079, 0.079]
    assert config.oks_sigmas[:12] == COCO17.oks_sigmas[5:]
