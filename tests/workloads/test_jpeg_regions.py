"""JPEGs that decode by region (data/jpeg_regions.py, `pose dataset index_jpegs`).

The copies are made by jpegtran (libjpeg-turbo-progs): these tests skip when it is absent, unless
POSE_REQUIRE_JPEGTRAN=1 (CI installs it and sets that).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose_workloads.data import jpeg_regions
from pose_workloads.data.coco import load_coco
from pose_workloads.data.crops import TopDownAugmentation, affine_transform_matrix
from pose_workloads.data.jpeg_regions import NotIndexable, RegionJpeg, indexed_copy
from pose_workloads.data.topdown import TopDownDataset
from pose_workloads.errors import BadInput
from pose_workloads.media import BadSample, decode_image
from pose_workloads.specs import COCO17

if shutil.which("jpegtran") is None:
    if os.environ.get("POSE_REQUIRE_JPEGTRAN") == "1":
        pytest.fail("POSE_REQUIRE_JPEGTRAN=1 but no jpegtran: apt-get install libjpeg-turbo-progs",
                    pytrace=False)
    pytest.skip("jpegtran not installed (libjpeg-turbo-progs)", allow_module_level=True)


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((height, width, 3)) * 255).astype(np.uint8), (9, 9), 3)


def encoded(image: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, list(params))
    assert ok
    return data.tobytes()


def sample_files(coco_mini) -> list[bytes]:
    """coco-mini's JPEGs (4:4:4) and drawn ones in 4:2:0, 4:2:2 and grey, of sizes no MCU divides."""
    image = smooth_image(300, 437)
    sampling = cv2.IMWRITE_JPEG_SAMPLING_FACTOR
    return [p.read_bytes() for p in sorted(coco_mini.images.glob("*.jpg"))] + [
        encoded(image, sampling, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420),
        encoded(image, sampling, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422),
        encoded(image[:, :, 0]),
    ]


def test_indexed_copy_is_a_jpeg_with_the_original_pixels(coco_mini):
    for data in sample_files(coco_mini):
        copy = indexed_copy(data)
        assert np.array_equal(decode_image(copy, "copy"), decode_image(data, "original"))
        assert RegionJpeg.open(data, "original") is None  # a plain JPEG decodes whole
        assert RegionJpeg.open(copy, "copy") is not None


def test_region_warps_equal_the_full_decode_warps(coco_mini):
    # Crops of every size, place (off the image too), rotation and mirroring: the warp of the
    # region decoded onto a canvas (left with other values) is the warp of the full image.
    rng = np.random.default_rng(0)
    for data in sample_files(coco_mini):
        region_jpeg = RegionJpeg.open(indexed_copy(data), "copy")
        full = decode_image(data, "original")
        canvas = np.full((700, 700, 3), 77, np.uint8)
        for _ in range(150):
            center = rng.uniform(-50, [region_jpeg.width + 50, region_jpeg.height + 50])
            height = rng.uniform(20, 700)
            rotation = rng.uniform(-80, 80) if rng.random() < 0.7 else 0.0
            size = [(192, 256), (48, 64), (288, 384)][rng.integers(3)]
            matrix = affine_transform_matrix(center, (height * 0.75, height), rotation, size[::-1])
            if rng.random() < 0.5:
                matrix = matrix @ np.array([[-1.0, 0, full.shape[1] - 1], [0, 1, 0], [0, 0, 1]])
            corners = np.array([[0, 0], [size[0] - 1, 0], [size[0] - 1, size[1] - 1], [0, size[1] - 1]], float)
            image = region_jpeg.decode_onto(canvas, cv2.transform(corners[None], cv2.invertAffineTransform(matrix))[0])
            assert image.shape == full.shape
            fast = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR)
            slow = cv2.warpAffine(full, matrix, size, flags=cv2.INTER_LINEAR)
            assert np.array_equal(fast, slow)


def test_a_region_holds_exactly_the_pixels_asked_for(coco_mini):
    data = smooth_image(300, 437)
    for sampling in (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444):
        original = encoded(data, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling)
        region_jpeg, full = RegionJpeg.open(indexed_copy(original), "copy"), decode_image(original, "original")
        pixels, x, y = region_jpeg.decode(np.array([[100.3, 50.0], [180.0, 70.5], [120.0, 140.2]]))
        # Exact within READ_MARGIN (2 px) of the polygon's box: x 98.3-182, y 48-142.2.
        assert x <= 99 and y <= 48 and x + pixels.shape[1] > 182 and y + pixels.shape[0] > 142
        assert pixels.shape[1] < 437 and pixels.shape[0] < 300  # not the whole image
        assert np.array_equal(pixels[48 - y:143 - y, 99 - x:183 - x], full[48:143, 99:183])


def test_what_cannot_be_indexed_says_why():
    image = smooth_image(64, 80)
    with pytest.raises(NotIndexable, match="progressive"):
        indexed_copy(encoded(image, cv2.IMWRITE_JPEG_PROGRESSIVE, 1))
    with pytest.raises(NotIndexable, match="not a JPEG"):
        indexed_copy(cv2.imencode(".png", image)[1].tobytes())
    # An EXIF rotation: OpenCV turns the original upright, jpegtran -copy none would drop the tag.
    plain = encoded(image)
    exif = (b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"
            b"\x00\x00\x00\x00")
    rotated = plain[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + plain[2:]
    assert decode_image(rotated, "rotated").shape[:2] == (80, 64)
    with pytest.raises(NotIndexable, match="pixels differ"):
        indexed_copy(rotated)


def test_a_damaged_index_is_a_bad_sample_naming_the_file():
    copy = indexed_copy(encoded(smooth_image(64, 80)))
    with pytest.raises(BadSample, match="does not match its data; rerun pose dataset index_jpegs"):
        RegionJpeg.open(copy[:-100] + copy[-2:], "images/cut.jpg")


@pytest.fixture(scope="module")
def indexed_coco_mini(coco_mini, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("indexed") / "images"
    assert jpeg_regions.main(argparse.Namespace(input=str(coco_mini.images), output=str(out), workers=2)) == 0
    return out


def test_dataset_samples_from_indexed_jpegs_equal_those_from_the_originals(coco_mini, indexed_coco_mini):
    coco = load_coco(coco_mini.images, coco_mini.keypoints)
    aug = TopDownAugmentation(half_body_prob=0.3, rotation_prob=0.6, flip=True)
    plain = TopDownDataset(coco.people, COCO17, train=True, aug=aug, seed=3)
    people = [dataclasses.replace(p, image_path=str(indexed_coco_mini / Path(p.image_path).name)) for p in coco.people]
    regions = TopDownDataset(people, COCO17, train=True, aug=aug, seed=3, decode_regions=True)
    for epoch in range(3):
        plain.epoch = regions.epoch = epoch
        for index in range(len(coco.people)):
            a, b = plain[index], regions[index]
            for key in ("image", "target", "target_weight"):
                assert torch.equal(a[key], b[key]), key
    assert not regions._decoded  # nothing decoded whole


def test_index_jpegs_copies_what_it_cannot_index_and_skips_what_is_there(coco_mini, tmp_path, capsys):
    source = tmp_path / "in"
    shutil.copytree(coco_mini.images, source)
    (source / "notes.txt").write_text("not an image")
    (source / "sub").mkdir()
    (source / "sub/progressive.jpg").write_bytes(encoded(smooth_image(64, 80), cv2.IMWRITE_JPEG_PROGRESSIVE, 1))
    out = tmp_path / "out"
    assert jpeg_regions.main(argparse.Namespace(input=str(source), output=str(out), workers=1)) == 0
    printed = capsys.readouterr().out
    assert "4 of 6 files indexed" in printed and "not sequential Huffman coded" in printed
    for path in source.rglob("*"):
        if path.is_file():
            copy = (out / path.relative_to(source)).read_bytes()
            indexed = RegionJpeg.open(copy, "copy") is not None
            assert indexed == (path.parent == source and path.suffix == ".jpg")
            assert indexed or copy == path.read_bytes()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert jpeg_regions.main(argparse.Namespace(input=str(source), output=str(out), workers=1)) == 0
    assert "nothing to do, all 6 files are there already" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_index_jpegs_refuses_to_write_into_its_input_or_run_without_jpegtran(coco_mini, tmp_path, monkeypatch):
    with pytest.raises(BadInput, match="inside --input"):
        jpeg_regions.main(argparse.Namespace(input=str(coco_mini.images), output=str(coco_mini.images / "x"),
                                             workers=1))
    assert not (coco_mini.images / "x").exists()
    with pytest.raises(BadInput, match="--workers -1: give 0"):
        jpeg_regions.main(argparse.Namespace(input=str(coco_mini.images), output=str(tmp_path / "out"), workers=-1))
    with pytest.raises(BadInput, match="not a directory"):
        jpeg_regions.main(argparse.Namespace(input=str(tmp_path / "none"), output=str(tmp_path / "out"), workers=1))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BadInput, match="jpegtran: not found on PATH; install libjpeg-turbo-progs"):
        jpeg_regions.main(argparse.Namespace(input=str(coco_mini.images), output=str(tmp_path / "out"), workers=1))

