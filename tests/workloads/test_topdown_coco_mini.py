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


def test_decoded_image_cache_gives_the_samples_of_fresh_decodes(coco_mini):
    # The dataset keeps the last few decoded images: in any order, and after the cache has
    # evicted them, every sample equals a sample from a dataset that decoded afresh.
    coco = load_coco(coco_mini.images, coco_mini.keypoints)
    # Fewer than coco-mini's 4 images: evictions.
    cached = TopDownDataset(coco.people, COCO17, input_size=(128, 96), train=True, seed=3, decoded_images_kept=2)
    order = list(range(len(cached))) + list(np.random.default_rng(0).permutation(len(cached)))
    for index in order:
        fresh = TopDownDataset(coco.people, COCO17, input_size=(128, 96), train=True, seed=3)
        got, expected = cached[index], fresh[index]
        assert np.array_equal(got["image"].numpy(), expected["image"].numpy()), index
        assert np.array_equal(got["target"].numpy(), expected["target"].numpy()), index
        assert len(cached._decoded) <= 2
    assert len({p.image_path for p in coco.people}) == 4



def test_training_crops_are_the_full_decodes_crops_normalised(coco_mini):
    # Every augmented training sample against Simple Baselines' way of making it: full-size
    # decode, a mirrored copy, warpAffine, (x / 255 - mean) / std. Warping the mirrored copy and
    # folding the mirror into the matrix round a few pixels one grey level apart (OpenCV's
    # fixed-point bilinear), so: PSNR >= 40 dB against that crop, and the same float32 values as
    # normalising the same-matrix crop; identical targets.
    import cv2

    from pose_workloads.data.crops import affine_transform_matrix, draw_crop_params, mirror_matrix
    from pose_workloads.data.targets import gaussian_heatmaps
    from pose_workloads.data.topdown import IMAGENET_MEAN, IMAGENET_STD

    coco = load_coco(coco_mini.images, coco_mini.keypoints)
    dataset = TopDownDataset(coco.people, COCO17, input_size=(256, 192), train=True, seed=5)
    mean, std = np.asarray(IMAGENET_MEAN)[:, None, None], np.asarray(IMAGENET_STD)[:, None, None]
    flipped, worst_psnr = 0, np.inf
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index, person in enumerate(coco.people):
            sample = dataset[index]
            image = cv2.cvtColor(cv2.imread(str(person.image_path)), cv2.COLOR_BGR2RGB)
            width = image.shape[1]
            params = draw_crop_params(person.bbox, person.keypoints, width, 192 / 256, dataset.aug,
                                      dataset.upper, dataset.lower, np.random.default_rng((5, epoch, index)))
            matrix = affine_transform_matrix(params.center, params.scale, params.rotation_deg, (256, 192))
            joints, visible = person.keypoints[:, :2].astype(np.float64), person.keypoints[:, 2]
            same_matrix = matrix
            if params.flipped:
                same_matrix = matrix @ mirror_matrix(width)
                image_for_reference = np.ascontiguousarray(image[:, ::-1])
                joints = np.stack([width - 1 - joints[:, 0], joints[:, 1]], axis=-1)[dataset.flip_order]
                visible = visible[dataset.flip_order]
            else:
                image_for_reference = image
            reference = cv2.warpAffine(image_for_reference, matrix, (192, 256), flags=cv2.INTER_LINEAR)
            same = cv2.warpAffine(image, same_matrix, (192, 256), flags=cv2.INTER_LINEAR)
            got = sample["image"].numpy()
            np.testing.assert_allclose(got, (same.transpose(2, 0, 1) / 255.0 - mean) / std, atol=1e-6)
            mse = np.mean((got * std * 255 + mean * 255 - reference.transpose(2, 0, 1)) ** 2)
            worst_psnr = min(worst_psnr, 10 * np.log10(255.0**2 / max(mse, 1e-12)))
            joints_hm = (joints @ matrix[:, :2].T + matrix[:, 2]) / dataset.stride
            target, weight = gaussian_heatmaps(joints_hm, visible, dataset.heatmap_size, dataset.sigma)
            np.testing.assert_allclose(sample["target"].numpy(), target, atol=1e-6)
            assert np.array_equal(sample["target_weight"].numpy()[:, 0], weight)
            flipped += bool(sample["meta"].flipped)
    assert worst_psnr >= 40.0
    assert 0 < flipped < 36  # both branches ran


@pytest.mark.parametrize("shuffle", ["people", "images"])
def test_training_loader_by_image_decodes_each_image_once_per_epoch(coco_mini, monkeypatch, shuffle):
    # A cache of batch_size images and the epoch by image (what train does for data.shuffle:
    # images) decode each of coco-mini's 4 images once an epoch; people shuffled with a cache of
    # one image (as for COCO's 57k images, where keeping a few more rarely helps) decode again.
    import torch

    from pose_workloads.data import topdown
    from pose_workloads.media import decode_image
    from pose_workloads.ranks import Processes
    from pose_workloads.training.data import make_train_loader
    from pose_workloads.training.job import TrainJob

    decodes = []
    monkeypatch.setattr(topdown, "decode_image", lambda data, where: decodes.append(where) or decode_image(data, where))
    coco = load_coco(coco_mini.images, coco_mini.keypoints)
    by_image = shuffle == "images"
    dataset = TopDownDataset(coco.people, COCO17, input_size=(64, 48), train=True, seed=1,
                             decoded_images_kept=4 if by_image else 1)
    job = TrainJob(network="simple_pose", model=torch.nn.Identity(), model_config={}, pose_config=COCO17,
                   input_size=(64, 48), train_dataset=dataset, loss_fn=None, results_dir=None, epochs=1,
                   batch_size=4, lr=0.1, sample_groups=[p.image_path for p in coco.people] if by_image else None)
    for epoch in (0, 1):
        decodes.clear()
        dataset._decoded.clear()  # as in a fresh data worker: workers start anew each epoch
        batches = list(make_train_loader(job, epoch, Processes(0, 1, 0, False)))
        people = [int(i) for batch in batches for i in batch["meta"].ann_id]
        assert sorted(people) == sorted(p.ann_id for p in coco.people)  # 12 people, 3 batches of 4
        if by_image:
            assert len(decodes) == 4
            assert len(set(batches[0]["meta"].image_id.tolist())) == 4  # one person of each image
        else:
            assert len(decodes) > 4
