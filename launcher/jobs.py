"""`pose jobs list | logs JOB [--follow] | cancel JOB`: detached tasks on the three engines.

Each engine already keeps its jobs; pose only marks its own and asks the engine:

    Docker      containers labelled pose.detached=1 (`--runner docker --detach`), named pose-...
    Slurm       jobs with comment "pose" (every `--runner slurm` job); a job id is a number
    Kubernetes  Jobs labelled app.kubernetes.io/managed-by=pose in the mounts file's namespace

An engine that is not there (no Docker engine, no sbatch, no kubeconfig) is skipped by `list`;
a JOB no engine knows is one line, exit 2.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from launcher.paths import LogPathMapper
from pose_workloads.errors import BadInput


@dataclass(frozen=True)
class JobRow:
    engine: str  # docker | slurm | k8s
    id: str
    task: str
    state: str


def _docker_client():
    try:
        from launcher.runners.docker import connect

        return connect(timeout=10)
    except BadInput:
        return None


def _kubernetes():
    """(api, namespace), or None without a usable kubeconfig."""
    from launcher.mounts import load_mounts

    try:
        from launcher.runners.kubernetes import connect

        return connect(), load_mounts().kubernetes.namespace
    except BadInput:
        return None


def list_jobs() -> list[JobRow]:
    rows: list[JobRow] = []
    client = _docker_client()
    if client is not None:
        for c in client.containers.list(all=True, filters={"label": "pose.detached=1"}):
            rows.append(JobRow("docker", c.name, c.labels.get("pose.task", ""), c.status))
    if shutil.which("squeue"):
        from launcher.runners.slurm import slurm_command

        done = slurm_command(["squeue", "--noheader", "--format=%i|%j|%T|%k"])
        for line in done.stdout.splitlines() if done.returncode == 0 else []:
            job_id, name, state, comment = (line.split("|") + ["", "", ""])[:4]
            if comment == "pose":
                rows.append(JobRow("slurm", job_id, name.removeprefix("pose-"), state))
    k8s = _kubernetes()
    if k8s is not None:
        api, namespace = k8s
        for job in api.batch.list_namespaced_job(namespace, label_selector="app.kubernetes.io/managed-by=pose").items:
            conditions = [c.type for c in job.status.conditions or [] if c.status == "True"]
            rows.append(JobRow("k8s", job.metadata.name, job.metadata.labels.get("pose.task", ""),
                               conditions[-1] if conditions else "Running"))
    return rows


def print_jobs() -> int:
    rows = list_jobs()
    if not rows:
        print("no pose jobs (detached Docker containers, Slurm jobs, Kubernetes Jobs)")
        return 0
    print(f"{'ENGINE':<8} {'JOB':<34} {'TASK':<22} STATE")
    for row in rows:
        print(f"{row.engine:<8} {row.id:<34} {row.task:<22} {row.state}")
    return 0


def find(job: str) -> str:
    """Which engine knows `job`: docker, slurm or k8s; BadInput when none does."""
    if job.isdigit():
        from launcher.runners.slurm import job_state

        if shutil.which("scontrol") and job_state(job).state:
            return "slurm"
    else:
        client = _docker_client()
        if client is not None and client.containers.list(all=True,
                                                         filters={"name": f"^{job}$", "label": "pose.detached=1"}):
            return "docker"
        k8s = _kubernetes()
        if k8s is not None:
            api, namespace = k8s
            if api.batch.list_namespaced_job(namespace, field_selector=f"metadata.name={job}").items:
                return "k8s"
    raise BadInput(
        f"no pose job {job}: no Docker container, Slurm job or Kubernetes Job has that id; see `pose jobs list`")


def _slurm_rewrite(log_file: str):
    paths = Path(log_file).with_name("log_paths.json")
    pairs = json.loads(paths.read_text()) if paths.is_file() else []
    return LogPathMapper([tuple(p) for p in pairs])


def logs(job: str, follow: bool = False) -> int:
    """Print the job's log (Slurm: its output file; Docker: the container's; Kubernetes: pod 0's);
    with `follow`, until the job ends, returning its exit code."""
    engine = find(job)
    if engine == "slurm":
        from launcher.runners import slurm

        state = slurm.job_state(job)
        rewrite = _slurm_rewrite(state.log_file)
        if follow:
            return slurm.follow(job, Path(state.log_file), rewrite)
        slurm.LogFollower(Path(state.log_file), rewrite).poll(final=True)
        return 0
    if engine == "docker":
        from launcher.runners.docker import stream_logs

        client = _docker_client()
        client.api.timeout = None
        container = client.containers.get(job)
        rewrite = LogPathMapper([tuple(p) for p in json.loads(container.labels.get("pose.log_paths", "[]"))])
        # The engine's log stream: stdout and stderr already merged, in order.
        chunks = client.api.logs(container.id, stream=True, follow=follow, stdout=True, stderr=True)
        stream_logs(((chunk, None) for chunk in chunks), rewrite)
        return int(container.wait()["StatusCode"]) if follow else 0
    from launcher.runners import kubernetes

    api, namespace = _kubernetes()
    if follow:
        return kubernetes.follow(api, job, namespace)
    for pod in kubernetes.pods(api, job, namespace)[:1]:
        sys.stdout.write(api.core.read_namespaced_pod_log(pod.metadata.name, namespace, container="task"))
    return 0


def cancel(job: str) -> int:
    """Stop the job and wait until it is gone (Docker: the container and its launch folder too)."""
    engine = find(job)
    if engine == "slurm":
        from launcher.runners import slurm

        slurm.cancel(job)
    elif engine == "docker":
        client = _docker_client()
        container = client.containers.get(job)
        launch_dir = container.labels.get("pose.launch_dir")
        container.stop(timeout=10)
        container.remove(force=True)
        if launch_dir:
            shutil.rmtree(launch_dir, ignore_errors=True)
    else:
        from launcher.runners import kubernetes

        api, namespace = _kubernetes()
        kubernetes.delete(api, job, namespace)
    print(f"pose: cancelled {engine} job {job}", file=sys.stderr)
    return 0
