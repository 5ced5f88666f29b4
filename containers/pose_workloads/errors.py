"""The errors `pose` turns into exit codes, shared by the launcher (host) and the workloads.

Torch-free and dependency-free: the launcher imports it on the host.
"""


class BadInput(ValueError):
    """Input `pose` refuses before anything starts: a mounts file, a path, a spec, a flag, a file.

    `str(err)` is the one line the user sees (what is wrong, where, and the fix); the CLI and
    `python -m pose_workloads` print it as `error: <line>` on stderr and exit 2. Nothing has been
    created when it is raised.
    """

    exit_code = 2


class SpecError(BadInput):
    """A spec that cannot be used. `str(err)` is one line naming the file, the field and the fix."""


class TaskFailed(RuntimeError):
    """A task that started and failed (a diverged loss, an export that does not match PyTorch).

    `str(err)` is one line saying what happened; `python -m pose_workloads` prints it as
    `error: <line>` and exits 1. Library code raises it instead of calling sys.exit.
    """

    exit_code = 1


class DiskFull(TaskFailed):
    """A result did not fit on its disk. `str(err)` names the folder and the bytes needed; the
    file it would have replaced (the previous checkpoint, say) is intact."""
