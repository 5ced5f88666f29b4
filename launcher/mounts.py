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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from launcher.clusters import KubernetesSection, SlurmSection
from pose_workloads.errors import BadInput

# Where the launcher mounts the translated specs; no user mount may take it.
LAUNCH_DIR_DESTINATION = "/pose_launch"

# `docker run --ulimit` accepts exactly these names; those measured in bytes also take a size
# with a unit ("64m"), the others are counts or seconds.
ULIMIT_NAMES = (
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
    "rss", "rtprio", "rttime", "sigpending", "stack",
)
ULIMITS_IN_BYTES = ("core", "data", "fsize", "memlock", "msgqueue", "rss", "stack")

# Container paths a mount may not cover, and why: the image's own software (a mount over /usr
# hides Python), the kernel's filesystems, the system's configuration. A folder below /etc may be
# mounted (/etc/localtime is common); below /proc, /sys, /dev and the software folders, nothing.
SYSTEM_DESTINATIONS = {
    "/": "the container's root", "/etc": "the system configuration",
    "/usr": "the image's software", "/bin": "the image's software", "/sbin": "the image's software",
    "/lib": "the image's software", "/lib64": "the image's software",
    "/proc": "a kernel filesystem", "/sys": "a kernel filesystem", "/dev": "the devices",
}
SYSTEM_SUBTREES = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/proc", "/sys", "/dev")

# An environment variable name as POSIX shells accept it.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Docker's units (docker.utils.parse_bytes): b, k, m, g, with an optional trailing b.
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", re.IGNORECASE)
SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
# Docker's own floor for /dev/shm is 0 (its default, 64m); below 1 MiB no data loader works.
MIN_SHM_BYTES = 2**20


def parse_size(value: str | int) -> int:
    """`"16G"`, `"512m"`, `"64k"`, `1048576` -> bytes. Raises ValueError naming the valid forms."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{value!r} is not a size; write e.g. \"16G\" or \"512m\"")
    if isinstance(value, int):
        return value
    match = SIZE.fullmatch(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a size; write e.g. \"16G\" or \"512m\" (units b, k, m, g)")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])


def normalise_destination(destination: str) -> str:
    """`//pose_launch/` -> `/pose_launch`; `//` -> `/`. POSIX normpath keeps a leading `//`
    (it may mean something else on some systems), which would slip past every check below."""
    return "/" + posixpath.normpath(destination).lstrip("/") if destination.startswith("/") else destination


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
        destination = normalise_destination(destination)
        covered = destination if destination in SYSTEM_DESTINATIONS else next(
            (top for top in SYSTEM_SUBTREES if destination.startswith(top + "/")), None)
        if covered is not None:
            raise ValueError(
                f"{destination} is {SYSTEM_DESTINATIONS[covered]}; mount into a folder of your own such as /workspace")
        if destination == LAUNCH_DIR_DESTINATION or destination.startswith(LAUNCH_DIR_DESTINATION + "/"):
            raise ValueError(
                f"{LAUNCH_DIR_DESTINATION} is where pose mounts the translated specs; choose another destination")
        return destination


class EnvVar(_Strict):
    variable: str
    value: str

    @field_validator("variable")
    @classmethod
    def _name(cls, variable: str) -> str:
        if not ENV_NAME.fullmatch(variable):
            raise ValueError(f"{variable!r} is not an environment variable name; "
                             "use letters, digits and _, not starting with a digit")
        return variable

    @field_validator("value", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # TAO files write numbers unquoted ("value": 1); the environment only holds text.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _expanded(cls, value)

    @field_validator("value")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("holds a NUL character, which no environment can carry; remove it")
        return value


def _ulimit(name: str, value: Any) -> Any:
    """One `ulimits` entry: a known name and -1, a count, or (for byte limits) a size; the size in bytes."""
    if name not in ULIMIT_NAMES:
        raise ValueError(f"unknown ulimit {name!r}; valid: {', '.join(ULIMIT_NAMES)}")
    if isinstance(value, str) and name in ULIMITS_IN_BYTES:
        value = parse_size(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        unit = "bytes, or a size such as \"64m\"" if name in ULIMITS_IN_BYTES else "a count"
        raise ValueError(f"ulimit {name}: {value!r} is not a limit; write -1 (unlimited) or {unit}")
    return value


def _port(container_port: Any, host: Any) -> Any:
    """One `ports` entry: "PORT[/PROTOCOL]" to a host port, "IP:PORT", or null (any free port)."""
    number, _, protocol = str(container_port).partition("/")
    if not (number.isdigit() and 1 <= int(number) <= 65535 and protocol in ("", "tcp", "udp", "sctp")):
        raise ValueError(f"port {container_port!r}: write a container port 1-65535, optionally /tcp, /udp or /sctp")
    host_port = host.rpartition(":")[2] if isinstance(host, str) else host
    if host is not None and (isinstance(host, bool) or not str(host_port).isdigit()
                             or not 1 <= int(host_port) <= 65535):
        raise ValueError(
            f"port {container_port}: host port {host!r} is not 1-65535 (or \"IP:PORT\", or null for any)")
    return host



def _first_repeat(keys: list[str]) -> tuple[int, int, str] | None:
    """The first key given twice: (index of its first use, index of the repeat, the key)."""
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            return seen[key], i, key
        seen[key] = i
    return None


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

    @field_validator("shm_size", mode="before")
    @classmethod
    def _size(cls, size: Any) -> Any:
        # Checked before pydantic's coercion, which would take `true` for 1 byte.
        if size is not None and parse_size(size) < MIN_SHM_BYTES:
            raise ValueError(f"{size!r} is less than 1 MiB of shared memory; write e.g. \"16G\" or \"512m\"")
        return size

    @field_validator("ulimits", "ports", mode="before")
    @classmethod
    def _each_entry(cls, entries: Any, info: ValidationInfo) -> Any:
        # Anything but a dict is left to pydantic's own type error.
        if not isinstance(entries, dict):
            return entries
        check = _ulimit if info.field_name == "ulimits" else _port
        return {key: check(key, value) for key, value in entries.items()}

    @field_validator("privileged", "tty", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        # pydantic would read "no" or 0 as False: a typo must not silently flip a security option.
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false; write true or false (JSON, unquoted)")
        return value


def risky_options(options: ContainerOptions, user: str) -> list[str]:
    """One warning line per option that hands the container more of the host than a task needs."""
    warnings = []
    if options.privileged:
        warnings.append("DockerOptions.privileged: the container gets every host device and capability; "
                        "remove it unless a tool needs it")
    if options.network == "host":
        warnings.append("DockerOptions.network host: the container shares the host's network (every port it "
                        "opens is the host's); remove it unless NCCL or a port needs it")
    effective = options.user or user
    if effective.split(":")[0] in ("0", "root"):
        warnings.append(f"the container runs as root ({effective}): its outputs belong to root; "
                        "set DockerOptions.user to \"${UID}:${GID}\" or run pose as yourself")
    return warnings


class MountsFile(_Strict):
    Mounts: list[Mount] = Field(default_factory=list)
    Envs: list[EnvVar] = Field(default_factory=list)
    DockerOptions: ContainerOptions = Field(default_factory=lambda: ContainerOptions())
    Slurm: SlurmSection = Field(default_factory=lambda: SlurmSection())  # --runner slurm (clusters.py)
    Kubernetes: KubernetesSection = Field(default_factory=lambda: KubernetesSection())  # --runner k8s

    @field_validator("Mounts")
    @classmethod
    def _one_mount_per_destination(cls, mounts: list[Mount]) -> list[Mount]:
        if repeat := _first_repeat([mount.destination for mount in mounts]):
            first, i, destination = repeat
            raise ValueError(
                f"Mounts[{first}] and Mounts[{i}] both mount on {destination}; give each mount its own destination")
        return mounts

    @field_validator("Envs")
    @classmethod
    def _one_value_per_variable(cls, envs: list[EnvVar]) -> list[EnvVar]:
        if repeat := _first_repeat([env.variable for env in envs]):
            first, i, variable = repeat
            raise ValueError(f"Envs[{first}] and Envs[{i}] both set {variable}; keep one")
        return envs


# Valid keys per section, for "unknown key" messages.
_SECTION_KEYS = {
    "": sorted(MountsFile.model_fields),
    "Mounts": sorted(Mount.model_fields),
    "Envs": sorted(EnvVar.model_fields),
    "DockerOptions": sorted(ContainerOptions.model_fields),
    "Slurm": sorted(SlurmSection.model_fields),
    "Kubernetes": sorted(KubernetesSection.model_fields),
}


@dataclass(frozen=True)
class Mounts:
    """A validated mounts file. `file` is where it was looked for (it may not exist)."""

    file: Path
    mounts: tuple[Mount, ...] = ()
    envs: dict[str, str] = field(default_factory=dict)
    docker_options: ContainerOptions = field(default_factory=ContainerOptions)
    found: bool = False
    slurm: SlurmSection = field(default_factory=SlurmSection)
    kubernetes: KubernetesSection = field(default_factory=KubernetesSection)


def mounts_file_path() -> Path:
    """`$POSE_MOUNTS` if set, else `~/.pose_mounts.json` of the invoking user."""
    named = os.environ.get("POSE_MOUNTS")
    return Path(expand(named)) if named else invoking_home() / ".pose_mounts.json"


def read_json(path: Path) -> Any:
    """The mounts file parsed; BadInput (one line) when it is unreadable, not UTF-8 or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise BadInput(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                       "save it as UTF-8") from None
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


def describe_error(error: ErrorDetails) -> str:
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
            raise BadInput(
                f"{path}: not found (named by $POSE_MOUNTS); create it (see mounts.example.json) or unset POSE_MOUNTS")
        return Mounts(file=path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: top level must be an object with Mounts, Envs, DockerOptions, Slurm, Kubernetes; "
                       "see mounts.example.json")
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
        slurm=parsed.Slurm,
        kubernetes=parsed.Kubernetes,
    )

