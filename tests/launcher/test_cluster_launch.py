"""The cluster runners' checks and decisions, without a cluster: what is refused before anything
is submitted (one line, exit 2), and how the Kubernetes runner reads a finished Job."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from kubernetes import client as k

from launcher.runners import kubernetes
from launcher.runners.slurm import _exit_code, _fields


@pytest.fixture
def slurm_mounts(project: Path) -> Path:
    (project / "launch").mkdir()
    (project / "mounts.json").write_text(json.dumps({"Slurm": {"launch_dir": str(project / "launch"),
                                                               "container_runtime": "none"}}))
    return project / "launch"


def test_no_sbatch_is_one_line_and_nothing_is_written(slurm_mounts, bad_input, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    line = bad_input("selftest", "--runner", "slurm")
    assert "sbatch not found on PATH" in line and "slurm-client" in line
    assert list(slurm_mounts.iterdir()) == []


def test_no_controller_is_one_line_naming_slurm_conf(slurm_mounts, bad_input, monkeypatch, tmp_path):
    if not __import__("shutil").which("sinfo"):
        pytest.skip("sinfo not installed (apt-get install slurm-client)")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=none\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=9\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    line = bad_input("selftest", "--runner", "slurm")
    assert "no Slurm controller answers" in line and str(conf) in line
    assert list(slurm_mounts.iterdir()) == []


@pytest.mark.parametrize("flags, words", [
    (("--gpu_index", "0"), "the slurm scheduler picks the GPUs"),
    (("--rdzv_endpoint", "h:1"), "the slurm runner sets them per node"),
    (("--num_nodes", "0"), "num_nodes >= 1"),
])
def test_what_the_scheduler_decides_is_refused(slurm_mounts, bad_input, flags, words):
    assert words in bad_input("selftest", "--runner", "slurm", "--dry-run", *flags)


def test_one_process_tasks_refuse_several_nodes(slurm_mounts, bad_input):
    assert "runs as one process" in bad_input("dataset", "synth", "-o", "out", "--runner", "slurm", "--num_nodes", "2",
                                              "--dry-run")


def test_dry_run_prints_sbatch_and_both_scripts_without_a_cluster(slurm_mounts, cli):
    result = cli("selftest", "--runner", "slurm", "--num_nodes", "2", "--partition", "gpu", "--time", "1:00:00",
                 "--dry-run")
    assert result.exit_code == 0, result.output
    assert "submit: sbatch --parsable" in result.stdout and "--partition=gpu" in result.stdout
    assert "--- " in result.stdout and "srun --ntasks-per-node=1 --nodes=2" in result.stdout
    assert '--node_rank "$SLURM_NODEID"' in result.stdout
    assert list(slurm_mounts.iterdir()) == []


def test_scontrol_fields_and_exit_codes():
    line = "JobId=7 JobName=pose-selftest JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 StdOut=/x/job.log"
    assert _fields(line)["JobState"] == "FAILED" and _fields(line)["StdOut"] == "/x/job.log"
    assert [_exit_code(c) for c in ("3:0", "0:0", "0:9", "")] == [3, 0, 137, None]


def _pod(index: int, code: int | None, finished_s: int) -> k.V1Pod:
    terminated = None if code is None else k.V1ContainerStateTerminated(
        exit_code=code, finished_at=datetime.fromtimestamp(finished_s, timezone.utc))
    return k.V1Pod(metadata=k.V1ObjectMeta(name=f"job-{index}"), status=k.V1PodStatus(
        phase="Failed" if code else "Succeeded",
        container_statuses=[k.V1ContainerStatus(name="task", image="i", image_id="", ready=False, restart_count=0,
                                                state=k.V1ContainerState(terminated=terminated))]))


def test_the_first_failing_pod_gives_the_exit_code():
    # Pod 1 failed first (3); pod 0 was torn down after it (137): pose reports 3.
    assert kubernetes.failed_exit_code([_pod(0, 137, 200), _pod(1, 3, 100)]) == 3
    assert kubernetes.failed_exit_code([_pod(0, 0, 100), _pod(1, 0, 101)]) is None


class FakeApi:
    """Records what the runner asks of the API server (no cluster here)."""

    def __init__(self):
        self.calls = []
        outer = self

        class Batch:
            def create_namespaced_job(self, namespace, job):
                outer.calls.append(("create job", namespace, job))
                return k.V1Job(metadata=k.V1ObjectMeta(name=job.metadata.name, uid="uid-1"))

            def delete_namespaced_job(self, name, namespace, propagation_policy=None):
                outer.calls.append(("delete job", name, propagation_policy))

        class Core:
            def create_namespaced_config_map(self, namespace, obj):
                outer.calls.append(("create configmap", namespace, obj))

            def create_namespaced_service(self, namespace, obj):
                outer.calls.append(("create service", namespace, obj))

            def list_namespaced_pod(self, namespace, label_selector=None):
                return k.V1PodList(items=[])

        self.batch, self.core = Batch(), Core()


def test_the_job_owns_its_configmap_and_service_and_goes_with_foreground_propagation():
    meta = k.V1ObjectMeta(name="pose-x", namespace="ns")
    objects = [k.V1ConfigMap(metadata=meta), k.V1Service(metadata=meta), k.V1Job(metadata=meta)]
    api = FakeApi()
    kubernetes.create(api, objects)
    assert [c[0] for c in api.calls] == ["create job", "create configmap", "create service"]
    for _, _, obj in api.calls[1:]:
        assert obj.metadata.owner_references[0].uid == "uid-1"
        assert obj.metadata.owner_references[0].kind == "Job"
    kubernetes.delete(api, "pose-x", "ns")
    assert api.calls[-1] == ("delete job", "pose-x", "Foreground")
