"""What the Kubernetes runner creates, as typed `kubernetes.client` models (pure; no cluster):

    ConfigMap  <name>          the launch directory (translated specs), mounted read-only at /pose_launch
    Service    <name>          headless (clusterIP None): pod i answers at <name>-<i>.<name>
    Job        <name>          batch/v1 Indexed: completions = parallelism = num_nodes, one pod per
                               node, rank = JOB_COMPLETION_INDEX; rendezvous at pod 0's DNS name

The pod is the Docker runner's container in Kubernetes terms: the same argv
(`workload_command`), environment, user (securityContext runAsUser/runAsGroup), /dev/shm size
(a memory emptyDir), GPUs (`nvidia.com/gpu` limits) and mounts (each mount's source mapped to a
PVC, NFS export or hostPath by the mounts file's `Kubernetes.volumes`, read_only kept).

No shell in the pod: the node rank and rendezvous reach torchrun through Kubernetes' own
`$(VAR)` expansion of container args; a literal `$(` in a user value is escaped as `$$(`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import pose_workloads
from launcher.clusters import KubernetesSection
from launcher.mounts import LAUNCH_DIR_DESTINATION
from launcher.runners import TASK_ENV, TaskCall, workload_command
from launcher.runners.docker import CONTAINER_USER_ENV, default_shm_size
from pose_workloads.errors import BadInput

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
MANAGED_BY = {"app.kubernetes.io/managed-by": "pose"}


@dataclass(frozen=True)
class KubernetesJob:
    call: TaskCall  # nproc = ranks per pod, num_nodes = pods; container paths
    name: str  # DNS-1123 label, also the Service and ConfigMap name
    files: dict[str, str]  # the launch directory: file name -> text
    settings: KubernetesSection
    gpus_per_pod: int = 0  # nvidia.com/gpu limit; 0: CPU ranks (gloo)

    @property
    def rdzv_endpoint(self) -> str:
        # Indexed Job pods are named <job>-<index> and, with subdomain=<service>, resolve as
        # <job>-<index>.<service> inside the namespace.
        return f"{self.name}-0.{self.name}:{self.settings.rdzv_port}"


def k8s_name(task: str, suffix: str) -> str:
    """A DNS-1123 label, short enough that `<name>-<index>` stays within 63 characters."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"pose-{task}".lower()).strip("-")[:45]
    return f"{base}-{suffix}"


def escape_expansion(value: str) -> str:
    """Kubernetes expands `$(VAR)` in command/args; `$$(` keeps a user's `$(` literal."""
    return value.replace("$(", "$$(")


def labels(job: KubernetesJob) -> dict[str, str]:
    return {**MANAGED_BY, "pose.task": re.sub(r"[^A-Za-z0-9_.-]", "-", job.call.task),
            "pose.version": pose_workloads.__version__, "pose.job": job.name}


def pod_args(job: KubernetesJob) -> list[str]:
    """The container's argv: `workload_command` with the node rank and rendezvous from env."""
    call = replace(job.call, args=tuple(escape_expansion(a) for a in job.call.args))
    if call.num_nodes <= 1:
        return workload_command(call, "python")
    argv = workload_command(replace(call, node_rank=0, rdzv_endpoint="$(POSE_RDZV_ENDPOINT)"), "python")
    argv[argv.index("--node_rank") + 1] = "$(JOB_COMPLETION_INDEX)"
    return argv


def pod_env(job: KubernetesJob) -> dict[str, str]:
    return {**CONTAINER_USER_ENV, **TASK_ENV, **job.call.env, "POSE_RDZV_ENDPOINT": job.rdzv_endpoint}


def shm_quantity(size: str | int | None) -> str:
    """Docker's shm_size ("16G", "512m", bytes) as a Kubernetes quantity (binary units)."""
    size = size or default_shm_size()
    if isinstance(size, int):
        return str(size)
    match = re.fullmatch(r"(\d+)([bkmgBKMG]?)", size)
    if match is None:
        raise BadInput(f"DockerOptions.shm_size: {size!r} is not a size; write bytes or a number with b, k, m or g")
    number, unit = match.groups()
    return number + {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}[unit.lower()]


def run_as(job: KubernetesJob) -> tuple[int, int]:
    text = job.settings.user or job.call.docker_options.user or job.call.user
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise BadInput(f"user {text!r}: Kubernetes needs numeric UID:GID; set Kubernetes.user in the mounts file")
    return int(uid), int(gid or uid)


def volumes(job: KubernetesJob) -> tuple[list[Any], list[Any]]:
    """(volumes, volumeMounts): every mount's source through the mounts file's Kubernetes.volumes,
    the launch ConfigMap, and /dev/shm. A mount without a volume: BadInput naming it."""
    from kubernetes import client as k

    by_source = {v.source.resolve(): v for v in job.settings.volumes}
    pod_volumes = [
        k.V1Volume(name="launch", config_map=k.V1ConfigMapVolumeSource(name=job.name)),
        k.V1Volume(name="shm", empty_dir=k.V1EmptyDirVolumeSource(
            medium="Memory", size_limit=shm_quantity(job.call.docker_options.shm_size))),
    ]
    mounts = [k.V1VolumeMount(name="launch", mount_path=LAUNCH_DIR_DESTINATION, read_only=True),
              k.V1VolumeMount(name="shm", mount_path="/dev/shm")]
    for i, mount in enumerate(m for m in job.call.mounts if m.destination != LAUNCH_DIR_DESTINATION):
        volume = by_source.get(mount.source)
        if volume is None:
            raise BadInput(f"mount {mount.source} -> {mount.destination} has no Kubernetes volume; add "
                           f'{{"source": "{mount.source}", "pvc": {{"claim_name": ...}}}} (or nfs, host_path) '
                           "to Kubernetes.volumes in the mounts file")
        name = f"mount-{i}"
        sub_path = None
        source: dict[str, Any]
        if volume.pvc is not None:
            source = {"persistent_volume_claim": k.V1PersistentVolumeClaimVolumeSource(
                claim_name=volume.pvc.claim_name, read_only=mount.read_only)}
            sub_path = volume.pvc.sub_path
        elif volume.nfs is not None:
            source = {"nfs": k.V1NFSVolumeSource(server=volume.nfs.server, path=volume.nfs.path,
                                                 read_only=mount.read_only)}
        else:
            assert volume.host_path is not None  # the model requires one of pvc, nfs, host_path
            source = {"host_path": k.V1HostPathVolumeSource(path=volume.host_path.path, type="Directory")}
        pod_volumes.append(k.V1Volume(name=name, **source))
        mounts.append(k.V1VolumeMount(name=name, mount_path=mount.destination, read_only=mount.read_only,
                                      sub_path=sub_path))
    return pod_volumes, mounts


def manifests(job: KubernetesJob) -> list[Any]:
    """[ConfigMap, Service, Job] for `job`."""
    from kubernetes import client as k

    call, settings = job.call, job.settings
    meta = k.V1ObjectMeta(name=job.name, namespace=settings.namespace, labels=labels(job))
    config_map = k.V1ConfigMap(api_version="v1", kind="ConfigMap", metadata=meta, data=dict(job.files))
    service = k.V1Service(api_version="v1", kind="Service", metadata=meta, spec=k.V1ServiceSpec(
        cluster_ip="None", selector={"pose.job": job.name},
        # Pod 0 must resolve before it is Ready: the other pods rendezvous while it starts.
        publish_not_ready_addresses=True,
        ports=[k.V1ServicePort(name="rdzv", port=settings.rdzv_port, target_port=settings.rdzv_port)],
    ))
    pod_volumes, volume_mounts = volumes(job)
    uid, gid = run_as(job)
    env = [k.V1EnvVar(name="JOB_COMPLETION_INDEX", value_from=k.V1EnvVarSource(
        field_ref=k.V1ObjectFieldSelector(field_path=f"metadata.annotations['{INDEX_ANNOTATION}']")))]
    env += [k.V1EnvVar(name=name, value=value) for name, value in pod_env(job).items()]
    limits = {"nvidia.com/gpu": str(job.gpus_per_pod)} if job.gpus_per_pod else None
    container = k.V1Container(
        name="task", image=call.image, args=pod_args(job), env=env,
        working_dir=call.workdir or None, volume_mounts=volume_mounts,
        resources=k.V1ResourceRequirements(limits=limits) if limits else None,
        ports=[k.V1ContainerPort(container_port=settings.rdzv_port, name="rdzv")],
    )
    pod = k.V1PodSpec(
        containers=[container], restart_policy="Never", subdomain=job.name, volumes=pod_volumes,
        security_context=k.V1PodSecurityContext(run_as_user=uid, run_as_group=gid),
        node_selector=dict(settings.node_selector) or None,
        tolerations=[k.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect,
                                    toleration_seconds=t.toleration_seconds) for t in settings.tolerations] or None,
        image_pull_secrets=(
            [k.V1LocalObjectReference(name=settings.image_pull_secret)] if settings.image_pull_secret else None),
    )
    batch_job = k.V1Job(api_version="batch/v1", kind="Job", metadata=meta, spec=k.V1JobSpec(
        completion_mode="Indexed", completions=call.num_nodes, parallelism=call.num_nodes,
        # A failed rank fails the run, as with Docker and Slurm: no pod retries.
        backoff_limit=0,
        template=k.V1PodTemplateSpec(metadata=k.V1ObjectMeta(labels=labels(job)), spec=pod),
    ))
    return [config_map, service, batch_job]


def to_dicts(objects: list[Any]) -> list[dict[str, Any]]:
    """The manifests as the API server reads them (camelCase keys, no nulls)."""
    from kubernetes.client import ApiClient

    return [ApiClient().sanitize_for_serialization(o) for o in objects]


def to_yaml(objects: list[Any]) -> str:
    import yaml

    return yaml.safe_dump_all(to_dicts(objects), sort_keys=False)
