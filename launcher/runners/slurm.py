"""The Slurm runner: submit one batch script with `sbatch --parsable`, follow its output, return
the task's own exit code. The scripts themselves come from `slurm_scripts` (pure).

Foreground (default): the job's log is printed as it is written (container paths shown as host
paths), and `pose` returns the exit code Slurm recorded for the batch script, which is the
first failed rank's own code. SIGINT/SIGTERM: `scancel`, wait until the job has left the queue,
return 130/143. A job Slurm requeues (preemption) is followed through its restart.
`--detach`: print the job id and return 0 (`pose jobs logs|cancel ID` later).

Slurm's clients are called with argv lists (never a shell) and read the cluster from the usual
places (SLURM_CONF, /etc/slurm). Job state comes from `scontrol show job`, which needs no
accounting database; `sacct` is asked only once scontrol has forgotten the job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.paths import LogPathMapper
from launcher.runners import Interrupted, detached, interrupts_raise
from launcher.runners.slurm_scripts import SlurmJob, batch_script, node_script, sbatch_argv
from pose_workloads.errors import BadInput

POLL_S = 0.5
LOG_POLL_S = 0.05
# Job states after which nothing more happens (squeue(1) "JOB STATE CODES").
FINAL_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "TIMEOUT", "SPECIAL_EXIT"}
CLIENT_TIMEOUT_S = 30


@dataclass(frozen=True)
class JobState:
    state: str  # RUNNING, PENDING, COMPLETED, ... ("" when Slurm no longer knows the job)
    exit_code: int | None  # the batch script's code (128 + signal when killed); None while running
    log_file: str = ""
    name: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES or self.state == ""


def slurm_command(argv: list[str], timeout: float = CLIENT_TIMEOUT_S) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise BadInput(f"{argv[0]} not found; install Slurm's clients (apt-get install slurm-client) "
                       "or run pose where they are") from None
    except subprocess.TimeoutExpired:
        raise BadInput(f"{argv[0]} did not answer in {timeout:g} s; check that slurmctld runs (SLURM_CONF)") from None


def _first_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line.removeprefix("sbatch: error: ").removeprefix("sinfo: error: ")
    return lines[-1] if lines else "no message"


def check_cluster() -> None:
    """BadInput unless `sbatch` exists and a controller answers; nothing is submitted."""
    if shutil.which("sbatch") is None:
        raise BadInput("--runner slurm: sbatch not found on PATH; install Slurm's clients "
                       "(apt-get install slurm-client) or run pose on a login node")
    done = slurm_command(["sinfo", "--noheader", "--format=%P"])
    if done.returncode != 0:
        where = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
        raise BadInput(f"--runner slurm: no Slurm controller answers ({_first_error(done.stderr)}); "
                       f"check slurmctld and {where} (SLURM_CONF)")


def partition_has_gpus(partition: str | None) -> bool:
    """Whether the partition (or the default one) offers GPUs as generic resources."""
    argv = ["sinfo", "--noheader", "--format=%G"] + ([f"--partition={partition}"] if partition else [])
    done = slurm_command(argv)
    return done.returncode == 0 and "gpu" in done.stdout


def write_job_files(job: SlurmJob) -> None:
    """batch.sh and node.sh into the launch directory (which the spec copies are already in)."""
    job.launch_dir.mkdir(parents=True, exist_ok=True)
    (job.launch_dir / "exit").mkdir(exist_ok=True)
    for path, text in ((job.batch_file, batch_script(job)), (job.node_file, node_script(job))):
        path.write_text(text)
        path.chmod(0o755)
    # The container's user must be able to write its exit code.
    (job.launch_dir / "exit").chmod(0o777)
    # For `pose jobs logs ID`: container paths in the log shown as host paths, as here.
    (job.launch_dir / "log_paths.json").write_text(json.dumps(job.call.log_paths))


def submit(job: SlurmJob) -> str:
    """`sbatch --parsable ...` -> the job id. A job Slurm refuses: BadInput with Slurm's reason."""
    done = slurm_command(sbatch_argv(job))
    if done.returncode != 0:
        raise BadInput(f"Slurm refused the job: {_first_error(done.stderr)}; "
                       "fix the option it names (--partition, --time, --account, Slurm.sbatch_options)")
    return done.stdout.strip().split(";")[0]


def _fields(line: str) -> dict[str, str]:
    """`scontrol -o` output: space-separated Key=Value (values without spaces for these keys)."""
    out = {}
    for item in line.split():
        key, sep, value = item.partition("=")
        if sep and key not in out:
            out[key] = value
    return out


def _exit_code(text: str) -> int | None:
    """Slurm's `code:signal` -> one shell-style code."""
    code, _, signal = text.partition(":")
    if not code.isdigit():
        return None
    return 128 + int(signal) if signal.isdigit() and int(signal) else int(code)


def job_state(job_id: str) -> JobState:
    done = slurm_command(["scontrol", "--oneliner", "show", "job", job_id])
    if done.returncode == 0 and done.stdout.strip():
        f = _fields(done.stdout)
        state = f.get("JobState", "")
        return JobState(state, _exit_code(f.get("ExitCode", "")) if state in FINAL_STATES else None,
                        f.get("StdOut", ""), f.get("JobName", ""))
    done = slurm_command(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", job_id,
                          "--format=State,ExitCode,JobName"])
    line = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else ""
    if not line:
        return JobState("", None)
    state, code, name = (line.split("|") + ["", "", ""])[:3]
    return JobState(state.split()[0], _exit_code(code), "", name)


def cancel(job_id: str, wait_s: float = 120.0) -> None:
    """scancel, then wait until the job has left the queue (its ranks are gone)."""
    done = slurm_command(["scancel", job_id])
    if done.returncode != 0:
        raise BadInput(f"scancel {job_id}: {_first_error(done.stderr)}")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not job_state(job_id).final:
        time.sleep(POLL_S)


class LogFollower:
    """Prints what a growing file gains, line by line, rewritten by `rewrite`."""

    def __init__(self, path: Path, rewrite=lambda line: line):
        self.path, self.rewrite, self.offset, self.pending = path, rewrite, 0, b""

    def poll(self, final: bool = False) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        *lines, self.pending = (self.pending + data).split(b"\n")
        if final and self.pending:
            lines, self.pending = [*lines, self.pending], b""
        for line in lines:
            sys.stdout.write(self.rewrite(line.decode(errors="replace")) + "\n")
        sys.stdout.flush()


def follow(job_id: str, log_file: Path, rewrite=lambda line: line) -> int:
    """Print the job's log until it ends; its exit code. The file is read every LOG_POLL_S (lines
    show up at once), the controller asked every POLL_S (it serves the whole cluster)."""
    follower = LogFollower(log_file, rewrite)
    while True:
        state = job_state(job_id)
        follower.poll()
        if state.final:
            follower.poll(final=True)
            if state.exit_code is None:
                print(f"pose: job {job_id} ended ({state.state or 'unknown to Slurm'}) without an exit code",
                      file=sys.stderr)
                return 1
            return state.exit_code
        for _ in range(int(POLL_S / LOG_POLL_S)):
            time.sleep(LOG_POLL_S)
            follower.poll()


def run(job: SlurmJob, detach: bool = False, notices: tuple[str, ...] | list[str] = ()) -> int:
    """Submit `job` (files already written) and follow it, or print its id when detached.
    `notices` are said once Slurm has accepted the job, so that a refusal stays one line."""
    try:
        job_id = submit(job)
    except BadInput:
        shutil.rmtree(job.launch_dir, ignore_errors=True)  # refused: nothing of it stays
        raise
    for text in notices:
        print(f"pose: {text}", file=sys.stderr, flush=True)
    if detach:
        return detached(job_id, f"submitted Slurm job {job_id}")
    print(f"pose: submitted Slurm job {job_id} ({job.call.num_nodes} node(s)); log: {job.log_file}",
          file=sys.stderr, flush=True)
    with interrupts_raise():
        try:
            return follow(job_id, job.log_file, LogPathMapper(job.call.log_paths))
        except Interrupted as stop:
            print(f"pose: {stop} received: cancelling Slurm job {job_id}", file=sys.stderr, flush=True)
            with interrupts_raise():
                try:
                    cancel(job_id)
                except Interrupted:
                    pass  # a second Ctrl-C: scancel has been sent, stop waiting
            return stop.exit_code
