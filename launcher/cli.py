"""`pose`: the command line. Thin on purpose: each command hands its options to
`launcher.launch.launch()` (or a plain function of images/mounts/info) and maps known errors to
exit codes (2 bad input, 125 engine failure, else the task's own code).

The task commands (`pose simple-pose ...`, `pose bpnet ...`, `pose dataset ...`, `pose selftest`)
are generated from the task table (`pose_workloads.tasks`) and the launch options
(`launcher.tasks.LAUNCH_OPTIONS`): TAO's flag spellings work verbatim (`-e`, `-r`, `-k`, `--gpus`,
`--inference_spec`, `--model_filename`, `--results_dir`, `-pth`, `-eq`, ...), and so do dashed ones
(`--results-dir`). Imports stay lazy: `pose --help` loads no torch, docker SDK or pydantic.
"""

import functools
import inspect
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from launcher.tasks import LAUNCH_OPTIONS, NETWORKS, TASKS, Flag, LaunchOptions, Task

app = typer.Typer(
    help="Train, evaluate and deploy 2D human-pose models (Simple Pose, BodyPoseNet) in Docker or locally.",
    no_args_is_help=True, add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
)


def _fail_cleanly(function: Callable[[], int]) -> None:
    """Run `function`; exit with its code, or print a known error as one line and exit with
    that error's code."""
    from launcher.errors import EngineError
    from pose_workloads.errors import BadInput

    try:
        code = function()
    except (BadInput, EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise typer.Exit(err.exit_code) from None
    raise typer.Exit(code)


# ---- Task commands, generated from the task table ----------------------------------------------

@functools.cache
def _choices(name: str, choices: tuple[str, ...]) -> type[Enum]:
    """An Enum of `choices`, which is how Typer offers a fixed set of values."""
    return Enum(name, [(choice, choice) for choice in choices], type=str)  # type: ignore[return-value]


def _parameter(flag: Flag, launch_option: bool) -> inspect.Parameter:
    """`flag` as a keyword parameter Typer reads an option from. A task's own flag defaults to
    None (not given: the workload's default applies, and its help says which); a launch option
    defaults to its table default."""
    kind: Any = bool if flag.kind == "switch" else _choices(flag.dest, flag.choices) if flag.choices else flag.type
    if flag.repeat:
        kind = list[kind]
    help = flag.help
    if not launch_option and flag.default is not None and flag.kind != "switch":
        help += f" [default: {flag.default}]"
    option = typer.Option(*flag.spellings(), help=help, metavar=flag.metavar, show_default=launch_option)
    if flag.kind == "switch":
        default: Any = False
    elif flag.required:
        default = inspect.Parameter.empty
    else:
        default = flag.default if launch_option and not flag.repeat else None
        if default is None:
            kind = kind | None
    return inspect.Parameter(flag.dest, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, option],
                             default=default)


def _plain(flag: Flag, value: Any) -> Any:
    """A Typer value as the launcher takes it: choices as strings, repeated options as a tuple."""
    if flag.repeat:
        return tuple(value or ())
    return value.value if isinstance(value, Enum) else value


def _task_command(task: Task) -> Callable[..., None]:
    """The host command of `task`: its own flags (the table's `cli` ones), then the launch options."""
    flags = [flag for flag in task.flags if flag.cli]

    def command(**given: Any) -> None:
        from launcher.launch import launch

        options = LaunchOptions(**{o.dest: _plain(o, given[o.dest]) for o in LAUNCH_OPTIONS})
        values = {flag.name: _plain(flag, given[flag.dest]) for flag in flags}
        _fail_cleanly(lambda: launch(task.network, task.action, values, options))

    parameters = [_parameter(flag, False) for flag in flags] + [_parameter(o, True) for o in LAUNCH_OPTIONS]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = task.help
    command.__name__ = "_".join(task.argv).replace("-", "_")
    return command


def _add_task_commands() -> None:
    """`pose <network> <action>` for every task of the table, `pose <task>` for those of their own."""
    groups = {network: typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)
              for network, help in NETWORKS.items()}
    for task in TASKS.values():
        if task.cli:
            group = groups[task.network] if task.action else app
            group.command(task.action or task.network)(_task_command(task))
    for network, group in groups.items():
        app.add_typer(group, name=network)


_add_task_commands()


# ---- pose info / images ... / mounts ... ------------------------------------------------------

images_app = typer.Typer(help="The Docker images tasks run in.", no_args_is_help=True, rich_markup_mode=None)
mounts_app = typer.Typer(help="The mounts file (~/.pose_mounts.json or $POSE_MOUNTS).",
                         no_args_is_help=True, rich_markup_mode=None)
jobs_app = typer.Typer(help="Detached jobs: Docker containers (--detach), Slurm jobs, Kubernetes Jobs.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(images_app, name="images")
app.add_typer(mounts_app, name="mounts")
app.add_typer(jobs_app, name="jobs")


@app.command("info")
def info(
    workload: Annotated[bool, typer.Option(
        "--workload",
        help="also run the workload's `info` task (torch, devices, mounted paths) through the runner.")] = False,
    runner: Annotated[str, typer.Option("--runner", help="runner for --workload (as for every task).")] = "auto",
) -> None:
    """The engine, the images, the GPUs, the mounts and the versions."""
    from launcher.info import print_info

    def show() -> int:
        print_info()
        if not workload:
            return 0
        from launcher.launch import launch

        return launch("info", "", {}, LaunchOptions(runner=runner))

    _fail_cleanly(show)


class ImageKind(str, Enum):
    pytorch = "pytorch"
    tensorrt = "tensorrt"


@images_app.command("build")
def images_build(
    kind: Annotated[ImageKind, typer.Argument(help="which image.")] = ImageKind.pytorch,
    base_image: Annotated[str | None, typer.Option(
        "--base-image", "--base_image", help="base image (default: the Dockerfile's, NVIDIA's).")] = None,
    wheelhouse: Annotated[Path | None, typer.Option(
        "--wheelhouse", help="folder of wheels preferred over PyPI (offline builds).")] = None,
    ca_certs: Annotated[Path | None, typer.Option(
        "--ca-certs", "--ca_certs", help="folder of extra CA certificates (*.crt).")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="image tag (default pose-<kind>:<version>).")] = None,
    build_arg: Annotated[list[str] | None, typer.Option(
        "--build-arg", "--build_arg", metavar="KEY=VALUE",
        help="a Dockerfile build arg, repeatable (e.g. TENSORRT_PACKAGE= builds tensorrt without TensorRT).")] = None,
) -> None:
    """Build pose-pytorch or pose-tensorrt from containers/<kind>.Dockerfile, streaming its output."""
    from launcher.images import build_image

    _fail_cleanly(lambda: build_image(kind.value, base_image, wheelhouse, ca_certs, tag, build_arg))


@images_app.command("list")
def images_list() -> None:
    """The pose images this engine has."""
    from launcher.info import print_images

    _fail_cleanly(print_images)


@mounts_app.command("check")
def mounts_check() -> None:
    """Every mount, expanded, and what is wrong with it (exit 2 if anything is)."""
    from launcher.info import print_mounts_check

    _fail_cleanly(print_mounts_check)


@jobs_app.command("list")
def jobs_list() -> None:
    """pose's jobs on every engine that answers."""
    from launcher.jobs import print_jobs

    _fail_cleanly(print_jobs)


@jobs_app.command("logs")
def jobs_logs(
    job: Annotated[str, typer.Argument(help="a container name, Slurm job id or Kubernetes Job name (pose jobs list).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="until the job ends; exit with its code.")] = False,
) -> None:
    """The job's output (Slurm: its log file; Kubernetes: pod 0's)."""
    from launcher.jobs import logs

    _fail_cleanly(lambda: logs(job, follow))


@jobs_app.command("cancel")
def jobs_cancel(job: Annotated[str,
                               typer.Argument(help="a container name, Slurm job id or Kubernetes Job name.")]) -> None:
    """Stop the job and wait until it is gone."""
    from launcher.jobs import cancel

    _fail_cleanly(lambda: cancel(job))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
