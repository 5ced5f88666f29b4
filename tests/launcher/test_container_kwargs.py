"""What the Docker runner asks the engine for, checked without an engine."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from launcher.mounts import ContainerOptions, Mount
from launcher.runners import TaskCall
from launcher.runners import docker as docker_runner
from launcher.runners.docker import container_kwargs, default_shm_size, stream_logs


def call(tmp_path: Path, **changes) -> TaskCall:
    fields = dict(
        task="bpnet train",
        args=("bpnet", "train", "-e", "/pose_launch/train.yaml", "-r", "/workspace/exp/r"),
        image="pose-pytorch:0.1.0",
        mounts=(Mount(source=tmp_path, destination="/workspace/exp"),
                Mount.model_construct(source=tmp_path / "launch", destination="/pose_launch", read_only=True)),
        user="1234:2345",
        workdir="/workspace/exp",
    )
    fields.update(changes)
    return TaskCall(**fields)


def test_runs_the_workload_argv_as_a_list_never_a_shell_string(tmp_path):
    kwargs = container_kwargs(call(tmp_path, args=("simple-pose", "inference", "--input", "/w/a b; rm -rf /")), "n")
    assert kwargs["command"] == ["python", "-m", "pose_workloads", "simple-pose", "inference", "--input",
                                 "/w/a b; rm -rf /"]
    assert kwargs["image"] == "pose-pytorch:0.1.0" and kwargs["name"] == "n"


def test_runs_as_the_invoking_user_with_a_writable_home(tmp_path):
    kwargs = container_kwargs(call(tmp_path), "n")
    assert kwargs["user"] == "1234:2345"
    assert kwargs["environment"]["HOME"] == "/tmp" and kwargs["environment"]["USER"]
    assert kwargs["environment"]["PYTHONUNBUFFERED"] == "1"
    assert kwargs["init"] is True
    assert kwargs["working_dir"] == "/workspace/exp"


def test_docker_options_user_overrides_the_invoking_user(tmp_path):
    kwargs = container_kwargs(call(tmp_path, docker_options=ContainerOptions(user="0:0")), "n")
    assert kwargs["user"] == "0:0"


def test_mounts_are_binds_with_read_only_and_the_launch_dir(tmp_path):
    mounts = {m["Target"]: m for m in container_kwargs(call(tmp_path), "n")["mounts"]}
    assert mounts["/workspace/exp"]["Source"] == str(tmp_path)
    assert mounts["/workspace/exp"]["Type"] == "bind" and not mounts["/workspace/exp"]["ReadOnly"]
    assert mounts["/pose_launch"]["Source"] == str(tmp_path / "launch") and mounts["/pose_launch"]["ReadOnly"]


def test_default_shm_and_ulimits_for_data_loaders(tmp_path):
    kwargs = container_kwargs(call(tmp_path), "n")
    assert kwargs["shm_size"] == default_shm_size()
    assert int(default_shm_size()[:-1]) > 64  # more than Docker's 64 MB
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in kwargs["ulimits"]}
    assert ulimits == {"memlock": (-1, -1), "stack": (67108864, 67108864), "nofile": (65536, 65536)}


def test_docker_options_override_shm_ulimits_network_ports(tmp_path):
    options = ContainerOptions(shm_size="2G", ulimits={"nofile": 4096, "core": 0}, network="host",
                               ports={"8888": 8888}, privileged=True)
    kwargs = container_kwargs(call(tmp_path, docker_options=options), "n")
    assert kwargs["shm_size"] == "2G"
    ulimits = {u["Name"]: u["Soft"] for u in kwargs["ulimits"]}
    assert ulimits == {"memlock": -1, "stack": 67108864, "nofile": 4096, "core": 0}
    assert kwargs["network_mode"] == "host" and "network" not in kwargs
    assert kwargs["ports"] == {"8888": 8888} and kwargs["privileged"] is True
    kwargs = container_kwargs(call(tmp_path, docker_options=ContainerOptions(network="pose-net")), "n")
    assert kwargs["network"] == "pose-net"


def test_mounts_file_envs_reach_the_container(tmp_path):
    kwargs = container_kwargs(call(tmp_path, env={"TORCH_HOME": "/workspace/exp/.torch"}), "n")
    assert kwargs["environment"]["TORCH_HOME"] == "/workspace/exp/.torch"


def test_gpu_request_names_exactly_the_chosen_gpus(tmp_path):
    (request,) = container_kwargs(call(tmp_path, gpu_ids=(1, 3)), "n")["device_requests"]
    assert request["DeviceIDs"] == ["1", "3"]
    assert request["Capabilities"] == [["gpu"]]
    assert request["Count"] in (None, 0)  # not "all GPUs" (count=-1) as TAO asks


def test_cpu_task_requests_no_gpu(tmp_path):
    assert container_kwargs(call(tmp_path, gpu_ids=()), "n")["device_requests"] == []


def test_several_processes_start_under_torchrun(tmp_path):
    kwargs = container_kwargs(call(tmp_path, nproc=2, gpu_ids=(0, 1)), "n")
    assert kwargs["command"][:6] == ["python", "-m", "pose_workloads.torchrun", "--nproc_per_node", "2", "--standalone"]
    assert kwargs["command"][6:9] == ["-m", "pose_workloads", "bpnet"]
    multi = container_kwargs(call(tmp_path, nproc=4, num_nodes=2, node_rank=1, rdzv_endpoint="node0:29500"), "n")
    assert multi["command"][3:11] == ["--nproc_per_node", "4", "--nnodes", "2", "--node_rank", "1",
                                      "--rdzv_endpoint", "node0:29500"]


def test_log_stream_rewrites_container_paths_line_by_line():
    chunks = [(b"saved /workspace/exp/r/mo", None), (None, b"warn: /pose_launch/t.yaml: x\n"),
              (b"del.pth\nepoch 1\n", None), (b"tail without newline", None)]
    out, err = io.StringIO(), io.StringIO()
    rewrite = docker_runner.LogPathMapper([("/workspace/exp", "/home/u/exp"),
                                           ("/pose_launch/t.yaml", "/home/u/t.yaml")])
    stream_logs(chunks, rewrite, out, err)
    assert out.getvalue() == "saved /home/u/exp/r/model.pth\nepoch 1\ntail without newline\n"
    assert err.getvalue() == "warn: /home/u/t.yaml: x\n"


class FakeEngine:
    """Just enough of docker.DockerClient to see which containers the runner leaves behind.
    `start_errors` are raised by the first starts, one each."""

    def __init__(self, *start_errors: Exception, status: int = 0):
        self.start_errors, self.status = list(start_errors), status
        self.created: list[dict] = []
        self.removed: list[str] = []
        self.containers = self
        self.api = self

    def create(self, **kwargs):
        self.created.append(kwargs)
        engine = self

        class Container:
            id = kwargs["name"]

            def start(self):
                if engine.start_errors:
                    raise engine.start_errors.pop(0)

            def wait(self):
                return {"StatusCode": engine.status}

        return Container()

    def attach(self, container, **kwargs):
        return iter([(b"hello\n", None)])

    def remove_container(self, name, force=False):
        self.removed.append(name)


def names(kwargs_list: list[dict]) -> list[str]:
    return [kwargs["name"] for kwargs in kwargs_list]


def test_failed_start_still_removes_the_created_container(tmp_path, capsys):
    import docker.errors

    engine = FakeEngine(docker.errors.APIError("could not select device driver \"\" with capabilities: [[gpu]]"))
    with pytest.raises(docker_runner.EngineError, match="NVIDIA Container Toolkit"):
        docker_runner.run(call(tmp_path, gpu_ids=(0,)), client=engine)
    assert engine.created and engine.removed == names(engine.created)


@pytest.mark.parametrize("status", [0, 1, 137])
def test_task_exit_code_is_returned_and_container_removed(tmp_path, capsys, status):
    engine = FakeEngine(status=status)
    assert docker_runner.run(call(tmp_path), client=engine) == status
    assert engine.removed == names(engine.created)
    assert capsys.readouterr().out == "hello\n"


def test_engine_that_cannot_raise_ulimits_gets_the_host_hard_limits(tmp_path, capsys, monkeypatch):
    import resource

    import docker.errors

    hard = {resource.RLIMIT_MEMLOCK: 8 * 2**20, resource.RLIMIT_STACK: resource.RLIM_INFINITY,
            resource.RLIMIT_NOFILE: 20000}
    monkeypatch.setattr(resource, "getrlimit", lambda which: (0, hard[which]))
    engine = FakeEngine(docker.errors.APIError("error setting rlimits for ready process: operation not permitted"))
    assert docker_runner.run(call(tmp_path), client=engine) == 0
    first, second = engine.created
    assert first["name"] == second["name"] and engine.removed == [first["name"], first["name"]]
    ulimits = {u["Name"]: u["Hard"] for u in second["ulimits"]}
    assert ulimits == {"memlock": 8 * 2**20, "stack": 64 * 2**20, "nofile": 20000}
    assert "cannot raise ulimits" in capsys.readouterr().err


def test_ulimits_the_user_chose_are_not_lowered(tmp_path):
    import docker.errors

    engine = FakeEngine(docker.errors.APIError("error setting rlimits for ready process"))
    with pytest.raises(docker_runner.EngineError, match="rlimit"):
        docker_runner.run(call(tmp_path, docker_options=ContainerOptions(ulimits={"nofile": 10**6})), client=engine)
    assert len(engine.created) == 1 and engine.removed == names(engine.created)
