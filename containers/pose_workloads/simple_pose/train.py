"""`simple-pose train -e SPEC -r RESULTS [--set k=v]`: spec -> COCO people -> TopDownDataset ->
model -> weighted MSE -> the shared loop (training/), evaluating val AP between epochs with the
pipeline `evaluate` uses. Resumes from RESULTS/checkpoint_last.pth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pose_workloads import ranks
from pose_workloads.errors import BadInput
from pose_workloads.simple_pose.pipeline import NETWORK, coco_evaluation, eval_dataset, eval_settings, torch_heatmap_fn
from pose_workloads.specs import SimplePoseSpec, load_pose_config, load_spec


def _indexed_jpegs(people) -> bool:
    """Whether the first few training images are `pose dataset index_jpegs` copies (or not JPEGs)."""
    from pose_workloads.data.jpeg_regions import JPEG_SUFFIXES, is_indexed

    paths = list(dict.fromkeys(p.image_path for p in people))[:8]
    jpegs = [Path(p) for p in paths if Path(p).suffix.lower() in JPEG_SUFFIXES]
    try:
        for path in jpegs:
            with path.open("rb") as file:
                if not is_indexed(file.read(32)):
                    return False
    except OSError:
        pass  # a missing file is the dataset's to report, sample by sample
    return True


def heatmap_loss(outputs, batch):
    """Simple Baselines' JointsMSELoss: 0.5 x mean squared error, joints without a label weighted 0.

    outputs: (N, K, h, w) heatmaps; batch["target"] (N, K, h, w), batch["target_weight"] (N, K, 1).
    """
    weight = batch["target_weight"][..., None]  # (N, K, 1, 1)
    loss = 0.5 * ((outputs.float() - batch["target"]) ** 2 * weight).mean()
    return loss, {"heatmap": loss.detach()}


def heatmap_accuracy(predicted: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> float:
    """GluonCV's HeatmapAccuracy (Simple Baselines' `accuracy`): PCK on heatmap peaks.

    Args:
        predicted, target: (N, K, h, w) float32 heatmaps.
        threshold: a joint is correct when its peaks are closer than threshold x (h/10, w/10)
            (normalised per axis, as the original).
    Returns:
        Mean over joints (that have a target in some crop) of the fraction of correct crops; NaN
        when no joint has a target.
    """
    import torch

    # In torch, on the tensors the step has (every training step calls this: a NumPy copy of a
    # channels-last output cost more than the rest of the loop's bookkeeping).
    predicted = torch.as_tensor(predicted).detach().float()
    target = torch.as_tensor(target).detach().float()
    n, k, h, w = target.shape

    def peaks(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # decode.argmax_coords' rule: the first maximum; (0, 0) where it is not positive.
        values, index = maps.reshape(n, k, h * w).max(dim=2)
        return torch.stack([index % w, index // w], dim=-1).float() * (values > 0)[..., None], values

    (pred_xy, _), (true_xy, true_max) = peaks(predicted), peaks(target)
    norm = torch.tensor([w / 10.0, h / 10.0])
    distance = torch.linalg.vector_norm((pred_xy - true_xy) / norm, dim=-1)  # (N, K)
    labelled = true_max > 0
    counts = labelled.sum(dim=0)
    correct = ((distance < threshold) & labelled).sum(dim=0)
    per_joint = correct[counts > 0] / counts[counts > 0]
    return float(per_joint.mean()) if per_joint.numel() else float("nan")


def _batch_accuracy(outputs, batch) -> dict[str, float]:
    accuracy = heatmap_accuracy(outputs, batch["target"])
    return {} if np.isnan(accuracy) else {"heatmap_accuracy": accuracy}


def main(args) -> int:
    """`simple-pose train -e SPEC -r RESULTS [--set k=v]`; resumes from RESULTS/checkpoint_last.pth."""
    from pose_workloads.data.coco import load_coco
    from pose_workloads.data.crops import TopDownAugmentation
    from pose_workloads.data.topdown import DECODED_IMAGES_KEPT, TopDownDataset
    from pose_workloads.models import build_model
    from pose_workloads.training.data import seed_everything
    from pose_workloads.training.job import Schedule, TrainJob
    from pose_workloads.training.loop import run_training

    spec = load_spec(SimplePoseSpec, args.spec, args.overrides)
    pose_config = load_pose_config(spec.data.pose_config)
    t = spec.train
    input_size = tuple(t.input_size)

    # Data first: a wrong path fails here, before a model is built.
    train_set = load_coco(spec.data.train_images, spec.data.train_annotations, pose_config)
    people = [p for p in train_set.people if p.num_keypoints >= spec.data.min_keypoints]
    if not people:
        raise BadInput(
            f"{spec.data.train_annotations}: no person has {spec.data.min_keypoints}+ labelled joints; "
            "lower data.min_keypoints or check the annotations"
        )
    by_image = spec.data.shuffle == "images"
    dataset = TopDownDataset(people, pose_config, input_size, sigma=t.sigma, train=True,
                             aug=TopDownAugmentation(**spec.augmentation.model_dump()), seed=t.seed,
                             decoded_images_kept=t.batch_size if by_image else DECODED_IMAGES_KEPT,
                             decode_regions=not by_image)
    val_dataset = eval_dataset(spec, pose_config, input_size)
    settings = eval_settings(spec)

    def evaluate_fn(model) -> dict[str, float]:
        _, metrics = coco_evaluation(torch_heatmap_fn(model), val_dataset, pose_config, spec.data.val_annotations,
                                     settings)
        return {**{k: v for k, v in metrics.items() if isinstance(v, float)},
                "skipped": float(sum(metrics["skipped"].values()))}

    seed_everything(t.seed)
    model_config = spec.model.model_dump()
    model = build_model(NETWORK, model_config, pose_config.num_joints)
    job = TrainJob(
        network=NETWORK,
        model=model,
        model_config=model_config,
        pose_config=pose_config,
        input_size=input_size,
        train_dataset=dataset,
        loss_fn=heatmap_loss,
        results_dir=Path(args.results_dir),
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        optimizer=t.optimizer,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        schedule=Schedule(kind=t.lr_schedule, steps=tuple(t.lr_steps), factor=t.lr_factor,
                          warmup_epochs=t.warmup_epochs),
        batch_metrics_fn=_batch_accuracy,
        evaluate_fn=evaluate_fn,
        eval_every=t.eval_every,
        checkpoint_every=t.checkpoint_every,
        workers=spec.data.workers,
        sample_groups=[p.image_path for p in people] if by_image else None,
        seed=t.seed,
        amp=t.amp,
        amp_dtype=t.amp_dtype,
        channels_last=t.channels_last,
        freeze_batchnorm=t.freeze_batchnorm,
        spec=spec,
    )
    print(f"{len(people)} training people from {len(train_set.images)} images, {len(val_dataset)} val crops",
          flush=True)
    if not by_image and ranks.is_main() and not _indexed_jpegs(people):
        print(f"note: {spec.data.train_images} holds JPEGs without an MCU index, so each training sample decodes "
              "its whole image; `pose dataset index_jpegs` makes a copy (same pixels) from which a sample decodes "
              "only its crop's region: point data.train_images at it", flush=True)
    result = run_training(job)
    if ranks.is_main():
        best = result.get("best_ap")
        best_text = f", best val AP {best:.4f} (model_best.pth)" if best is not None else ""
        print(f"done: {args.results_dir}/model_final.pth{best_text}")
    return 0
