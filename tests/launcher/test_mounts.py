"""The mounts file: TAO's schema, expansion, and one clear line for every mistake."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from launcher.mounts import expand, load_mounts
from pose_workloads.errors import BadInput


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
    "unknown_top_key": ({"Mounts": [], "Volumes": []},
                        ["Volumes", "unknown key", "valid keys here: DockerOptions, Envs, Kubernetes, Mounts, Slurm"]),
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
    "bad_ulimit": ({"DockerOptions": {"ulimits": {"files": 10}}},
                   ["DockerOptions.ulimits", "unknown ulimit 'files'", "nofile"]),
    # Destinations are normalised before they are checked: `//pose_launch` is /pose_launch.
    "reserved_destination_double_slash": ({"Mounts": [{"source": "{exp}", "destination": "//pose_launch/"}]},
                                          ["Mounts[0].destination", "/pose_launch", "choose another"]),
    "root_as_double_slash": ({"Mounts": [{"source": "{exp}", "destination": "//"}]},
                             ["Mounts[0].destination", "/ is the container's root", "/workspace"]),
    "over_usr": ({"Mounts": [{"source": "{exp}", "destination": "/usr"}]},
                 ["Mounts[0].destination", "/usr is the image's software"]),
    "below_proc": ({"Mounts": [{"source": "{exp}", "destination": "/proc/sys/kernel"}]},
                   ["Mounts[0].destination", "/proc/sys/kernel is a kernel filesystem", "folder of your own"]),
    "over_etc": ({"Mounts": [{"source": "{exp}", "destination": "/etc/"}]}, ["/etc is the system configuration"]),
    "over_dev": ({"Mounts": [{"source": "{exp}", "destination": "/dev//"}]}, ["/dev is the devices"]),
    "bad_env_name": ({"Envs": [{"variable": "MY-VAR", "value": "1"}]},
                     ["Envs[0].variable", "'MY-VAR' is not an environment variable name", "letters, digits and _"]),
    "env_name_with_equals": ({"Envs": [{"variable": "A=B", "value": "1"}]}, ["Envs[0].variable", "'A=B'"]),
    "duplicate_env": ({"Envs": [{"variable": "A", "value": "1"}, {"variable": "A", "value": "2"}]},
                      ["Envs", "Envs[0] and Envs[1] both set A", "keep one"]),
    "shm_without_number": ({"DockerOptions": {"shm_size": "lots"}},
                           ["DockerOptions.shm_size", "'lots' is not a size", "16G"]),
    "shm_unknown_unit": ({"DockerOptions": {"shm_size": "16X"}}, ["DockerOptions.shm_size", "units b, k, m, g"]),
    "shm_too_small": ({"DockerOptions": {"shm_size": "16"}}, ["DockerOptions.shm_size", "less than 1 MiB"]),
    "shm_negative": ({"DockerOptions": {"shm_size": -1}}, ["DockerOptions.shm_size", "less than 1 MiB"]),
    "shm_bool": ({"DockerOptions": {"shm_size": True}}, ["DockerOptions.shm_size", "True is not a size"]),
    "ulimit_below_unlimited": ({"DockerOptions": {"ulimits": {"nofile": -5}}},
                               ["DockerOptions.ulimits", "ulimit nofile: -5 is not a limit",
                                "-1 (unlimited) or a count"]),
    "ulimit_count_with_unit": ({"DockerOptions": {"ulimits": {"nofile": "64k"}}},
                               ["ulimit nofile: '64k' is not a limit"]),
    "ulimit_bad_size": ({"DockerOptions": {"ulimits": {"stack": "big"}}},
                        ["DockerOptions.ulimits", "'big' is not a size"]),
    "ulimit_bool": ({"DockerOptions": {"ulimits": {"core": False}}}, ["ulimit core: False is not a limit"]),
    "port_out_of_range": ({"DockerOptions": {"ports": {"70000": 8888}}},
                          ["DockerOptions.ports", "port '70000'", "1-65535"]),
    "port_bad_protocol": ({"DockerOptions": {"ports": {"8888/http": 8888}}},
                          ["port '8888/http'", "/tcp, /udp or /sctp"]),
    "host_port_zero": ({"DockerOptions": {"ports": {"8888": 0}}}, ["port 8888: host port 0 is not 1-65535"]),
    "host_port_text": ({"DockerOptions": {"ports": {"8888": "eighty"}}}, ["host port 'eighty'"]),
    "privileged_as_text": ({"DockerOptions": {"privileged": "no"}},
                           ["DockerOptions.privileged", "'no' is not true or false"]),
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


def test_non_utf8_mounts_file_is_one_line(project, bad_input):
    (project / "mounts.json").write_bytes(b'{"Envs": [{"variable": "A", "value": "caf\xe9"}]}')
    line = bad_input("selftest", "--runner", "docker", "--dry-run")
    assert str(project / "mounts.json") in line and "not UTF-8 text (byte 0xe9 at offset 41)" in line
    assert "save it as UTF-8" in line


def test_units_and_ports_docker_accepts_load(project):
    write_mounts(project / "mounts.json", {"DockerOptions": {
        "shm_size": "1.5g", "ulimits": {"stack": "64m", "memlock": -1, "nofile": 65536},
        "ports": {"8888/tcp": "127.0.0.1:8888", "6006": None, "9000": 9000}}})
    options = load_mounts().docker_options
    assert options.shm_size == "1.5g"  # passed on as written: Docker reads the same units
    assert options.ulimits == {"stack": 64 * 2**20, "memlock": -1, "nofile": 65536}


def test_dry_run_shows_envs_and_docker_options(project, cli):
    write_mounts(project / "mounts.json", {
        "Mounts": [{"source": str(project / "exp"), "destination": "/workspace/exp"}],
        "Envs": [{"variable": "CUDA_CACHE_DISABLE", "value": 1},
                 {"variable": "TORCH_HOME", "value": "/workspace/exp/.torch"}],
        "DockerOptions": {"shm_size": "16G", "ulimits": {"memlock": -1}, "user": "1000:1000"}})
    result = cli("selftest", "--runner", "docker", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "env: CUDA_CACHE_DISABLE=1" in lines and "env: TORCH_HOME=/workspace/exp/.torch" in lines
    assert 'docker option: shm_size="16G"' in lines and 'docker option: ulimits={"memlock": -1}' in lines
    assert 'docker option: user="1000:1000"' in lines


@pytest.mark.parametrize("options, words", [
    ({"privileged": True, "user": "1000:1000"}, "DockerOptions.privileged: the container gets every host device"),
    ({"network": "host", "user": "1000:1000"}, "DockerOptions.network host: the container shares the host's network"),
    ({"user": "0:0"}, "the container runs as root (0:0)"),
    ({"user": "root"}, "the container runs as root (root)"),
])
def test_options_that_open_up_the_host_print_one_warning_each(project, cli, options, words):
    write_mounts(project / "mounts.json", {"DockerOptions": options})
    result = cli("selftest", "--runner", "docker", "--dry-run")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "DockerOptions" in line or "as root" in line]
    assert len(warnings) == 1 and words in warnings[0], result.stderr


def test_own_user_prints_no_warning(project, cli):
    write_mounts(project / "mounts.json", {"DockerOptions": {"user": "1000:1000", "network": "bridge"}})
    result = cli("selftest", "--runner", "docker", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "DockerOptions" not in result.stderr and "as root" not in result.stderr, result.stderr


def test_malformed_mounts_file_does_not_block_the_local_runner(project, cli):
    (project / "mounts.json").write_text('{"Mounts": [')
    result = cli("selftest", "--runner", "local", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "runner: local" in result.stdout
    notices = [line for line in result.stderr.splitlines() if "mounts file ignored" in line]
    assert len(notices) == 1 and "not valid JSON" in notices[0], result.stderr
    # ... while Docker, which needs it, still refuses it.
    assert cli("selftest", "--runner", "docker", "--dry-run").exit_code == 2


@pytest.mark.parametrize("section, text, words", [
    ("Slurm", {"partiton": "gpu"}, ["Slurm.partiton", "unknown key", "partition"]),
    ("Slurm", {"container_runtime": "singularity"}, ["Slurm.container_runtime", "pyxis", "docker", "none"]),
    ("Slurm", {"sbatch_options": ["exclusive"]}, ["Slurm.sbatch_options", "--name=value"]),
    ("Kubernetes", {"namespaces": "x"}, ["Kubernetes.namespaces", "unknown key", "namespace"]),
    ("Kubernetes", {"volumes": [{"source": "/", "pvc": {"claim_name": "a"}, "nfs": {"server": "s", "path": "/"}}]},
     ["Kubernetes.volumes[0]", "exactly one of pvc, nfs, host_path"]),
])
def test_cluster_sections_refuse_unknown_keys_and_bad_values(project, bad_input, section, text, words):
    write_mounts(project / "mounts.json", {section: text})
    line = bad_input("selftest", "--runner", "docker", "--dry-run")
    for word in words:
        assert word in line, line
