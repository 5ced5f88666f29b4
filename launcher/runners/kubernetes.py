"""The Kubernetes runner: an Indexed Job, a headless Service and a ConfigMap (see
`kubernetes_manifests`), created through the official `kubernetes` client, imported lazily so
that `pose --help` never loads it.

Foreground (default): pod 0's log is printed as it is written (container paths shown as host
paths), and `pose` returns the container exit code of the first pod that failed (else 0).
SIGINT/SIGTERM delete the Job with foreground propagation (its pods go first; the Service and
ConfigMap are owned by the Job and go with it) and return 130/143. `--detach` prints the Job's
name and returns 0.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from launcher.paths import LogPathMapper
from launcher.runners import Interrupted, detached, interrupts_raise
from launcher.runners.kubernetes_manifests import KubernetesJob, k8s_name, manifests, to_yaml
from pose_workloads.errors import BadInput

POLL_S = 1.0


def launch(call, plan, mounts, job_name: str, options, training: bool, notices: list[str]) -> int:
    """Plan, print (--dry-run) or create the Job; called by cluster_launch.launch_on_cluster."""
    from launcher.launch import notice

    files = launch_files(plan)
    gpus = 0 if options.gpus == 0 else call.nproc
    if not gpus:
        notices.append("--gpus 0: one CPU rank per pod (gloo)")
    job = KubernetesJob(call=call, name=k8s_name(call.task, uuid.uuid4().hex[:6]), files=files,
                        settings=mounts.kubernetes, gpus_per_pod=gpus)
    objects = manifests(job)  # BadInput for a mount without a volume, before anything else
    if not options.dry_run:
        api = connect()
    for text in notices:
        notice(text)
    if options.dry_run:
        print(to_yaml(objects), end="")
        return 0
    create(api, objects)
    if options.detach:
        return detached(job.name, f"created Kubernetes Job {job.name}")
    print(f"pose: created Kubernetes Job {job.name} in {job.settings.namespace} ({call.num_nodes} pod(s))",
          file=sys.stderr, flush=True)
    with interrupts_raise():
        try:
            return follow(api, job.name, job.settings.namespace, LogPathMapper(call.log_paths))
        except Interrupted as stop:
            print(f"pose: {stop} received: deleting Job {job.name}", file=sys.stderr, flush=True)
            delete(api, job.name, job.settings.namespace)
            return stop.exit_code


def launch_files(plan) -> dict[str, str]:
    """The translated specs as ConfigMap data, written by the same code as the Docker runner's."""
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="pose-k8s-")) / "launch"
    plan.launch_dir = folder
    try:
        plan.write_specs()
        return {p.name: p.read_text() for p in sorted(folder.iterdir())}
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


class Api:
    """The two API groups pose uses."""

    def __init__(self, client_module):
        self.core = client_module.CoreV1Api()
        self.batch = client_module.BatchV1Api()


def connect() -> Api:
    """A client from $KUBECONFIG / ~/.kube/config, or in-cluster; BadInput when there is none."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise BadInput("--runner k8s: the kubernetes client is not installed; pip install 'pose[cluster]'") from None
    try:
        config.load_kube_config()
    except Exception as err:  # no file, no context, a broken file: all mean "no cluster configured"
        try:
            config.load_incluster_config()
        except config.ConfigException:
            where = os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise BadInput(f"--runner k8s: no usable kubeconfig ({where}: {str(err).splitlines()[0]}); "
                           "set KUBECONFIG to your cluster's config") from None
    api = Api(client)
    try:
        api.core.get_api_resources(_request_timeout=10)
    except Exception as err:
        raise BadInput(f"--runner k8s: the cluster in the kubeconfig does not answer ({str(err).splitlines()[0]}); "
                       "check KUBECONFIG and the API server") from None
    return api


def create(api: Api, objects: list[Any]) -> None:
    """The Job first, then the ConfigMap and Service owned by it (deleting the Job removes them)."""
    from kubernetes import client as k

    config_map, service, job = objects
    namespace = job.metadata.namespace
    try:
        created = api.batch.create_namespaced_job(namespace, job)
    except k.ApiException as err:
        raise BadInput(
            f"Kubernetes refused the Job: {_reason(err)}; fix the mounts file's Kubernetes section") from None
    owner = k.V1OwnerReference(api_version="batch/v1", kind="Job", name=created.metadata.name,
                               uid=created.metadata.uid, block_owner_deletion=True)
    for obj in (config_map, service):
        obj.metadata.owner_references = [owner]
    api.core.create_namespaced_config_map(namespace, config_map)
    api.core.create_namespaced_service(namespace, service)


def _reason(err: Any) -> str:
    import json

    try:
        return json.loads(err.body).get("message", err.reason)
    except (TypeError, ValueError):
        return str(err.reason)


def pods(api: Api, name: str, namespace: str) -> list[Any]:
    return api.core.list_namespaced_pod(namespace, label_selector=f"pose.job={name}").items


def failed_exit_code(job_pods: list[Any]) -> int | None:
    """The container exit code of the first pod that failed (by finish time); None if none did."""
    failures = []
    for pod in job_pods:
        for status in pod.status.container_statuses or []:
            done = status.state.terminated if status.state else None
            if done is not None and done.exit_code != 0:
                failures.append((done.finished_at or 0, done.exit_code))
    return min(failures, key=lambda f: str(f[0]))[1] if failures else None


def job_finished(api: Api, name: str, namespace: str) -> bool:
    status = api.batch.read_namespaced_job_status(name, namespace).status
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in status.conditions or [])


def follow(api: Api, name: str, namespace: str, rewrite=lambda line: line) -> int:
    """Print pod 0's log as it is written; when the Job ends, its exit code."""
    pod0 = None
    while pod0 is None or pod0.status.phase == "Pending":
        found = [p for p in pods(api, name, namespace)
                 if (p.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index") == "0"]
        pod0 = found[0] if found else None
        if pod0 is None or pod0.status.phase == "Pending":
            if job_finished(api, name, namespace):
                break
            time.sleep(POLL_S)
    if pod0 is not None and pod0.status.phase != "Pending":
        stream = api.core.read_namespaced_pod_log(pod0.metadata.name, namespace, container="task", follow=True,
                                                  _preload_content=False)
        for line in stream:
            sys.stdout.write(rewrite(line.decode(errors="replace").rstrip("\n")) + "\n")
            sys.stdout.flush()
    while not job_finished(api, name, namespace):
        time.sleep(POLL_S)
    code = failed_exit_code(pods(api, name, namespace))
    return code or 0


def delete(api: Api, name: str, namespace: str, wait_s: float = 120.0) -> None:
    """Delete the Job with foreground propagation and wait until its pods are gone."""
    from kubernetes import client as k

    try:
        api.batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground")
    except k.ApiException as err:
        if err.status == 404:
            raise BadInput(f"no Kubernetes Job {name} in namespace {namespace}; see `pose jobs list`") from None
        raise
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and pods(api, name, namespace):
        time.sleep(POLL_S)
