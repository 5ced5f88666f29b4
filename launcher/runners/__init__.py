"""One small interface for both runners: `run(call: TaskCall) -> int`, the task's exit code.

Docker and local differ only in how the process starts (a container with container paths, or a
subprocess with host paths); the argv, exit codes and signal behaviour are the same.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field

from launcher.mounts import ContainerOptions, Mount

# Set for every task, both runners. Unbuffered: log lines arrive as they are printed.
# Safe path (Python >= 3.11): `python -m` would otherwise put the working directory first on
# sys.path, and a stray timeit.py or random.py there breaks torch's imports.
# PCI bus order: `--gpu_index` and `pose info` number GPUs as NVML does (by PCI bus); CUDA's own
# default order is fastest-first, so on a machine of mixed GPUs CUDA_VISIBLE_DEVICES=1 would pick
# another card than the one NVML calls 1.
TASK_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


@dataclass(frozen=True)
class TaskCall:
    """Everything a runner needs to start one task; built by `launcher.launch`."""

    task: str  # "bpnet train", for names and messages
    args: tuple[str, ...]  # workload argv after `python -m pose_workloads`, paths already translated
    image: str = ""  # Docker image tag (unused by the local runner)
    mounts: tuple[Mount, ...] = ()  # Docker only; includes the launch dir at /pose_launch
    env: dict[str, str] = field(default_factory=dict)  # added to the task's environment
    gpu_ids: tuple[int, ...] = ()  # host GPU indices; () runs on CPU
    nproc: int = 1  # processes on this node; > 1 (or num_nodes > 1) starts torchrun
    num_nodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    user: str = ""  # "uid:gid" the container runs as
    workdir: str = ""  # working directory (container path for Docker, host path for local)
    docker_options: ContainerOptions = field(default_factory=ContainerOptions)
    log_paths: tuple[tuple[str, str], ...] = ()  # (path the task prints, host path to show instead)
    labels: tuple[tuple[str, str], ...] = ()  # more container labels (Docker: pose.detached, pose.launch_dir)


def workload_command(call: TaskCall, python: str) -> list[str]:
    """The argv that starts the workload: `python -m pose_workloads ...`, or torchrun for
    several processes (`pose_workloads.torchrun` is torchrun's own `run()`, without needing its
    script on PATH, exiting with the failed rank's code instead of 1)."""
    if call.nproc <= 1 and call.num_nodes <= 1:
        return [python, "-m", "pose_workloads", *call.args]
    command = [python, "-m", "pose_workloads.torchrun", "--nproc_per_node", str(call.nproc)]
    if call.num_nodes > 1:
        command += ["--nnodes", str(call.num_nodes), "--node_rank", str(call.node_rank)]
        if call.rdzv_endpoint:
            command += ["--rdzv_endpoint", call.rdzv_endpoint]
    else:
        # One node: torchrun picks a free port itself, so two jobs on one host do not collide.
        command += ["--standalone"]
    return [*command, "-m", "pose_workloads", *call.args]


# SIGHUP (the terminal closed, an ssh session dropped) is a request to stop like SIGTERM.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP reached `pose` while a task ran; the runner stops the task."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        # The shell convention: 128 + signal number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).
        return 128 + self.signum


class interrupts_raise:
    """Context manager: while inside, SIGINT/SIGTERM/SIGHUP raise `Interrupted` in the main thread.

    TAO catches Ctrl-C inside the container and reports "Execution status: PASS"; here the
    signal unwinds the runner, which stops the task and returns 130/143.
    """

    def __enter__(self) -> interrupts_raise:
        self._previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for signum in self._previous:
            signal.signal(signum, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Interrupted(signum)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run(call: TaskCall, runner: str) -> int:
    """Start `call` with the named runner ("docker" or "local") and return its exit code."""
    if runner == "docker":
        from launcher.runners import docker

        return docker.run(call)
    from launcher.runners import local

    return local.run(call)


def detached(job_id: str, done: str) -> int:
    """A cluster job left running (--detach): its id alone on stdout, for scripts, and `done` (what
    was done) with how to follow it on stderr. Returns 0, pose's exit code."""
    print(job_id, flush=True)
    print(f"pose: {done}; follow it with `pose jobs logs {job_id} --follow`", file=sys.stderr, flush=True)
    return 0
