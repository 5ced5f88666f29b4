"""Signals and resources: SIGHUP stops a task like SIGTERM (exit 129), and the launch folder
(translated specs) is removed on every way out: success, failure, signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private TMPDIR (where launch folders go) and an empty mounts file."""
    (tmp_path / "tmp").mkdir()
    (tmp_path / "mounts.json").write_text("{}")
    return {**os.environ, "POSE_MOUNTS": str(tmp_path / "mounts.json"), "TMPDIR": str(tmp_path / "tmp")}


def pose(*args: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", *args]


def launch_folders(env: dict[str, str]) -> list[Path]:
    return sorted(Path(env["TMPDIR"]).glob("pose-launch-*"))


@pytest.mark.parametrize("signum, code, said", [
    (signal.SIGHUP, 129, "terminated (SIGHUP)"),
    (signal.SIGTERM, 143, "terminated"),
    (signal.SIGINT, 130, "interrupted"),
], ids=["SIGHUP", "SIGTERM", "SIGINT"])
def test_stop_signal_stops_the_task_exits_128_plus_n_and_removes_the_launch_folder(
    env, tmp_path, signum, code, said, signal_when_holding
):
    def one_launch_folder() -> None:
        assert len(launch_folders(env)) == 1  # the task is running: its folder exists

    returncode, stderr = signal_when_holding(pose("selftest", "--runner", "local", "--hold_s", "120"), signum,
                                             tmp_path, env, one_launch_folder)
    assert returncode == code, stderr
    assert f"pose: {signal.Signals(signum).name} received: stopping selftest" in stderr
    assert said in stderr  # the workload itself saw the forwarded signal and unwound
    assert launch_folders(env) == []


@pytest.mark.parametrize("args, code", [(("--fail_rank", "0"), 3), ((), 0)], ids=["task-fails", "task-succeeds"])
def test_launch_folder_is_removed_when_the_task_ends(env, tmp_path, args, code):
    result = subprocess.run(pose("selftest", "--runner", "local", *args), capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == code, result.stderr
    assert launch_folders(env) == []


def test_workload_alone_exits_129_on_sighup(tmp_path, signal_when_holding):
    # No launcher in between: what a scheduler (Slurm, Kubernetes) sees when it hangs up.
    returncode, stderr = signal_when_holding([sys.executable, "-m", "pose_workloads", "selftest", "--hold_s", "120"],
                                             signal.SIGHUP, tmp_path)
    assert returncode == 129, stderr
    assert "terminated (SIGHUP)" in stderr
