"""The launcher's own cost: `pose --help` time, and dispatch latency (launch -> first log line).

    python bench/bench_launcher.py [--repeat 5] [--dispatch-repeat 3]

Each number comes with a baseline measured in the same run, on the same machine:

    pose --help                         vs  `python -c pass` (bare interpreter start)
    pose selftest --runner local        vs  `python -m pose_workloads selftest` (no launcher)
    pose selftest --runner docker       vs  the same command in the same image, started through the
                                            docker SDK directly (when an engine and the image exist)

"first log line" is the task's first line on stdout (`selftest: RANK=0 ...`), which both sides
print after the same work (import torch, join a process group), so the difference is what the
launcher adds: mounts, spec and path checks, GPU query, container create/start, log streaming.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POSE = [sys.executable, "-m", "launcher.cli"]


def time_to_exit(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def time_to_first_line(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    elapsed = time.perf_counter() - start
    process.communicate()
    if not line:
        raise RuntimeError(f"{' '.join(argv)} printed nothing (exit {process.returncode})")
    return elapsed


def docker_sdk_first_line(image: str) -> float:
    """`docker run --rm IMAGE python -m pose_workloads selftest` through the SDK, to its first line."""
    import docker

    client = docker.from_env()
    start = time.perf_counter()
    container = client.containers.run(image, ["python", "-m", "pose_workloads", "selftest"], detach=True,
                                      environment={"PYTHONUNBUFFERED": "1"})
    try:
        for chunk in container.logs(stream=True, follow=True, stderr=False):
            if b"\n" in chunk:
                break
        return time.perf_counter() - start
    finally:
        container.remove(force=True)


def docker_image() -> str | None:
    """The pytorch image when an engine answers and has it, else None."""
    try:
        from launcher.images import image_tag
        from launcher.runners.docker import connect

        client = connect(timeout=5)
        client.images.get(image_tag("pytorch"))
        return image_tag("pytorch")
    except Exception:
        return None


def median(fn, repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of `pose --help` and its baseline")
    parser.add_argument("--dispatch-repeat", type=int, default=3, help="runs of each dispatch measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        # An empty mounts file: the user's own must not change the numbers (or fail them).
        Path(work, "mounts.json").write_text("{}")
        env = {**os.environ, "POSE_MOUNTS": str(Path(work, "mounts.json")), "PYTHONSAFEPATH": "1"}
        rows = []
        help_s = median(lambda: time_to_exit([*POSE, "--help"], env), args.repeat)
        bare_s = median(lambda: time_to_exit([sys.executable, "-c", "pass"], env), args.repeat)
        rows.append(("pose --help", help_s, "python -c pass", bare_s))

        local_s = median(lambda: time_to_first_line([*POSE, "selftest", "--runner", "local"], env),
                         args.dispatch_repeat)
        direct_s = median(lambda: time_to_first_line([sys.executable, "-m", "pose_workloads", "selftest"], env),
                          args.dispatch_repeat)
        rows.append(("pose selftest --runner local", local_s, "python -m pose_workloads selftest", direct_s))

        image = docker_image()
        if image:
            docker_s = median(lambda: time_to_first_line([*POSE, "selftest", "--runner", "docker"], env),
                              args.dispatch_repeat)
            sdk_s = median(lambda: docker_sdk_first_line(image), args.dispatch_repeat)
            rows.append(("pose selftest --runner docker", docker_s, f"docker SDK run {image}", sdk_s))

    print(f"{'measured':32} {'s':>7}  {'baseline':40} {'s':>7}  {'ratio':>6}  {'added s':>8}")
    for name, seconds, base_name, base_seconds in rows:
        print(f"{name:32} {seconds:7.3f}  {base_name:40} {base_seconds:7.3f}  {seconds / base_seconds:6.2f}  "
              f"{seconds - base_seconds:8.3f}")
    if not image:
        print("docker: skipped (no engine answers, or the pose-pytorch image is missing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
