"""What the Slurm runner submits, as pure functions: the `sbatch` argv, the batch script and the
per-node script. No Slurm needed; tests read the text.

    sbatch --parsable --job-name pose-<task> --nodes N --ntasks-per-node 1 ... <launch>/batch.sh
      batch.sh (first node): rendezvous address, `srun ... node.sh`, the first failed rank's
               code, requeue after a preemption signal
        node.sh (each node): torchrun --nnodes N --node_rank $SLURM_NODEID ... (or python -m
               pose_workloads for one process) in the runtime: pyxis, docker or none

Every value that comes from the user reaches a script through `shlex.quote`; the only unquoted
words are the shell variables Slurm sets on each node. sbatch options are argv items, never
script text.
"""

from __future__ import annotations

import csv
import io
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from launcher.mounts import LAUNCH_DIR_DESTINATION
from launcher.runners import TASK_ENV, TaskCall, workload_command

RUNTIMES = ("pyxis", "docker", "none")

# Words that stay shell variables, expanded on each node, instead of being quoted.
_NODE_RANK = "\0SLURM_NODEID"
_RDZV = "\0POSE_RDZV_ENDPOINT"
_CONTAINER_NAME = "\0name"
_GPU_DEVICES = "\0CUDA_VISIBLE_DEVICES"
_SHELL_WORDS = {_NODE_RANK: '"$SLURM_NODEID"', _RDZV: '"$POSE_RDZV_ENDPOINT"', _CONTAINER_NAME: '"$name"',
                # Slurm sets CUDA_VISIBLE_DEVICES to the node's allocated GPUs.
                _GPU_DEVICES: '"\\"device=$CUDA_VISIBLE_DEVICES\\""'}

# The rendezvous port on the first node is drawn from here on (RDZV_PORT_BASE + 0..19999).
RDZV_PORT_BASE = 20000


@dataclass(frozen=True)
class SlurmJob:
    """One submission: the task plus how Slurm should place and run it."""

    call: TaskCall  # num_nodes and nproc (processes per node) set; gpu_ids unused (Slurm picks)
    launch_dir: Path  # on storage every node sees; holds batch.sh, node.sh, specs, job.log
    runtime: str = "none"  # pyxis | docker | none
    gpus_per_node: int = 0  # requested with --gpus-per-node; 0: CPU ranks (gloo)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    sbatch_options: tuple[str, ...] = ()  # passed to sbatch verbatim, after pose's own
    requeue_grace_s: int | None = None  # --requeue --signal=B:USR1@grace (training)
    python: str = "python3"  # the interpreter on the nodes (runtime none)
    job_name: str = "pose"

    @property
    def log_file(self) -> Path:
        return self.launch_dir / "job.log"

    @property
    def batch_file(self) -> Path:
        return self.launch_dir / "batch.sh"

    @property
    def node_file(self) -> Path:
        return self.launch_dir / "node.sh"


def sbatch_argv(job: SlurmJob) -> list[str]:
    """`sbatch --parsable ...`: one task per node; output appended, so a requeued run adds to it."""
    argv = [
        "sbatch", "--parsable", f"--job-name={job.job_name}", "--comment=pose",
        f"--nodes={job.call.num_nodes}", "--ntasks-per-node=1",
        f"--output={job.log_file}", "--open-mode=append", f"--chdir={job.launch_dir}",
    ]
    if job.gpus_per_node:
        argv.append(f"--gpus-per-node={job.gpus_per_node}")
    for flag, value in (("partition", job.partition), ("account", job.account), ("qos", job.qos), ("time", job.time)):
        if value:
            argv.append(f"--{flag}={value}")
    if job.requeue_grace_s is not None:
        # B: signal the batch shell alone; it stops the ranks, then requeues the job itself.
        argv += ["--requeue", f"--signal=B:USR1@{job.requeue_grace_s}"]
    return [*argv, *job.sbatch_options, str(job.batch_file)]


def batch_script(job: SlurmJob) -> str:
    """The batch script: runs on the first node, starts node.sh on every node, returns the first
    failed node's code (the rank's own, see pose_workloads.torchrun), and after USR1 (the
    preemption warning) requeues the job once the ranks have checkpointed and stopped."""
    srun = ["srun", "--ntasks-per-node=1", f"--nodes={job.call.num_nodes}", "--kill-on-bad-exit=1"]
    if job.runtime == "pyxis":
        srun += [f"--container-image={job.call.image}", f"--container-mounts={pyxis_mounts(job)}"]
        if job.call.workdir:
            srun.append(f"--container-workdir={job.call.workdir}")
        node = f"{LAUNCH_DIR_DESTINATION}/node.sh"
    else:
        node = str(job.node_file)
    return f"""#!/bin/bash
# pose {job.call.task}: written by pose, submitted with `sbatch --parsable` (launcher/runners/slurm_scripts.py).
set -uo pipefail
launch={shlex.quote(str(job.launch_dir))}
# The first node hosts torchrun's rendezvous; srun hands this one value to every node.
export POSE_RDZV_ENDPOINT="$(hostname):$(( {RDZV_PORT_BASE} + RANDOM % 20000 ))"
rm -rf "$launch/exit" && mkdir -p "$launch/exit" && chmod 777 "$launch/exit"
echo "pose: job $SLURM_JOB_ID (restart ${{SLURM_RESTART_COUNT:-0}}) on $SLURM_JOB_NODELIST"

preempted=0
stop_ranks() {{ kill -"$1" "$pid" 2>/dev/null || true; }}
# USR1 (the preemption warning, --signal=B:USR1@grace, or scancel --signal=USR1 --batch): srun
# passes it to every process of the step; training ranks checkpoint at the next step and exit 75.
trap 'preempted=1; echo "pose: USR1 (preemption warning): the ranks checkpoint and stop"; stop_ranks USR1' USR1
trap 'stop_ranks TERM' TERM
trap 'stop_ranks INT' INT
{shell_join(srun)} bash {shlex.quote(node)} &
{_WAIT}
# srun's code is the worst node's; the first node to fail left its own code (a rank's) here.
first=$(ls -tr "$launch/exit" 2>/dev/null | head -n 1)
if [[ $code != 0 && -n $first ]]; then code=$(cat "$launch/exit/$first"); fi
if [[ $preempted == 1 && $code != 0 ]]; then
    echo "pose: stopped for preemption (exit $code); requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$code"
"""


# Wait for the background child `$!` to end; `wait` also returns when a trapped signal arrives,
# so wait again until the child is really gone. Leaves its exit status in $code.
_WAIT = """pid=$!
while :; do
    wait "$pid"; code=$?
    kill -0 "$pid" 2>/dev/null || break
done"""

# Each node records a non-zero exit code, so that the batch script can return the first
# failure's own code rather than srun's (a node killed because another failed exits 137).
_RECORD = """if [[ $code != 0 ]]; then echo "$code" > "$exit_dir/node$SLURM_NODEID"; fi
exit "$code"
"""


def node_script(job: SlurmJob) -> str:
    """What each node runs: the workload (torchrun for several processes) in the runtime."""
    call = job.call
    if job.runtime == "docker":
        return _docker_node_script(job)
    inside = job.runtime == "pyxis"
    launch = LAUNCH_DIR_DESTINATION if inside else str(job.launch_dir)
    lines = ["#!/bin/bash", f"# pose {call.task} on node $SLURM_NODEID (runtime {job.runtime})",
             f"exit_dir={shlex.quote(launch + '/exit')}"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in {**call.env, **TASK_ENV}.items()]
    if call.workdir:
        lines.append(f"cd {shlex.quote(call.workdir)}")
    python = "python" if inside else job.python
    lines += [
        "trap 'kill -TERM \"$pid\" 2>/dev/null' TERM",
        "trap 'kill -INT \"$pid\" 2>/dev/null' INT",
        # slurmstepd gives USR1 to every process of the step, the ranks included: nothing to forward.
        "trap : USR1",
        f"{shell_join(node_command(call, python))} &",
        _WAIT,
        _RECORD,
    ]
    return "\n".join(lines)


def node_command(call: TaskCall, python: str) -> list[str]:
    """`workload_command`, with the node rank and rendezvous left to each node's shell."""
    if call.num_nodes <= 1:
        return workload_command(call, python)
    argv = workload_command(replace(call, rdzv_endpoint=_RDZV), python)
    argv[argv.index("--node_rank") + 1] = _NODE_RANK
    return argv


def shell_join(argv: list[str]) -> str:
    """shlex.join, except for the per-node variables, which stay shell words."""
    return " ".join(_SHELL_WORDS.get(word) or shlex.quote(word) for word in argv)


def pyxis_mounts(job: SlurmJob) -> str:
    """`--container-mounts SRC:DST[:ro],...`: the Docker runner's mounts, launch dir included.
    Pyxis splits on ',' and ':', so a path holding one cannot be expressed."""
    items = []
    for mount in job.call.mounts:
        source = str(job.launch_dir) if mount.destination == LAUNCH_DIR_DESTINATION else str(mount.source)
        for path in (source, mount.destination):
            if "," in path or ":" in path:
                raise ValueError(f"{path}: pyxis cannot mount a path containing ',' or ':'; "
                                 "rename it or use --container_runtime docker")
        items.append(f"{source}:{mount.destination}" + (":ro" if mount.read_only else ""))
    # node.sh runs inside the container and writes its exit code here.
    items.append(f"{job.launch_dir}/exit:{LAUNCH_DIR_DESTINATION}/exit")
    return ",".join(items)


# ---- runtime docker: the Docker runner's own options, as a `docker run` argv ------------------

def _docker_node_script(job: SlurmJob) -> str:
    from launcher.runners.docker import DEFAULT_ULIMITS, container_kwargs

    call = replace(job.call, gpu_ids=())
    kwargs = container_kwargs(call, "NAME")
    kwargs["command"] = node_command(call, "python")
    if call.num_nodes > 1 and "network" not in kwargs and "network_mode" not in kwargs:
        # Ranks on other nodes reach the rendezvous and each other by the host's addresses.
        kwargs["network_mode"] = "host"
    argv = docker_run_argv(kwargs)
    argv[argv.index("--name") + 1] = _CONTAINER_NAME
    if job.gpus_per_node:
        argv[3:3] = ["--gpus", _GPU_DEVICES]
    words = dict(_SHELL_WORDS)
    if not call.docker_options.ulimits:
        # pose's default ulimits, lowered to the node's hard limits: what the Docker runner ends up
        # with where the engine cannot raise a limit (ulimits_within_host_limits), decided per node.
        for i in [i + 1 for i, item in enumerate(argv) if item == "--ulimit"]:
            name = argv[i].split("=")[0]
            if name in _ULIMIT_FLAGS:
                flag, unit = _ULIMIT_FLAGS[name]
                argv[i] = f"\0ulimit-{name}"
                words[argv[i]] = f'"{name}=$(within_hard_limit {flag} {unit} {DEFAULT_ULIMITS[name]})"'
    return f"""#!/bin/bash
# pose {call.task} on node $SLURM_NODEID (runtime docker: the Docker runner's options, see container_kwargs)
exit_dir={shlex.quote(str(job.launch_dir / "exit"))}
name="pose-$SLURM_JOB_ID-$SLURM_NODEID-${{SLURM_RESTART_COUNT:-0}}"
within_hard_limit() {{  # bash ulimit flag, bytes per unit it reports, pose's default -> SOFT:HARD
    local hard value=$3
    hard=$(ulimit -H "$1")
    if [[ $hard != unlimited ]] && (( value == -1 || value > hard * $2 )); then value=$(( hard * $2 )); fi
    echo "$value:$value"
}}
# The docker CLI may die before its container: signals go to the container by name.
forward() {{ docker kill --signal "$1" "$name" >/dev/null 2>&1 || true; }}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward USR1' USR1
{" ".join(words.get(word) or shlex.quote(word) for word in argv)} &
{_WAIT}
docker rm -f "$name" >/dev/null 2>&1 || true
{_RECORD}"""


# Docker ulimit name -> (bash `ulimit` flag, bytes or items per unit that flag reports).
_ULIMIT_FLAGS = {"memlock": ("-l", 1024), "stack": ("-s", 1024), "nofile": ("-n", 1)}


# `client.containers.create()` keyword -> how `docker run` spells it. A keyword missing here
# raises, so a new Docker runner option cannot be dropped silently on the way to Slurm.
_FLAG_KWARGS = {"name": "--name", "user": "--user", "shm_size": "--shm-size", "working_dir": "--workdir",
                "network_mode": "--network", "network": "--network"}
_SWITCH_KWARGS = {"init": "--init", "privileged": "--privileged"}
_IGNORED_FALSE = ("stdin_open", "tty")  # pose never asks for them


def docker_run_argv(kwargs: dict[str, Any]) -> list[str]:
    """`docker run --rm ...` equivalent to `client.containers.create(**kwargs)` plus start/attach."""
    rest = dict(kwargs)
    image, command = rest.pop("image"), rest.pop("command")
    argv = ["docker", "run", "--rm"]
    for key, flag in _FLAG_KWARGS.items():
        if rest.get(key) is not None:
            argv += [flag, str(rest.pop(key))]
        rest.pop(key, None)
    for key, flag in _SWITCH_KWARGS.items():
        if rest.pop(key, False):
            argv.append(flag)
    for name, value in rest.pop("environment", {}).items():
        argv += ["--env", f"{name}={value}"]
    for mount in rest.pop("mounts", []):
        argv += ["--mount", _mount_flag(mount)]
    for ulimit in rest.pop("ulimits", []):
        argv += ["--ulimit", f"{ulimit['Name']}={ulimit['Soft']}:{ulimit['Hard']}"]
    for request in rest.pop("device_requests", []):
        argv += ["--gpus", f'"device={",".join(request["DeviceIDs"])}"']
    for key, value in rest.pop("labels", {}).items():
        argv += ["--label", f"{key}={value}"]
    for container_port, host_port in rest.pop("ports", {}).items():
        port, _, proto = str(container_port).partition("/")
        argv += ["--publish", f"{host_port}:{port}" + (f"/{proto}" if proto else "") if host_port else port]
    for key in _IGNORED_FALSE:
        if rest.pop(key, False):
            raise ValueError(f"docker_run_argv: {key}=True is not supported")
    if rest:
        raise ValueError(f"docker_run_argv: no `docker run` spelling for {', '.join(sorted(rest))}")
    return [*argv, image, *command]


def _mount_flag(mount: dict[str, Any]) -> str:
    """`--mount` takes CSV: a field holding ',' or '"' is quoted, as docker's parser expects."""
    fields = [f"type={mount['Type']}", f"source={mount['Source']}", f"target={mount['Target']}"]
    if mount.get("ReadOnly"):
        fields.append("readonly")
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()
