"""`launch()`: one task from its flags to its exit code, every input checked before it starts.

In run order: the task's row in the task table (`pose_workloads.tasks`); the mounts file; the runner (Docker or local);
the GPUs; every path flag and every path field of every spec translated and checked (specs
validated with `pose_workloads.specs`, `--set` applied); the engine and image (--runner docker);
then, and only then, the translated specs are written to a launch directory (mounted read-only
at /pose_launch) and the runner starts the task. Bad input raises `BadInput` (exit 2) before
anything is created.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from launcher import gpus
from launcher.images import image_tag
from launcher.mounts import (
    LAUNCH_DIR_DESTINATION,
    Mount,
    Mounts,
    invoking_home,
    invoking_user,
    load_mounts,
    mounts_file_path,
    risky_options,
)
from launcher.paths import local_path, mount_of_host_path, place_path, to_container
from launcher.runners import Interrupted, TaskCall, interrupts_raise, run, workload_command
from launcher.tasks import LaunchOptions, Task, find_task, image_kind, nested_spec_class
from pose_workloads.errors import BadInput


def notice(text: str) -> None:
    print(f"pose: {text}", file=sys.stderr, flush=True)


def launch(network: str, action: str, values: dict[str, Any], options: LaunchOptions | None = None) -> int:
    """Run one task; `values` maps the task's flags (workload spellings, see tasks.py) to the
    values given (None or False: not given). Returns the task's exit code."""
    options = options or LaunchOptions()
    task = find_task(network, action)
    unknown = set(values) - {f.name for f in task.flags}
    if unknown:
        raise BadInput(f"{task.name} takes no {', '.join(sorted(unknown))}")
    if options.overrides and task.primary_spec is None:
        raise BadInput(f"--set: {task.name} reads no spec; drop --set")
    # Said only once everything is checked, so that bad input stays one line.
    notices = ["-k: pose models are not encrypted; the key is ignored"] if options.key is not None else []
    image = image_tag(image_kind(task, values))
    mounts = load_mounts_for(options.runner, image, notices)
    if options.runner in ("slurm", "k8s"):
        from launcher.cluster_launch import launch_on_cluster

        return launch_on_cluster(task, values, options, mounts, image, notices)
    runner = choose_runner(options.runner, image, notices)
    if runner == "docker":
        notices += risky_options(mounts.docker_options, "{}:{}".format(*invoking_user()))
    gpu_ids, nproc = plan_processes(task, options, notices)
    if "--gpus" in {f.name for f in task.flags}:
        values = {**values, "--gpus": nproc}

    if options.detach and runner != "docker":
        raise BadInput("--detach: the local runner runs in the foreground; use --runner docker, slurm or k8s")
    # A detached container outlives `pose`: its specs go where `pose jobs cancel` removes them.
    launch_root = detached_launch_root() if options.detach else Path(tempfile.gettempdir())
    launch_dir = launch_root / f"pose-launch-{uuid.uuid4().hex[:12]}"
    plan = PathPlanner(mounts, runner, launch_dir)
    args = plan.task_args(task, values, options.overrides)
    if options.runner == "docker" and not options.dry_run:
        # Checked after the specs and paths, so that those are reported as such, engine or not.
        why = docker_unavailable(image)
        if why:
            raise BadInput(why)
    call = TaskCall(
        task=task.name,
        args=tuple(args),
        image=image,
        mounts=plan.container_mounts(),
        env=dict(mounts.envs) if runner == "docker" else {},
        gpu_ids=tuple(gpu_ids),
        nproc=nproc,
        num_nodes=options.num_nodes,
        node_rank=options.node_rank,
        rdzv_endpoint=options.rdzv_endpoint,
        user="{}:{}".format(*invoking_user()),
        workdir=plan.workdir(),
        docker_options=mounts.docker_options,
        log_paths=tuple(plan.log_paths()),
    )
    for text in notices:
        notice(text)
    if options.dry_run:
        print_plan(call, runner, plan)
        return 0
    # Signals raise from here on, so that the launch folder goes on every way out: a SIGHUP
    # (terminal closed) or SIGTERM while the specs are written included.
    if options.detach:
        from launcher.runners.docker import run_detached

        launch_root.mkdir(parents=True, exist_ok=True)
        plan.write_specs()
        try:
            return run_detached(replace(call, labels=(("pose.launch_dir", str(launch_dir)),
                                                      ("pose.log_paths", json.dumps(call.log_paths)))))
        except BaseException:
            shutil.rmtree(launch_dir, ignore_errors=True)
            raise
    try:
        with interrupts_raise():
            plan.write_specs()
            return run(call, runner)
    except Interrupted as stop:
        return stop.exit_code
    finally:
        shutil.rmtree(launch_dir, ignore_errors=True)


def detached_launch_root() -> Path:
    """Where detached Docker tasks keep their launch directories (in the invoking user's home)."""
    return invoking_home() / ".pose" / "detached"


def load_mounts_for(requested_runner: str, image: str, notices: list[str]) -> Mounts:
    """The mounts file, validated. The local runner needs none, so a broken file does not stop
    `--runner local` (or auto choosing local): it is ignored, said in one line."""
    try:
        return load_mounts()
    except BadInput as err:
        on_docker_or_cluster = requested_runner in ("docker", "slurm", "k8s")
        if on_docker_or_cluster or (requested_runner == "auto" and not docker_unavailable(image)):
            raise
        notices.append(f"mounts file ignored by the local runner: {err}")
        return Mounts(file=mounts_file_path())


def local_workloads_missing() -> str:
    """Why the local runner cannot start workloads here ('' when it can)."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed here (pip install '.[local]')"
    return ""


def choose_runner(requested: str, image: str, notices: list[str]) -> str:
    """docker | local as asked (see `docker_unavailable` for the engine check); auto: Docker
    when an engine answers and has the task's image, else local, said in one line."""
    if requested not in ("docker", "local", "auto"):
        raise BadInput(f"--runner {requested}: valid: docker, local, auto, slurm, k8s")
    if requested == "local":
        missing = local_workloads_missing()
        if missing:
            raise BadInput(f"--runner local: {missing}; or use --runner docker")
        return "local"
    if requested == "docker":
        return "docker"
    why = docker_unavailable(image)
    if not why:
        return "docker"
    missing = local_workloads_missing()
    if missing:
        raise BadInput(f"--runner auto: {why.split(';')[0]}, and {missing}; build the image or install the workloads")
    notices.append(f"{why.split(';')[0]}: running locally")
    return "local"


def docker_unavailable(image: str) -> str:
    """Why a task cannot run in `image` through this engine ('' when it can)."""
    import docker

    from launcher.runners.docker import connect

    try:
        connect(timeout=10).images.get(image)
    except BadInput as err:
        return str(err)
    except docker.errors.ImageNotFound:
        kind = "tensorrt" if "tensorrt" in image else "pytorch"
        return f"image {image} not found; build it with `pose images build {kind}`"
    except docker.errors.DockerException as err:
        return f"the engine failed to answer ({err}); check `pose info`"
    return ""


def plan_processes(task: Task, options: LaunchOptions, notices: list[str]) -> tuple[list[int], int]:
    """(host GPU indices, processes per node). No GPU on the host: CPU, said in one line."""
    indices = gpus.parse_gpu_index(options.gpu_index)
    if indices is not None and options.gpus is not None and options.gpus != len(indices):
        raise BadInput(f"--gpus {options.gpus} and --gpu_index {options.gpu_index} disagree; give only one of them")
    count = len(indices) if indices is not None else (options.gpus if options.gpus is not None else 1)
    if (count > 1 or options.num_nodes > 1) and not task.distributed:
        raise BadInput(f"--gpus {count}: {task.name} runs as one process; use --gpus 1 (--gpu_index I picks the GPU)")
    if options.num_nodes < 1 or not 0 <= options.node_rank < options.num_nodes:
        raise BadInput(
            f"--num_nodes {options.num_nodes} --node_rank {options.node_rank}: need 0 <= node_rank < num_nodes")
    if options.num_nodes > 1 and not options.rdzv_endpoint:
        raise BadInput(f"--num_nodes {options.num_nodes}: give --rdzv_endpoint HOST:PORT of node 0")
    inventory = gpus.find_gpus()
    chosen = gpus.choose_gpus(inventory, count, indices)
    if not chosen:
        procs = f" ({count} processes, gloo)" if count > 1 else ""
        notices.append(f"no NVIDIA GPU found: running on CPU{procs}")
    return chosen, count


@dataclass
class SpecCopy:
    """A translated spec, written to the launch directory just before the task starts."""

    name: str
    spec: Any  # a pydantic model from pose_workloads.specs
    source: Path  # the host file it was read from


@dataclass
class PathPlanner:
    """Translates a task's paths for one runner and collects the spec copies to write.

    Docker: host paths become container paths by the longest mount (paths written TAO-style, in
    container paths, stay); local: container paths written TAO-style become host paths.
    """

    mounts: Mounts
    runner: str
    launch_dir: Path
    cwd: Path = field(default_factory=Path.cwd)
    copies: list[SpecCopy] = field(default_factory=list)
    _copied: dict[Path, str] = field(default_factory=dict)

    def host_path(self, value: str, what: str) -> Path:
        """Where `value` is on the host, to read it here."""
        if self.runner == "docker":
            return place_path(value, self.mounts.mounts, self.mounts.file, what, self.cwd).host
        return local_path(value, self.mounts.mounts, self.cwd)

    def task_path(self, value: str, what: str, output: bool = False) -> str:
        """`value` as the task sees it."""
        if self.runner != "docker":
            return str(self.host_path(value, what))
        placed = place_path(value, self.mounts.mounts, self.mounts.file, what, self.cwd)
        if output and placed.mount.read_only:
            raise BadInput(
                f"{what}: {value} is in the read-only mount {placed.mount.source} -> {placed.mount.destination}; "
                "write outputs to a writable mount"
            )
        return str(placed.container)

    def launch_path(self, name: str) -> str:
        if self.runner == "docker":
            return f"{LAUNCH_DIR_DESTINATION}/{name}"
        return str(self.launch_dir / name)

    def spec_file(self, value: str, spec_class: str, what: str, overrides: tuple[str, ...] = ()) -> str:
        """Validate the spec at `value`, translate its path fields (and the specs they name), and
        return the path of its translated copy as the task sees it."""
        from pose_workloads import specs

        host = self.host_path(value, what)
        if host in self._copied and not overrides:
            return self.launch_path(self._copied[host])
        try:
            spec = specs.load_spec(getattr(specs, spec_class), host, list(overrides))
        except specs.SpecError as err:
            # `what` says who named this file: the flag, or the field of the spec that holds it.
            raise BadInput(f"{what}: {err}") from None

        def translate(location: str, field_value: str) -> str:
            nested = nested_spec_class(spec_class, location)
            where = f"{host}: {location}"
            if nested is not None:
                return self.spec_file(field_value, nested, where)
            return self.task_path(field_value, where)

        translated = specs.map_spec_paths(spec, translate)
        name = host.name
        taken = {c.name for c in self.copies}
        counter = 1
        while name in taken:
            name, counter = f"{counter}-{host.name}", counter + 1
        self.copies.append(SpecCopy(name, translated, host))
        if not overrides:
            self._copied[host] = name
        return self.launch_path(name)

    def task_args(self, task: Task, values: dict[str, Any], overrides: tuple[str, ...]) -> list[str]:
        """The workload argv: network, action, then each given flag in table order."""
        args = list(task.argv)
        primary = task.primary_spec
        files: dict[Path, str] = {}  # host path -> the flag that names it: an output may not be an input
        for flag in task.flags:
            value = values.get(flag.name)
            if value is None or value is False:
                continue
            if flag.kind == "switch":
                args.append(flag.name)
                continue
            text = str(value)
            if flag.kind in ("input", "output"):
                self._refuse_same_file(files, flag, text)
            if flag.kind == "spec":
                assert flag.spec is not None  # every spec flag names its class (tests/launcher/test_tasks.py)
                text = self.spec_file(text, flag.spec, flag.name, overrides if flag is primary else ())
            elif flag.kind == "input":
                if not self.host_path(text, flag.name).exists():
                    raise BadInput(f"{flag.name}: {text} does not exist; check the path")
                text = self.task_path(text, flag.name)
            elif flag.kind == "output":
                text = self.task_path(text, flag.name, output=True)
            args += [flag.name, text]
        return args

    def _refuse_same_file(self, files: dict[Path, str], flag, text: str) -> None:
        """Two path flags naming one file (prune -o = -m): the output would destroy the input."""
        host = self.host_path(text, flag.name).resolve()
        other = files.get(host)
        if other is not None:
            raise BadInput(f"{flag.name} {text}: is also {other}; write the output to a new path")
        files[host] = flag.name

    def container_mounts(self) -> tuple[Mount, ...]:
        if self.runner != "docker":
            return ()
        # Built unvalidated: the folder is created just before the start, and its destination
        # is the one user mounts may not take.
        launch = Mount.model_construct(source=self.launch_dir, destination=LAUNCH_DIR_DESTINATION, read_only=True)
        return (*self.mounts.mounts, launch)

    def workdir(self) -> str:
        """The task's working directory: where `pose` was started, when the task can see it
        ('' for Docker otherwise: the image's WORKDIR)."""
        if self.runner != "docker":
            return str(self.cwd)
        cwd = self.cwd.resolve()
        mount = mount_of_host_path(cwd, self.mounts.mounts)
        return str(to_container(cwd, mount)) if mount else ""

    def log_paths(self) -> list[tuple[str, str]]:
        """What the task may print -> what to show: spec copies as the files they came from."""
        pairs = [(self.launch_path(c.name), str(c.source)) for c in self.copies]
        if self.runner == "docker":
            pairs += [(m.destination, str(m.source)) for m in self.mounts.mounts]
        return pairs

    def write_specs(self) -> None:
        """Create the launch directory and write the translated specs, readable by the task's
        user (pose may run as root under sudo, the container as the invoking user)."""
        from pose_workloads import specs

        self.launch_dir.mkdir(mode=0o755)
        os.chmod(self.launch_dir, 0o755)
        for copy in self.copies:
            target = self.launch_dir / copy.name
            specs.save_spec(copy.spec, target)
            os.chmod(target, 0o644)


def print_plan(call: TaskCall, runner: str, plan: PathPlanner) -> None:
    """--dry-run: what would start, with the paths the task would see."""
    python = "python" if runner == "docker" else sys.executable
    print(f"runner: {runner}")
    if runner == "docker":
        print(f"image: {call.image}")
    print(f"command: {shlex.join(workload_command(call, python))}")
    gpus_text = ",".join(map(str, call.gpu_ids)) if call.gpu_ids else "none (CPU)"
    print(f"gpus: {gpus_text}; processes: {call.nproc}")
    for m in call.mounts:
        print(f"mount: {m.source} -> {m.destination} ({'ro' if m.read_only else 'rw'})")
    for name, value in call.env.items():
        print(f"env: {name}={value}")
    if runner == "docker":
        for name, value in call.docker_options.model_dump(exclude_defaults=True).items():
            print(f"docker option: {name}={json.dumps(value)}")
    for copy in plan.copies:
        print(f"spec: {copy.source} -> {plan.launch_path(copy.name)}")
