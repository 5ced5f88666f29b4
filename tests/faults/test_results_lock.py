"""One run per results directory: a second run is refused naming the holder, a lock left by a
killed run does not block, a folder of the other network is refused before anything in it is
written, and a `-r` no run could write is one line before any work."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from pose_workloads.errors import BadInput
from pose_workloads.results_lock import LOCK_FILE, lock_results_dir


def workload(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pose_workloads", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def hold_lock(folder: Path, network: str = "bpnet") -> subprocess.Popen:
    """Another run holding `folder`: a process that takes the lock and waits."""
    code = textwrap.dedent(f"""
        import sys, time
        from pose_workloads.results_lock import lock_results_dir
        lock = lock_results_dir({str(folder)!r}, {network!r}, "train")
        print("locked", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_second_run_is_refused_naming_pid_and_host_and_keeps_the_live_runs_temp_files(tmp_path):
    results = tmp_path / "results"
    holder = hold_lock(results)
    try:
        live_temp = results / ".checkpoint_last.pth.4242.tmp"
        live_temp.write_bytes(b"half a checkpoint the live run is writing")
        result = workload("bpnet", "train", "-e", str(tmp_path / "spec.yaml"), "-r", str(results))
        line = one_error_line(result)
        assert f"-r {results}: in use by pid {holder.pid} on host {socket.gethostname()} (bpnet train)" in line
        assert "wait for it to end, or choose another -r" in line
        assert live_temp.exists()  # the refused run deleted nothing
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_run_does_not_block(tmp_path):
    results = tmp_path / "results"
    holder = hold_lock(results)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (results / LOCK_FILE).exists()  # the file stays; the kernel dropped its lock
    with lock_results_dir(results, "bpnet", "train") as lock:
        assert lock.folder == results
        assert f'"pid": {os.getpid()}' in (results / LOCK_FILE).read_text()


def test_lock_is_free_again_after_release(tmp_path):
    lock_results_dir(tmp_path, "bpnet", "evaluate").release()
    lock_results_dir(tmp_path, "bpnet", "evaluate").release()


def _listing(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_folder_of_the_other_network_is_refused_before_anything_is_written(tmp_path):
    results = tmp_path / "results"
    lock_results_dir(results, "simple-pose", "train").release()
    (results / "metrics.jsonl").write_text("{}\n")
    before = _listing(results)
    result = workload("bpnet", "train", "-e", str(tmp_path / "spec.yaml"), "-r", str(results))
    line = one_error_line(result)
    assert f"-r {results}: holds a simple-pose run, not bpnet; choose another -r" in line
    assert _listing(results) == before


def test_folder_with_another_networks_checkpoint_and_no_lock_record_is_refused(tmp_path):
    import torch

    torch.save({"network": "bpnet", "state_dict": {}}, tmp_path / "checkpoint_last.pth")
    with pytest.raises(BadInput, match="holds a bpnet run, not simple-pose"):
        lock_results_dir(tmp_path, "simple-pose", "train")


def test_results_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    line = one_error_line(workload("simple-pose", "train", "-e", "spec.yaml", "-r", str(tmp_path / "results")))
    assert f"-r {tmp_path / 'results'}: is a file, not a folder; choose a folder for -r" in line
    assert (tmp_path / "results").read_text() == "not a folder"


def test_results_dir_below_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_error_line(workload("simple-pose", "train", "-e", "spec.yaml", "-r", str(tmp_path / "file" / "results")))
    assert f"-r {tmp_path / 'file' / 'results'}: " in line and "choose another -r" in line


def test_results_dir_symlink_loop_is_one_line(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    line = one_error_line(workload("simple-pose", "train", "-e", "spec.yaml", "-r", str(tmp_path / "a")))
    assert f"-r {tmp_path / 'a'}: " in line and "symlink loop" in line


# As root (which ignores permissions) the run drops to the nobody user once Python is up.
AS_UNPRIVILEGED = """
import json, locale, os, socket, sys, time
from pose_workloads.__main__ import build_parser, main
from pose_workloads import results_lock
build_parser().parse_args(sys.argv[1:])  # imports what argparse needs while root can read it
if os.geteuid() == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.exit(main(sys.argv[1:]))
"""


def test_results_dir_without_write_permission_is_one_line():
    base = Path(tempfile.mkdtemp(prefix="pose-readonly-"))
    try:
        base.chmod(0o755)
        folder = base / "results"
        folder.mkdir(mode=0o555)
        folder.chmod(0o555)
        for target, words in ((folder, "cannot be written (Permission denied); give this user write permission"),
                              (folder / "new",
                               "cannot be created (Permission denied); give this user write permission")):
            result = subprocess.run([sys.executable, "-c", AS_UNPRIVILEGED, "simple-pose", "train", "-e", "spec.yaml",
                                     "-r", str(target)], capture_output=True, text=True, timeout=120, cwd="/")
            assert f"-r {target}: {words}" in one_error_line(result)
        assert list(folder.iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_bad_input_after_locking_leaves_nothing_behind(tmp_path):
    # The lock is taken before the spec is read; a bad spec takes back the folders and the lock file.
    (tmp_path / "spec.yaml").write_text("train: {epochs: yes}\n")
    result = workload("simple-pose", "train", "-e", str(tmp_path / "spec.yaml"), "-r",
                      str(tmp_path / "new" / "results"))
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "new").exists()
    (tmp_path / "existing").mkdir()
    result = workload("simple-pose", "train", "-e", str(tmp_path / "spec.yaml"), "-r", str(tmp_path / "existing"))
    assert result.returncode == 2 and list((tmp_path / "existing").iterdir()) == []
