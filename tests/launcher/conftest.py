"""Shared fixtures: a throwaway project with a mounts file, and a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from launcher.cli import app


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/{exp,data,specs} mounted at /workspace/{exp,data,specs} (data read-only), the
    mounts file named by $POSE_MOUNTS, and the working directory at tmp_path/exp."""
    for name in ("exp", "data", "specs"):
        (tmp_path / name).mkdir()
    write_mounts(tmp_path / "mounts.json", {"Mounts": [
        {"source": str(tmp_path / "exp"), "destination": "/workspace/exp"},
        {"source": str(tmp_path / "data"), "destination": "/workspace/data", "read_only": True},
        {"source": str(tmp_path / "specs"), "destination": "/workspace/specs", "read_only": True},
    ]})
    monkeypatch.setenv("POSE_MOUNTS", str(tmp_path / "mounts.json"))
    monkeypatch.chdir(tmp_path / "exp")
    return tmp_path


def write_mounts(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def cli():
    """`cli("bpnet", "train", ...)` runs `pose` in-process and returns click's Result."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def bad_input(cli):
    """`bad_input(*args)` runs `pose` and checks the bad-input contract: exit 2 and exactly one
    line on stderr, which it returns."""

    def check(*args: str) -> str:
        result = cli(*args)
        lines = _error_lines(result)
        assert result.exit_code == 2, (result.exit_code, result.output)
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: ")
        return lines[0]

    return check
