"""What TAO's launcher gets wrong, against a real engine: a failed task's exit code comes back,
Ctrl-C (or SIGTERM) stops the task and leaves no container, and bad input is refused on the host
in one line with exit code 2 before any container exists."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml
from pose_in_docker import write_mounts

pytestmark = pytest.mark.docker


def test_failing_task_exit_code_comes_back_from_the_container(docker_client, workspace):
    # What the workload itself exits with, run directly (no launcher in between).
    direct = subprocess.run([sys.executable, "-m", "pose_workloads", "selftest", "--fail_rank", "0"],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert direct.returncode not in (0, 1, 2), "selftest --fail_rank must exit with a code of its own"

    result = workspace.pose("selftest", "--fail_rank", "0")

    assert result.returncode == direct.returncode, result.stdout
    assert "failing on purpose" in result.stdout
    assert workspace.containers(docker_client) == []


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_to_pose_stops_the_task_and_leaves_no_container(docker_client, workspace, signum, exit_code):
    running = workspace.start_pose("selftest", "--hold_s", "300")
    try:
        assert running.wait_for_line("holding", timeout_s=120), running.output()
        assert workspace.containers(docker_client), "the task should be running in a container"
        sent = time.monotonic()
        running.process.send_signal(signum)
        code = running.process.wait(timeout=60)
    finally:
        if running.process.poll() is None:
            running.process.kill()
    assert code == exit_code, running.output()
    assert time.monotonic() - sent < 30, "pose should stop the task promptly, not wait for it to end"
    assert workspace.containers(docker_client) == []


def _bad_mounts_json(ws):
    ws.mounts_file.write_text('{"Mounts": [{"source": ')
    return ["dataset", "synth", "-o", str(ws.results / "x")], str(ws.mounts_file)


def _unknown_mounts_key(ws):
    ws.mounts_file.write_text(json.dumps({"Mounts": [], "Volumes": []}))
    return ["dataset", "synth", "-o", str(ws.results / "x")], "Volumes"


def _missing_mount_source(ws):
    missing = ws.root / "no-such-dir"
    write_mounts(ws.mounts_file, [{"source": str(missing), "destination": "/workspace/results"}])
    return ["dataset", "synth", "-o", str(ws.results / "x")], str(missing)


def _path_outside_mounts(ws):
    outside = ws.root / "elsewhere"
    outside.mkdir()
    return ["dataset", "synth", "-o", str(outside / "x")], str(outside / "x")


def _simple_pose_spec(ws, train: dict) -> str:
    synth = ws.data / "synth"
    spec = ws.specs / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "model": {"name": "simple_pose_tiny"},
        "data": {"train_images": str(synth / "images"),
                 "train_annotations": str(synth / "annotations/person_keypoints.json"),
                 "val_images": str(synth / "images"),
                 "val_annotations": str(synth / "annotations/person_keypoints.json")},
        "train": train,
    }))
    return str(spec)


def _spec_with_wrong_type(ws):
    spec = _simple_pose_spec(ws, {"epochs": "many"})
    return ["simple-pose", "train", "-e", spec, "-r", str(ws.results / "run")], "train.epochs"


def _unknown_set_key(ws):
    spec = _simple_pose_spec(ws, {"epochs": 1})
    return ["simple-pose", "train", "-e", spec, "-r", str(ws.results / "run"), "--set", "train.epochz=2"], "epochz"


def _missing_spec(ws):
    spec = ws.specs / "no-such-spec.yaml"
    return ["simple-pose", "train", "-e", str(spec), "-r", str(ws.results / "run")], str(spec)


@pytest.mark.parametrize("make_case", [
    _bad_mounts_json, _unknown_mounts_key, _missing_mount_source, _path_outside_mounts,
    _spec_with_wrong_type, _unknown_set_key, _missing_spec,
], ids=lambda f: f.__name__.strip("_"))
def test_bad_input_fails_in_one_line_before_any_container_exists(docker_client, workspace, make_case):
    args, named = make_case(workspace)

    result = workspace.pose(*args, timeout=60)

    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stdout
    assert named in lines[0]
    assert workspace.containers(docker_client) == []
