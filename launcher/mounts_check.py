"""`pose mounts check`: every mount of the mounts file with what is wrong with it, and the
problems outside `Mounts`, all at once (`mounts.load_mounts` stops at the first)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from launcher.mounts import MountsFile, describe_error, expand, mounts_file_path, read_json
from pose_workloads.errors import BadInput


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
        data = read_json(path)
    except BadInput as err:
        return path, [], [str(err)]
    if not isinstance(data, dict):
        return path, [], ["top level must be an object with Mounts, Envs, DockerOptions, Slurm, Kubernetes"]
    listed = data.get("Mounts")
    raw_mounts = listed if isinstance(listed, list) else []
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
