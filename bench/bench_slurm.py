"""What `pose --runner slurm` adds to a Slurm submission: submit -> the task's first log line.

    python bench/bench_slurm.py [--repeat 5]

Both sides run the same task on one node of the same cluster, in the same run, alternately:

    pose selftest --runner slurm --container_runtime none
        spec/path checks, sinfo, launch folder, batch + node scripts, sbatch, then following
        the job's log file (what a user of pose waits for)
    sbatch --wrap 'srun python -m pose_workloads selftest'
        the bare equivalent a Slurm user would write by hand, its output file polled as often

"first log line" is the task's `selftest: RANK=0 ...` line (after torch imports and joins its
process group). The number that matters is the ratio (and the seconds added). Skips, exit 0,
when no Slurm controller answers (start one: `make slurm-up; export SLURM_CONF=...`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POSE = [sys.executable, "-m", "launcher.cli"]
MARK = "selftest: RANK=0"
POLL_S = 0.05


def cluster_answers() -> bool:
    if shutil.which("sbatch") is None:
        return False
    return subprocess.run(["sinfo", "--noheader"], capture_output=True, timeout=30).returncode == 0


def pose_first_line(env: dict[str, str]) -> float:
    start = time.perf_counter()
    process = subprocess.Popen([*POSE, "selftest", "--runner", "slurm", "--container_runtime", "none"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if MARK in line:
            elapsed = time.perf_counter() - start
            process.communicate()
            return elapsed
    raise RuntimeError(f"pose printed no {MARK!r} line (exit {process.wait()})")


def sbatch_first_line(work: Path, env: dict[str, str]) -> float:
    output = work / f"bare-{time.monotonic_ns()}.out"
    start = time.perf_counter()
    job = subprocess.run(["sbatch", "--parsable", f"--output={output}", "--wrap",
                          f"srun {sys.executable} -m pose_workloads selftest"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    deadline = start + 300
    while time.perf_counter() < deadline:
        if output.is_file() and MARK in output.read_text(errors="replace"):
            elapsed = time.perf_counter() - start
            # Wait for the job to end, so that the next measurement finds the nodes free.
            while job in subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True).stdout:
                time.sleep(POLL_S)
            return elapsed
        time.sleep(POLL_S)
    raise RuntimeError(f"sbatch job {job} printed no {MARK!r} line in 300 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side (alternating)")
    args = parser.parse_args()
    if not cluster_answers():
        print("slurm: skipped (no sbatch, or no Slurm controller answers; make slurm-up and export SLURM_CONF)")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "launch").mkdir()
        (work / "mounts.json").write_text(json.dumps({"Slurm": {"launch_dir": str(work / "launch"),
                                                                "python": sys.executable}}))
        env = {**os.environ, "POSE_MOUNTS": str(work / "mounts.json"), "PYTHONUNBUFFERED": "1"}
        pose_s, bare_s = [], []
        for _ in range(args.repeat):
            pose_s.append(pose_first_line(env))
            bare_s.append(sbatch_first_line(work, env))
    pose_median, bare_median = statistics.median(pose_s), statistics.median(bare_s)
    measured = f"measured (median of {args.repeat})"
    print(f"{measured:44} {'s':>7}  {'baseline':44} {'s':>7}  {'ratio':>6}  {'added s':>8}")
    print(f"{'pose selftest --runner slurm':44} {pose_median:7.3f}  {'sbatch --wrap srun python -m pose_workloads':44} "
          f"{bare_median:7.3f}  {pose_median / bare_median:6.2f}  {pose_median - bare_median:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
