"""The Docker runner against a real engine and the real `pose-pytorch:<version>` image.

Skipped only when no engine answers (or the image is missing) and POSE_REQUIRE_DOCKER is unset;
with POSE_REQUIRE_DOCKER=1 (CI) those are failures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from launcher.images import image_tag
from pose_workloads.errors import BadInput

pytestmark = pytest.mark.docker


def _unavailable(reason: str):
    if os.environ.get("POSE_REQUIRE_DOCKER"):
        pytest.fail(f"POSE_REQUIRE_DOCKER is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine():
    import docker

    from launcher.runners.docker import connect

    try:
        client = connect(timeout=10)
    except BadInput as err:
        _unavailable(str(err))
    try:
        client.images.get(image_tag("pytorch"))
    except docker.errors.ImageNotFound:
        _unavailable(f"image {image_tag('pytorch')} not found (pose images build pytorch)")
    return client


@pytest.fixture
def workspace(tmp_path: Path):
    """exp/ (writable, owned by a made-up invoking user) and data/ (read-only) mounted; a `pose`
    command line that runs as that user (SUDO_UID/SUDO_GID, as under sudo) in exp/."""
    uid, gid = 43210, 43211
    exp, data = tmp_path / "exp", tmp_path / "data"
    exp.mkdir()
    data.mkdir()
    (data / "sample.txt").write_text("dataset")
    tmp_path.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(exp, uid, gid)
    (tmp_path / "mounts.json").write_text(json.dumps({"Mounts": [
        {"source": str(exp), "destination": "/workspace/exp"},
        {"source": str(data), "destination": "/workspace/data", "read_only": True},
    ]}))
    env = {**os.environ, "POSE_MOUNTS": str(tmp_path / "mounts.json")}
    if os.geteuid() == 0:
        env.update(SUDO_UID=str(uid), SUDO_GID=str(gid))

    def pose(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher.cli", *args, "--runner", "docker"], env=env, cwd=exp,
                              capture_output=True, text=True, timeout=300, **kwargs)

    pose.env, pose.exp, pose.data, pose.uid = env, exp, data, (uid if os.geteuid() == 0 else os.getuid())
    return pose


def pose_containers(engine, marker: str = "") -> list[str]:
    """Names of pose's containers (any state) whose command mentions `marker`."""
    found = []
    for container in engine.containers.list(all=True, filters={"label": "pose.task"}):
        if marker in " ".join(container.attrs["Config"].get("Cmd") or []):
            found.append(container.name)
    return found


def test_failing_task_exit_code_comes_back_and_container_is_removed(engine, workspace):
    marker = "0.0123"  # unique --hold_s value, to tell this test's container from others'
    result = workspace("selftest", "--fail_rank", "0", "--hold_s", marker)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "selftest: RANK=0 failing on purpose" in result.stdout
    assert pose_containers(engine, marker) == []


def test_task_sees_a_read_only_dataset_and_writes_outputs_as_the_invoking_user(engine, workspace):
    result = workspace("info", "--workload")
    assert result.returncode == 0, result.stderr
    # The task prints container paths; pose shows them as host paths.
    assert f"mount {workspace.data} (ro)" in result.stdout
    assert f"mount {workspace.exp} (rw)" in result.stdout
    assert f"user {workspace.uid}:" in result.stdout

    result = workspace("dataset", "synth", "-o", "synth", "--images", "2", "--size", "64x64")
    assert result.returncode == 0, result.stderr
    written = [p for p in (workspace.exp / "synth").rglob("*")]
    assert written and all(p.stat().st_uid == workspace.uid for p in written)


def test_sigint_to_pose_stops_and_removes_the_container(engine, workspace, signal_when_holding):
    marker = "59.75"  # unique --hold_s value, to find this test's container

    def container_running() -> None:
        assert pose_containers(engine, marker), "the task's container should be running"

    returncode, stderr = signal_when_holding(
        [sys.executable, "-m", "launcher.cli", "selftest", "--hold_s", marker, "--runner", "docker"], signal.SIGINT,
        workspace.exp, workspace.env, container_running)
    assert returncode == 130, stderr
    assert pose_containers(engine, marker) == []


def test_bad_input_creates_no_container(engine, workspace):
    marker, hold_marker = f"marker-{uuid.uuid4().hex[:8]}", "58.125"
    cases = [
        ("selftest", "--hold_s", hold_marker, "--set", "a=1"),  # no spec to override
        ("simple-pose", "train", "-e", f"{marker}.yaml", "-r", marker),  # missing spec
        ("simple-pose", "inference", "-m", "nope.pth", "--input", "x", "-r", f"/opt/{marker}"),  # outside mounts
        ("dataset", "synth", "-o", f"{workspace.data}/{marker}"),  # output in the read-only mount
    ]
    for argv in cases:
        result = workspace(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert pose_containers(engine, marker) == [] and pose_containers(engine, hold_marker) == []
