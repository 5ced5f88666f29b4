"""Bottom-up (BodyPoseNet) training data: model joints, augmentation, the shard dataset.

Read top to bottom it is one sample's path: the stored people are mapped to the model's joint set
(`to_model_joints`: COCO-17 + a neck), one affine warps image, mask and joints to the network input
(`spatial_affine`, `warp_sample`), and `bpnet_labels` (data/bpnet_labels.py) draws the heatmaps,
PAFs and loss mask.
`BpnetShardDataset` strings these together over the shards `dataset_convert` wrote.

The hot paths are pure NumPy/OpenCV on arrays, no I/O, no global state.

Coordinate spaces:
    source px: the stored image; x right, y down, pixel centres at integers.
    input px:  the network input after the augmentation affine (same convention, `cv2.warpAffine`).
    target px: the stride-s label maps. Target pixel (i, j) covers input pixels [j*s, (j+1)*s) and
               stands for the input point x = j*s + (s-1)/2, y = i*s + (s-1)/2: the point that
               `cv2.resize` puts it at when inference upsamples the maps by s. TAO uses these centres
               for heatmaps but top-left corners for PAFs (a FIXME in its label processor), which
               shifts every PAF band by (s-1)/2 = 3.5 input px against its joints; we use centres for
               both.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pose_workloads import ranks
from pose_workloads.data.bpnet_labels import BpnetLabels, bpnet_labels
from pose_workloads.data.shards import read_manifest, read_shards
from pose_workloads.errors import BadInput
from pose_workloads.specs import BpnetAugmentation, BpnetLabelProcessor, BpnetNormalization, PoseConfig

# --------------------------------------------------------------------------------------------
# Model joints from annotated joints
# --------------------------------------------------------------------------------------------

# Joints a model may have that annotations never label, each derived as the midpoint of two labelled
# joints. OpenPose's 18-joint set (TAO's bpnet_18joints.json) adds a neck between the shoulders.
DERIVED_JOINTS: dict[str, tuple[str, str]] = {"neck": ("left_shoulder", "right_shoulder")}


def joint_sources(annotation_names: list[str], model_names: list[str]) -> list[tuple[int, ...]]:
    """Where each model joint comes from: `(i,)` copies annotation joint i, `(i, j)` is the midpoint.

    Joints are matched by name, so the model may order them differently (OpenPose order) from the
    annotations (COCO order). Raises ValueError naming a model joint that cannot be made.
    """
    index = {name: i for i, name in enumerate(annotation_names)}
    sources: list[tuple[int, ...]] = []
    for name in model_names:
        if name in index:
            sources.append((index[name],))
        elif name in DERIVED_JOINTS and all(part in index for part in DERIVED_JOINTS[name]):
            sources.append(tuple(index[part] for part in DERIVED_JOINTS[name]))
        else:
            derivable = ", ".join(f"{k} (from {' + '.join(v)})" for k, v in DERIVED_JOINTS.items())
            raise ValueError(
                f"model joint {name!r} is neither annotated ({', '.join(annotation_names)}) nor derivable "
                f"({derivable}); rename it to an annotated joint or annotate it"
            )
    return sources


def to_model_joints(people_kpts: np.ndarray, sources: list[tuple[int, ...]]) -> np.ndarray:
    """People in the model's joint set.

    Args:
        people_kpts: (N, K_annotated, 3) float, (x, y, v) in any px space; v is the COCO flag
            (0 unlabelled, 1 labelled but occluded, 2 visible).
        sources: from `joint_sources`.

    Returns:
        (N, K_model, 3) float32. A derived joint is labelled only when both of its parts are, with
        v = the smaller of their flags (a neck between an occluded and a visible shoulder is occluded).
    """
    people_kpts = np.asarray(people_kpts, dtype=np.float32)
    out = np.zeros((people_kpts.shape[0], len(sources), 3), dtype=np.float32)
    for k, source in enumerate(sources):
        parts = people_kpts[:, list(source)]  # (N, len(source), 3)
        labelled = (parts[:, :, 2] > 0).all(axis=1)
        out[:, k, :2] = parts[:, :, :2].mean(axis=1)
        out[:, k, 2] = np.where(labelled, parts[:, :, 2].min(axis=1), 0.0)
    return out


# --------------------------------------------------------------------------------------------
# Augmentation: one affine for image, mask and joints
# --------------------------------------------------------------------------------------------

class SpatialParams(NamedTuple):
    """One sample's draw from `BpnetSpatialAug` (`draw_spatial_params`)."""

    flip_lr: bool
    flip_tb: bool
    translate_px: tuple[float, float]  # source px, added to the centre before scaling (as TAO)
    zoom: float  # > 1 shows more of the source (people smaller), as TAO's zoom_ratio
    rotate_deg: float


NO_AUGMENTATION = SpatialParams(False, False, (0.0, 0.0), 1.0, 0.0)


class Affine(NamedTuple):
    matrix: np.ndarray  # (2, 3) float64, source px -> input px, for cv2.warpAffine
    mirrored: bool  # the image is mirrored: left/right joints must swap


def draw_spatial_params(aug, rng: np.random.Generator, image_hw: tuple[int, int]) -> SpatialParams:
    """Random augmentation for one sample. `aug` is a `specs.BpnetSpatialAug`.

    Unset minimums make symmetric ranges (TAO's rule: translate_min_x None -> -translate_max_x).
    """
    height, width = image_hw
    flip_lr = bool(rng.random() < aug.flip_lr_prob)
    flip_tb = bool(rng.random() < aug.flip_tb_prob)
    if aug.use_translate_ratio:
        tx = rng.uniform(aug.translate_ratio_min, aug.translate_ratio_max) * width
        ty = rng.uniform(aug.translate_ratio_min, aug.translate_ratio_max) * height
    else:
        min_x = -aug.translate_max_x if aug.translate_min_x is None else aug.translate_min_x
        min_y = -aug.translate_max_y if aug.translate_min_y is None else aug.translate_min_y
        tx = rng.uniform(min_x, aug.translate_max_x)
        ty = rng.uniform(min_y, aug.translate_max_y)
    zoom = float(rng.uniform(aug.zoom_ratio_min, aug.zoom_ratio_max)) if rng.random() < aug.zoom_prob else 1.0
    min_deg = -aug.rotate_deg_max if aug.rotate_deg_min is None else aug.rotate_deg_min
    rotate_deg = float(rng.uniform(min_deg, aug.rotate_deg_max))
    return SpatialParams(flip_lr, flip_tb, (float(tx), float(ty)), zoom, rotate_deg)


def spatial_affine(
    mode: str,
    params: SpatialParams,
    image_hw: tuple[int, int],
    input_hw: tuple[int, int],
    person_centre: tuple[float, float] | None = None,
    person_size_px: float | None = None,
    target_person_scale: float = 0.6,
) -> Affine:
    """The source -> input affine of one sample.

    Every mode moves a source centre (plus the random translation) to the origin, scales, rotates,
    zooms and flips about it, then moves it to the input's centre:

    - person_centric: the centre is the sample's main person, scaled so that the person's size
      (`person_size_px`, the longer side of its box) becomes `target_person_scale` x the input height.
      TAO's docstring says box width; OpenPose, where 0.6 comes from, uses the height
      (scale_provided = h / 368): with the width a standing person would be ~1.5x the input tall.
      The longer side does not blow up people lying down.
    - standard: the image centre, scaled to fit the input with its aspect ratio kept (padded).
    - standard_with_fixed_aspect_ratio: the image centre, stretched to the input's aspect ratio.

    Args:
        mode: one of the three above.
        params: `NO_AUGMENTATION` or a `draw_spatial_params` draw.
        image_hw, input_hw: (height, width) of the source image and of the network input.
        person_centre: (x, y) source px; person_centric only.
        person_size_px: source px; person_centric only.
    """
    height, width = image_hw
    in_h, in_w = input_hw
    if mode == "person_centric":
        if person_centre is None or not person_size_px or person_size_px <= 0:
            raise ValueError("person_centric augmentation needs the main person's centre and a positive size")
        centre = np.asarray(person_centre, dtype=np.float64)
        scale_x = scale_y = target_person_scale * in_h / person_size_px
    elif mode == "standard":
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        scale_x = scale_y = min(in_w / width, in_h / height)
    elif mode == "standard_with_fixed_aspect_ratio":
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        scale_x, scale_y = in_w / width, in_h / height
    else:
        raise ValueError(f"unknown spatial_augmentation_mode {mode!r}; "
                         "use person_centric, standard or standard_with_fixed_aspect_ratio")

    centre = centre + np.asarray(params.translate_px, dtype=np.float64)
    theta = math.radians(params.rotate_deg)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    to_origin = np.array([[1.0, 0.0, -centre[0]], [0.0, 1.0, -centre[1]], [0.0, 0.0, 1.0]])
    scale = np.diag([scale_x / params.zoom, scale_y / params.zoom, 1.0])
    rotate = np.array([[cos_t, -sin_t, 0.0], [sin_t, cos_t, 0.0], [0.0, 0.0, 1.0]])
    flip = np.diag([-1.0 if params.flip_lr else 1.0, -1.0 if params.flip_tb else 1.0, 1.0])
    to_input_centre = np.array([[1.0, 0.0, (in_w - 1) / 2], [0.0, 1.0, (in_h - 1) / 2], [0.0, 0.0, 1.0]])
    matrix = to_input_centre @ flip @ rotate @ scale @ to_origin
    return Affine(matrix[:2], params.flip_lr != params.flip_tb)


def warp_sample(
    image: np.ndarray,
    mask: np.ndarray | None,
    people_kpts: np.ndarray,
    affine: Affine,
    flip_pairs: list[tuple[int, int]],
    input_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply one affine to image, mask and joints.

    Args:
        image: (H, W, 3) uint8, source px.
        mask: (H, W) uint8, 255 = loss counts, 0 = ignored (crowds, unlabelled people); None = all valid.
        people_kpts: (N, K, 3) float, (x, y, v) source px, in the model's joint set.
        affine: from `spatial_affine`.
        flip_pairs: the model's (left, right) joint pairs, swapped when the affine mirrors.
        input_hw: (height, width) of the network input.

    Returns:
        image (h, w, 3) uint8, mask (h, w) uint8 and people (N, K, 3) float32, all in input px.
        Outside the source the image is black and the mask valid (255): there is no one there, so
        the zero labels are right, as OpenPose's mask_miss border.
    """
    in_h, in_w = input_hw
    size = (in_w, in_h)
    small, matrix = shrink_first(image, affine.matrix)
    warped = cv2.warpAffine(small, matrix, size, flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    if mask is None:
        mask = np.full(image.shape[:2], 255, dtype=np.uint8)
    # Nearest keeps the mask binary; a blended edge would half-weight the loss of real people.
    warped_mask = cv2.warpAffine(mask, affine.matrix, size, flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    people = np.array(people_kpts, dtype=np.float32)  # a copy: the caller's array stays as it was
    xy1 = np.concatenate([people[:, :, :2].astype(np.float64), np.ones(people.shape[:2] + (1,))], axis=2)
    people[:, :, :2] = (xy1 @ affine.matrix.T).astype(np.float32)
    if affine.mirrored and flip_pairs:
        left = [a for a, _ in flip_pairs]
        right = [b for _, b in flip_pairs]
        people[:, left + right] = people[:, right + left]
    return warped, warped_mask, people


def shrink_first(image: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image shrunk with INTER_AREA by as much as `matrix` shrinks each of its axes, and the
    matrix that warps the shrunk image to the same place.

    warpAffine interpolates from the 2x2 (4x4 cubic) source pixels around each target pixel however
    far apart target pixels land in the source, so a 640 px image warped to 256 px aliases; evaluate
    shrinks with INTER_AREA (an average), and a network trained on aliased inputs sees other pixels
    at test time. Shrinking first makes a scale-only affine exactly evaluate's resize.
    """
    height, width = image.shape[:2]
    scale_x = float(np.hypot(matrix[0, 0], matrix[1, 0]))  # how much the source x axis is stretched
    scale_y = float(np.hypot(matrix[0, 1], matrix[1, 1]))
    if scale_x >= 1.0 and scale_y >= 1.0:
        return image, matrix
    new_w = max(1, round(width * min(scale_x, 1.0)))
    new_h = max(1, round(height * min(scale_y, 1.0)))
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    rx, ry = new_w / width, new_h / height
    # cv2.resize puts source px x at (x + 0.5) * r - 0.5; compose the matrix with its inverse.
    from_small = np.array([[1 / rx, 0.0, 0.5 / rx - 0.5], [0.0, 1 / ry, 0.5 / ry - 0.5], [0.0, 0.0, 1.0]])
    return small, (np.vstack([matrix, [0.0, 0.0, 1.0]]) @ from_small)[:2]


# --------------------------------------------------------------------------------------------
# The training dataset over dataset_convert's shards
# --------------------------------------------------------------------------------------------

class BpnetShardDataset(IterableDataset):
    """Training samples of BodyPoseNet: dicts of "image" (3, H, W) float32 normalised as TAO
    (pixel / image_scale - image_offset, RGB), "heatmaps" (K + 1, h, w), "pafs" (2L, h, w) and
    "mask" (1, h, w) float32 (the loss weight in [0, 1]; TAO's mask_scale is folded in), and
    "index" int, the sample's position in the concatenated splits.

    Streams `read_shards` (sequential reads of the tar shards). Each process (rank x DataLoader
    worker) reads its own part of every split, sample i going to part i % parts, so ranks and
    workers never see the same sample (`shards_by_rank` tells the training loop not to split again).
    Train mode shuffles within a buffer of `shuffle_buffer_size` and augments; each sample's
    augmentation draws from (seed, epoch, its index), so an epoch's samples do not
    depend on how many workers or ranks there are, and a resumed run sees what an uninterrupted
    one would. Call `set_epoch` before each epoch (training/loop.py does).

    Args:
        manifests: the dataset_convert outputs (folders or their manifest.json).
        pose_config: the model's joint set; the annotations' comes from each manifest and is
            mapped onto it by name (`joint_sources`: the 18-joint neck is derived).
        input_size: (height, width) of the network input (the spec's image_dims).
        target_size: (height, width) of the label maps; input_size / target_size is the stride.
        augmentation, labels, normalization: the train spec's dataloader sections.
        shuffle_buffer_size: samples shuffled together in train mode.
        train: augment and shuffle; False = NO_AUGMENTATION, in order.
        seed: augmentation and shuffling draw from (seed, epoch, index).
    """

    shards_by_rank = True

    def __init__(
        self,
        manifests: Sequence[str | Path],
        pose_config: PoseConfig,
        input_size: tuple[int, int],
        target_size: tuple[int, int],
        augmentation: BpnetAugmentation | None = None,  # None: the spec's defaults (likewise below)
        labels: BpnetLabelProcessor | None = None,
        normalization: BpnetNormalization | None = None,
        shuffle_buffer_size: int = 2000,
        train: bool = True,
        seed: int = 0,
    ):
        self.manifests = [Path(m) for m in manifests]
        self.augmentation = augmentation or BpnetAugmentation()
        self.label_settings = labels or BpnetLabelProcessor()
        normalization = normalization or BpnetNormalization()
        self.shuffle_buffer_size = int(shuffle_buffer_size)
        self.seed = int(seed)
        self.pose_config = pose_config
        self.train = train
        self.epoch = 0
        self.sizes: list[int] = []
        self.sources: list[list[tuple[int, ...]]] = []
        for path in self.manifests:
            manifest = read_manifest(path)
            names = manifest["pose_config"]["keypoints"]
            try:
                self.sources.append(joint_sources(names, pose_config.keypoints))
            except ValueError as err:
                raise BadInput(f"{path}: pose_config.keypoints: {err}") from None
            self.sizes.append(int(manifest["samples"]))
        self.input_hw = (int(input_size[0]), int(input_size[1]))
        self.target_hw = (int(target_size[0]), int(target_size[1]))
        self.stride = self.input_hw[0] // self.target_hw[0]
        self.scale = np.asarray(normalization.image_scale, dtype=np.float32)
        self.offset = np.asarray(normalization.image_offset, dtype=np.float32)

    def __len__(self) -> int:
        return sum(self.sizes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        rank, world_size = ranks.rank(), ranks.world_size()
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        part, parts = rank * workers + worker_id, world_size * workers

        def indexed():
            first = 0
            for split, (path, size) in enumerate(zip(self.manifests, self.sizes)):
                for j, sample in enumerate(read_shards(path, part, parts)):
                    yield first + part + j * parts, split, sample
                first += size

        stream = indexed()
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, part, 7])
            stream = shuffled(stream, self.shuffle_buffer_size, rng)
        for index, split, sample in stream:
            yield self.example(sample, self.sources[split], index)

    def example(self, sample: dict, sources: list[tuple[int, ...]], index: int) -> dict:
        """One `read_shards` sample -> the tensors the model trains on."""
        meta = sample["meta"]
        image = sample["image"]
        people = to_model_joints(meta["keypoints"], sources)
        aug = self.augmentation
        params = NO_AUGMENTATION
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            params = draw_spatial_params(aug.spatial_aug_params, rng, image.shape[:2])
        elif aug.identity_spatial_aug_params is not None:
            params = draw_spatial_params(aug.identity_spatial_aug_params, np.random.default_rng([self.seed, index]),
                                         image.shape[:2])
        affine = spatial_affine(
            aug.spatial_augmentation_mode, params, image.shape[:2], self.input_hw,
            person_centre=tuple(meta["main_center"]), person_size_px=float(meta["main_scale_px"]),
            target_person_scale=aug.spatial_aug_params.target_person_scale,
        )
        image, mask, people = warp_sample(image, sample["mask"], people, affine, self.pose_config.flip_pairs,
                                          self.input_hw)
        labels = self.labels(people, mask)
        pixels = (image.astype(np.float32) / self.scale - self.offset).transpose(2, 0, 1)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(pixels)),
            "heatmaps": torch.from_numpy(labels.heatmaps),
            "pafs": torch.from_numpy(labels.pafs),
            "mask": torch.from_numpy(labels.mask[None]),
            "index": index,  # in the concatenated splits: which sample this was, for logs and tests
        }

    def labels(self, people: np.ndarray, mask: np.ndarray) -> BpnetLabels:
        settings = self.label_settings
        return bpnet_labels(people, self.pose_config.paf_limbs, self.target_hw, self.stride,
                            settings.heatmap_gaussian_sigma, settings.paf_ortho_dist_thresh, mask)


def shuffled(items: Iterator, buffer_size: int, rng: np.random.Generator) -> Iterator:
    """A streaming shuffle (webdataset's / tf.data's): keep `buffer_size` items, emit a random one
    as each new one arrives, then drain the rest in random order."""
    buffer: list = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        i = int(rng.integers(buffer_size))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer
