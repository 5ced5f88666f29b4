"""Pictures and videos in and out: the one place for image suffixes, reading images, folders and
videos frame by frame, and writing drawn images and videos atomically.

Images are (H, W, 3) uint8 RGB everywhere in pose; OpenCV's BGR stays inside this module.
Undecodable images raise `BadSample` when read: datasets count it and draw another sample
(data/coco.py `redraw_on_bad_sample`), commands turn it into BadInput naming the file.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from pose_workloads.bad_data import Skips
from pose_workloads.errors import BadInput
from pose_workloads.files import write_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# OpenCV >= 4.10 decodes to RGB directly (the same values as BGR then cvtColor, without the copy).
RGB_DECODE = getattr(cv2, "IMREAD_COLOR_RGB", None)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class BadSample(Exception):
    """An image that cannot be used, found when it is read (undecodable, or not the size the
    annotations say). Datasets catch it, count it and draw another sample."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_file(path: str | Path) -> bytes:
    """An image file's bytes.

    Raises:
        BadSample: the file is missing or cannot be read.
    """
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise BadSample(path, "missing" if not os.path.exists(path) else f"cannot be read: {e.strerror}") from None


def read_image(path: str | Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB.

    Raises:
        BadSample: the file is missing or cannot be decoded, or its size is not `expected_hw`
            (height, width).
    """
    return decode_image(read_file(path), str(path), expected_hw)


def decode_image(data: bytes, where: str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """`read_image` for encoded bytes (e.g. a shard member); `where` names it in errors."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR if RGB_DECODE is None else RGB_DECODE)
    if image is None:
        raise BadSample(where, "cannot be decoded as an image")
    if expected_hw is not None and image.shape[:2] != tuple(expected_hw):
        h, w = image.shape[:2]
        raise BadSample(where, f"is {w}x{h} but the annotations say {expected_hw[1]}x{expected_hw[0]}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if RGB_DECODE is None else image


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def image_files(folder: str | Path, flag: str = "--input") -> list[Path]:
    """The images of a folder (by suffix), sorted by name; BadInput when there are none."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInput(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this directory; check {flag}")
    return files


class Frame(NamedTuple):
    file: str  # the image's file name, or the video's
    index: int  # position in the list of images, or the video frame number
    image: np.ndarray  # (H, W, 3) uint8 RGB


def image_frames(files: list[Path], fix: str, skips: Skips | None = None) -> Iterator[Frame]:
    """Each image as a Frame. An undecodable one is skipped and counted in `skips` (the bad-data
    policy, bad_data.py); without `skips`, or when no image at all can be read, BadInput naming
    it, then `fix`."""
    read = 0
    for index, path in enumerate(files):
        try:
            image = read_image(path)
        except BadSample as err:
            if skips is None or (read == 0 and index == len(files) - 1):
                raise BadInput(f"{err}; {fix}") from None
            skips.add(err.reason, path.name)
            continue
        read += 1
        yield Frame(path.name, index, image)


def output_names(files: list[Path], suffix: str) -> dict[Path, str]:
    """A distinct output file name per input: `<stem><suffix>`, or `<stem>_<ext><suffix>` for
    inputs that share a stem (a.jpg and a.png must not overwrite each other's drawing)."""
    stems = Counter(path.stem for path in files)
    return {path: f"{path.stem}{suffix}" if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.')}{suffix}"
            for path in files}


class Video(NamedTuple):
    capture: cv2.VideoCapture
    fps: float
    frame_count: int  # as the container says; 0 when unknown


def open_video(path: Path, fix: str) -> Video:
    """A video file for reading; BadInput naming it, then `fix`, when OpenCV cannot open it."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise BadInput(f"{path}: OpenCV cannot open this video; {fix}")
    return Video(capture, capture.get(cv2.CAP_PROP_FPS) or 25.0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))


def video_frames(video: Video, name: str) -> Iterator[Frame]:
    """The frames of an opened video, RGB, numbered from 0."""
    index = 0
    while True:
        ok, frame_bgr = video.capture.read()
        if not ok:
            return
        yield Frame(name, index, cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        index += 1


class VideoOut:
    """Drawn frames to an .mp4, written to a temp file and moved into place when complete."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        self.writer = None

    def write(self, image_rgb: np.ndarray) -> None:
        if self.writer is None:
            size = (image_rgb.shape[1], image_rgb.shape[0])
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
        self.writer.write(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))

    def close(self, complete: bool) -> None:
        if self.writer is not None:
            self.writer.release()
            if complete:
                os.replace(self.tmp, self.path)
        self.tmp.unlink(missing_ok=True)


def save_image(path: str | Path, image_rgb: np.ndarray) -> None:
    """Write an RGB image (format from the suffix) atomically."""
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode this image format; use .png or .jpg")
    write_atomic(path, data.tobytes())
