"""A full disk: one line naming the folder and the bytes needed, the previous checkpoint intact,
no temp file left; for the space check before writing and for ENOSPC while writing."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from pose_workloads.errors import DiskFull
from pose_workloads.files import write_atomic
from pose_workloads.model_file import write as save_model_file

Usage = namedtuple("Usage", "total used free")


def _previous_checkpoint(folder: Path) -> tuple[Path, bytes]:
    path = folder / "checkpoint_last.pth"
    save_model_file(path, {"epoch": 1, "state_dict": {"w": torch.ones(3)}})
    return path, path.read_bytes()


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    path, before = _previous_checkpoint(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: Usage(10**9, 10**9 - 100, 100))
    with pytest.raises(DiskFull) as err:
        save_model_file(path, {"epoch": 2, "state_dict": {"w": torch.zeros(1000)}})
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"{tmp_path}: no space left for checkpoint_last.pth: it needs ")
    needed = int(line.split("needs ")[1].split(" bytes")[0].replace(",", ""))
    assert needed > 4000  # 1000 float32 weights and the zip around them
    assert "100 free" in line and "the previous checkpoint_last.pth, if any, is intact" in line
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pth"]


def test_enospc_while_writing_is_one_line_and_keeps_the_previous_file(tmp_path):
    # The kernel's own "No space left on device": the temp file is a link to /dev/full.
    path, before = _previous_checkpoint(tmp_path)
    (tmp_path / f".checkpoint_last.pth.{os.getpid()}.tmp").symlink_to("/dev/full")
    with pytest.raises(DiskFull,
                       match=rf"^{tmp_path}: no space left for checkpoint_last.pth: "
                             r"it needs [\d,]+ bytes, [\d,]+ free"):
        save_model_file(path, {"epoch": 2, "state_dict": {"w": torch.zeros(10)}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pth"]


def test_json_results_too(tmp_path):
    (tmp_path / f".metrics.json.{os.getpid()}.tmp").symlink_to("/dev/full")
    with pytest.raises(DiskFull, match="no space left for metrics.json: it needs 2 bytes"):
        write_atomic(tmp_path / "metrics.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_enospc_anywhere_in_an_action_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    # A write that does not go through write_atomic (TensorBoard's, say) running out of space.
    import errno

    from pose_workloads import __main__ as workload
    from pose_workloads import selftest

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "events.out.tfevents"))

    monkeypatch.setattr(selftest, "main", full)
    assert workload.main(["selftest"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {tmp_path / 'events.out.tfevents'}: no space left on device; free some space and rerun"]
