"""Host <-> container paths, by the longest matching mount, after resolving symlinks.

TAO's launcher translates nothing: users write container paths everywhere, or mount each folder
at the same path inside. `pose` takes host paths (translated here) and still accepts container
paths written TAO-style (kept for Docker, mapped back to the host for the local runner).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from launcher.mounts import Mount
from pose_workloads.errors import BadInput


@dataclass(frozen=True)
class PlacedPath:
    """One path as the host and the container see it, and the mount that joins them."""

    host: Path
    container: PurePosixPath
    mount: Mount


def _within(path: PurePosixPath | Path, root: PurePosixPath | Path) -> bool:
    return path == root or root in path.parents


def mount_of_host_path(host: Path, mounts: Iterable[Mount]) -> Mount | None:
    """The mount whose source holds `host` (absolute, symlinks resolved); the longest wins."""
    holding = [m for m in mounts if _within(host, m.source)]
    return max(holding, key=lambda m: len(m.source.parts), default=None)


def mount_of_container_path(container: PurePosixPath, mounts: Iterable[Mount]) -> Mount | None:
    """The mount whose destination holds `container`; the longest wins."""
    holding = [m for m in mounts if _within(container, PurePosixPath(m.destination))]
    return max(holding, key=lambda m: len(PurePosixPath(m.destination).parts), default=None)


def to_container(host: Path, mount: Mount) -> PurePosixPath:
    return PurePosixPath(mount.destination) / host.relative_to(mount.source).as_posix()


def to_host(container: PurePosixPath, mount: Mount) -> Path:
    return mount.source / container.relative_to(mount.destination)


def describe_mounts(mounts: Iterable[Mount], mounts_file: Path) -> str:
    listed = ", ".join(f"{m.source} -> {m.destination}" for m in mounts)
    return f"mounts in {mounts_file}: {listed}" if listed else f"no mounts ({mounts_file} has none or does not exist)"


def place_path(value: str | Path, mounts: tuple[Mount, ...], mounts_file: Path, what: str,
               cwd: Path | None = None) -> PlacedPath:
    """Where `value` is on the host and in the container.

    `value` is a host path (relative ones are taken from `cwd`; symlinks resolved), or else an
    absolute container path under a mount destination (TAO style). `what` names the argument or
    spec field in the error. Raises BadInput naming the path and listing the mounts.
    """
    text = str(value)
    host = ((cwd or Path.cwd()) / Path(text).expanduser()).resolve()
    mount = mount_of_host_path(host, mounts)
    if mount is not None:
        return PlacedPath(host=host, container=to_container(host, mount), mount=mount)
    if text.startswith("/"):
        container = PurePosixPath(text)
        mount = mount_of_container_path(container, mounts)
        if mount is not None:
            return PlacedPath(host=to_host(container, mount), container=container, mount=mount)
    resolved = f" (resolves to {host})" if str(host) != text else ""
    raise BadInput(
        f"{what}: {text}{resolved} is outside every mount; add a mount that holds it, "
        f"or use --runner local ({describe_mounts(mounts, mounts_file)})"
    )


def local_path(value: str | Path, mounts: tuple[Mount, ...], cwd: Path | None = None) -> Path:
    """`value` as a host path, for the local runner (no mounts needed).

    A host path is taken as is (relative ones from `cwd`; symlinks resolved). An absolute path
    that does not exist here but lies under a mount destination was written TAO-style, in
    container paths: it maps back to the host by that mount.
    """
    text = str(value)
    host = ((cwd or Path.cwd()) / Path(text).expanduser()).resolve()
    if text.startswith("/") and not host.exists() and mount_of_host_path(host, mounts) is None:
        mount = mount_of_container_path(PurePosixPath(text), mounts)
        if mount is not None:
            return to_host(PurePosixPath(text), mount)
    return host


class LogPathMapper:
    """Rewrites container paths in log lines as host paths.

    `pairs` maps container prefixes (mount destinations, or single files such as the translated
    spec in /pose_launch) to host paths. A prefix matches only as a whole path component, and the
    longest one wins: `/data` does not rewrite `/database`.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self._host = {}
        for container, host in pairs:
            self._host[container.rstrip("/") or "/"] = str(host)
        ordered = sorted(self._host, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<![\w./-])(" + "|".join(re.escape(p) for p in ordered) + r")(?![\w.-])")
            if ordered else None
        )

    def __call__(self, line: str) -> str:
        if self._pattern is None:
            return line
        return self._pattern.sub(lambda m: self._host[m.group(1)], line)
