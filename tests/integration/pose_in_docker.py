"""Running the real `pose` command (a subprocess, as users run it) against a real Docker engine
and the real pose-pytorch image: what the container tests share (fixtures in conftest.py).

When the tests run as root, `pose` runs with SUDO_UID/SUDO_GID of a non-root user, as under
sudo, so that the files it writes prove the container ran as the invoking user and not as root.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pose_workloads

REPO = Path(__file__).resolve().parents[2]
IMAGE = f"pose-pytorch:{pose_workloads.__version__}"
POSE = Path(sys.executable).with_name("pose")
# The non-root user `pose` acts for when the tests run as root (any uid works: the container
# needs no passwd entry, the launcher gives it a writable HOME).
SUDO_ID = 4321
DATA_IN_CONTAINER = "/workspace/data"
SPECS_IN_CONTAINER = "/workspace/specs"
RESULTS_IN_CONTAINER = "/workspace/results"


def docker_required() -> bool:
    return os.environ.get("POSE_REQUIRE_DOCKER", "") not in ("", "0")


def pose_user() -> tuple[int, int]:
    """(uid, gid) the task must run as, and own its outputs as."""
    if os.geteuid() == 0:
        return SUDO_ID, SUDO_ID
    return os.getuid(), os.getgid()


def owners(root: Path) -> set[tuple[int, int]]:
    """(uid, gid) of `root` and everything under it."""
    return {(p.stat().st_uid, p.stat().st_gid) for p in [root, *root.rglob("*")]}


def write_mounts(path: Path, mounts: list[dict]) -> Path:
    path.write_text(json.dumps({"Mounts": mounts}, indent=2))
    return path


@dataclass
class RunningPose:
    """`pose` started in the background, its output (stdout + stderr) collected line by line."""

    process: subprocess.Popen
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def __post_init__(self):
        def pump():
            for line in self.process.stdout:
                self.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for_line(self, text: str, timeout_s: float) -> bool:
        """True once a line containing `text` was printed; False at the timeout or when pose exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    return False
                continue
            self.seen.append(line)
            if text in line:
                return True
        return False

    def output(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


@dataclass
class Workspace:
    root: Path  # the test's own folder (mounts file, cwd)
    specs: Path  # mounted read-only at SPECS_IN_CONTAINER: spec files are task arguments too
    data: Path  # mounted read-only at DATA_IN_CONTAINER
    results: Path  # mounted writable at RESULTS_IN_CONTAINER
    mounts_file: Path

    def containers(self, client) -> list[str]:
        """Names of the containers, running or not, that mount anything from this workspace:
        every container this test's `pose` made (its launch directory is here too, see TMPDIR
        below), and none of the others that may share the engine."""
        root = str(self.root) + "/"
        return [
            c["Names"][0] for c in client.api.containers(all=True)
            if any(m.get("Source", "").startswith(root) for m in c.get("Mounts") or [])
        ]

    def env(self) -> dict[str, str]:
        # TMPDIR: pose makes its launch directory (mounted at /pose_launch) in tempfile.gettempdir().
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        env = {**os.environ, "POSE_MOUNTS": str(self.mounts_file), "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)}
        for name in ("SUDO_UID", "SUDO_GID", "SUDO_USER"):
            env.pop(name, None)
        if os.geteuid() == 0:
            env.update(SUDO_UID=str(SUDO_ID), SUDO_GID=str(SUDO_ID))
        return env

    def pose(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        """`pose ARGS --runner docker`, to the end; stdout and stderr together in .stdout."""
        return subprocess.run(
            [str(POSE), *args, "--runner", "docker"], env=self.env(), cwd=self.root, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
        )

    def start_pose(self, *args: str) -> RunningPose:
        return RunningPose(subprocess.Popen(
            [str(POSE), *args, "--runner", "docker"], env=self.env(), cwd=self.root, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
