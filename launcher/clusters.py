"""The `Slurm` and `Kubernetes` sections of the mounts file: defaults for `--runner slurm|k8s`.

    "Slurm": {"partition": "batch", "account": "vision", "qos": "normal", "time": "04:00:00",
              "container_runtime": "pyxis", "sbatch_options": ["--exclusive"],
              "launch_dir": "~/.pose/slurm", "python": "python3", "signal_grace_s": 120},
    "Kubernetes": {"namespace": "pose", "image_pull_secret": "regcred",
                   "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                   "volumes": [{"source": "~/pose-experiments", "pvc": {"claim_name": "experiments"}},
                               {"source": "/datasets/coco", "nfs": {"server": "nas", "path": "/coco"}}]}

Flags given on the command line win over these. Unknown keys are refused like the rest of the
file (one line naming the key and the valid ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _expand(value):
    from launcher.mounts import expand

    return expand(value) if isinstance(value, str) else value


class SlurmSection(_Strict):
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    # pyxis: NVIDIA's srun --container-image (DGX practice); docker: `docker run` on each node
    # with the Docker runner's options; none: the workloads are installed on the nodes.
    container_runtime: Literal["pyxis", "docker", "none"] = "pyxis"
    sbatch_options: list[str] = Field(default_factory=list)
    # Launch files (batch script, translated specs, the job's log) go here: it must be on
    # storage every node sees (home directories usually are).
    launch_dir: Path = Path("~/.pose/slurm")
    python: str = "python3"  # the nodes' interpreter, for container_runtime none
    signal_grace_s: int = Field(120, ge=1)  # training: USR1 this long before the time limit

    @field_validator("launch_dir", mode="before")
    @classmethod
    def _expanded(cls, value):
        return _expand(value)

    @field_validator("sbatch_options")
    @classmethod
    def _options(cls, options: list[str]) -> list[str]:
        for option in options:
            if not option.startswith("-"):
                raise ValueError(f"{option!r} is not an sbatch option; write each as \"--name=value\"")
        return options


class PvcVolume(_Strict):
    claim_name: str
    sub_path: str | None = None


class NfsVolume(_Strict):
    server: str
    path: str


class HostPathVolume(_Strict):
    path: str


class KubernetesVolume(_Strict):
    """Where a mount's `source` comes from in the cluster: exactly one of pvc, nfs, host_path."""

    source: Path
    pvc: PvcVolume | None = None
    nfs: NfsVolume | None = None
    host_path: HostPathVolume | None = None

    @field_validator("source", mode="before")
    @classmethod
    def _expanded(cls, value):
        return _expand(value)

    @model_validator(mode="after")
    def _one_kind(self) -> KubernetesVolume:
        given = [k for k in ("pvc", "nfs", "host_path") if getattr(self, k) is not None]
        if len(given) != 1:
            got = ", ".join(given) or "none"
            raise ValueError(f"{self.source}: give exactly one of pvc, nfs, host_path (got {got})")
        return self


class Toleration(_Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class KubernetesSection(_Strict):
    namespace: str = "default"
    image_pull_secret: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    volumes: list[KubernetesVolume] = Field(default_factory=list)
    # The pod's runAsUser/runAsGroup; default: the invoking user (as DockerOptions.user).
    user: str | None = None
    rdzv_port: int = Field(29500, ge=1, le=65535)

    @field_validator("user", mode="before")
    @classmethod
    def _user(cls, value):
        value = _expand(value)
        if value is not None and not (isinstance(value, str) and all(p.isdigit() for p in value.split(":", 1))):
            raise ValueError(f"{value!r} is not UID:GID; write e.g. \"1000:1000\"")
        return value
