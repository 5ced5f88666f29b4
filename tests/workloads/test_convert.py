"""`bpnet dataset_convert`: main people, masks, deterministic shards, reruns, reading back."""

from __future__ import annotations

import json
import logging
import tarfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from pose_workloads.__main__ import main as workload_main
from pose_workloads.data import convert, synth
from pose_workloads.data.coco import Person
from pose_workloads.data.convert import convert_dataset, main_people
from pose_workloads.data.shards import MANIFEST, ShardSamples, manifest_samples, read_shards
from pose_workloads.specs import BpnetDatasetSpec

ROOT = Path(__file__).resolve().parents[2]


def _spec(root: Path, annotations: str, mask_dir: Path | str, images: str = "images", **fields) -> BpnetDatasetSpec:
    split = {"images_root_dir_path": images, "mask_root_dir_path": str(mask_dir),
             "annotation_root_dir_path": annotations}
    return BpnetDatasetSpec(root_directory_path=str(root), train_data=split, test_data=split, **fields)


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def mini(coco_mini, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mini")
    spec = _spec(coco_mini.root, coco_mini.keypoints_name, tmp / "masks")
    result = convert_dataset(spec, "train", tmp / "train", generate_masks=True, show_progress=False)
    return spec, tmp, result


def test_coco_mini_gives_one_sample_per_main_person_with_the_original_image_bytes(coco_mini, mini):
    spec, tmp, result = mini
    assert not result.up_to_date and result.samples == 12 == manifest_samples(result.manifest_path)
    samples = list(read_shards(tmp / "train"))
    assert len(samples) == 12
    with tarfile.open(tmp / "train/shard-000000.tar") as tar:
        names = tar.getnames()
        first = tar.extractfile(names[0]).read()
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    meta = samples[0]["meta"]
    assert first == (coco_mini.images / meta["file_name"]).read_bytes()  # copied, not re-encoded
    for s in samples:
        meta = s["meta"]
        assert s["image"].shape == (meta["height"], meta["width"], 3) and s["image"].dtype == np.uint8
        n = len(meta["ann_ids"])
        assert meta["keypoints"].shape == (n, 17, 3) and meta["bboxes"].shape == (n, 4)
        x, y, w, h = meta["bboxes"][meta["main"]]
        np.testing.assert_allclose(meta["main_center"], [x + w / 2, y + h / 2], atol=0.01)
        assert meta["main_scale_px"] == pytest.approx(max(w, h), abs=0.01)
    # Each labelled, big-enough person is the centre of exactly one sample.
    mains = [s["meta"]["ann_ids"][s["meta"]["main"]] for s in samples]
    assert len(set(mains)) == 12


def test_mask_files_ignore_unlabelled_people_except_under_labelled_ones(coco_mini, mini):
    spec, tmp, _ = mini
    coco = COCO(str(coco_mini.keypoints))
    for image_id in coco.getImgIds():
        mask = cv2.imread(str(tmp / f"masks/mask_{image_id}.png"), cv2.IMREAD_UNCHANGED)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        ignore = np.zeros(mask.shape, bool)
        for a in anns:
            if a["iscrowd"] or a["num_keypoints"] == 0:
                ignore |= coco.annToMask(a).astype(bool)
        for a in anns:
            if not a["iscrowd"] and a["num_keypoints"] > 0:
                ignore &= ~coco.annToMask(a).astype(bool)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 0, ignore)
    assert (cv2.imread(str(tmp / "masks/mask_40083.png"), cv2.IMREAD_UNCHANGED) == 0).any()


def test_rerun_is_up_to_date_and_a_fresh_run_gives_the_same_bytes(mini):
    spec, tmp, _ = mini
    before = _bytes(tmp / "train")
    again = convert_dataset(spec, "train", tmp / "train", generate_masks=True, show_progress=False)
    assert again.up_to_date and again.samples == 12
    fresh = convert_dataset(spec, "train", tmp / "fresh", generate_masks=True, show_progress=False)
    assert not fresh.up_to_date
    assert _bytes(tmp / "fresh") == before


def test_partial_output_from_a_killed_run_is_rewritten(mini, tmp_path):
    spec, tmp, _ = mini
    out = tmp_path / "train"
    convert_dataset(spec, "train", out, generate_masks=True, show_progress=False)
    complete = _bytes(out)
    (out / "shard-000000.tar").write_bytes(complete["shard-000000.tar"][:5000])  # killed mid-write
    (out / ".shard-000001.tar.999.tmp").write_bytes(b"left by kill -9")
    result = convert_dataset(spec, "train", out, generate_masks=True, show_progress=False)
    assert not result.up_to_date and _bytes(out) == complete
    (out / MANIFEST).unlink()
    assert not convert_dataset(spec, "train", out, generate_masks=True, show_progress=False).up_to_date
    assert _bytes(out) == complete


def test_a_changed_spec_is_converted_again(mini, tmp_path):
    spec, _, _ = mini
    out = tmp_path / "train"
    convert_dataset(spec, "train", out, show_progress=False)
    stricter = spec.model_copy(update={"min_keypoints": 16})
    result = convert_dataset(stricter, "train", out, show_progress=False)
    assert not result.up_to_date and result.samples == 5  # coco-mini has five people with >= 16 joints
    assert json.loads((out / MANIFEST).read_text())["not_main"]["fewer labelled joints than min_keypoints"] == 7


def test_synthetic_crowds_are_masked_except_where_labelled_people_cover_them(tmp_path):
    root = synth.write_synthetic_dataset(tmp_path / "synth", images=12, seed=1, size=(128, 96), show_progress=False)
    spec = _spec(root, synth.ANNOTATIONS_FILE, "masks", min_person_size_px=8, min_keypoints=3)
    result = convert_dataset(spec, "test", tmp_path / "val", generate_masks=True, show_progress=False)
    coco = COCO(str(root / synth.ANNOTATIONS_FILE))
    crowd_pixels_checked = under_people = 0
    for image_id in coco.getImgIds():
        mask = cv2.imread(str(root / f"masks/mask_{image_id}.png"), cv2.IMREAD_UNCHANGED)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        crowd = np.zeros(mask.shape, bool)
        unlabelled = np.zeros(mask.shape, bool)
        labelled = np.zeros(mask.shape, bool)
        for a in anns:
            target = crowd if a["iscrowd"] else unlabelled if a["num_keypoints"] == 0 else labelled
            target |= coco.annToMask(a).astype(bool)
        np.testing.assert_array_equal(mask == 0, (crowd | unlabelled) & ~labelled)
        crowd_pixels_checked += int((crowd & ~labelled).sum())
        under_people += int((crowd & labelled).sum())
    assert crowd_pixels_checked > 100 and under_people > 0
    # The shards carry the same masks; samples of an image with nothing to ignore carry none.
    for sample in read_shards(result.manifest_path):
        on_disk = cv2.imread(str(root / f"masks/mask_{sample['meta']['image_id']}.png"), cv2.IMREAD_UNCHANGED)
        if sample["mask"] is None:
            assert (on_disk == 255).all()
        else:
            np.testing.assert_array_equal(sample["mask"], on_disk)


def test_bad_annotations_are_counted_by_reason_and_named_by_id(coco_mini, mini, tmp_path, caplog):
    data = json.loads(coco_mini.keypoints.read_text())
    data["annotations"][0]["keypoints"] = [1, 2]
    data["annotations"][2]["bbox"] = [5000, 5000, 10, 10]
    (tmp_path / "ann.json").write_text(json.dumps(data))
    spec = _spec(coco_mini.root, str(tmp_path / "ann.json"), tmp_path / "masks")  # absolute: used as is
    with caplog.at_level(logging.WARNING):
        result = convert_dataset(spec, "train", tmp_path / "out", show_progress=False)
    manifest = json.loads(result.manifest_path.read_text())
    assert sum(manifest["skipped"].values()) == 2 and result.samples == 10
    assert any("wrong length" in r for r in manifest["skipped"])
    assert str(data["annotations"][0]["id"]) in caplog.text and str(data["annotations"][2]["id"]) in caplog.text


def _person(x, y, side, joints=17, area=None):
    kps = np.zeros((17, 3), np.float32)
    kps[:joints, 2] = 2
    box = np.array([x - side / 2, y - side / 2, side, side], np.float32)
    return Person(1, int(x * 1000 + y), "a.jpg", box, kps, area if area is not None else side * side, False, joints)


def test_main_people_are_filtered_by_joints_size_and_distance_to_chosen_centres():
    people = [
        _person(100, 100, 200),  # A: main
        _person(400, 100, 40),  # C: main, small but far
        _person(140, 100, 100),  # D: 40 px from A < 0.3 x 200 (A's scale): not a new centre
        _person(400, 300, 100, joints=4),  # too few joints
        _person(600, 300, 20),  # area 400 < 32^2
    ]
    chosen, reasons = main_people(people, min_size_px=32, min_keypoints=5, min_distance_ratio=0.3)
    # TAO compares D with the box of the last person its loop saw (C: 0.3 x 40 = 12 px) and keeps it.
    assert chosen == [0, 1]
    assert reasons == Counter({
        "too close to another main person": 1,
        "fewer labelled joints than min_keypoints": 1,
        "smaller than min_person_size_px": 1,
    })


def test_without_duplication_each_image_gives_one_sample_centred_on_its_largest_person(coco_mini, mini, tmp_path):
    spec, _, _ = mini
    single = spec.model_copy(update={"duplicate_data_with_each_person_as_center": False})
    result = convert_dataset(single, "train", tmp_path / "out", show_progress=False)
    samples = list(read_shards(result.manifest_path))
    assert len(samples) == 4 and len({s["meta"]["image_id"] for s in samples}) == 4
    coco = COCO(str(coco_mini.keypoints))
    for s in samples:
        meta = s["meta"]
        labelled = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=meta["image_id"])) if a["num_keypoints"] > 0]
        assert meta["ann_ids"][meta["main"]] == max(labelled, key=lambda a: a["area"])["id"]


def test_shards_split_at_the_sample_limit_and_parts_partition_the_samples(mini, tmp_path, monkeypatch):
    spec, tmp, _ = mini
    monkeypatch.setattr(convert, "SAMPLES_PER_SHARD", 5)
    result = convert_dataset(spec, "train", tmp_path / "out", show_progress=False)
    assert result.shards == 3
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == [f"shard-00000{i}.tar" for i in range(3)]
    every = [s["key"] for s in read_shards(tmp_path / "out")]
    assert every == [s["key"] for s in read_shards(tmp / "train")]
    parts = [[s["key"] for s in read_shards(tmp_path / "out", part, 3)] for part in range(3)]
    assert sorted(sum(parts, [])) == sorted(every) and all(len(p) == 4 for p in parts)
    random_access = ShardSamples(result.manifest_path)
    assert len(random_access) == 12
    for i in (0, 6, 11):
        streamed = list(read_shards(tmp_path / "out"))[i]
        got = random_access[i]
        assert got["key"] == streamed["key"]
        np.testing.assert_array_equal(got["image"], streamed["image"])


def test_cli_converts_and_reports_spec_problems_as_exit_2(mini, tmp_path, capsys):
    spec, _, _ = mini
    path = tmp_path / "spec.json"
    path.write_text(spec.model_dump_json())
    args = ["bpnet", "dataset_convert", "-m", "test", "-o", str(tmp_path / "val"), "-d", str(path)]
    assert workload_main(args) == 0
    assert workload_main(args) == 0
    assert "up to date (12 samples)" in capsys.readouterr().out
    data = json.loads(path.read_text())
    data["test_data"]["mask_root_dir_path"] = None
    path.write_text(json.dumps(data))
    assert workload_main(args + ["--generate_masks"]) == 2
    assert "test_data.mask_root_dir_path: not set" in capsys.readouterr().err
    data["num_joints"] = 18
    path.write_text(json.dumps(data))
    assert workload_main(args) == 2
    assert "num_joints: 18 but pose config coco17 has 17" in capsys.readouterr().err
