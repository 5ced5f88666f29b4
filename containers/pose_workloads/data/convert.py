"""`bpnet dataset_convert`: COCO annotations -> loss masks and training shards, as TAO's.

    pose bpnet dataset_convert -m train -o $DATA_DIR/train --dataset_spec coco_spec.json --generate_masks

Reads the split of the dataset spec (paths relative to `root_directory_path`; an absolute
`mask_root_dir_path` is used as it is, e.g. a writable folder beside a read-only dataset), then
writes, under OUT:

    OUT/shard-000000.tar ...   at most 1000 samples each, tar members in a fixed order, mtime 0
    OUT/manifest.json          shards, counts, skipped annotations by reason, input digest

One sample per main person (person-centric, TAO's `duplicate_data_with_each_person_as_center`),
or one per image centred on its largest main person. Members of sample KEY:

    KEY.jpg (or .png)   the original image file's bytes, not re-encoded
    KEY.mask.png        uint8 (H, W), 255 = the loss counts, 0 = ignore; absent when nothing is
                        ignored. Ignored: crowd regions and people without labelled joints, minus
                        the pixels of labelled people (TAO's mask, stored inverted as TAO does).
    KEY.json            image_id, file_name, width, height, ann_ids, keypoints (N, K, 3) and bboxes
                        (N, 4) of every labelled person (image px, COCO xywh), main (index into
                        them), main_center (x, y) and main_scale_px (the main box's longer side)

With `--generate_masks` the masks are also written as TAO's `mask_<image_id>.png` files (one per
image) under the split's `mask_root_dir_path`. Masks always go into the shards: training needs them.

Rerunning is cheap and safe: the manifest records a digest of the resolved spec, the mode, the pose
config and the annotation file's bytes; if it matches and every shard is there, nothing is redone.
The manifest is deleted before anything is rewritten and written last, shards and masks are
written to a temp file and renamed, so a killed run leaves nothing that passes for complete.

The shard format itself (writer, manifest, readers) is data/shards.py.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from pose_workloads.data.coco import Person, ignore_mask, load_coco
from pose_workloads.data.shards import FORMAT, MANIFEST, SAMPLES_PER_SHARD, VERSION, ShardWriter
from pose_workloads.errors import SpecError
from pose_workloads.files import write_atomic
from pose_workloads.progress import track
from pose_workloads.specs import BpnetDatasetSpec, PoseConfig, load_pose_config, load_spec

IMAGE_EXTENSIONS = {b"\xff\xd8\xff": "jpg", b"\x89PNG": "png"}


def main(args) -> int:
    """`python -m pose_workloads bpnet dataset_convert -m MODE -o OUT -d SPEC [--generate_masks]`."""
    spec = load_spec(BpnetDatasetSpec, args.dataset_spec)
    result = convert_dataset(spec, args.mode, args.output, args.generate_masks, spec_path=args.dataset_spec)
    if result.up_to_date:
        print(f"{result.manifest_path}: up to date ({result.samples} samples)")
        return 0
    skipped = ", ".join(f"{n} {reason}" for reason, n in result.skipped.most_common()) or "none"
    print(f"wrote {result.samples} samples in {result.shards} shard(s): {result.manifest_path}")
    print(f"skipped: {skipped}")
    return 0


@dataclass(frozen=True)
class ConvertResult:
    manifest_path: Path
    samples: int
    shards: int
    up_to_date: bool
    skipped: Counter


def convert_dataset(
    spec: BpnetDatasetSpec,
    mode: Literal["train", "test"],
    out: str | Path,
    generate_masks: bool = False,
    spec_path: str | Path = "dataset spec",
    show_progress: bool = True,
) -> ConvertResult:
    """Write the shards and manifest of one split (and its mask files with `generate_masks`).

    Raises:
        BadInput / SpecError: the spec's paths or joint count do not fit the data.
    """
    split = spec.split(mode)
    images_dir = spec.resolve(split.images_root_dir_path)
    annotations_path = spec.resolve(split.annotation_root_dir_path)
    pose_config = load_pose_config(spec.pose_config_path)
    if spec.num_joints is not None and spec.num_joints != pose_config.num_joints:
        raise SpecError(
            f"{spec_path}: num_joints: {spec.num_joints} but pose config {pose_config.name} has "
            f"{pose_config.num_joints} joints; make them agree (or drop num_joints)"
        )
    mask_dir = None
    if generate_masks:
        if split.mask_root_dir_path is None:
            raise SpecError(
                f"{spec_path}: {mode}_data.mask_root_dir_path: not set; set it (relative to "
                "root_directory_path, or absolute) or leave out --generate_masks"
            )
        mask_dir = spec.resolve(split.mask_root_dir_path)
    if not annotations_path.is_file():
        raise SpecError(
            f"{spec_path}: {mode}_data.annotation_root_dir_path: {annotations_path} not found; "
            "it is relative to root_directory_path"
        )

    out = Path(out)
    digest = input_digest(spec, mode, generate_masks, pose_config, annotations_path)
    current = _complete_manifest(out, digest, mask_dir)
    if current is not None:
        return ConvertResult(out / MANIFEST, current["samples"], len(current["shards"]), True,
                             Counter(current["skipped"]))

    coco_set = load_coco(images_dir, annotations_path, pose_config)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # from here on the output is not complete
    _remove_temp_files(out, ".shard-*.tmp", f".{MANIFEST}.*.tmp")  # left by a run killed with -9
    if mask_dir is not None:
        mask_dir.mkdir(parents=True, exist_ok=True)
        _remove_temp_files(mask_dir, ".mask_*.tmp")

    skipped = Counter(coco_set.skipped)
    not_main: Counter = Counter()
    writer = ShardWriter(out, SAMPLES_PER_SHARD)
    images_with_samples, mask_ids = 0, []
    try:
        for record in track(coco_set.images, len(coco_set.images), f"converting {mode}", enabled=show_progress):
            people = [coco_set.people[i] for i in record.people]
            ignore = ignore_mask(coco_set.coco, record, coco_set.people)
            mask_png = None if ignore is None else _encode_mask(ignore)
            if mask_dir is not None:
                write_atomic(mask_dir / f"mask_{record.image_id}.png",
                             mask_png or _encode_mask(np.zeros((record.height, record.width), bool)))
                mask_ids.append(record.image_id)
            mains, reasons = main_people(people, spec.min_person_size_px, spec.min_keypoints,
                                         spec.min_inter_person_distance_ratio)
            not_main.update(reasons)
            if not mains:
                not_main["images without a main person"] += 1
                continue
            if not spec.duplicate_data_with_each_person_as_center:
                mains = [max(mains, key=lambda i: people[i].area)]
            image_bytes = Path(record.image_path).read_bytes()
            extension = next((ext for magic, ext in IMAGE_EXTENSIONS.items() if image_bytes.startswith(magic)), None)
            if extension is None:
                skipped["image file is not a JPEG or PNG"] += 1
                continue
            images_with_samples += 1
            for main in mains:
                meta = sample_meta(record.image_id, Path(record.image_path).name, record.width, record.height, people,
                                   main)
                key = f"{record.image_id:012d}_{people[main].ann_id}"
                members = [(f"{key}.{extension}", image_bytes)]
                if mask_png is not None:
                    members.append((f"{key}.mask.png", mask_png))
                members.append((f"{key}.json", json.dumps(meta, separators=(",", ":")).encode()))
                writer.add(members)
        shards = writer.close()
    finally:
        writer.abort()

    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "digest": digest,
        "mode": mode,
        "shards": shards,
        "samples": sum(s["samples"] for s in shards),
        "images": images_with_samples,
        "images_in_split": len(coco_set.images),
        "people": len(coco_set.people),
        "skipped": dict(sorted(skipped.items())),
        "not_main": dict(sorted(not_main.items())),
        "annotations": str(annotations_path),
        "images_dir": str(images_dir),
        "mask_dir": None if mask_dir is None else str(mask_dir),
        "mask_image_ids": mask_ids,
        "pose_config": pose_config.model_dump(mode="json"),
        "dataset_spec": spec.model_dump(mode="json"),
    }
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=1))
    return ConvertResult(out / MANIFEST, manifest["samples"], len(shards), False, skipped)


# --------------------------------------------------------------------------------------------
# Which people a sample centres on, and what a sample says about them.
# --------------------------------------------------------------------------------------------

def main_people(
    people: list[Person], min_size_px: float, min_keypoints: int, min_distance_ratio: float
) -> tuple[list[int], Counter]:
    """Indices of the people samples may centre on, in annotation order, and why the others not.

    A main person has at least `min_keypoints` labelled joints, a COCO area of at least
    `min_size_px`^2 (TAO's 32 x 32), and a box centre farther than `min_distance_ratio` x the
    longer box side of every main person chosen before. (TAO compares against the box of whichever
    person its loop saw last, a stale variable; here each chosen person's own scale is used.)
    """
    chosen: list[int] = []
    centres: list[tuple[float, float, float]] = []  # x, y, scale px of chosen people
    reasons: Counter = Counter()
    for i, person in enumerate(people):
        if person.num_keypoints < min_keypoints:
            reasons["fewer labelled joints than min_keypoints"] += 1
            continue
        if person.area < min_size_px**2:
            reasons["smaller than min_person_size_px"] += 1
            continue
        x, y, w, h = (float(v) for v in person.bbox)
        cx, cy = x + w / 2, y + h / 2
        if any(np.hypot(cx - ox, cy - oy) < min_distance_ratio * scale for ox, oy, scale in centres):
            reasons["too close to another main person"] += 1
            continue
        chosen.append(i)
        centres.append((cx, cy, max(w, h)))
    return chosen, reasons


def sample_meta(image_id: int, file_name: str, width: int, height: int, people: list[Person],
                main: int) -> dict[str, Any]:
    """The JSON of one sample: every labelled person of the image, and which one is the centre."""
    x, y, w, h = (float(v) for v in people[main].bbox)
    return {
        "image_id": image_id,
        "file_name": file_name,
        "width": width,
        "height": height,
        "ann_ids": [p.ann_id for p in people],
        "keypoints": [np.round(p.keypoints.astype(np.float64), 2).tolist() for p in people],
        "bboxes": [np.round(p.bbox.astype(np.float64), 2).tolist() for p in people],
        "main": main,
        "main_center": [round(x + w / 2, 2), round(y + h / 2, 2)],
        "main_scale_px": round(max(w, h), 2),
    }


def _encode_mask(ignore: np.ndarray) -> bytes:
    valid = np.where(ignore, 0, 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", valid)
    return png.tobytes()


def _remove_temp_files(folder: Path, *patterns: str) -> None:
    # Only our own temp names (see ShardWriter and files.atomic_path): never anything else in `folder`.
    for pattern in patterns:
        for tmp in folder.glob(pattern):
            tmp.unlink(missing_ok=True)


def input_digest(spec: BpnetDatasetSpec, mode: str, generate_masks: bool, pose_config: PoseConfig,
                 annotations: Path) -> str:
    """sha256 over everything the output depends on except the image files' bytes."""
    content = hashlib.sha256()
    with open(annotations, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            content.update(block)
    inputs = {
        "format": FORMAT,
        "version": VERSION,
        "mode": mode,
        "generate_masks": generate_masks,
        "samples_per_shard": SAMPLES_PER_SHARD,
        "spec": spec.model_dump(mode="json"),
        "pose_config": pose_config.model_dump(mode="json"),
        "annotations_sha256": content.hexdigest(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _complete_manifest(out: Path, digest: str, mask_dir: Path | None) -> dict[str, Any] | None:
    """The manifest in `out` when it matches `digest` and all its files are there, else None."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("digest") != digest:
        return None
    for shard in manifest["shards"]:
        path = out / shard["name"]
        if not path.is_file() or path.stat().st_size != shard["bytes"]:
            return None
    if mask_dir is not None and not all((mask_dir / f"mask_{i}.png").is_file() for i in manifest["mask_image_ids"]):
        return None
    return manifest


