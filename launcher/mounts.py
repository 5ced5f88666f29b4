"""The mounts file: which host folders a container sees, and how the container is started.

`~/.pose_mounts.json` (or the file named by `$POSE_MOUNTS`) has TAO's keys, so a
`~/.tao_mounts.json` works unchanged when pointed to:

    {"Mounts": [{"source": "~/pose-experiments", "destination": "/workspace/pose-experiments",
                 "read_only": false}],
     "Envs": [{"variable": "CUDA_CACHE_DISABLE", "value": "1"}],
     "DockerOptions": {"user": "${UID}:${GID}", "shm_size": "16G",
                       "ulimits": {"memlock": -1, "stack": 67108864}, "network": "host"}}

Unlike TAO, `~`, `$HOME`, `${UID}`, `${GID}` (and `$(id -u)`, `$(id -g)`, which TAO users write
and TAO never expands) are expanded, for the invoking user under sudo (not root), and the file is
looked up in that user's home, so `sudo pose ...` needs no copy under /root.
"""

from __future__ import annotations

import json
import os
import posixpath
import pwd
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pose_workloads.errors import BadInput

# Where the launcher mounts the translated specs; no user mount may take it.
LAUNCH_DIR_DESTINATION = "/pose_launch"

# `docker run --ulimit` accepts exactly these names.
ULIMIT_NAMES = (
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
    "rss", "rtprio", "rttime", "sigpending", "stack",
)


def invoking_user() -> tuple[int, int]:
    """(uid, gid) of the person who ran `pose`: SUDO_UID/SUDO_GID under sudo, so that outputs
    belong to them and not to root (TAO's launcher writes root-owned files)."""
    if os.geteuid() == 0 and os.environ.get("SUDO_UID", "").isdigit():
        return int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", os.environ["SUDO_UID"]))
    return os.getuid(), os.getgid()


def invoking_home() -> Path:
    """Home of the invoking user (the sudo caller's, not /root)."""
    if os.geteuid() == 0 and os.environ.get("SUDO_UID", "").isdigit():
        try:
            return Path(pwd.getpwuid(int(os.environ["SUDO_UID"])).pw_dir)
        except KeyError:
            pass
    return Path(os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir)


_SHELL_TOKENS = re.compile(r"\$\(id -u\)|\$\(id -g\)|\$\{(UID|GID|HOME)\}|\$(UID|GID|HOME)\b")


def expand(text: str) -> str:
    """Expand `~`, `$HOME`, `${UID}`, `${GID}`, `$(id -u)`, `$(id -g)` and other environment
    variables the way a shell would for the invoking user."""
    uid, gid = invoking_user()
    values = {"$(id -u)": str(uid), "$(id -g)": str(gid), "UID": str(uid), "GID": str(gid),
              "HOME": str(invoking_home())}
    text = _SHELL_TOKENS.sub(lambda m: values[m.group(1) or m.group(2) or m.group(0)], text)
    text = os.path.expandvars(text)
    if text == "~" or text.startswith("~/"):
        text = str(invoking_home()) + text[1:]
    return text


def _expanded(cls: type, value: Any) -> Any:
    return expand(value) if isinstance(value, str) else value


class _Strict(BaseModel):
    # An unknown key is a typo or a feature pose does not have: refuse it, never ignore it.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mount(_Strict):
    source: Path
    destination: str
    read_only: bool = False

    _expand = field_validator("source", "destination", mode="before")(_expanded)

    @field_validator("source")
    @classmethod
    def _source_exists(cls, source: Path) -> Path:
        if not source.is_absolute():
            raise ValueError(f"{str(source)!r} is relative; use an absolute host path (~ and $HOME expand)")
        if not source.exists():
            raise ValueError(f"{source} does not exist; create it (mkdir -p {source}) or correct the path")
        # Symlinks resolved once here so that path translation compares real paths.
        return source.resolve()

    @field_validator("destination")
    @classmethod
    def _destination_absolute(cls, destination: str) -> str:
        if not destination.startswith("/"):
            raise ValueError(f"{destination!r} is relative; use an absolute container path such as /workspace/data")
        destination = posixpath.normpath(destination)
        if destination == "/":
            raise ValueError("'/' cannot be mounted over; use a folder such as /workspace")
        if destination == LAUNCH_DIR_DESTINATION or destination.startswith(LAUNCH_DIR_DESTINATION + "/"):
            raise ValueError(f"{LAUNCH_DIR_DESTINATION} is where pose mounts the translated specs; choose another destination")
        return destination


class EnvVar(_Strict):
    variable: str
    value: str

    @field_validator("value", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # TAO files write numbers unquoted ("value": 1); the environment only holds text.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _expanded(cls, value)


class ContainerOptions(_Strict):
    """TAO's `DockerOptions`. None means pose's default (see `runners.docker.container_kwargs`)."""

    user: str | None = None
    shm_size: str | int | None = None
    ulimits: dict[str, int] = Field(default_factory=dict)
    network: str | None = None
    ports: dict[str, int | str | None] = Field(default_factory=dict)
    privileged: bool = False
    # Accepted so TAO files load unchanged; pose never allocates a TTY (it streams log lines).
    tty: bool | None = None

    _expand = field_validator("user", mode="before")(_expanded)

    @field_validator("shm_size")
    @classmethod
    def _size(cls, size: str | int | None) -> str | int | None:
        if isinstance(size, str) and not re.fullmatch(r"\d+[bkmgBKMG]?", size):
            raise ValueError(f"{size!r} is not a size; write e.g. \"16G\" or \"512m\"")
        return size

    @field_validator("ulimits")
    @classmethod
    def _known_ulimits(cls, ulimits: dict[str, int]) -> dict[str, int]:
        for name in ulimits:
            if name not in ULIMIT_NAMES:
                raise ValueError(f"unknown ulimit {name!r}; valid: {', '.join(ULIMIT_NAMES)}")
        return ulimits


class MountsFile(_Strict):
    Mounts: list[Mount] = Field(default_factory=list)
    Envs: list[EnvVar] = Field(default_factory=list)
    DockerOptions: ContainerOptions = Field(default_factory=lambda: ContainerOptions())

    @field_validator("Mounts")
    @classmethod
    def _one_mount_per_destination(cls, mounts: list[Mount]) -> list[Mount]:
        seen: dict[str, int] = {}
        for i, mount in enumerate(mounts):
            if mount.destination in seen:
                raise ValueError(
                    f"Mounts[{seen[mount.destination]}] and Mounts[{i}] both mount on {mount.destination}; "
                    "give each mount its own destination"
                )
            seen[mount.destination] = i
        return mounts


# Valid keys per section, for "unknown key" messages.
_SECTION_KEYS = {
    "": sorted(MountsFile.model_fields),
    "Mounts": sorted(Mount.model_fields),
    "Envs": sorted(EnvVar.model_fields),
    "DockerOptions": sorted(ContainerOptions.model_fields),
}


@dataclass(frozen=True)
class Mounts:
    """A validated mounts file. `file` is where it was looked for (it may not exist)."""

    file: Path
    mounts: tuple[Mount, ...] = ()
    envs: dict[str, str] = field(default_factory=dict)
    docker_options: ContainerOptions = field(default_factory=ContainerOptions)
    found: bool = False


def mounts_file_path() -> Path:
    """`$POSE_MOUNTS` if set, else `~/.pose_mounts.json` of the invoking user."""
    named = os.environ.get("POSE_MOUNTS")
    return Path(expand(named)) if named else invoking_home() / ".pose_mounts.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BadInput(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
            "fix the syntax (see mounts.example.json)"
        ) from None
    except OSError as err:
        raise BadInput(f"{path}: cannot be read ({err.strerror}); fix its permissions or set POSE_MOUNTS") from None


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error as `dotted.loc: what is wrong; the fix`."""
    loc = _location(error["loc"])
    if error["type"] == "extra_forbidden":
        section = next((str(p) for p in error["loc"][:-1] if isinstance(p, str)), "")
        return f"{loc}: unknown key; valid keys here: {', '.join(_SECTION_KEYS.get(section, []))}"
    if error["type"] == "missing":
        return f"{loc}: missing; add it"
    message = error["msg"].removeprefix("Value error, ")
    return f"{loc}: {message}" if ";" in message else f"{loc}: {message}; fix this value"


def load_mounts(path: Path | None = None) -> Mounts:
    """Read and validate the mounts file. Raises BadInput (one line: file, key, fix).

    A missing default file is not an error (the local runner needs none, and a Docker task
    without path arguments needs none); a missing file named by $POSE_MOUNTS is.
    """
    path = path or mounts_file_path()
    if not path.exists():
        if os.environ.get("POSE_MOUNTS") and path == mounts_file_path():
            raise BadInput(f"{path}: not found (named by $POSE_MOUNTS); create it (see mounts.example.json) or unset POSE_MOUNTS")
        return Mounts(file=path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: top level must be an object with Mounts, Envs, DockerOptions; see mounts.example.json")
    try:
        parsed = MountsFile.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        more = f" (+{len(errors) - 1} more: run `pose mounts check`)" if len(errors) > 1 else ""
        raise BadInput(f"{path}: {describe_error(errors[0])}{more}") from None
    return Mounts(
        file=path,
        mounts=tuple(parsed.Mounts),
        envs={e.variable: e.value for e in parsed.Envs},
        docker_options=parsed.DockerOptions,
        found=True,
    )


@dataclass(frozen=True)
class MountCheck:
    """One row of `pose mounts check`: a mount as written, expanded, and what is wrong with it."""

    source: str
    destination: str
    read_only: bool
    problem: str = ""


def check_mounts(path: Path | None = None) -> tuple[Path, list[MountCheck], list[str]]:
    """Every mount with its problem, and the problems outside `Mounts`; for `pose mounts check`.

    Returns (file, rows, other problems). Unlike `load_mounts` this reports all problems at once.
    """
    path = path or mounts_file_path()
    if not path.exists():
        return path, [], [f"{path} not found; create it (see mounts.example.json) or set POSE_MOUNTS"]
    try:
        data = _read_json(path)
    except BadInput as err:
        return path, [], [str(err)]
    if not isinstance(data, dict):
        return path, [], ["top level must be an object with Mounts, Envs, DockerOptions"]
    raw_mounts = data.get("Mounts") if isinstance(data.get("Mounts"), list) else []
    row_problems: dict[int, list[str]] = {}
    other: list[str] = []
    try:
        MountsFile.model_validate(data)
    except ValidationError as err:
        for error in err.errors():
            loc = error["loc"]
            if len(loc) >= 2 and loc[0] == "Mounts" and isinstance(loc[1], int):
                text = describe_error(error).removeprefix(f"Mounts[{loc[1]}].")
                row_problems.setdefault(loc[1], []).append(text)
            else:
                other.append(describe_error(error))
    rows = []
    for i, raw in enumerate(raw_mounts):
        raw = raw if isinstance(raw, dict) else {}
        rows.append(MountCheck(
            source=expand(str(raw.get("source", ""))),
            destination=expand(str(raw.get("destination", ""))),
            read_only=bool(raw.get("read_only", False)),
            problem=" | ".join(row_problems.get(i, [])),
        ))
    return path, rows, other
