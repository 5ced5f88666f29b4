"""The Docker runner: one container per task, through the docker SDK (never a shell string).

What TAO's launcher gets wrong and this fixes: it starts a detached container and then runs
`bash -c 'docker exec ... <args joined by spaces>'` (unquoted), as root unless told otherwise,
with every GPU; a failed task exits 0 and Ctrl-C is reported as a pass. Here the argv is a list,
the container runs as the invoking user with exactly the GPUs asked for, its exit code is
`pose`'s, SIGINT/SIGTERM stop it (130/143), and it is removed in every case.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import IO, Any

import pose_workloads
from launcher.errors import EngineError
from launcher.paths import LogPathMapper
from launcher.runners import TASK_ENV, Interrupted, TaskCall, interrupts_raise, workload_command
from pose_workloads.errors import BadInput

# Data loaders need more than Docker's 64 MB /dev/shm, and COCO loaders more than 1024 open
# files ("received 0 items of ancdata" until ulimit -n 65536); pinned memory wants memlock.
DEFAULT_ULIMITS = {"memlock": -1, "stack": 64 * 2**20, "nofile": 65536}

# The container runs as the invoking user, who has no home and no passwd entry in the image: a
# HOME every user can write (torch, matplotlib and pip keep caches there), and a user name for
# getpass.getuser(), which raises without one (torch's compile cache asks for it).
CONTAINER_USER_ENV = {"HOME": "/tmp", "USER": "pose", "LOGNAME": "pose"}

# How long a task may take to wind down after the forwarded signal before it is killed.
STOP_GRACE_S = 10


def ulimits_within_host_limits(ulimits: dict[str, int]) -> dict[str, int]:
    """`ulimits` with each default lowered to this host's hard limit.

    An engine without CAP_SYS_RESOURCE (rootless, or itself in a container, as in CI) cannot
    raise a limit above its own hard limit and fails the start ("error setting rlimit").
    """
    import resource

    lowered = dict(ulimits)
    for name, resource_id in (("memlock", resource.RLIMIT_MEMLOCK), ("stack", resource.RLIMIT_STACK),
                              ("nofile", resource.RLIMIT_NOFILE)):
        hard = resource.getrlimit(resource_id)[1]
        if name in lowered and hard != resource.RLIM_INFINITY and (lowered[name] == -1 or lowered[name] > hard):
            lowered[name] = hard  # same units for getrlimit and Docker: bytes, or a count for nofile
    return lowered


def default_shm_size() -> str:
    """Half the host's memory: /dev/shm is a tmpfs limit, not an allocation."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{total // 2 // 2**20}m"


def _network_kwargs(network: str | None) -> dict[str, str]:
    if not network:
        return {}
    # `host`, `none`, `bridge` and `container:<id>` are modes; anything else names a network.
    if network in ("host", "none", "bridge") or network.startswith("container:"):
        return {"network_mode": network}
    return {"network": network}


def container_kwargs(call: TaskCall, name: str) -> dict[str, Any]:
    """The keyword arguments of `client.containers.create()` for `call`; pure, no engine needed.

    Mirrors `docker create --init --user UID:GID --shm-size ... --ulimit ... --gpus '"device=I,J"'
    --mount type=bind,... IMAGE python -m pose_workloads ...`.
    """
    from docker.types import DeviceRequest, Mount, Ulimit

    options = call.docker_options
    ulimits = {**DEFAULT_ULIMITS, **options.ulimits}
    kwargs: dict[str, Any] = {
        "image": call.image,
        "command": workload_command(call, "python"),
        "name": name,
        "user": options.user or call.user,
        "environment": {**CONTAINER_USER_ENV, **TASK_ENV, **call.env},
        "mounts": [
            Mount(target=m.destination, source=str(m.source), type="bind", read_only=m.read_only)
            for m in call.mounts
        ],
        # docker-init reaps zombies (data-loader workers) and forwards signals to the task.
        "init": True,
        "shm_size": options.shm_size or default_shm_size(),
        # TAO's convention: soft = hard.
        "ulimits": [Ulimit(name=k, soft=v, hard=v) for k, v in sorted(ulimits.items())],
        "device_requests": (
            [DeviceRequest(device_ids=[str(i) for i in call.gpu_ids], capabilities=[["gpu"]])]
            if call.gpu_ids else []
        ),
        "labels": {"pose.task": call.task, "pose.version": pose_workloads.__version__, **dict(call.labels)},
        "stdin_open": False,
        "tty": False,
        **_network_kwargs(options.network),
    }
    if call.workdir:  # else the image's WORKDIR
        kwargs["working_dir"] = call.workdir
    if options.ports:
        kwargs["ports"] = dict(sorted(options.ports.items()))
    if options.privileged:
        kwargs["privileged"] = True
    return kwargs


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: int = 60):
    """A docker SDK client for the engine at $DOCKER_HOST (as `docker.from_env()`), or BadInput."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as err:
        raise BadInput(
            f"no Docker engine answers at {engine_address()} ({_first_line(err)}); "
            "start dockerd, set DOCKER_HOST, or use --runner local"
        ) from None
    return client


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "explanation", None) or err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def container_name(task: str) -> str:
    return f"pose-{task.replace(' ', '-').replace('_', '-')}-{uuid.uuid4().hex[:8]}"


def run(call: TaskCall, client=None) -> int:
    """Run the task in a new container; return its exit code. The container is removed after,
    whatever happened (a failed start included)."""
    import docker

    client = client or connect()
    # No read timeout from here on: the attached log stream would otherwise end after 60 s of a
    # silent task (docker-py disables it for `logs()` streams but not for `attach()`).
    client.api.timeout = None
    name = container_name(call.task)
    rewrite = LogPathMapper(call.log_paths)
    with interrupts_raise():
        try:
            container = _create_and_start(client, call, name)
            stream_logs(client.api.attach(container.id, stream=True, logs=True, demux=True), rewrite)
            return int(container.wait()["StatusCode"])
        except Interrupted as stop:
            print(f"pose: {stop} received: stopping container {name}", file=sys.stderr, flush=True)
            _stop(client, name, stop.signum)
            return stop.exit_code
        finally:
            with contextlib.suppress(docker.errors.APIError, Interrupted):
                client.api.remove_container(name, force=True)


def run_detached(call: TaskCall, client=None) -> int:
    """Start the task in a new container and return at once, printing its name (`pose jobs
    logs|cancel NAME`). The container is kept after it ends, for its log and exit code."""
    client = client or connect()
    name = container_name(call.task)
    _create_and_start(client, replace(call, labels=(*call.labels, ("pose.detached", "1"))), name)
    print(name, flush=True)
    print(f"pose: started container {name}; follow it with `pose jobs logs {name} --follow`", file=sys.stderr,
          flush=True)
    return 0


def _create_and_start(client, call: TaskCall, name: str):
    import docker

    try:
        container = client.containers.create(**container_kwargs(call, name))
    except docker.errors.ImageNotFound:
        kind = "tensorrt" if "tensorrt" in call.image else "pytorch"
        raise BadInput(f"image {call.image} not found; build it with `pose images build {kind}`") from None
    try:
        container.start()
        return container
    except docker.errors.APIError as err:
        # A failed start leaves a 'created' container (a GPU request on an engine without the
        # NVIDIA runtime, say); `run` removes it.
        if "rlimit" not in str(err) or call.docker_options.ulimits:
            hint = ("install the NVIDIA Container Toolkit, or run on CPU with --runner local"
                    if call.gpu_ids else "check `pose info` and the engine's log")
            raise EngineError(f"docker could not start {call.image}: {_first_line(err)}; {hint}") from None
    # pose's default ulimits exceed what this engine may set: once more within the host's hard
    # limits (this retry has ulimits set, so it is the last), and say so.
    client.api.remove_container(name, force=True)
    limits = ulimits_within_host_limits(DEFAULT_ULIMITS)
    print(f"pose: the engine cannot raise ulimits beyond this host's hard limits; using {limits} "
          "(set DockerOptions.ulimits to choose)", file=sys.stderr, flush=True)
    with_limits = call.docker_options.model_copy(update={"ulimits": limits})
    return _create_and_start(client, replace(call, docker_options=with_limits), name)


def _stop(client, name: str, signum: int) -> None:
    """Forward the signal to the task (docker-init passes it on); kill it if it has not ended
    after STOP_GRACE_S, or on a second signal."""
    try:
        client.api.kill(name, signal=signum)
        client.api.wait(name, timeout=STOP_GRACE_S)
    except Exception:  # a timeout, a second Ctrl-C, a container already gone: kill regardless
        with contextlib.suppress(Exception):
            client.api.kill(name)


def stream_logs(chunks: Iterable[tuple[bytes | None, bytes | None]], rewrite,
                stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> None:
    """Write demultiplexed (stdout, stderr) chunks line by line, container paths shown as host
    paths. A line split across chunks is held until its end arrives."""
    sinks = (stdout or sys.stdout, stderr or sys.stderr)
    pending = [b"", b""]
    for chunk in chunks:
        for i, data in enumerate(chunk):
            if not data:
                continue
            pending[i] += data
            *lines, pending[i] = pending[i].split(b"\n")
            for line in lines:
                sinks[i].write(rewrite(line.decode(errors="replace")) + "\n")
            sinks[i].flush()
    for i, rest in enumerate(pending):
        if rest:
            sinks[i].write(rewrite(rest.decode(errors="replace")) + "\n")
            sinks[i].flush()
