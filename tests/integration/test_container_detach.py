"""`--runner docker --detach` and `pose jobs` against the real engine and image: the container
outlives `pose`, its log and cancel work by name, and cancel removes it and its launch folder."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from pose_in_docker import POSE

pytestmark = pytest.mark.docker


def _jobs(workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(POSE), "jobs", *args], env=workspace.env(), cwd=workspace.root, capture_output=True,
                          text=True, timeout=120)


def test_detach_then_jobs_list_logs_and_cancel(docker_client, workspace):
    started = workspace.pose("selftest", "--hold_s", "120", "--detach")
    assert started.returncode == 0, started.stdout
    # stdout (the name) and stderr (notices) arrive together here: the name is the line of its own.
    name = next(line for line in started.stdout.splitlines() if re.fullmatch(r"pose-[\w-]+", line))
    container = docker_client.containers.get(name)
    launch_dir = Path(container.labels["pose.launch_dir"])
    assert launch_dir.is_dir()
    assert name in _jobs(workspace, "list").stdout

    deadline = time.time() + 120
    while "holding" not in (logs := _jobs(workspace, "logs", name)).stdout:
        assert time.time() < deadline, logs.stdout + logs.stderr
        time.sleep(1)
    assert "selftest: RANK=0 WORLD_SIZE=1" in logs.stdout

    cancelled = _jobs(workspace, "cancel", name)
    assert cancelled.returncode == 0, cancelled.stderr
    assert name not in [c.name for c in docker_client.containers.list(all=True)]
    assert not launch_dir.exists()
