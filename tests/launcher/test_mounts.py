"""The mounts file: TAO's schema, expansion, and one clear line for every mistake."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pose_workloads.errors import BadInput
from launcher.mounts import expand, load_mounts


def write_mounts(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_tao_mounts_file_loads_unchanged(tmp_path, monkeypatch):
    # The TAO blog's ~/.tao_mounts.json shape, plus TAO's DockerOptions keys (tty included).
    (tmp_path / "tao-experiments").mkdir()
    (tmp_path / "specs").mkdir()
    path = write_mounts(tmp_path / ".tao_mounts.json", {
        "Mounts": [
            {"source": str(tmp_path / "tao-experiments"), "destination": "/workspace/tao-experiments"},
            {"source": str(tmp_path / "specs"), "destination": "/workspace/examples/bpnet/specs"},
        ],
        "Envs": [{"variable": "CUDA_CACHE_DISABLE", "value": "1"}],
        "DockerOptions": {"shm_size": "16G", "ulimits": {"memlock": -1, "stack": 67108864},
                          "user": "1000:1000", "ports": {"8888": 8888}, "network": "host",
                          "privileged": False, "tty": True},
    })
    monkeypatch.setenv("POSE_MOUNTS", str(path))
    mounts = load_mounts()
    assert [m.destination for m in mounts.mounts] == ["/workspace/tao-experiments", "/workspace/examples/bpnet/specs"]
    assert mounts.envs == {"CUDA_CACHE_DISABLE": "1"}
    assert mounts.docker_options.ulimits == {"memlock": -1, "stack": 67108864}
    assert mounts.docker_options.user == "1000:1000"


def test_home_uid_gid_expand_for_the_invoking_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SUDO_UID", raising=False)
    (tmp_path / "exp").mkdir()
    path = write_mounts(tmp_path / "m.json", {
        "Mounts": [{"source": "~/exp", "destination": "/workspace/exp"},
                   {"source": "$HOME", "destination": "/workspace/home"}],
        "DockerOptions": {"user": "$(id -u):${GID}"},
    })
    mounts = load_mounts(path)
    assert [m.source for m in mounts.mounts] == [(tmp_path / "exp").resolve(), tmp_path.resolve()]
    assert mounts.docker_options.user == f"{os.getuid()}:{os.getgid()}"
    assert expand("${UID}/$GID") == f"{os.getuid()}/{os.getgid()}"


def test_sudo_expands_to_the_calling_user_not_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "2345")
    assert expand("${UID}:${GID}") == "1234:2345"


def test_missing_default_mounts_file_is_empty_not_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("POSE_MOUNTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SUDO_UID", raising=False)
    mounts = load_mounts()
    assert mounts.mounts == () and not mounts.found
    assert mounts.file == tmp_path / ".pose_mounts.json"


def test_missing_file_named_by_pose_mounts_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("POSE_MOUNTS", str(tmp_path / "nope.json"))
    with pytest.raises(BadInput, match="nope.json: not found.*POSE_MOUNTS"):
        load_mounts()


# Each bad mounts file: (content, words the one error line must hold: the key, and the fix).
BAD_MOUNTS = {
    "malformed_json": ('{"Mounts": [', ["not valid JSON", "line 1", "fix the syntax"]),
    "unknown_top_key": ({"Mounts": [], "Volumes": []}, ["Volumes", "unknown key", "valid keys here: DockerOptions, Envs, Mounts"]),
    "unknown_mount_key": ({"Mounts": [{"source": "{exp}", "destination": "/w", "mode": "ro"}]},
                          ["Mounts[0].mode", "unknown key", "read_only"]),
    "unknown_docker_option": ({"DockerOptions": {"gpus": "all"}}, ["DockerOptions.gpus", "unknown key", "shm_size"]),
    "missing_source": ({"Mounts": [{"source": "{exp}/nope", "destination": "/w"}]},
                       ["Mounts[0].source", "does not exist", "mkdir -p"]),
    "relative_destination": ({"Mounts": [{"source": "{exp}", "destination": "workspace"}]},
                             ["Mounts[0].destination", "relative", "absolute container path"]),
    "two_mounts_one_destination": ({"Mounts": [{"source": "{exp}", "destination": "/w"},
                                               {"source": "{exp}", "destination": "/w/"}]},
                                   ["Mounts", "Mounts[0] and Mounts[1] both mount on /w", "own destination"]),
    "reserved_destination": ({"Mounts": [{"source": "{exp}", "destination": "/pose_launch"}]},
                             ["Mounts[0].destination", "/pose_launch", "choose another"]),
    "missing_destination": ({"Mounts": [{"source": "{exp}"}]}, ["Mounts[0].destination", "missing", "add it"]),
    "bad_ulimit": ({"DockerOptions": {"ulimits": {"files": 10}}}, ["DockerOptions.ulimits", "unknown ulimit 'files'", "nofile"]),
}


@pytest.mark.parametrize("case", sorted(BAD_MOUNTS))
def test_bad_mounts_file_gives_one_line_naming_key_and_fix(case, project, bad_input):
    content, words = BAD_MOUNTS[case]
    text = content if isinstance(content, str) else json.dumps(content).replace("{exp}", str(project / "exp"))
    write_mounts(project / "mounts.json", text)
    line = bad_input("selftest", "--runner", "docker", "--dry-run")
    assert str(project / "mounts.json") in line
    for word in words:
        assert word in line


def test_mounts_check_lists_each_mount_and_its_problem(project, cli):
    write_mounts(project / "mounts.json", {"Mounts": [
        {"source": str(project / "exp"), "destination": "/workspace/exp"},
        {"source": str(project / "gone"), "destination": "relative/dest"},
    ], "DockerOptions": {"bogus": 1}})
    result = cli("mounts", "check")
    assert result.exit_code == 2
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith(str(project))}
    assert rows[str(project / "exp")].rstrip().endswith("ok")
    assert "does not exist" in rows[str(project / "gone")] and "is relative" in rows[str(project / "gone")]
    assert "DockerOptions.bogus: unknown key" in result.stdout


def test_mounts_check_passes_a_good_file(project, cli):
    result = cli("mounts", "check")
    assert result.exit_code == 0, result.output
    assert "/workspace/data" in result.stdout and "ro" in result.stdout
