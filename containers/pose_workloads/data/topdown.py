"""Top-down samples: one person box -> a fixed-size normalised crop and its Gaussian targets.

Simple Baselines (Xiao et al. 2018) / GluonCV `SimplePoseDefaultTrainTransform`: where to crop
(the padded box and its augmentation) is data/crops.py; here one `cv2.warpAffine` makes the crop,
the same matrix moves the joints, and `gaussian_heatmaps` draws the targets. Reading and checking
the annotations is `data/coco.py`'s job.

Coordinate spaces: image px of the original image; input px of the crop (input_size); heatmap px
(input px / stride). All x right, y down, pixel (i, j) centred at x=j, y=i, as OpenCV.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from pose_workloads.data.coco import ImageRecord, Person, redraw_on_bad_sample
from pose_workloads.data.crops import (
    TopDownAugmentation,
    affine_transform_matrix,
    body_halves,
    draw_crop_params,
    mirror_matrix,
    transform_points,
)
from pose_workloads.data.jpeg_regions import RegionJpeg
from pose_workloads.data.targets import gaussian_heatmaps
from pose_workloads.detections import read_detections
from pose_workloads.media import decode_image, read_file
from pose_workloads.specs import PoseConfig

log = logging.getLogger(__name__)

DECODED_IMAGES_KEPT = 4  # per dataset copy (DataLoader worker) by default: ~4 MB of COCO images
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ------------------------------------------------------------------------------------------------
# Dataset
# ------------------------------------------------------------------------------------------------

class CropMeta(NamedTuple):
    """What maps a crop's predictions back to the image. DataLoader collation stacks each field."""

    image_id: int
    ann_id: int  # -1 for a detected box
    score: float  # box score: 1 for ground-truth boxes
    center: np.ndarray  # (2,) float32 image px (mirrored image's px when flipped)
    scale: np.ndarray  # (2,) float32 crop (w, h) in image px
    rotation_deg: float
    flipped: bool  # training only: the crop came from the mirrored image


def concat_metas(metas: Sequence[CropMeta]) -> CropMeta:
    """Metas of several samples or DataLoader batches -> one CropMeta of NumPy arrays, in order.

    Single samples (scalar image_id) are stacked; collated batches (tensors) are concatenated.
    """
    if not metas:
        raise ValueError("concat_metas needs at least one meta")
    join = np.stack if np.ndim(np.asarray(metas[0].image_id)) == 0 else np.concatenate
    return CropMeta(*(join([np.asarray(getattr(m, field)) for m in metas]) for field in CropMeta._fields))


class TopDownDataset(torch.utils.data.Dataset):
    """People -> {image, target, target_weight, meta} for Simple Pose training and evaluation.

    Each sample: `image` (3, H, W) float32 tensor, RGB normalised by mean/std; `target` (K, h, w)
    float32 tensor of Gaussians; `target_weight` (K, 1) float32 tensor; `meta` a `CropMeta`.

    Randomness is drawn from a generator seeded by (seed, epoch, index): the same sample gets the
    same augmentation whatever the number of DataLoader workers, and a resumed run repeats an
    uninterrupted one. Call `set_epoch(epoch)` before each epoch (as with DistributedSampler); the
    DataLoader must not keep persistent workers, whose dataset copies would not see the new epoch.
    """

    def __init__(
        self,
        people: Sequence[Person],
        pose_config: PoseConfig,
        input_size: tuple[int, int] = (256, 192),
        heatmap_size: tuple[int, int] | None = None,
        sigma: float = 2.0,
        train: bool = True,
        aug: TopDownAugmentation | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        box_scores: Sequence[float] | None = None,
        seed: int = 0,
        decoded_images_kept: int = DECODED_IMAGES_KEPT,
        decode_regions: bool = False,
    ):
        """
        Args:
            people: `data.coco.load_coco(...).people`, or `people_from_detections(...).people`.
            input_size: (H, W) of the crop; heatmap_size: (h, w), default input / 4.
            sigma: target Gaussian sigma in heatmap px.
            train: draw augmentations; False gives the plain padded box (evaluation).
            aug: the augmentation (default `TopDownAugmentation()`, Simple Baselines').
            box_scores: one per person (detections); default 1.
            decoded_images_kept: images the cache keeps decoded, least recently used out (batch size
                for training by image: `training.data.ImageGroupedSampler`).
            decode_regions: a JPEG indexed by `pose dataset index_jpegs` decodes only the region
                each crop reads (the same pixels), not whole into the cache: for people shuffled,
                where an image rarely serves two samples of a worker in a row.
        """
        if box_scores is not None and len(box_scores) != len(people):
            raise ValueError(f"box_scores has {len(box_scores)} values for {len(people)} people")
        self.people = list(people)
        self.pose_config = pose_config
        self.input_size = tuple(input_size)
        self.heatmap_size = tuple(heatmap_size) if heatmap_size else (input_size[0] // 4, input_size[1] // 4)
        self.sigma = sigma
        self.stride = np.array([self.input_size[1] / self.heatmap_size[1], self.input_size[0] / self.heatmap_size[0]])
        self.train = train
        self.aug = aug if aug is not None else TopDownAugmentation()
        # (x / 255 - mean) / std as x * scale + offset, one float32 multiply and add per pixel.
        std32, mean32 = np.asarray(std, dtype=np.float32), np.asarray(mean, dtype=np.float32)
        self._pixel_scale = list((1.0 / (255.0 * std32)).astype(np.float32))  # np.float32 scalars
        self._pixel_offset = list((-mean32 / std32).astype(np.float32))
        self.box_scores = (np.ones(len(people), dtype=np.float32) if box_scores is None
                           else np.asarray(box_scores, np.float32))
        self.upper, self.lower = body_halves(pose_config.keypoints)
        self.flip_order = np.arange(pose_config.num_joints)
        for left, right in pose_config.flip_pairs:
            self.flip_order[left], self.flip_order[right] = right, left
        self.seed = seed
        self.epoch = 0
        self.skipped: Counter = Counter()
        self.decoded_images_kept = decoded_images_kept
        self.decode_regions = decode_regions
        self._canvas = np.empty((0, 0, 3), np.uint8)  # what indexed JPEGs' regions are decoded onto
        self._decoded: OrderedDict[str, np.ndarray] = OrderedDict()  # path -> image, newest last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.people)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return redraw_on_bad_sample(lambda i: self._sample(i, rng), index, len(self), rng, self.skipped)

    def _source(self, path) -> np.ndarray | RegionJpeg:
        """The image to crop from: decoded, from a small cache of the last few, or (with
        decode_regions) an indexed JPEG's bytes, to decode only the crop's region.

        Decoding is most of a sample's time. Consecutive people often share an image (evaluation
        walks the people image by image; COCO's detection files hold ~20 boxes per image;
        training by image draws each batch from batch_size images a worker keeps); people
        shuffled rarely hit the cache, and there an indexed image's region costs a fraction of
        a full decode. Each DataLoader worker keeps its own cache."""
        key = str(path)
        image = self._decoded.pop(key, None)
        if image is None:
            data = read_file(path)
            region_jpeg = RegionJpeg.open(data, key) if self.decode_regions else None
            if region_jpeg is not None:
                return region_jpeg
            image = decode_image(data, key)
            while len(self._decoded) >= self.decoded_images_kept:
                self._decoded.popitem(last=False)
        self._decoded[key] = image
        return image

    def _decode_region(self, region_jpeg: RegionJpeg, matrix: np.ndarray) -> np.ndarray:
        """The image, as far as a warp by `matrix` reads it: the region decoded onto a full-size
        canvas this dataset copy keeps (the rest of it is left over), so that the warp runs with
        the same matrix as on a full decode and gives the same bits."""
        height, width = max(self._canvas.shape[0], region_jpeg.height), max(self._canvas.shape[1], region_jpeg.width)
        if self._canvas.shape[:2] != (height, width):
            self._canvas = np.empty((height, width, 3), np.uint8)
        out_h, out_w = self.input_size
        corners = np.array([[0, 0, 1], [out_w - 1, 0, 1], [out_w - 1, out_h - 1, 1], [0, out_h - 1, 1]])
        return region_jpeg.decode_onto(self._canvas, corners @ cv2.invertAffineTransform(matrix).T)

    def _sample(self, index: int, rng: np.random.Generator) -> dict:
        person = self.people[index]
        source = self._source(person.image_path)
        width = source.width if isinstance(source, RegionJpeg) else source.shape[1]
        out_h, out_w = self.input_size
        params = draw_crop_params(
            person.bbox, person.keypoints, width, out_w / out_h,
            self.aug if self.train else None, self.upper, self.lower, rng,
        )
        matrix = affine_transform_matrix(params.center, params.scale, params.rotation_deg, self.input_size)
        image_matrix = matrix
        joints = person.keypoints[:, :2].astype(np.float64)
        visible = person.keypoints[:, 2]
        if params.flipped:
            # The image is mirrored by a matrix folded into the crop's: one warpAffine, no
            # full-size mirrored copy. The joints are mirrored first, as Simple Baselines does.
            image_matrix = matrix @ mirror_matrix(width)
            joints = transform_points(joints, mirror_matrix(width))[self.flip_order]
            visible = visible[self.flip_order]
        if isinstance(source, RegionJpeg):
            source = self._decode_region(source, image_matrix)
        crop = cv2.warpAffine(source, image_matrix, (out_w, out_h), flags=cv2.INTER_LINEAR)
        joints_hm = transform_points(joints, matrix) / self.stride
        target, weight = gaussian_heatmaps(joints_hm, visible, self.heatmap_size, self.sigma)
        # Channel planes first (one cv2.split), then in-place float32 arithmetic on contiguous
        # rows: 2x faster than a per-channel table lookup on the interleaved crop.
        pixels = np.empty((3, out_h, out_w), dtype=np.float32)
        for c, plane in enumerate(cv2.split(crop)):
            pixels[c] = plane
            pixels[c] *= self._pixel_scale[c]
            pixels[c] += self._pixel_offset[c]
        return {
            "image": torch.from_numpy(pixels),
            "target": torch.from_numpy(target),
            "target_weight": torch.from_numpy(weight[:, None]),
            "meta": CropMeta(
                image_id=person.image_id,
                ann_id=person.ann_id,
                score=float(self.box_scores[index]),
                center=params.center,
                scale=params.scale,
                rotation_deg=params.rotation_deg,
                flipped=params.flipped,
            ),
        }


# ------------------------------------------------------------------------------------------------
# Detected boxes
# ------------------------------------------------------------------------------------------------

class Detections(NamedTuple):
    people: list[Person]  # keypoints all zero, ann_id -1
    scores: np.ndarray  # (P,) float32 box scores, for TopDownDataset(box_scores=...)
    skipped: Counter  # reason -> count


def people_from_detections(
    detections_json: str | Path,
    images: Sequence[ImageRecord],
    num_joints: int,
    score_threshold: float = 0.0,
    category_id: int = 1,
) -> Detections:
    """Person boxes from a COCO results file (e.g. COCO_val2017_detections_AP_H_56_person.json).

    Args:
        detections_json: list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}, read
            by `detections.read_detections` (its policy: a malformed entry is BadInput).
        images: the evaluation set's images (`load_coco(...).images`): paths and sizes; a box on
            an image not in it (missing file, another split) is skipped and counted.
        score_threshold: boxes scoring below it are dropped (not counted as bad).
        category_id: the person category; other categories are ignored.

    Raises:
        BadInput: the file is missing, not JSON, not a list of detections, or has a malformed entry.
    """
    path = Path(detections_json)
    by_id = {record.image_id: record for record in images}
    people: list[Person] = []
    scores: list[float] = []
    skipped: Counter = Counter()
    empty_keypoints = np.zeros((num_joints, 3), dtype=np.float32)
    for detection in read_detections(path, score_threshold, category_id):
        record = by_id.get(detection.image_id)
        if record is None:
            skipped["box on an image not in the annotations (or its file is missing)"] += 1
            continue
        x, y, w, h = (float(v) for v in detection.box_xywh)
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(record.width)), min(y + h, float(record.height))
        if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
            skipped["box empty or outside its image"] += 1
            continue
        box = np.array([x0, y0, x1 - x0, y1 - y0], dtype=np.float32)
        people.append(
            Person(
                image_id=record.image_id, ann_id=-1, image_path=record.image_path, bbox=box,
                keypoints=empty_keypoints, area=float(box[2] * box[3]), iscrowd=False, num_keypoints=0,
            )
        )
        scores.append(detection.score)
    for reason, count in skipped.items():
        log.warning("%s: skipped %d boxes: %s", path, count, reason)
    return Detections(people, np.asarray(scores, dtype=np.float32), skipped)
