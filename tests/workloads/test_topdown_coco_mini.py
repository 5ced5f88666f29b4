"""The top-down pipeline on real COCO data: crop -> targets -> decode -> image px -> COCO AP.

A perfect model outputs its training targets. If those decode back onto the annotations through
the crop's inverse affine, crop geometry, target encoding, decoding and result assembly agree with
each other and with COCO's evaluation (4 real val2017 images, 12 labelled people, small ones too).
"""

from __future__ import annotations

import numpy as np
import pytest

from pose_workloads.data.coco import load_coco
from pose_workloads.data.topdown import TopDownDataset, concat_metas
from pose_workloads.decode import decode_heatmaps, heatmap_to_image_coords
from pose_workloads.evaluate import coco_keypoint_metrics, per_joint_mean_error, topdown_results
from pose_workloads.specs import COCO17


@pytest.fixture(scope="module")
def targets_and_metas(coco_mini):
    coco = load_coco(coco_mini.images, coco_mini.keypoints)
    dataset = TopDownDataset(coco.people, COCO17, input_size=(256, 192), train=False)
    samples = [dataset[i] for i in range(len(dataset))]
    targets = np.stack([s["target"].numpy() for s in samples])
    return targets, concat_metas([s["meta"] for s in samples]), dataset.heatmap_size


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
@pytest.mark.parametrize("decoder,max_error_px", [("argmax", 2.0), ("dark", 0.5)])
def test_gt_targets_decode_back_to_the_annotations(coco_mini, targets_and_metas, decoder, max_error_px, backend):
    targets, metas, heatmap_size = targets_and_metas
    assert len(targets) == 12
    coords, maxvals = decode_heatmaps(targets, decoder)
    coords_img = heatmap_to_image_coords(coords, metas.center, metas.scale, heatmap_size, metas.rotation_deg)
    results = topdown_results(coords_img, maxvals, metas, COCO17.sigmas)
    assert len(results) == 12  # no real person suppressed by OKS-NMS
    metrics = coco_keypoint_metrics(coco_mini.keypoints, results, COCO17.sigmas, backend)
    assert metrics["AP"] >= 0.99 and metrics["AR"] >= 0.99
    errors = per_joint_mean_error(results, coco_mini.keypoints, COCO17.sigmas)
    assert np.nanmax(errors) < max_error_px


def test_decoded_image_cache_gives_the_samples_of_fresh_decodes(coco_mini, monkeypatch):
    # The dataset keeps the last few decoded images: in any order, and after the cache has
    # evicted them, every sample equals a sample from a dataset that decoded afresh.
    from pose_workloads.data import topdown

    monkeypatch.setattr(topdown, "DECODED_IMAGES_KEPT", 2)  # fewer than coco-mini's 4 images: evictions
    coco = load_coco(coco_mini.images, coco_mini.keypoints)
    cached = TopDownDataset(coco.people, COCO17, input_size=(128, 96), train=True, seed=3)
    order = list(range(len(cached))) + list(np.random.default_rng(0).permutation(len(cached)))
    for index in order:
        fresh = TopDownDataset(coco.people, COCO17, input_size=(128, 96), train=True, seed=3)
        got, expected = cached[index], fresh[index]
        assert np.array_equal(got["image"].numpy(), expected["image"].numpy()), index
        assert np.array_equal(got["target"].numpy(), expected["target"].numpy()), index
        assert len(cached._decoded) <= 2
    assert len({p.image_path for p in coco.people}) == 4
