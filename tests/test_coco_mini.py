"""The vendored coco-mini is the sample its README describes, byte for byte."""

from __future__ import annotations

import hashlib
import json


def test_coco_mini_matches_its_sha256sums(coco_mini):
    listed = {}
    for line in (coco_mini.root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name] = digest
    on_disk = {p.relative_to(coco_mini.root).as_posix() for p in coco_mini.root.rglob("*")
               if p.is_file() and p.name not in ("README.md", "SHA256SUMS")}
    assert on_disk == set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((coco_mini.root / name).read_bytes()).hexdigest() == digest, name


def test_coco_mini_is_four_images_and_fourteen_people(coco_mini):
    keypoints = json.loads(coco_mini.keypoints.read_text())
    assert sorted(p.name for p in coco_mini.images.iterdir()) == sorted(i["file_name"] for i in keypoints["images"])
    assert len(keypoints["images"]) == 4 and len(keypoints["annotations"]) == 14
    assert sum(a["num_keypoints"] > 0 for a in keypoints["annotations"]) == 12
    assert len(json.loads(coco_mini.detections.read_text())) == 118
