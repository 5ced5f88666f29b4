"""What the Slurm runner submits, read without a cluster: the sbatch argv, the batch script and
the node script, every user value quoted, the Docker runtime's `docker run` built from the
Docker runner's own kwargs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from launcher.mounts import ContainerOptions, Mount
from launcher.runners import TaskCall
from launcher.runners.docker import container_kwargs
from launcher.runners.slurm_scripts import (
    SlurmJob,
    batch_script,
    docker_run_argv,
    node_command,
    node_script,
    pyxis_mounts,
    sbatch_argv,
)

HOSTILE = "spec $(touch PWNED) `id` 'quoted' \"double\"; rm -rf ~ .yaml"


def _call(tmp_path: Path, **more) -> TaskCall:
    fields = dict(task="simple-pose train", args=("simple-pose", "train", "-e", HOSTILE, "-r", "/results"),
                  image="pose-pytorch:0.1.0", nproc=2, num_nodes=2, user="1000:1000", workdir=str(tmp_path),
                  env={"MY_VAR": "a b $HOME"})
    return TaskCall(**{**fields, **more})


def _job(tmp_path: Path, **more) -> SlurmJob:
    fields = dict(call=_call(tmp_path), launch_dir=tmp_path / "launch dir", runtime="none", gpus_per_node=2,
                  partition="gpu", account="vision", qos="high", time="01:00:00",
                  sbatch_options=("--exclusive",), requeue_grace_s=90, python="python3",
                  job_name="pose-simple-pose-train")
    return SlurmJob(**{**fields, **more})


def test_sbatch_argv_carries_every_option_as_its_own_item(tmp_path):
    argv = sbatch_argv(_job(tmp_path))
    assert argv[:2] == ["sbatch", "--parsable"]
    for item in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=2", "--partition=gpu", "--account=vision",
                 "--qos=high", "--time=01:00:00", "--requeue", "--signal=B:USR1@90", "--exclusive",
                 f"--output={tmp_path / 'launch dir' / 'job.log'}", "--open-mode=append"):
        assert item in argv
    assert argv[-1] == str(tmp_path / "launch dir" / "batch.sh")


def test_no_requeue_and_no_gpu_request_unless_asked(tmp_path):
    argv = sbatch_argv(_job(tmp_path, requeue_grace_s=None, gpus_per_node=0, partition=None))
    assert not any(a.startswith(("--requeue", "--signal", "--gpus", "--partition")) for a in argv)


def _run_node_script(tmp_path: Path, job: SlurmJob, node_id: str) -> list[str]:
    """Run node.sh with `python3` replaced by a program that prints its argv, one per line."""
    printer = tmp_path / "printargs"
    printer.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    printer.chmod(0o755)
    (job.launch_dir / "exit").mkdir(parents=True, exist_ok=True)
    script = job.node_file
    script.write_text(node_script(job))
    env = {**os.environ, "SLURM_NODEID": node_id, "POSE_RDZV_ENDPOINT": "n1:20007"}
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_node_script_passes_hostile_values_verbatim_and_takes_the_node_rank_from_slurm(tmp_path):
    job = _job(tmp_path, python=str(tmp_path / "printargs"))
    argv = _run_node_script(tmp_path, job, node_id="1")
    assert argv[:2] == ["-m", "pose_workloads.torchrun"]
    assert argv[argv.index("--nnodes") + 1] == "2"
    assert argv[argv.index("--nproc_per_node") + 1] == "2"
    assert argv[argv.index("--node_rank") + 1] == "1"
    assert argv[argv.index("--rdzv_endpoint") + 1] == "n1:20007"
    assert argv[argv.index("-e") + 1] == HOSTILE
    assert not (tmp_path / "PWNED").exists()


def test_one_process_runs_the_workload_without_torchrun(tmp_path):
    call = _call(tmp_path, nproc=1, num_nodes=1)
    assert node_command(call, "python3")[:3] == ["python3", "-m", "pose_workloads"]


def test_a_failed_node_leaves_its_own_code_for_the_batch_script(tmp_path):
    failing = tmp_path / "fail"
    failing.write_text("#!/bin/sh\nexit 7\n")
    failing.chmod(0o755)
    job = _job(tmp_path, python=str(failing))
    (job.launch_dir / "exit").mkdir(parents=True)
    job.node_file.write_text(node_script(job))
    done = subprocess.run(["bash", str(job.node_file)], env={**os.environ, "SLURM_NODEID": "1"}, timeout=30)
    assert done.returncode == 7
    assert (job.launch_dir / "exit" / "node1").read_text().strip() == "7"


def test_scripts_are_valid_bash_for_every_runtime(tmp_path):
    mounts = (Mount.model_construct(source=tmp_path, destination="/workspace", read_only=True),
              Mount.model_construct(source=tmp_path / "launch dir", destination="/pose_launch", read_only=True))
    for runtime in ("none", "pyxis", "docker"):
        job = _job(tmp_path, runtime=runtime, call=_call(tmp_path, mounts=mounts))
        for text in (batch_script(job), node_script(job)):
            assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0, text


def test_pyxis_mounts_keep_read_only_and_refuse_separators(tmp_path):
    mounts = (Mount.model_construct(source=Path("/data/coco"), destination="/workspace/data", read_only=True),
              Mount.model_construct(source=Path("/exp"), destination="/workspace/exp", read_only=False))
    job = _job(tmp_path, runtime="pyxis", call=_call(tmp_path, mounts=mounts))
    assert pyxis_mounts(job) == (f"/data/coco:/workspace/data:ro,/exp:/workspace/exp,"
                                 f"{tmp_path}/launch dir/exit:/pose_launch/exit")
    assert "--container-image=pose-pytorch:0.1.0" in batch_script(job)
    bad = (Mount.model_construct(source=Path("/data/a,b"), destination="/workspace/data", read_only=True),)
    with pytest.raises(ValueError, match="pyxis cannot mount"):
        pyxis_mounts(_job(tmp_path, runtime="pyxis", call=_call(tmp_path, mounts=bad)))


def test_docker_runtime_uses_exactly_the_docker_runners_options(tmp_path):
    mounts = (Mount.model_construct(source=Path("/data/a,b"), destination="/workspace/data", read_only=True),)
    options = ContainerOptions(shm_size="8G", ulimits={"nofile": 1024}, ports={"6006/tcp": 6006})
    call = _call(tmp_path, mounts=mounts, docker_options=options, gpu_ids=(0, 2), nproc=1, num_nodes=1)
    kwargs = container_kwargs(call, "pose-x")
    argv = docker_run_argv(kwargs)
    assert argv[:3] == ["docker", "run", "--rm"]
    for pair in (("--name", "pose-x"), ("--user", "1000:1000"), ("--shm-size", "8G"), ("--workdir", str(tmp_path)),
                 ("--ulimit", "nofile=1024:1024"), ("--ulimit", "memlock=-1:-1"), ("--gpus", '"device=0,2"'),
                 ("--env", "MY_VAR=a b $HOME"), ("--publish", "6006:6006/tcp"),
                 # --mount is CSV: the field holding a comma is quoted, as docker's parser expects.
                 ("--mount", 'type=bind,"source=/data/a,b",target=/workspace/data,readonly')):
        assert any(argv[i:i + 2] == list(pair) for i in range(len(argv))), pair
    assert "--init" in argv
    assert argv[argv.index("pose-pytorch:0.1.0") + 1:] == kwargs["command"]


def test_docker_run_argv_refuses_an_option_it_cannot_spell():
    with pytest.raises(ValueError, match="no `docker run` spelling for cpu_quota"):
        docker_run_argv({"image": "i", "command": ["c"], "cpu_quota": 5})


def test_docker_node_script_names_the_container_per_node_and_forwards_signals(tmp_path):
    mounts = (Mount.model_construct(source=tmp_path, destination="/workspace", read_only=False),)
    text = node_script(_job(tmp_path, runtime="docker", call=_call(tmp_path, mounts=mounts)))
    assert 'name="pose-$SLURM_JOB_ID-$SLURM_NODEID-${SLURM_RESTART_COUNT:-0}"' in text
    assert '--name "$name"' in text and "--network host" in text
    assert '--gpus "\\"device=$CUDA_VISIBLE_DEVICES\\""' in text
    assert "docker kill --signal" in text
    assert '--ulimit "memlock=$(within_hard_limit -l 1024 -1)"' in text
