"""Every task `pose` can run, in one table: its flags, their types, choices, defaults and help,
which are paths (read or written) and which are spec files, and the function that runs it.

Both sides are generated from this table: the host's Typer commands (launcher/cli.py), the
launcher's path handling (launcher/launch.py walks `Task.flags`) and the workload's argparse
(pose_workloads/__main__.py). Adding a flag is one edit here. Standard library only, so that
`pose --help` stays fast and the container needs nothing more to read it.

A flag's kind says how the launcher treats its value before the workload sees it:

    value   passed as is                    (-m train, --data_type fp16)
    switch  passed alone when set           (--generate_masks)
    input   a path that must exist; read only, so it may be in a read-only mount (-m, --input)
    output  a path the task writes          (-r, -o): must be in a writable mount
    spec    an input spec file              (-e, --dataset_spec): validated on the host with the
            `pose_workloads.specs` class named, its path fields translated, and handed to the
            task as a copy in the launch directory

A flag's first spelling is the one the launcher passes; every spelling works on both sides, and
each `--long_name` is also accepted as `--long-name` (and the other way round).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, replace
from typing import Any, Literal

from pose_workloads.serving.repository import TRITON_BACKENDS

PYTORCH = "pytorch"
TENSORRT = "tensorrt"

FlagKind = Literal["value", "switch", "input", "output", "spec"]


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]  # spellings; the first is the one the launcher passes
    dest: str  # the workload's `args.<dest>`, and the host command's parameter name
    kind: FlagKind = "value"
    type: builtins.type = str  # str, int or float (switches are bool)
    default: Any = None  # the workload's value when the flag is not given
    required: bool = False
    choices: tuple[str, ...] = ()
    help: str = ""
    metavar: str | None = None
    spec: str | None = None  # class name in pose_workloads.specs, for kind "spec"
    repeat: bool = False  # may be given several times (a list of values)
    # False: not an option of its own on the host command, because the launcher's option of the
    # same name covers it (--gpus: the launcher passes the process count; --set: applied on the host).
    cli: bool = True

    @property
    def name(self) -> str:
        return self.names[0]

    def spellings(self) -> tuple[str, ...]:
        """Every accepted spelling: the names, then each long name with `_` and `-` swapped."""
        more = []
        for name in self.names:
            if name.startswith("--"):
                more += ["--" + name[2:].replace("_", "-"), "--" + name[2:].replace("-", "_")]
        return tuple(dict.fromkeys([*self.names, *more]))


@dataclass(frozen=True)
class Task:
    network: str  # the workload's first word: a network, "dataset", or a task of its own
    action: str  # "" for tasks of their own (info, selftest)
    target: str  # "module:function" the workload calls with the parsed flags
    help: str
    flags: tuple[Flag, ...]
    image: str = PYTORCH  # see `launcher.tasks.image_kind` for the TensorRT cases
    distributed: bool = False  # --gpus N > 1 starts N ranks under torchrun
    cli: bool = True  # False: the host has a command of its own for it (`pose info`)

    @property
    def argv(self) -> tuple[str, ...]:
        return (self.network, self.action) if self.action else (self.network,)

    @property
    def name(self) -> str:
        return " ".join(self.argv)

    @property
    def primary_spec(self) -> Flag | None:
        """The spec `--set key=value` overrides apply to: the first spec flag."""
        return next((f for f in self.flags if f.kind == "spec"), None)


# The groups of tasks, as the host's and the workload's help show them.
NETWORKS = {
    "simple-pose": "Simple Pose: top-down, one person per box (GluonCV style).",
    "bpnet": "BodyPoseNet: bottom-up, heatmaps + part affinity fields (TAO style).",
    "dataset": "Dataset tools.",
}

# ---- Flags several tasks share (TAO spelling first) --------------------------------------------

# Every task accepts -k; the workload says once that it is ignored, the launcher never passes it.
KEY = Flag(("-k", "--key"), "key", metavar="KEY",
           help="TAO's model key: accepted for compatibility and ignored (pose models are not encrypted).")
# The workload's own --set (the launcher applies --set on the host and never passes it).
SET = Flag(("--set",), "overrides", metavar="KEY.SUB=VALUE", repeat=True, cli=False,
           help="override a spec field (repeatable).")
GPUS = Flag(("--gpus",), "gpus", type=int, default=1, cli=False, help="processes per node (the launcher passes it).")

EXPERIMENT_SPEC = Flag(("-e", "--experiment_spec_file", "--experiment_spec", "--spec"), "spec", "spec",
                       required=True, metavar="SPEC",
                       help="experiment spec (YAML); host path, or container path TAO-style.")
RESULTS_DIR = Flag(("-r", "--results_dir"), "results_dir", "output", required=True, metavar="DIR",
                   help="results folder (checkpoints, logs, outputs).")
MODEL = Flag(("-m", "--model", "--model_filename"), "model", "input", required=True, metavar="MODEL",
             help="model file: .pth, .onnx or .engine.")
OUTPUT = Flag(("-o", "--output_file", "--output"), "output", "output", required=True, metavar="FILE",
              help="output file.")
INPUT = Flag(("--input",), "input", "input", required=True, metavar="PATH", help="image, folder of images, or video.")
INFERENCE_SPEC = Flag(("--inference_spec", "-i"), "inference_spec", "spec", required=True, metavar="SPEC",
                      spec="BpnetInferenceSpec", help="inference spec (YAML, infer_spec.yaml).")
DATASET_SPEC = Flag(("--dataset_spec", "-d"), "dataset_spec", "spec", required=True, metavar="JSON",
                    spec="BpnetDatasetSpec", help="dataset spec (coco_spec.json).")
MODEL_FILENAME = Flag(("--model_filename", "-m"), "model", "input", metavar="MODEL",
                      help="model file (overrides the spec's model_path).")
BPNET_RESULTS_DIR = replace(RESULTS_DIR, names=("--results_dir", "-r"))

EXPORT_FLAGS = (
    replace(MODEL, help=".pth model to export."),
    replace(OUTPUT, help="output .onnx path."),
    Flag(("--engine_file",), "engine_file", "output", metavar="FILE",
         help="also build a TensorRT engine here (TensorRT image)."),
    Flag(("--data_type",), "data_type", default="fp32", choices=("fp32", "fp16", "int8"), help="engine precision."),
    Flag(("--cal_image_dir",), "cal_image_dir", "input", metavar="DIR",
         help="images for INT8 calibration and the accuracy gate."),
    Flag(("--cal_cache_file",), "cal_cache_file", "output", metavar="FILE",
         help="INT8 calibration cache (read if present, written after)."),
    Flag(("--batches",), "batches", type=int, default=8, help="INT8 calibration batches."),
    Flag(("--max_batch_size",), "max_batch_size", type=int, default=8, help="largest engine batch."),
    Flag(("--opset",), "opset", type=int, default=17, help="ONNX opset."),
    Flag(("--val_dataset",), "val_dataset", "spec", spec="BpnetDatasetSpec", metavar="JSON",
         help="accuracy gate: AP of the written files and of PyTorch on this dataset spec's test split."),
    Flag(("--triton_repository",), "triton_repository", "output", metavar="DIR",
         help="also write a Triton model repository here (ensemble: preprocess -> model -> postprocess)."),
    Flag(("--triton_backend",), "triton_backend", default="onnxruntime", choices=TRITON_BACKENDS,
         help="how Triton runs the network (python: onnxruntime in the Python backend, for CPU-only hosts)."),
)


def train_task(network: str, spec_class: str, target: str) -> Task:
    """Both networks' `train`: the same flags and help, only the spec class and the code differ."""
    return Task(network, "train", target, "Train (resumes from the results folder when it holds a checkpoint).",
                (replace(EXPERIMENT_SPEC, spec=spec_class), RESULTS_DIR, GPUS, SET), distributed=True)


# ---- The tasks -----------------------------------------------------------------------------------

_TASKS = (
    Task("info", "", "pose_workloads.info:main",
         "versions, devices and the paths this task can see", (), cli=False),
    Task("selftest", "", "pose_workloads.selftest:main",
         "Check a runner end to end: every rank all-reduces a tensor and prints RANK/WORLD_SIZE.", (
             Flag(("--fail_rank",), "fail_rank", type=int, help="this rank exits 3."),
             Flag(("--hold_s",), "hold_s", type=float, default=0.0,
                  help="keep the ranks alive this long (Ctrl-C tests)."),
         ), distributed=True),
    Task("dataset", "synth", "pose_workloads.data.synth:main",
         "Write a small synthetic COCO-keypoints dataset (for demos and tests).", (
             Flag(("-o", "--output_dir", "--output"), "output", "output", required=True, metavar="DIR",
                  help="dataset folder."),
             Flag(("--images",), "images", type=int, default=200, help="number of images."),
             Flag(("--seed",), "seed", type=int, default=0, help="random seed."),
             Flag(("--max_people",), "max_people", type=int, default=3, help="people per image, at most."),
             Flag(("--size",), "size", default="256x256", metavar="WxH", help="image size."),
             Flag(("--pose_config",), "pose_config", "spec", spec="PoseConfig", metavar="JSON",
                  help="joint set (pose config JSON; joint names must be ones synth can draw)."),
             Flag(("--easy",), "easy", "switch",
                  help="upright, large people; no crowds, occluders or unlabelled people (the CPU demo's set)."),
         )),
    Task("dataset", "index_jpegs", "pose_workloads.data.jpeg_regions:main",
         "Copy a folder of JPEGs losslessly with an MCU index, so that Simple Pose training decodes only "
         "each crop's region (the same pixels; needs jpegtran).", (
             Flag(("-i", "--input"), "input", "input", required=True, metavar="DIR",
                  help="folder of images (e.g. coco/train2017); never written."),
             Flag(("-o", "--output_dir", "--output"), "output", "output", required=True, metavar="DIR",
                  help="folder for the copies, same names; point data.train_images at it."),
             Flag(("--workers",), "workers", type=int, default=0, help="processes (default: one per core)."),
         )),
    train_task("simple-pose", "SimplePoseSpec", "pose_workloads.simple_pose.train:main"),
    Task("simple-pose", "evaluate", "pose_workloads.simple_pose.evaluate:main",
         "COCO OKS AP of a model on the spec's validation set.", (
             replace(EXPERIMENT_SPEC, spec="SimplePoseSpec"), MODEL, RESULTS_DIR, SET,
         )),
    Task("simple-pose", "inference", "pose_workloads.simple_pose.inference:main",
         "Draw predicted skeletons and write them as JSON.", (
             replace(EXPERIMENT_SPEC, spec="SimplePoseSpec", required=False,
                     help="experiment spec (optional: the model file carries its config)."),
             MODEL, replace(INPUT, names=("--input", "-i")), RESULTS_DIR,
             Flag(("--boxes",), "boxes", "input", metavar="JSON",
                  help="person boxes, COCO results JSON (file_name or image_id keyed)."),
             SET,
         )),
    Task("simple-pose", "export", "pose_workloads.export.action:main",
         "Export to ONNX (a TensorRT engine with --engine_file, a Triton repository with --triton_repository).",
         EXPORT_FLAGS),
    Task("bpnet", "dataset_convert", "pose_workloads.data.convert:main",
         "Masks and training shards from a COCO-format dataset.", (
             DATASET_SPEC,
             Flag(("-m", "--mode"), "mode", required=True, choices=("train", "test"),
                  help="which split of the dataset spec."),
             Flag(("-o", "--output_filename", "--output"), "output", "output", required=True, metavar="PATH",
                  help="output shards prefix."),
             Flag(("--generate_masks",), "generate_masks", "switch", help="write loss masks too (crowds, unlabelled)."),
         )),
    train_task("bpnet", "BpnetTrainSpec", "pose_workloads.bpnet.train:main"),
    Task("bpnet", "evaluate", "pose_workloads.bpnet.evaluate:main",
         "COCO OKS AP of a model on the dataset spec's test split.", (
             INFERENCE_SPEC, MODEL_FILENAME, DATASET_SPEC, BPNET_RESULTS_DIR, SET,
         )),
    Task("bpnet", "inference", "pose_workloads.bpnet.inference:main",
         "Skeletons of every person in images or a video, as detections.json.", (
             INFERENCE_SPEC, MODEL_FILENAME,
             Flag(("--input_type",), "input_type", default="dir", choices=("dir", "image", "video"),
                  help="what --input is."),
             INPUT, BPNET_RESULTS_DIR,
             Flag(("--dump_visualizations",), "dump_visualizations", "switch",
                  help="also write images with skeletons drawn."),
             SET,
         )),
    Task("bpnet", "export", "pose_workloads.export.action:main",
         "Export to ONNX (a TensorRT engine with --engine_file, a Triton repository with --triton_repository).", (
             *EXPORT_FLAGS,
             replace(INFERENCE_SPEC, required=False,
                     help="size the engine for this inference spec's inputs (default: 368x368, adjust_network_input)."),
         )),
    Task("bpnet", "prune", "pose_workloads.prune:main",
         "L1-norm structured channel pruning (retrain after).", (
             replace(MODEL, help=".pth model to prune."), replace(OUTPUT, help="pruned .pth model."),
             Flag(("-pth", "--pruning_threshold"), "threshold", type=float, default=0.1,
                  help="L1-norm threshold (TAO: 0.05 .. 3.0)."),
             Flag(("-eq", "--equalization_criterion"), "criterion", default="union",
                  choices=("union", "intersection", "arithmetic_mean", "geometric_mean"),
                  help="how coupled layers agree."),
             Flag(("-pg", "--pruning_granularity"), "granularity", type=int, default=8,
                  help="channels removed in multiples of this."),
         )),
)

TASKS: dict[tuple[str, str], Task] = {(task.network, task.action): task for task in _TASKS}
