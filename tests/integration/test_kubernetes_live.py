"""`pose --runner k8s` against a live cluster: runs only when KUBECONFIG points at one that
answers (no Kubernetes can run on the machines this project is built on; the manifests are
checked offline in tests/launcher/test_kubernetes_manifests.py). The cluster must be able to pull
pose-pytorch:<version> (push it to a registry it reads, or load it into kind/k3s)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pose_workloads.errors import BadInput

POSE = Path(sys.executable).with_name("pose")


@pytest.fixture(scope="module")
def live_cluster():
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("KUBECONFIG is not set: no Kubernetes cluster to run on")
    from launcher.runners.kubernetes import connect

    try:
        connect()
    except BadInput as err:
        pytest.skip(str(err))


def _pose(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "mounts.json").write_text("{}")
    env = {**os.environ, "POSE_MOUNTS": str(tmp_path / "mounts.json")}
    return subprocess.run([str(POSE), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)


def test_two_pods_rendezvous_and_a_failed_ranks_code_comes_back(live_cluster, tmp_path):
    ok = _pose(tmp_path, "selftest", "--runner", "k8s", "--num_nodes", "2", "--gpus", "0")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "selftest: RANK=0 WORLD_SIZE=2" in ok.stdout and "all_reduce=3 expected=3 ok" in ok.stdout
    failed = _pose(tmp_path, "selftest", "--runner", "k8s", "--num_nodes", "2", "--gpus", "0", "--fail_rank", "1")
    assert failed.returncode == 3, failed.stdout + failed.stderr
