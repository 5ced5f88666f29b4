"""Reading COCO keypoint files: real coco-mini, and small broken copies of it."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose_workloads.data.coco import ignore_mask, load_coco, redraw_on_bad_sample
from pose_workloads.errors import BadInput
from pose_workloads.media import BadSample, read_image
from pose_workloads.specs import load_pose_config

ROOT = Path(__file__).resolve().parents[2]
UNLABELLED_IDS = {1202706, 508900}  # the two num_keypoints == 0 people in coco-mini

def _mini(coco_mini) -> dict:
    return json.loads(coco_mini.keypoints.read_text())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_mini_gives_labelled_people_and_keeps_unlabelled_ones_for_masks(coco_mini):
    coco = load_coco(coco_mini.images, coco_mini.keypoints)
    assert len(coco.images) == 4 and len(coco.people) == 12
    assert not coco.skipped
    person = coco.people[0]
    assert person.keypoints.shape == (17, 3) and person.keypoints.dtype == np.float32
    assert person.bbox.shape == (4,) and person.bbox.dtype == np.float32
    assert all(p.num_keypoints == np.count_nonzero(p.keypoints[:, 2]) > 0 for p in coco.people)
    assert {i for r in coco.images for i in r.ignore_ann_ids} == UNLABELLED_IDS
    for record in coco.images:
        assert all(coco.people[i].image_id == record.image_id for i in record.people)
        assert Path(record.image_path).is_file()
    # Every original annotation is either a person or kept for the masks.
    assert len(coco.people) + len(UNLABELLED_IDS) == len(_mini(coco_mini)["annotations"])


def test_keypoints_of_the_wrong_length_are_skipped_counted_and_named(coco_mini, tmp_path, caplog):
    data = _mini(coco_mini)
    bad_id = data["annotations"][1]["id"]
    data["annotations"][1]["keypoints"] = data["annotations"][1]["keypoints"][:-3]
    path = _write(tmp_path, data)
    with caplog.at_level(logging.WARNING):
        coco = load_coco(coco_mini.images, path)
    assert len(coco.people) == 11
    (reason, count), = coco.skipped.items()
    assert count == 1 and "wrong length" in reason
    assert str(path) in caplog.text and str(bad_id) in caplog.text


def test_missing_image_file_is_skipped_and_counted(coco_mini, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(p.name for p in coco_mini.images.glob("*.jpg"))[1:]:
        (images / name).symlink_to((coco_mini.images / name).resolve())
    coco = load_coco(images, coco_mini.keypoints)
    assert len(coco.images) == 3
    assert coco.skipped["image file missing"] == 1
    assert all(Path(p.image_path).exists() for p in coco.people)


def test_box_reaching_outside_the_image_is_clipped_and_one_fully_outside_is_skipped(coco_mini, tmp_path):
    data = _mini(coco_mini)
    image = {i["id"]: i for i in data["images"]}
    reaching, outside = data["annotations"][0], data["annotations"][1]
    reaching["bbox"] = [-20.0, -10.0, 5000.0, 5000.0]
    outside["bbox"] = [image[outside["image_id"]]["width"] + 10.0, 5.0, 30.0, 30.0]
    coco = load_coco(coco_mini.images, _write(tmp_path, data))
    clipped = next(p for p in coco.people if p.ann_id == reaching["id"])
    size = image[reaching["image_id"]]
    np.testing.assert_allclose(clipped.bbox, [0, 0, size["width"], size["height"]])
    assert outside["id"] not in {p.ann_id for p in coco.people}
    assert sum(coco.skipped.values()) == 1


@pytest.mark.parametrize("content", [{"foo": 1}, [1, 2], {"images": [], "annotations": {}}])
def test_json_that_is_not_coco_is_bad_input_naming_the_file(coco_mini, tmp_path, content):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(content))
    with pytest.raises(BadInput, match="odd.json.*(images|annotations)"):
        load_coco(coco_mini.images, path)


def test_invalid_json_and_missing_file_are_bad_input(coco_mini, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(BadInput, match="broken.json: not valid JSON"):
        load_coco(coco_mini.images, broken)
    with pytest.raises(BadInput, match="nope.json: file not found"):
        load_coco(coco_mini.images, tmp_path / "nope.json")


def test_annotations_for_another_joint_set_are_one_bad_input_not_skips(coco_mini):
    crowdpose = load_pose_config(ROOT / "specs/pose_configs/crowdpose14.json")
    with pytest.raises(BadInput, match=r"categories\[0\]\.keypoints.*17.*14"):
        load_coco(coco_mini.images, coco_mini.keypoints, crowdpose)


def test_every_person_bad_is_bad_input(coco_mini, tmp_path):
    data = _mini(coco_mini)
    del data["categories"][0]["keypoints"]
    for ann in data["annotations"]:
        ann["keypoints"] = ann["keypoints"][:6]
    with pytest.raises(BadInput, match="no usable person left.*wrong length"):
        load_coco(coco_mini.images, _write(tmp_path, data))


def test_no_image_found_is_bad_input_naming_the_images_dir(coco_mini, tmp_path):
    with pytest.raises(BadInput, match=f"none of its 4 images are in {tmp_path}"):
        load_coco(tmp_path, coco_mini.keypoints)


def test_read_image_returns_rgb_and_raises_bad_sample_for_broken_files(coco_mini, tmp_path):
    path = next(coco_mini.images.glob("*.jpg"))
    rgb = read_image(path)
    np.testing.assert_array_equal(rgb, cv2.imread(str(path))[..., ::-1])
    assert rgb.dtype == np.uint8 and rgb.ndim == 3
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(BadSample, match="junk.jpg: cannot be decoded"):
        read_image(junk)
    with pytest.raises(BadSample, match="but the annotations say 10x20"):
        read_image(path, expected_hw=(20, 10))


def test_redraw_on_bad_sample_counts_and_loads_another_index():
    def load(i):
        if i == 0:
            raise BadSample("a.jpg", "cannot be decoded as an image")
        return i

    skipped = Counter()
    got = redraw_on_bad_sample(load, 0, 5, np.random.default_rng(0), skipped)
    assert got in {1, 2, 3, 4}
    assert skipped["cannot be decoded as an image"] >= 1

    def always_bad(i):
        raise BadSample(f"{i}.jpg", "cannot be decoded as an image")

    with pytest.raises(BadInput, match="in a row could not be read"):
        redraw_on_bad_sample(always_bad, 0, 5, np.random.default_rng(0), Counter(), max_redraws=3)


def test_ignore_mask_is_crowd_and_unlabelled_minus_labelled_people(coco_mini, tmp_path):
    shutil.copy(next(coco_mini.images.glob("*.jpg")), tmp_path / "a.jpg")
    h, w = cv2.imread(str(tmp_path / "a.jpg")).shape[:2]
    square = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    labelled = [0.0] * 51
    labelled[15:18] = [60.0, 60.0, 2]
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [10, 10, 100, 100],
             "segmentation": square(10, 10, 110, 110), "area": 10000},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [50, 50, 100, 20],
             "segmentation": square(50, 50, 150, 70), "keypoints": labelled, "num_keypoints": 1, "area": 2000},
            {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [200, 200, 20, 20],
             "segmentation": square(200, 200, 220, 220), "keypoints": [0] * 51, "num_keypoints": 0, "area": 400},
        ],
    }
    coco = load_coco(tmp_path, _write(tmp_path, data))
    record, = coco.images
    ignore = ignore_mask(coco.coco, record, coco.people)
    expected = np.zeros((h, w), bool)
    for ann_id in (1, 3):
        expected |= coco.coco.annToMask(coco.coco.anns[ann_id]).astype(bool)
    expected &= ~coco.coco.annToMask(coco.coco.anns[2]).astype(bool)
    np.testing.assert_array_equal(ignore, expected)
    assert ignore[30, 30] and not ignore[60, 60] and ignore[210, 210] and not ignore[5, 5]


def test_keypoints_that_are_not_numbers_are_skipped_and_counted(coco_mini, tmp_path):
    data = _mini(coco_mini)
    data["annotations"][0]["keypoints"][0] = None
    coco = load_coco(coco_mini.images, _write(tmp_path, data))
    assert len(coco.people) == 11
    assert coco.skipped == Counter({"keypoint coordinates not finite": 1})
