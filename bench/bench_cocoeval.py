"""COCO keypoint evaluation time: faster-coco-eval against pycocotools, same ground truth and results.

    python bench/bench_cocoeval.py [--images 2000] [--seed 0]

Generates a synthetic COCO keypoints set (1-6 people per image, 17 joints, some unlabelled, some
tiny) and results (ground truth moved by noise proportional to each person's size, a few people
missed, a few false poses), writes the ground truth to a temporary file and times
`evaluate.coco_keypoint_metrics` with each backend: load, match, accumulate, summarise, as a user
waits for it. Asserts that both give the same ten stats, then prints seconds and the speedup.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import faster_coco_eval  # noqa: F401  imported here so that neither timing includes an import
import numpy as np
import pycocotools.cocoeval  # noqa: F401

from pose_workloads.evaluate import METRIC_NAMES, coco_keypoint_metrics
from pose_workloads.specs import COCO17


def synthetic_set(num_images: int, rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """COCO keypoints ground truth and noisy results for it."""
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        width, height = 640, 480
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height})
        for _ in range(rng.integers(1, 7)):
            h = rng.uniform(20, 400)
            w = h * rng.uniform(0.3, 0.8)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            kps = np.c_[rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17),
                        rng.choice([0, 1, 2], 17, p=[0.2, 0.2, 0.6])]
            kps[kps[:, 2] == 0, :2] = 0
            area = w * h * 0.6
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "bbox": [x, y, w, h], "area": area, "num_keypoints": int(np.count_nonzero(kps[:, 2])),
                "keypoints": kps.round(2).ravel().tolist(),
            })
            if rng.random() < 0.1:
                continue
            pred = kps.copy()
            pred[:, :2] = np.where(kps[:, 2:3] > 0, kps[:, :2], [x + w / 2, y + h / 2])
            pred[:, :2] += rng.normal(0, rng.uniform(0.005, 0.05) * np.sqrt(area), (17, 2))
            pred[:, 2] = rng.random(17)
            results.append({"image_id": image_id, "category_id": 1, "keypoints": pred.round(2).ravel().tolist(),
                            "score": float(rng.random())})
        if rng.random() < 0.3:
            pred = np.c_[rng.uniform(0, width, 17), rng.uniform(0, height, 17), rng.random(17)]
            results.append({"image_id": image_id, "category_id": 1, "keypoints": pred.round(2).ravel().tolist(),
                            "score": float(rng.random())})
    ground_truth = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": COCO17.keypoints,
                        "skeleton": [[a + 1, b + 1] for a, b in COCO17.skeleton]}],
    }
    return ground_truth, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ground_truth, results = synthetic_set(args.images, np.random.default_rng(args.seed))
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = Path(tmp) / "person_keypoints_synthetic.json"
        gt_path.write_text(json.dumps(ground_truth))
        timings, stats = {}, {}
        for backend in ("pycocotools", "faster"):
            start = time.perf_counter()
            stats[backend] = coco_keypoint_metrics(gt_path, results, COCO17.sigmas, backend)
            timings[backend] = time.perf_counter() - start

    worst = max(abs(stats["faster"][name] - stats["pycocotools"][name]) for name in METRIC_NAMES)
    assert worst <= 1e-12, stats
    print(f"{args.images} images, {len(ground_truth['annotations'])} people, {len(results)} results; "
          f"AP {stats['faster']['AP']:.4f}; largest stat difference between backends {worst:.1e}")
    print(f"{'backend':<16} {'seconds':>8} {'images/s':>10} {'speedup':>8}")
    for backend in ("pycocotools", "faster"):
        seconds = timings[backend]
        print(f"{backend:<16} {seconds:>8.2f} {args.images / seconds:>10.0f} {timings['pycocotools'] / seconds:>7.2f}x")


if __name__ == "__main__":
    main()
