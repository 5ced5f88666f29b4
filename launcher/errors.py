"""The launcher's own error: the Docker engine failing a container. `BadInput` (exit 2) is shared
with the workloads and lives in `pose_workloads.errors`."""


class EngineError(Exception):
    """The Docker engine failed to run a container it accepted (`docker run` exits 125 for this).

    For example a GPU request on an engine without the NVIDIA runtime. The container is already
    removed when this is raised.
    """

    exit_code = 125
