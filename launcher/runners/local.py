"""The local runner: the same argv as in the container, as a subprocess with host paths.

`python -m pose_workloads ...` (or torchrun for several processes) with this interpreter; no
mounts file needed. Exit code and signals behave as with Docker: the task's code is returned,
SIGINT/SIGTERM are forwarded to the task and `pose` returns 130/143.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

from launcher.paths import LogPathMapper
from launcher.runners import TASK_ENV, Interrupted, TaskCall, interrupts_raise, workload_command

# How long a task may take to wind down after the forwarded signal before it is killed.
STOP_GRACE_S = 10.0


def task_environment(call: TaskCall) -> dict[str, str]:
    env = {**os.environ, **call.env, **TASK_ENV}
    if call.gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in call.gpu_ids)
    return env


def _copy_lines(source: IO[str], sink: IO[str], rewrite: Callable[[str], str]) -> None:
    for line in source:
        sink.write(rewrite(line))
        sink.flush()


def run(call: TaskCall) -> int:
    """Run the task to the end and return its exit code (128 + signal if it was killed)."""
    rewrite = LogPathMapper(call.log_paths)
    with interrupts_raise():
        process = subprocess.Popen(
            workload_command(call, sys.executable),
            cwd=call.workdir or None,
            env=task_environment(call),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            # Its own session: a terminal's Ctrl-C reaches `pose` alone, which forwards it once
            # (torchrun would otherwise see it twice and its ranks three times).
            start_new_session=True,
        )
        copiers = [
            threading.Thread(target=_copy_lines, args=(process.stdout, sys.stdout, rewrite), daemon=True),
            threading.Thread(target=_copy_lines, args=(process.stderr, sys.stderr, rewrite), daemon=True),
        ]
        for copier in copiers:
            copier.start()
        try:
            code = process.wait()
        except Interrupted as stop:
            print(f"pose: {stop} received: stopping {call.task}", file=sys.stderr, flush=True)
            _stop(process, stop.signum)
            code = stop.exit_code
        for copier in copiers:
            copier.join(timeout=5)
    return 128 - code if code < 0 else code


def _stop(process: subprocess.Popen, signum: int) -> None:
    """Forward the signal; kill the task if it has not ended after STOP_GRACE_S, or on a
    second signal."""
    try:
        process.send_signal(signum)
        process.wait(timeout=STOP_GRACE_S)
    except (subprocess.TimeoutExpired, Interrupted):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
