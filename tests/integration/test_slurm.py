"""`pose --runner slurm` against a real Slurm: the private 2-node cluster of scripts/slurm.sh
(`bash scripts/slurm.sh start; export SLURM_CONF=/tmp/pose-slurm/slurm.conf`), two slurmd on one
host. Skipped when no controller answers, unless POSE_REQUIRE_SLURM=1 (.ci/run), which makes a
missing cluster a failure. Tiny on purpose: CPU ranks (gloo), 96x96 images, a few steps."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

POSE = Path(sys.executable).with_name("pose")


def _cluster_answers() -> str:
    if shutil.which("sinfo") is None:
        return "sinfo not found (apt-get install slurm-wlm munge; bash scripts/slurm.sh start)"
    done = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%t"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return (f"no Slurm controller answers ({done.stderr.strip()[:120]}); "
                "bash scripts/slurm.sh start and export SLURM_CONF")
    if len(done.stdout.split()) < 2:
        return "the Slurm cluster has fewer than 2 nodes up"
    return ""


@pytest.fixture(scope="session")
def slurm() -> None:
    why = _cluster_answers()
    if why:
        if os.environ.get("POSE_REQUIRE_SLURM") == "1":
            pytest.fail(f"{why}, and POSE_REQUIRE_SLURM is set", pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slurm-data") / "synth"
    subprocess.run([sys.executable, "-m", "pose_workloads", "dataset", "synth", "-o", str(root), "--images", "24",
                    "--size", "96x96", "--max_people", "1", "--seed", "3"], check=True, capture_output=True,
                    timeout=120)
    return root


class Cluster:
    """A work folder with a mounts file whose Slurm section runs the workloads of this venv."""

    def __init__(self, root: Path, synth: Path, runtime: str = "none"):
        self.root, self.synth = root, synth
        (root / "launch").mkdir()
        self.mounts = root / "mounts.json"
        self.mounts.write_text(json.dumps({"Slurm": {"container_runtime": runtime, "launch_dir": str(root / "launch"),
                                                     "python": sys.executable}}))

    def env(self) -> dict[str, str]:
        # One thread a rank: the same arithmetic in every run compared below.
        return {**os.environ, "POSE_MOUNTS": str(self.mounts), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def spec(self, epochs: int = 2, batch_size: int = 2) -> Path:
        """batch_size is per rank; BatchNorm frozen, so that 2 ranks of 2 train as 1 process of 4."""
        path = self.root / f"spec{epochs}-{batch_size}.yaml"
        annotations = str(self.synth / "annotations" / "person_keypoints.json")
        path.write_text(yaml.safe_dump({
            "model": {"name": "simple_pose_tiny"},
            "data": {"train_images": str(self.synth / "images"), "train_annotations": annotations,
                     "val_images": str(self.synth / "images"), "val_annotations": annotations, "workers": 0},
            "train": {"input_size": [96, 96], "batch_size": batch_size, "epochs": epochs, "eval_every": 0,
                      "amp": False, "freeze_batchnorm": True},
            "evaluate": {"batch_size": 8, "flip_test": False},
        }))
        return path

    def pose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(POSE), *args], env=self.env(), cwd=self.root, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([str(POSE), *args], env=self.env(), cwd=self.root, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def cluster(slurm, tmp_path, synth) -> Cluster:
    return Cluster(tmp_path, synth)


SLURM = ("--runner", "slurm", "--num_nodes", "2")


def _job_id(text: str) -> str:
    return re.search(r"submitted Slurm job (\d+)", text).group(1)


def _in_queue(job_id: str) -> bool:
    done = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format=%i"], capture_output=True, text=True)
    return job_id in done.stdout


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def test_two_nodes_one_rank_each(cluster):
    result = cluster.pose("selftest", *SLURM)
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in (0, 1):
        assert f"selftest: RANK={rank} WORLD_SIZE=2" in result.stdout
    assert "all_reduce=3 expected=3 ok" in result.stdout


def test_a_failed_ranks_own_code_reaches_pose(cluster):
    result = cluster.pose("selftest", *SLURM, "--fail_rank", "1")
    assert result.returncode == 3, result.stdout + result.stderr


def test_ctrl_c_cancels_the_job_and_exits_130(cluster):
    running = cluster.start("selftest", *SLURM, "--hold_s", "120")
    lines = []
    deadline = time.time() + 120
    while sum("holding" in line for line in lines) < 2:
        assert time.time() < deadline and running.poll() is None, "".join(lines)
        lines.append(running.stdout.readline())
    job_id = _job_id("".join(lines))
    running.send_signal(signal.SIGINT)
    output = running.communicate(timeout=120)[0]
    assert running.returncode == 130, "".join(lines) + output
    assert not _in_queue(job_id)  # pose returned only once the job had left the queue


def test_detach_then_jobs_logs_and_cancel(cluster):
    started = cluster.pose("selftest", *SLURM, "--hold_s", "120", "--detach")
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    assert job_id.isdigit()
    listed = cluster.pose("jobs", "list")
    assert re.search(rf"slurm\s+{job_id}\s+selftest", listed.stdout), listed.stdout
    deadline = time.time() + 120
    while "holding" not in (logs := cluster.pose("jobs", "logs", job_id)).stdout:
        assert time.time() < deadline, logs.stdout + logs.stderr
        time.sleep(1)
    assert "selftest: RANK=0 WORLD_SIZE=2" in logs.stdout
    cancelled = cluster.pose("jobs", "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert not _in_queue(job_id)
    unknown = cluster.pose("jobs", "cancel", "987654")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "no pose job 987654" in unknown.stderr


def test_a_job_slurm_refuses_is_its_reason_in_one_line(cluster):
    result = cluster.pose("selftest", *SLURM, "--partition", "no-such-partition")
    assert result.returncode == 2
    assert result.stderr.startswith("error: Slurm refused the job: ") and result.stderr.count("\n") == 1, result.stderr
    assert "invalid partition" in result.stderr.lower()
    assert list((cluster.root / "launch").iterdir()) == []  # nothing half-written stays


def test_a_path_outside_the_mounts_is_refused_before_submission(slurm, tmp_path, synth):
    docker_runtime = Cluster(tmp_path, synth, runtime="docker")
    result = docker_runtime.pose("simple-pose", "train", "-e", str(docker_runtime.spec()), "-r", str(tmp_path / "r"),
                                 *SLURM)
    assert result.returncode == 2 and "is outside every mount" in result.stderr
    assert list((tmp_path / "launch").iterdir()) == []


@pytest.mark.slow
def test_two_node_training_matches_one_process_and_survives_preemption(cluster):
    """runtime none, 2 nodes x 1 rank: the same weights as 1 process of the same global batch;
    then USR1 mid-run -> checkpoint -> requeue -> resume -> the same weights again."""
    spec = cluster.spec(epochs=3)
    local = cluster.pose("simple-pose", "train", "-e", str(cluster.spec(epochs=3, batch_size=4)), "-r",
                         str(cluster.root / "local"), "--runner", "local")
    assert local.returncode == 0, local.stdout + local.stderr
    straight = cluster.pose("simple-pose", "train", "-e", str(spec), "-r", str(cluster.root / "slurm"), *SLURM)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    assert _max_diff(cluster.root / "slurm" / "model_final.pth", cluster.root / "local" / "model_final.pth") <= 1e-6

    running = cluster.start("simple-pose", "train", "-e", str(spec), "-r", str(cluster.root / "preempted"), *SLURM)
    lines = []
    while not any("epoch 1/3 [2/" in line for line in lines):
        line = running.stdout.readline()
        assert line or running.poll() is None, "".join(lines)
        lines.append(line)
    job_id = _job_id("".join(lines))
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    output = "".join(lines) + running.communicate(timeout=600)[0]
    assert running.returncode == 0, output
    assert "requeueing job" in output and "restart 1" in output and "resuming from" in output, output
    assert _max_diff(cluster.root / "preempted" / "model_final.pth", cluster.root / "local" / "model_final.pth") <= 1e-6


@pytest.mark.docker
@pytest.mark.slow
def test_two_node_training_in_docker_matches_one_process(slurm, docker_client, tmp_path, synth):
    """runtime docker: each node runs `docker run` with the Docker runner's own options (the
    private engine of $DOCKER_HOST and the pose-pytorch image); the dataset read-only, results
    written through a mount, host paths on the command line as always."""
    data = tmp_path / "data"
    shutil.copytree(synth, data / "synth")
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    results = tmp_path / "results"
    results.mkdir(mode=0o777)
    in_docker = Cluster(tmp_path, data / "synth", runtime="docker")
    settings = json.loads(in_docker.mounts.read_text())
    in_docker.mounts.write_text(json.dumps({**settings, "Mounts": [
        {"source": str(data), "destination": "/workspace/data", "read_only": True},
        {"source": str(tmp_path), "destination": "/workspace/run"},
    ], "Envs": [{"variable": "OMP_NUM_THREADS", "value": "1"}]}))
    spec = in_docker.spec(epochs=2)
    local = in_docker.pose("simple-pose", "train", "-e", str(in_docker.spec(epochs=2, batch_size=4)), "-r",
                           str(results / "local"), "--runner", "local")
    assert local.returncode == 0, local.stdout + local.stderr
    run = in_docker.pose("simple-pose", "train", "-e", str(spec), "-r", str(results / "docker"), *SLURM,
                         "--container_runtime", "docker")
    assert run.returncode == 0, run.stdout + run.stderr
    assert str(results / "docker") in run.stdout  # container paths shown as host paths
    assert _max_diff(results / "docker" / "model_final.pth", results / "local" / "model_final.pth") <= 1e-6
    # The containers are gone once the job is (docker run --rm, and node.sh removes them by name).
    assert not [c for c in docker_client.containers.list(all=True) if c.name.startswith("pose-")
                and str(tmp_path) in json.dumps(c.attrs.get("Mounts", []))]
