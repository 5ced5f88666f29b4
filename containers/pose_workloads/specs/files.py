"""Reading a spec file: YAML/JSON to a mapping, pydantic validation, and the one-line error text
(file, every failing dotted field, the fix). `save_spec` writes the resolved spec back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pose_workloads.errors import SpecError

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"{path}: file not found; check the path (and that its folder is mounted)")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        where = getattr(err, "problem_mark", None) or getattr(err, "lineno", None)
        raise SpecError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({where}); fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: top level must be a mapping of fields, got {type(data).__name__}")
    return data


def _fix_hint(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "remove it or check its spelling"
    if kind == "missing":
        return "add it"
    return "fix its value"


def format_validation_error(path: Path | str, err: ValidationError) -> str:
    """One line: the file, every failing dotted field with pydantic's message, and the fix."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}; {_fix_hint(e)}")
    return f"{path}: " + " | ".join(parts)


def validate(model_cls: type[BaseModel], data: dict[str, Any], path: Path | str):
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(path, err)) from None


def save_spec(spec: BaseModel, path: str | Path) -> None:
    """Write the resolved spec (all defaults filled in) as YAML or JSON, atomically."""
    path = Path(path)
    data = spec.model_dump(mode="json", by_alias=True)
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

