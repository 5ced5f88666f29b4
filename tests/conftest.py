"""Fixtures for every test: coco-mini, the real COCO sample kept in tests/data/coco-mini."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

COCO_MINI_ROOT = Path(__file__).resolve().parent / "data" / "coco-mini"


@dataclass(frozen=True)
class CocoMini:
    """Four COCO val2017 images, their person keypoints and detected person boxes (README.md there)."""

    root: Path
    images: Path  # root / "images"
    keypoints: Path  # COCO keypoints ground truth: 4 images, 14 people, 12 with keypoints
    detections: Path  # COCO results-format person boxes for the same images

    @property
    def keypoints_name(self) -> str:
        """`keypoints` relative to `root`, as dataset specs name it."""
        return self.keypoints.relative_to(self.root).as_posix()


@pytest.fixture(scope="session")
def coco_mini() -> CocoMini:
    return CocoMini(
        root=COCO_MINI_ROOT,
        images=COCO_MINI_ROOT / "images",
        keypoints=COCO_MINI_ROOT / "annotations" / "person_keypoints_mini.json",
        detections=COCO_MINI_ROOT / "annotations" / "person_detections_mini.json",
    )
