"""Fixtures for every test: coco-mini, the real COCO sample kept in tests/data/coco-mini, and a
signal sent to a running `selftest --hold_s`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
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


def _signal_when_holding(argv: list[str], signum: int, cwd: Path, env: dict[str, str] | None = None,
                         while_holding: Callable[[], object] | None = None) -> tuple[int | None, str]:
    """Start `argv` (a `selftest --hold_s ...`), wait for its "holding" line, call `while_holding`
    (checks on the running task), send `signum`; return the exit code and stderr. The process is
    killed if anything fails before it exits, so no test leaves one behind."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "holding" in line:
                break
        if while_holding is not None:
            while_holding()
        process.send_signal(signum)
        stderr = process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr


@pytest.fixture(scope="session")
def signal_when_holding() -> Callable[..., tuple[int | None, str]]:
    return _signal_when_holding
