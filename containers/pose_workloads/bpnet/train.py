"""`bpnet train -e SPEC -r RESULTS [--gpus N] [--set k=v]`: spec -> dataset_convert's shards ->
BpnetShardDataset (person-centric augmentation, heatmap / PAF labels) -> BodyPoseNet -> per-stage
masked L2 -> the shared loop (training/: TAO's stagewise LR multipliers, SoftStartAnnealing, L1/L2
kernel regularization, checkpoints, resume, DDP). Resumes from RESULTS."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from pose_workloads import ranks
from pose_workloads.bpnet.pipeline import (
    NETWORK,
    annotation_joint_index,
    coco_results,
    inference_settings,
    predict_people,
)
from pose_workloads.errors import SpecError
from pose_workloads.specs import (
    BpnetDatasetSpec,
    BpnetInferenceSpec,
    BpnetTrainSpec,
    PoseConfig,
    load_pose_config,
    load_spec,
)


def bpnet_loss(outputs, batch):
    """TAO's loss: per stage, 0.5 x the squared error of heatmaps and PAFs, every target pixel
    weighted by the mask (crowds and unlabelled people count 0), summed over pixels and channels
    and divided by the batch size (the scale TAO's 2e-5 learning rate is set for); summed over
    stages, so every stage is supervised (OpenPose's intermediate supervision).

    outputs: [(heatmaps (N, K+1, h, w), pafs (N, 2L, h, w))] per stage; batch: "heatmaps", "pafs",
    "mask" (N, 1, h, w).
    """
    mask = batch["mask"]
    batch_size = mask.shape[0]
    heat_total = paf_total = 0.0
    for heatmaps, pafs in outputs:
        heat_total = heat_total + 0.5 * ((heatmaps.float() - batch["heatmaps"]) ** 2 * mask).sum() / batch_size
        paf_total = paf_total + 0.5 * ((pafs.float() - batch["pafs"]) ** 2 * mask).sum() / batch_size
    loss = heat_total + paf_total
    return loss, {"heatmaps": heat_total.detach(), "pafs": paf_total.detach()}


def check_channels(spec: BpnetTrainSpec, pose_config: PoseConfig, spec_path: str | Path) -> None:
    """The model's outputs must fit the pose config: joints + background, (x, y) per limb."""
    model = spec.model
    source = spec.dataloader.pose_config.pose_config_path
    heat, pafs = pose_config.num_joints + 1, 2 * len(pose_config.paf_limbs)
    if model.heat_channels != heat:
        raise SpecError(
            f"{spec_path}: model.heat_channels: {model.heat_channels}, but {source} has {pose_config.num_joints} "
            f"joints (+ 1 background); set model.heat_channels: {heat}"
        )
    if model.paf_channels != pafs:
        raise SpecError(
            f"{spec_path}: model.paf_channels: {model.paf_channels}, but {source} has {len(pose_config.paf_limbs)} "
            f"limbs (x and y each); set model.paf_channels: {pafs}"
        )


def train_manifests(spec: BpnetTrainSpec, spec_path: str | Path) -> list[Path]:
    """The dataset_convert outputs named by dataset_config (folder / each train_records_path)."""
    config = spec.dataloader.dataset_config
    manifests = []
    for i, name in enumerate(config.train_records_path):
        path = Path(config.train_records_folder_path) / name
        if not (path / "manifest.json").is_file() and not (path.suffix == ".json" and path.is_file()):
            raise SpecError(
                f"{spec_path}: dataloader.dataset_config.train_records_path[{i}]: {path} holds no converted "
                f"data (no manifest.json); run `pose bpnet dataset_convert -m train -o {path} -d <dataset spec>` "
                "or fix train_records_folder_path / train_records_path"
            )
        manifests.append(path)
    return manifests


def shard_dataset(spec: BpnetTrainSpec, manifests: list[Path], pose_config: PoseConfig, train: bool = True):
    """The BpnetShardDataset the train spec's dataloader section describes."""
    from pose_workloads.data.bottomup import BpnetShardDataset

    loader = spec.dataloader
    dims = loader.image_config.image_dims
    return BpnetShardDataset(
        manifests, pose_config, (dims.height, dims.width), tuple(loader.pose_config.target_shape),
        augmentation=loader.augmentation_config, labels=loader.label_processor_config,
        normalization=loader.normalization_params, shuffle_buffer_size=loader.shuffle_buffer_size,
        train=train, seed=spec.seed,
    )


def build_train_model(spec: BpnetTrainSpec, pose_config: PoseConfig, spec_path: str | Path):
    """The model to train and the model_config its checkpoints record.

    pretrained_weights (TAO's trainer field):
      - null: a fresh model (its backbone from model.backbone_attributes.pretrained_weights, if set);
      - with load_graph: a pose model file whose network is used as it is, e.g. a pruned one
        (rebuilt from its layer_channels) to retrain, as TAO's load_graph;
      - else a pose model file: every tensor whose name and shape match is copied (TAO loads
        pretrained weights by layer name), or a torchvision-layout backbone file.
    """
    from pose_workloads import model_file
    from pose_workloads.models import build_model, load_backbone_weights

    model_config = spec.model.model_dump(mode="json")
    path = spec.pretrained_weights
    if path and spec.load_graph:
        ckpt = model_file.read(path)
        model_file.check_network(f"{spec_path}: pretrained_weights: {path}", ckpt["network"], NETWORK,
                                 "give a bpnet model file")
        model = model_file.build_model(ckpt, path)
        heat, pafs = model.heat_channels, model.paf_channels
        if (heat, pafs) != (spec.model.heat_channels, spec.model.paf_channels):
            raise SpecError(
                f"{spec_path}: pretrained_weights: {path} outputs {heat} heatmap and {pafs} PAF channels, the spec "
                f"{spec.model.heat_channels} and {spec.model.paf_channels}; "
                "use a model of this pose config or load_graph: False"
            )
        return model, dict(ckpt.get("model_config") or model_config)

    model = build_model(NETWORK, model_config, pose_config.num_joints)
    if path:
        if not Path(path).is_file():
            raise SpecError(f"{spec_path}: pretrained_weights: {path} not found; give a .pth file or null")
        loaded = model_file.load(path)
        if isinstance(loaded, dict) and loaded.get("network") == NETWORK and "state_dict" in loaded:
            own = model.state_dict()
            matching = {k: v for k, v in loaded["state_dict"].items() if k in own and own[k].shape == v.shape}
            if not matching:
                raise SpecError(f"{spec_path}: pretrained_weights: no tensor of {path} fits this model; "
                                "check model.backbone_attributes")
            model.load_state_dict(matching, strict=False)
            print(f"pretrained_weights: {len(matching)}/{len(own)} tensors from {path}", flush=True)
        else:
            load_backbone_weights(model.backbone, path)
    # The weights travel in the checkpoint; evaluate must not look for the backbone file again.
    model_config["backbone_attributes"]["pretrained_weights"] = None
    return model, model_config


def optimizer_settings(spec: BpnetTrainSpec) -> dict[str, Any]:
    """TAO's optimizer section as TrainJob fields (WeightedMomentumOptimizer is SGD with momentum
    whose per-layer weights are the stagewise LR multipliers)."""
    from pose_workloads.training.job import Schedule

    optimizer = spec.optimizer
    schedule = optimizer.learning_rate_schedule
    if schedule.class_name == "SoftstartAnnealingLearningRateSchedule":
        lr_schedule = Schedule(kind="soft_start_annealing", min_lr=schedule.min_learning_rate,
                               soft_start=schedule.soft_start, annealing=schedule.annealing)
    else:
        lr_schedule = Schedule(kind="constant")
    return {
        "optimizer": "sgd" if optimizer.class_name == "WeightedMomentumOptimizer" else "adam",
        "lr": schedule.base_learning_rate,
        "momentum": optimizer.momentum,
        "nesterov": optimizer.use_nesterov,
        "schedule": lr_schedule,
    }


def validation_fn(spec: BpnetTrainSpec, spec_path: str | Path, pose_config: PoseConfig):
    """With validation_every_n_epoch: a function of the model giving COCO AP on the test split of
    the (first) dataset spec, computed as `bpnet evaluate` does, single-scale at the training
    input height. The best epoch is kept as model_best.pth. None when validation is off."""
    import torch

    from pose_workloads.bad_data import Skips
    from pose_workloads.data.coco import load_coco
    from pose_workloads.evaluate import coco_keypoint_metrics
    from pose_workloads.media import BadSample, read_image

    if spec.validation_every_n_epoch == 0:
        return None
    specs = spec.dataloader.dataset_config.dataset_specs
    if not specs:
        raise SpecError(f"{spec_path}: dataloader.dataset_config.dataset_specs: empty, so nothing to validate on; "
                        "name a dataset spec (its test split is used) or set validation_every_n_epoch: 0")
    dataset_spec = load_spec(BpnetDatasetSpec, next(iter(specs.values())))
    annotation_config = load_pose_config(dataset_spec.pose_config_path)
    to_annotation = annotation_joint_index(pose_config, annotation_config, Path(spec_path))
    split = dataset_spec.test_data
    annotations = dataset_spec.resolve(split.annotation_root_dir_path)
    data = load_coco(dataset_spec.resolve(split.images_root_dir_path), annotations, annotation_config)
    dims = spec.dataloader.image_config.image_dims
    settings, _ = inference_settings(BpnetInferenceSpec(input_shape=(dims.height, dims.width)),
                                     spec.dataloader.normalization_params)

    def evaluate_fn(model) -> dict[str, float]:
        device = next(model.parameters()).device

        def run(images):
            heatmaps, pafs = model(torch.from_numpy(images).to(device))[-1]
            return [heatmaps.float().cpu().numpy(), pafs.float().cpu().numpy()]

        results = []
        skips = Skips()
        skips.update(data.skipped)
        for record in data.images:
            try:
                image = read_image(record.image_path, (record.height, record.width))
            except BadSample as err:  # skipped and counted, as everywhere (bad_data.py)
                skips.add(err.reason, Path(err.path).name)
                continue
            results += coco_results(predict_people(run, image, settings, pose_config), record.image_id, to_annotation)
        skips.report("validation images and annotations", len(data.images))
        metrics = coco_keypoint_metrics(annotations, results, annotation_config.oks_sigmas)
        return {**metrics, "skipped": float(skips.total)}

    return evaluate_fn


def main(args) -> int:
    """`bpnet train -e SPEC -r RESULTS [-k KEY] [--gpus N] [--set k=v]`; resumes from RESULTS."""
    import torch

    from pose_workloads.models import stagewise_param_groups
    from pose_workloads.training.data import seed_everything
    from pose_workloads.training.job import TrainJob
    from pose_workloads.training.loop import run_training

    rank, world_size = ranks.rank(), ranks.world_size()
    if getattr(args, "gpus", 1) > 1 and world_size == 1:
        print(f"note: --gpus {args.gpus} but this is one process; the launcher starts torchrun for you",
              file=sys.stderr)

    spec = load_spec(BpnetTrainSpec, args.spec, args.overrides)
    pose_config = load_pose_config(spec.dataloader.pose_config.pose_config_path)
    check_channels(spec, pose_config, args.spec)

    # Data first: a missing conversion fails here, before a model is built.
    dataset = shard_dataset(spec, train_manifests(spec, args.spec), pose_config, train=True)
    batch_size = spec.dataloader.batch_size
    steps = max(1, math.ceil(len(dataset) / (world_size * batch_size)))

    seed_everything(spec.seed)
    model, model_config = build_train_model(spec, pose_config, args.spec)
    evaluate_fn = validation_fn(spec, args.spec, pose_config)
    dims = spec.dataloader.image_config.image_dims
    bias_factor = spec.model.bias_regularization_factor
    bias_kind = spec.model.regularization_type

    def loss_fn(outputs, batch):
        loss, parts = bpnet_loss(outputs, batch)
        if bias_factor > 0 and bias_kind != "none":
            # train.py regularizes kernels only; TAO's bias_regularization_factor adds biases.
            convs = [m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
            biases = [m.bias for m in convs if m.bias is not None]
            penalty = sum(b.abs().sum() if bias_kind == "l1" else b.pow(2).sum() for b in biases)
            loss = loss + bias_factor * penalty
            parts = {**parts, "bias_regularization": (bias_factor * penalty).detach()}
        return loss, parts

    job = TrainJob(
        network=NETWORK,
        model=model,
        model_config=model_config,
        pose_config=pose_config,
        input_size=(dims.height, dims.width),
        train_dataset=dataset,
        loss_fn=loss_fn,
        results_dir=Path(args.results_dir),
        epochs=spec.num_epoch,
        batch_size=batch_size,
        regularization=spec.model.regularization_type,
        regularization_factor=spec.model.kernel_regularization_factor,
        param_groups=stagewise_param_groups if spec.use_stagewise_lr_multipliers else None,
        checkpoint_every=spec.checkpoint_n_epoch,
        evaluate_fn=evaluate_fn,
        eval_every=spec.validation_every_n_epoch,
        workers=spec.dataloader.workers,
        seed=spec.seed,
        amp=spec.amp,
        amp_dtype=spec.amp_dtype,
        channels_last=spec.model.data_format == "channels_last",
        steps_per_epoch=steps,
        spec=spec,
        **optimizer_settings(spec),
    )
    if rank == 0:
        print(f"{len(dataset)} training samples from {len(dataset.manifests)} converted split(s), "
              f"{pose_config.num_joints} joints, {len(pose_config.paf_limbs)} limbs", flush=True)
    result = run_training(job)
    if rank == 0:
        print(f"done: {args.results_dir}/model_final.pth (final loss {result.get('loss', float('nan')):.4f})")
    return 0
