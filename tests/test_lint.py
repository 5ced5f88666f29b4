"""`make lint` as a test, so that CI enforces it: ruff on the whole tree and mypy on the launcher,
with the settings in pyproject.toml (both tools come with the `dev` extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing_in_the_tree():
    result = run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing_in_the_launcher():
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found" in result.stdout
