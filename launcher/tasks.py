"""The launcher's side of the task table: the options every task takes (runner, GPUs, --set,
...), and what the launcher decides from a task's row (its image, the specs a spec names).

The tasks themselves, their flags and what each flag is (value, switch, input or output path,
spec file) live in `pose_workloads.tasks`, the one table both sides are generated from; it is
re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pose_workloads.errors import BadInput
from pose_workloads.tasks import KEY, NETWORKS, PYTORCH, SET, TASKS, TENSORRT, Flag, Task

__all__ = ["LAUNCH_OPTIONS", "NETWORKS", "PYTORCH", "TASKS", "TENSORRT", "Flag", "LaunchOptions", "Task",
           "find_task", "image_kind", "nested_spec_class"]

# The options every task command takes besides its own flags: how and where it runs. The host
# command offers them with these spellings and defaults and gathers them into `LaunchOptions`
# (one field per row, same name as `dest`); the workload never sees them (-k and --set aside).
LAUNCH_OPTIONS: tuple[Flag, ...] = (
    Flag(("--runner",), "runner", default="auto", choices=("auto", "docker", "local", "slurm", "k8s"),
         help="docker, local, or auto: Docker when an engine answers and has the image, else local; "
              "slurm or k8s: a job on a cluster (mounts file sections Slurm, Kubernetes)."),
    Flag(("--gpus",), "gpus", type=int,
         help="GPUs to use (default 1); N > 1 starts N ranks under torchrun. No GPU: N CPU processes. "
              "slurm/k8s: GPUs (ranks) per node; 0: one CPU rank per node."),
    Flag(("--gpu_index",), "gpu_index", metavar="I,J", help="exactly these host GPUs (NVML indices)."),
    Flag(("--num_nodes",), "num_nodes", type=int, default=1,
         help="nodes in a multi-node run (slurm/k8s: nodes or pods to start)."),
    Flag(("--node_rank",), "node_rank", type=int, default=0, help="this node's rank (0 .. num_nodes-1)."),
    Flag(("--rdzv_endpoint",), "rdzv_endpoint", metavar="HOST:PORT", help="rendezvous of a multi-node run (node 0)."),
    replace(SET, default=(), cli=True,
            help="override a field of the task's first spec (-e, --inference_spec or --dataset_spec; repeatable)."),
    Flag(("--dry-run",), "dry_run", "switch", default=False,
         help="print the runner, image and command (task paths), start nothing."),
    KEY,
    Flag(("--detach",), "detach", "switch", default=False,
         help="docker/slurm/k8s: start the job, print its id and return (pose jobs logs|cancel ID)."),
    Flag(("--partition",), "partition", metavar="P",
         help="slurm: the partition (default: the mounts file's Slurm.partition)."),
    Flag(("--account",), "account", metavar="A", help="slurm: the account to charge."),
    Flag(("--time",), "time", metavar="T", help="slurm: the time limit (sbatch --time, e.g. 04:00:00)."),
    Flag(("--container_runtime",), "container_runtime", choices=("pyxis", "docker", "none"),
         help="slurm: pyxis (srun --container-image), docker (docker run on each node) "
              "or none (workloads installed)."),
    Flag(("--signal_grace",), "signal_grace_s", type=int, metavar="SECONDS",
         help="slurm training: USR1 this long before the time limit; ranks checkpoint, "
              "the job is requeued and resumes."),
)


def _default(dest: str) -> Any:
    return next(option.default for option in LAUNCH_OPTIONS if option.dest == dest)


@dataclass(frozen=True)
class LaunchOptions:
    """The values of `LAUNCH_OPTIONS` (defaults from there)."""

    runner: str = _default("runner")  # docker | local | auto | slurm | k8s
    gpus: int | None = _default("gpus")  # None: 1, or as many as --gpu_index names
    gpu_index: str | None = _default("gpu_index")  # "0,2"
    num_nodes: int = _default("num_nodes")
    node_rank: int = _default("node_rank")
    rdzv_endpoint: str | None = _default("rdzv_endpoint")
    overrides: tuple[str, ...] = _default("overrides")  # --set key.sub=value, applied to the task's first spec
    dry_run: bool = _default("dry_run")
    key: str | None = _default("key")  # -k, TAO's model key: accepted and ignored
    detach: bool = _default("detach")  # print the job's id and return
    partition: str | None = _default("partition")  # slurm (else the mounts file's Slurm section)
    account: str | None = _default("account")
    time: str | None = _default("time")
    container_runtime: str | None = _default("container_runtime")  # pyxis | docker | none
    signal_grace_s: int | None = _default("signal_grace_s")  # training: USR1 before the limit, requeue


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
