"""Training input throughput: samples/s of one data worker for both networks' training datasets.

    python bench/bench_input.py [--samples 96] [--repeat 3]

One worker = one process on one core (OpenCV, torch and OpenMP at one thread), running the real
training dataset with its training augmentation on coco-mini (real COCO val2017 JPEGs):
- Simple Pose: `TopDownDataset` at 256x192 with Simple Baselines' augmentation (scale, rotation,
  flip, half body), people in a shuffled order and no decoded image kept between samples (COCO's
  57k training images, shuffled, never share an image between neighbours), from the JPEGs as
  they are and from their `pose dataset index_jpegs` copies (needs jpegtran);
- BodyPoseNet: `BpnetShardDataset` over `dataset_convert`'s shards with TAO's
  bpnet_train_m1_coco.yaml dataloader (256x256 input, 32x32 targets, person-centric augmentation,
  labels, loss mask).
It prints samples/s per worker and the workers one GPU needs at the published step rates below,
and fails when a worker makes fewer than MIN_RATE samples/s (a regression).

Published rates (samples/s over an 8-GPU node):
- Simple Pose ResNet-50 256x192: GluonCV's training logs, 8 GPUs, fp32 batch 32 per GPU: ~920
  samples/s (simple_pose_resnet50_v1b_coco.log); fp16 batch 128 per GPU: ~2,500 samples/s
  (simple_pose_resnet50_v1d_coco.log). GluonCV ran 60 data workers for it.
- BodyPoseNet: TAO publishes no training throughput; the table gives the workers per GPU for a
  range of per-GPU rates instead.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from timing import best_cpu_rate, sample_rate_arguments  # noqa: E402

from pose_workloads.bpnet.train import shard_dataset  # noqa: E402
from pose_workloads.data.coco import load_coco  # noqa: E402
from pose_workloads.data.convert import convert_dataset  # noqa: E402
from pose_workloads.data.crops import TopDownAugmentation  # noqa: E402
from pose_workloads.data.jpeg_regions import indexed_copy  # noqa: E402
from pose_workloads.data.topdown import TopDownDataset  # noqa: E402
from pose_workloads.specs import COCO17, BpnetDatasetSpec, BpnetTrainSpec, load_pose_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COCO_MINI = ROOT / "tests/data/coco-mini"
KEYPOINTS = "annotations/person_keypoints_mini.json"
MIN_RATE = 30.0  # samples/s per worker
PUBLISHED_8_GPU = {  # samples/s over 8 GPUs, see the module doc
    "Simple Pose R50 fp32 (GluonCV)": 920.0,
    "Simple Pose R50 fp16 (GluonCV)": 2500.0,
}
BPNET_PER_GPU_RATES = (50.0, 100.0, 200.0)  # samples/s per GPU: no published figure


def simple_pose_rate(samples: int, repeat: int, indexed: bool = False) -> float:
    coco = load_coco(COCO_MINI / "images", COCO_MINI / KEYPOINTS)
    people = coco.people
    with tempfile.TemporaryDirectory() as tmp:
        if indexed:
            for path in {p.image_path for p in people}:
                (Path(tmp) / Path(path).name).write_bytes(indexed_copy(Path(path).read_bytes()))
            people = [dataclasses.replace(p, image_path=str(Path(tmp) / Path(p.image_path).name)) for p in people]
        dataset = TopDownDataset(people, COCO17, input_size=(256, 192), train=True, aug=TopDownAugmentation(),
                                 seed=0, decode_regions=indexed)
        return _top_down_rate(dataset, samples, repeat)


def _top_down_rate(dataset: TopDownDataset, samples: int, repeat: int) -> float:
    order = np.random.default_rng(0)
    n = len(dataset)
    items = [(int(i), epoch) for epoch in range(-(-samples // n)) for i in order.permutation(n)][:samples]

    def run():
        for index, epoch in items:
            dataset._decoded.clear()  # see the module doc
            dataset.set_epoch(epoch)
            dataset[index]

    return best_cpu_rate(run, len(items), repeat)


def bpnet_rate(samples: int, repeat: int) -> float:
    import yaml

    spec_data = yaml.safe_load((ROOT / "specs/bpnet/bpnet_train_m1_coco.yaml").read_text())
    spec_data["dataloader"]["pose_config"]["pose_config_path"] = str(ROOT / "specs/bpnet/bpnet_18joints.json")
    spec = BpnetTrainSpec.model_validate(spec_data)
    pose_config = load_pose_config(ROOT / "specs/bpnet/bpnet_18joints.json")
    split = {"images_root_dir_path": "images", "annotation_root_dir_path": KEYPOINTS}
    data_spec = BpnetDatasetSpec(root_directory_path=str(COCO_MINI), train_data=split, test_data=split)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "train"
        convert_dataset(data_spec, "train", out, show_progress=False)
        dataset = shard_dataset(spec, [out], pose_config, train=True)
        epochs = -(-samples // len(dataset))

        def run():
            count = 0
            for epoch in range(epochs):
                dataset.set_epoch(epoch)
                for _ in dataset:
                    count += 1
            return count

        count = run()
        return best_cpu_rate(run, count, repeat)


def main() -> None:
    args = sample_rate_arguments(__doc__, samples=96)  # per network
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    top_down = simple_pose_rate(args.samples, args.repeat)
    top_down_indexed = simple_pose_rate(args.samples, args.repeat, indexed=True) if shutil.which("jpegtran") else None
    bottom_up = bpnet_rate(args.samples, args.repeat)
    print("training input, one worker = one core (OpenCV/torch/OpenMP at 1 thread), CPU time, coco-mini JPEGs")
    print(f"  Simple Pose (TopDownDataset, 256x192, Simple Baselines augmentation)  {top_down:7.1f} samples/s "
          "per worker")
    if top_down_indexed is None:
        print("  Simple Pose from indexed JPEGs: not measured (no jpegtran: apt-get install libjpeg-turbo-progs)")
    else:
        print(f"  Simple Pose from indexed JPEGs (pose dataset index_jpegs)            {top_down_indexed:7.1f} "
              "samples/s per worker")
    print(f"  BodyPoseNet (BpnetShardDataset, 256x256 -> 32x32, TAO m1 spec)       {bottom_up:7.1f} samples/s "
          "per worker")
    print("  workers (cores) to feed an 8-GPU node at published rates:")
    for name, node_rate in PUBLISHED_8_GPU.items():
        workers = node_rate / top_down
        line = f"    {name:<34} {node_rate:7.0f} samples/s: {workers:5.1f} workers ({workers / 8:4.1f} per GPU)"
        if top_down_indexed is not None:
            line += f", {node_rate / top_down_indexed:5.1f} from indexed JPEGs"
        print(line)
    print("  BodyPoseNet (no published rate), workers per GPU at a given per-GPU rate:")
    for per_gpu in BPNET_PER_GPU_RATES:
        print(f"    {per_gpu:5.0f} samples/s per GPU: {per_gpu / bottom_up:5.1f} workers per GPU, "
              f"{8 * per_gpu / bottom_up:5.1f} per node")
    for name, value in (("Simple Pose", top_down), ("BodyPoseNet", bottom_up)):
        assert value >= MIN_RATE, f"{name}: {value:.1f} samples/s per worker, below {MIN_RATE}"


if __name__ == "__main__":
    main()
