"""`launch()` for the cluster runners (`--runner slurm|k8s`): the same spec, flags and host-path
rule as Docker, planned for nodes the launcher does not run on.

Differences from Docker/local, and why: the launch directory must live where every node sees it
(Slurm) or travels as a ConfigMap (Kubernetes), so it is not a temp dir and it is kept after the
job (its log is what `pose jobs logs` reads); GPUs are the scheduler's to pick, so `--gpus G`
means G ranks per node and `--gpu_index` is refused; the rendezvous is the first node's (Slurm)
or pod 0's (Kubernetes), so no `--rdzv_endpoint`. Everything is checked, and nothing written,
before submission; a submission the scheduler refuses leaves nothing behind.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from launcher.mounts import Mounts, invoking_user
from launcher.runners import TaskCall
from launcher.tasks import Task
from pose_workloads.errors import BadInput

CLUSTER_RUNNERS = ("slurm", "k8s")


def check_cluster_options(task: Task, options: Any) -> int:
    """Processes per node, after refusing what a scheduler decides itself."""
    if options.gpu_index is not None:
        raise BadInput(f"--gpu_index: the {options.runner} scheduler picks the GPUs; use --gpus G (per node)")
    if options.rdzv_endpoint or options.node_rank:
        raise BadInput(f"--rdzv_endpoint/--node_rank: the {options.runner} runner sets them per node; drop them")
    # --gpus 0: one CPU rank per node (gloo), no GPU requested.
    nproc = max(options.gpus, 1) if options.gpus is not None else 1
    if (options.gpus is not None and options.gpus < 0) or options.num_nodes < 1:
        raise BadInput(f"--gpus {options.gpus} --num_nodes {options.num_nodes}: need gpus >= 0 and num_nodes >= 1")
    if (nproc > 1 or options.num_nodes > 1) and not task.distributed:
        raise BadInput(f"--gpus {nproc} --num_nodes {options.num_nodes}: {task.name} runs as one process; "
                       "use --gpus 1 --num_nodes 1")
    return nproc


def job_name(task: Task) -> str:
    return "pose-" + "-".join(task.argv).replace("_", "-")


def launch_on_cluster(task: Task, values: dict[str, Any], options: Any, mounts: Mounts, image: str,
                      notices: list[str]) -> int:
    from launcher.launch import PathPlanner, notice

    nproc = check_cluster_options(task, options)
    if "--gpus" in {f.name for f in task.flags}:
        values = {**values, "--gpus": nproc}
    if options.runner == "slurm":
        from launcher.runners import slurm

        settings = mounts.slurm
        runtime = options.container_runtime or settings.container_runtime
        if not options.dry_run:
            slurm.check_cluster()
        root = Path(settings.launch_dir)
        path_runner = "local" if runtime == "none" else "docker"
    else:
        from launcher.runners import kubernetes

        runtime = "k8s"
        root = Path(tempfile.gettempdir())  # only to render the specs: the ConfigMap carries them
        path_runner = "docker"
    launch_dir = root / f"{job_name(task)}-{uuid.uuid4().hex[:8]}"
    plan = PathPlanner(mounts, path_runner, launch_dir)
    args = plan.task_args(task, values, options.overrides)
    call = TaskCall(
        task=task.name, args=tuple(args), image=image, mounts=plan.container_mounts(),
        env=dict(mounts.envs), nproc=nproc, num_nodes=options.num_nodes,
        user="{}:{}".format(*invoking_user()), workdir=plan.workdir(),
        docker_options=mounts.docker_options, log_paths=tuple(plan.log_paths()),
    )
    training = task.argv[-1] == "train"
    if options.runner == "k8s":
        return kubernetes.launch(call, plan, mounts, job_name(task), options, training, notices)

    from launcher.runners.slurm_scripts import SlurmJob, batch_script, node_script, sbatch_argv

    partition = options.partition or settings.partition
    gpus_per_node = 0 if options.gpus == 0 else nproc
    if gpus_per_node and not options.dry_run and not slurm.partition_has_gpus(partition):
        gpus_per_node = 0
    if not gpus_per_node:
        notices.append(f"the Slurm partition offers no GPUs: {nproc} CPU rank(s) per node (gloo)")
    job = SlurmJob(
        call=call, launch_dir=launch_dir, runtime=runtime, gpus_per_node=gpus_per_node,
        partition=partition, account=options.account or settings.account,
        qos=settings.qos, time=options.time or settings.time, sbatch_options=tuple(settings.sbatch_options),
        requeue_grace_s=(options.signal_grace_s or settings.signal_grace_s) if training else None,
        python=settings.python, job_name=job_name(task),
    )
    try:
        texts = (batch_script(job), node_script(job))
    except ValueError as err:  # a path pyxis cannot express
        raise BadInput(str(err)) from None
    if options.dry_run:
        for text in notices:
            notice(text)
        print(f"runner: slurm ({runtime})")
        print(f"submit: {shlex.join(sbatch_argv(job))}")
        print(f"--- {job.batch_file}\n{texts[0]}--- {job.node_file}\n{texts[1]}", end="")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    try:
        plan.write_specs()
        slurm.write_job_files(job)
    except BaseException:
        shutil.rmtree(launch_dir, ignore_errors=True)  # nothing half-written stays
        raise
    # Notices only once Slurm has accepted the job, so that a refusal stays one line.
    return slurm.run(job, detach=options.detach, notices=notices)
