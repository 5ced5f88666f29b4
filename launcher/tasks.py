"""Every task `pose` can launch, in one table: its image, and what each of its flags is.

A flag's kind says how the launcher treats its value before the workload sees it:

    value   passed as is                    (-m train, --data_type fp16)
    switch  passed alone when set           (--generate_masks)
    input   a path that must exist          (--model_filename, --input)
    output  a path the task writes          (-r, -o): must be in a writable mount
    spec    an input spec file              (-e, --dataset_spec): validated on the host with the
            `pose_workloads.specs` class named, its path fields translated, and handed to the
            task as a copy in the launch directory

The names are the workload's spellings (`python -m pose_workloads <network> <action> ...`,
see containers/pose_workloads/__main__.py); the CLI accepts these and the dashed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pose_workloads.errors import BadInput

PYTORCH = "pytorch"
TENSORRT = "tensorrt"

FlagKind = Literal["value", "switch", "input", "output", "spec"]


@dataclass(frozen=True)
class Flag:
    name: str
    kind: FlagKind
    spec: str | None = None  # class name in pose_workloads.specs, for kind "spec"


@dataclass(frozen=True)
class Task:
    argv: tuple[str, ...]  # the workload's network and action, e.g. ("bpnet", "train")
    image: str  # PYTORCH or TENSORRT; see `image_kind` for the TensorRT cases
    flags: tuple[Flag, ...]
    distributed: bool = False  # --gpus N > 1 starts N ranks under torchrun

    @property
    def name(self) -> str:
        return " ".join(self.argv)

    @property
    def primary_spec(self) -> Flag | None:
        """The spec `--set key=value` overrides apply to: the first spec flag."""
        return next((f for f in self.flags if f.kind == "spec"), None)


def _export_flags() -> tuple[Flag, ...]:
    return (
        Flag("-m", "input"), Flag("-o", "output"), Flag("--engine_file", "output"),
        Flag("--data_type", "value"), Flag("--cal_image_dir", "input"), Flag("--cal_cache_file", "output"),
        Flag("--batches", "value"), Flag("--max_batch_size", "value"), Flag("--opset", "value"),
    )


TASKS: dict[tuple[str, str], Task] = {
    ("info", ""): Task(("info",), PYTORCH, ()),
    ("selftest", ""): Task(("selftest",), PYTORCH, (Flag("--fail_rank", "value"), Flag("--hold_s", "value")), distributed=True),
    ("dataset", "synth"): Task(("dataset", "synth"), PYTORCH, (
        Flag("-o", "output"), Flag("--images", "value"), Flag("--seed", "value"),
        Flag("--max_people", "value"), Flag("--size", "value"), Flag("--pose_config", "spec", "PoseConfig"),
        Flag("--easy", "switch"),
    )),
    ("simple-pose", "train"): Task(("simple-pose", "train"), PYTORCH, (
        Flag("-e", "spec", "SimplePoseSpec"), Flag("-r", "output"), Flag("--gpus", "value"),
    ), distributed=True),
    ("simple-pose", "evaluate"): Task(("simple-pose", "evaluate"), PYTORCH, (
        Flag("-e", "spec", "SimplePoseSpec"), Flag("-m", "input"), Flag("-r", "output"),
    )),
    ("simple-pose", "inference"): Task(("simple-pose", "inference"), PYTORCH, (
        Flag("-e", "spec", "SimplePoseSpec"), Flag("-m", "input"), Flag("--input", "input"),
        Flag("-r", "output"), Flag("--boxes", "input"),
    )),
    ("simple-pose", "export"): Task(("simple-pose", "export"), PYTORCH, _export_flags()),
    ("bpnet", "dataset_convert"): Task(("bpnet", "dataset_convert"), PYTORCH, (
        Flag("--dataset_spec", "spec", "BpnetDatasetSpec"), Flag("-m", "value"), Flag("-o", "output"),
        Flag("--generate_masks", "switch"),
    )),
    ("bpnet", "train"): Task(("bpnet", "train"), PYTORCH, (
        Flag("-e", "spec", "BpnetTrainSpec"), Flag("-r", "output"), Flag("--gpus", "value"),
    ), distributed=True),
    ("bpnet", "evaluate"): Task(("bpnet", "evaluate"), PYTORCH, (
        Flag("--inference_spec", "spec", "BpnetInferenceSpec"), Flag("--model_filename", "input"),
        Flag("--dataset_spec", "spec", "BpnetDatasetSpec"), Flag("--results_dir", "output"),
    )),
    ("bpnet", "inference"): Task(("bpnet", "inference"), PYTORCH, (
        Flag("--inference_spec", "spec", "BpnetInferenceSpec"), Flag("--model_filename", "input"),
        Flag("--input_type", "value"), Flag("--input", "input"), Flag("--results_dir", "output"),
        Flag("--dump_visualizations", "switch"),
    )),
    ("bpnet", "export"): Task(("bpnet", "export"), PYTORCH, (
        *_export_flags(), Flag("--inference_spec", "spec", "BpnetInferenceSpec"),
    )),
    ("bpnet", "prune"): Task(("bpnet", "prune"), PYTORCH, (
        Flag("-m", "input"), Flag("-o", "output"), Flag("-pth", "value"), Flag("-eq", "value"),
        Flag("-pg", "value"),
    )),
}

# Spec path fields that name another spec file. The launcher validates that file too, translates
# its own path fields, and points the field at the translated copy, so a train spec's
# dataset_specs or an inference spec's train_spec work in the container unchanged.
# Keys are dotted locations as `specs.spec_paths` reports them; `.*` matches any key of a dict.
NESTED_SPECS: dict[str, dict[str, str]] = {
    "SimplePoseSpec": {"data.pose_config": "PoseConfig"},
    "BpnetDatasetSpec": {"pose_config_path": "PoseConfig"},
    "BpnetTrainSpec": {
        "dataloader.pose_config.pose_config_path": "PoseConfig",
        "dataloader.dataset_config.dataset_specs.*": "BpnetDatasetSpec",
    },
    "BpnetInferenceSpec": {"train_spec": "BpnetTrainSpec"},
}


def nested_spec_class(spec_class: str, location: str) -> str | None:
    """The spec class of the file a path field names, or None for a plain path."""
    for pattern, nested in NESTED_SPECS.get(spec_class, {}).items():
        if pattern == location or (pattern.endswith(".*") and location.startswith(pattern[:-1])):
            return nested
    return None


def find_task(network: str, action: str = "") -> Task:
    try:
        return TASKS[(network, action)]
    except KeyError:
        valid = ", ".join(" ".join(k).strip() for k in TASKS)
        raise BadInput(f"unknown task {network} {action}; valid: {valid}") from None


def image_kind(task: Task, values: dict[str, Any]) -> str:
    """PyTorch image, except for TensorRT work: building an engine or running one."""
    if values.get("--engine_file"):
        return TENSORRT
    models = (values.get("-m"), values.get("--model_filename"))
    if task.argv[-1] in ("evaluate", "inference") and any(str(m).endswith(".engine") for m in models if m):
        return TENSORRT
    return task.image
