"""The errors `pose` turns into exit codes, so every module can fail the same way."""


class BadInput(Exception):
    """Input `pose` refuses before anything starts: a mounts file, a path, a spec, a flag.

    `str(err)` is the one line the user sees (what is wrong, where, and the fix); the CLI prints
    it as `error: <line>` on stderr and exits 2. Nothing has been created when it is raised.
    """

    exit_code = 2


class EngineError(Exception):
    """The Docker engine failed to run a container it accepted (`docker run` exits 125 for this).

    For example a GPU request on an engine without the NVIDIA runtime. The container is already
    removed when this is raised.
    """

    exit_code = 125
