"""`pose jobs` and `--detach` wiring, without engines: what no engine knows is one line, exit 2."""

from __future__ import annotations


def test_detach_is_refused_by_the_local_runner(project, bad_input):
    line = bad_input("selftest", "--runner", "local", "--detach")
    assert "--detach: the local runner runs in the foreground; use --runner docker, slurm or k8s" in line


def test_an_unknown_job_is_one_line_exit_2(project, bad_input, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("PATH", "/usr/bin/nonexistent")  # no squeue/scontrol either
    for command in ("cancel", "logs"):
        line = bad_input("jobs", command, "pose-selftest-0123abcd")
        assert "no pose job pose-selftest-0123abcd" in line and "pose jobs list" in line
