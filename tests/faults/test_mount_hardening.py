"""Mounts hardening, end to end through `pose ... --dry-run`: the destinations a container must
not have (normalised first), env names, units; warnings for what opens up the host; a broken
mounts file does not stop the local runner. Every case of the schema: tests/launcher/test_mounts.py."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from launcher.cli import app


@pytest.fixture
def pose(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    monkeypatch.setenv("POSE_MOUNTS", str(tmp_path / "mounts.json"))
    monkeypatch.chdir(tmp_path)

    def run(mounts: dict | str, *args: str):
        text = mounts if isinstance(mounts, str) else json.dumps(mounts).replace("{exp}", str(tmp_path / "exp"))
        (tmp_path / "mounts.json").write_text(text)
        result = CliRunner().invoke(app, ["selftest", "--dry-run", *args])
        return result.exit_code, result.stdout, [line for line in result.stderr.splitlines() if line.strip()]

    return run


@pytest.mark.parametrize(
    "destination, words",
    [
        ("//pose_launch", "/pose_launch is where pose mounts the translated specs"),
        ("//", "/ is the container's root"),
        ("/usr/", "/usr is the image's software"),
        ("/proc/1", "/proc/1 is a kernel filesystem"),
        ("/etc", "/etc is the system configuration"),
    ],
)
def test_mount_over_a_system_path_is_refused(pose, destination, words):
    code, _, lines = pose({"Mounts": [{"source": "{exp}", "destination": destination}]}, "--runner", "docker")
    assert code == 2 and len(lines) == 1 and words in lines[0], lines


@pytest.mark.parametrize(
    "mounts, words",
    [
        ({"Envs": [{"variable": "1BAD", "value": "x"}]}, "'1BAD' is not an environment variable name"),
        ({"DockerOptions": {"shm_size": "16 parsecs"}}, "is not a size"),
        ({"DockerOptions": {"ulimits": {"nofile": -2}}}, "ulimit nofile: -2 is not a limit"),
        ({"DockerOptions": {"ports": {"99999": 1}}}, "port '99999'"),
    ],
)
def test_bad_env_names_and_units_are_one_line(pose, mounts, words):
    code, _, lines = pose(mounts, "--runner", "docker")
    assert code == 2 and len(lines) == 1 and words in lines[0], lines


def test_risky_options_warn_and_dry_run_shows_envs_and_options(pose):
    code, out, lines = pose(
        {
            "Envs": [{"variable": "A", "value": "1"}],
            "DockerOptions": {"privileged": True, "network": "host", "user": "0:0"},
        },
        "--runner",
        "docker",
    )
    assert code == 0
    assert "env: A=1" in out and "docker option: privileged=true" in out and 'docker option: network="host"' in out
    assert sum("DockerOptions.privileged" in line for line in lines) == 1
    assert sum("DockerOptions.network host" in line for line in lines) == 1
    assert sum("runs as root" in line for line in lines) == 1


def test_broken_mounts_file_does_not_stop_the_local_runner(pose):
    code, out, lines = pose('{"Mounts": [', "--runner", "local")
    assert code == 0 and "runner: local" in out
    assert any("mounts file ignored by the local runner" in line for line in lines)
