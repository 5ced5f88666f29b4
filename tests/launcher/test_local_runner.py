"""The local runner: the task's exit code is pose's, Ctrl-C stops it (130), and `--gpus 2`
starts two ranks under torchrun (gloo on CPU). The task is the workload's own `selftest`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.runners import Interrupted, TaskCall, interrupts_raise, local


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Environment for `pose` subprocesses: an empty mounts file, so a user's own cannot interfere."""
    (tmp_path / "mounts.json").write_text("{}")
    return {**os.environ, "POSE_MOUNTS": str(tmp_path / "mounts.json")}


def pose(*args: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", *args]


def test_task_exit_code_becomes_the_runner_result(capfd):
    # The workload's own bad-input exit (argparse, before torch loads: cheap), with its message.
    code = local.run(TaskCall(task="selftest", args=("selftest", "--no-such-flag")))
    assert code == 2
    assert "unrecognized arguments: --no-such-flag" in capfd.readouterr().err


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signals_to_pose_become_shell_exit_codes(signum, code):
    previous = signal.getsignal(signum)
    with pytest.raises(Interrupted) as err:
        with interrupts_raise():
            os.kill(os.getpid(), signum)
            time.sleep(10)  # interrupted at once
    assert err.value.exit_code == code
    assert signal.getsignal(signum) is previous


def test_two_ranks_start_and_a_failed_rank_fails_pose(env, tmp_path):
    result = subprocess.run(pose("selftest", "--runner", "local", "--gpus", "2", "--fail-rank", "1"),
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    for rank in (0, 1):
        assert f"selftest: RANK={rank} WORLD_SIZE=2" in result.stdout, result.stdout + result.stderr
    assert "all_reduce=3 expected=3 ok" in result.stdout
    assert result.returncode == 3, result.stderr  # selftest's own code for --fail_rank, not torchrun's 1


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_sigint_stops_the_task_and_pose_exits_130(env, tmp_path, signal_when_holding):
    marker = "61.25"  # unique --hold_s value to find leftover processes by
    returncode, stderr = signal_when_holding(pose("selftest", "--runner", "local", "--hold_s", marker), signal.SIGINT,
                                             tmp_path, env)
    assert returncode == 130, stderr
    assert "pose: SIGINT received: stopping selftest" in stderr
    assert "interrupted" in stderr  # the workload saw the forwarded signal and wound down itself
    deadline = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(marker) == []
