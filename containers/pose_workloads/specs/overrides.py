"""`load_spec`: read a spec file, apply `--set key.sub=value` overrides, validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pose_workloads.errors import SpecError
from pose_workloads.specs.files import load_yaml, read_mapping, validate
from pose_workloads.specs.pose_config import PoseConfig


def _parse_override_value(text: str, key: str) -> Any:
    # YAML values: 3 -> int, 1e-3 -> float, true -> bool, [1, 2] -> list, null -> None, {a: 1}
    # -> a mapping; through the same capped loader as spec files (no alias bombs from a flag).
    # Text that is not YAML stays text (a path with a colon, say).
    return load_yaml(text, f"--set {key}", not_yaml_as_text=True)


def _merge(into: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` merged into a copy of `into`, mappings recursively: `--set train={lr: 0.1}` sets
    train.lr and keeps train's other fields."""
    merged = dict(into)
    for key, value in update.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_dicts else value
    return merged


def apply_overrides(data: dict[str, Any], overrides: list[str], model_cls: type[BaseModel],
                    path: Path | str) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (from `--set`) to raw spec data. Unknown keys are errors."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected key.sub=value, e.g. --set train.epochs=2")
        node: dict[str, Any] = data
        cls: type[BaseModel] | None = model_cls
        parts = key.split(".")
        for i, part in enumerate(parts):
            fields = _field_names(cls) if cls is not None else None
            if fields is not None and part not in fields:
                valid = ", ".join(sorted(fields))
                raise SpecError(f"{path}: --set {key}: unknown field {part!r}; valid here: {valid}")
            cls = _sub_model(cls, part) if cls is not None else None
            if i == len(parts) - 1:
                parsed = _parse_override_value(value, key)
                if isinstance(parsed, dict) and isinstance(node.get(part), dict):
                    parsed = _merge(node[part], parsed)
                node[part] = parsed
            else:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = {}
                    node[part] = nxt
                node = nxt
    return data


def _field_names(cls: type[BaseModel]) -> set[str]:
    names = set()
    for name, info in cls.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    return names


def _sub_model(cls: type[BaseModel], name: str) -> type[BaseModel] | None:
    for field_name, info in cls.model_fields.items():
        if name in (field_name, info.alias):
            for candidate in _annotation_models(info.annotation):
                return candidate
    return None


def _annotation_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_annotation_models(arg))
    return found


def load_spec(model_cls: type[BaseModel], path: str | Path, overrides: list[str] | None = None):
    """Read a YAML/JSON spec, apply `--set` overrides and validate. Raises SpecError (one line)."""
    path = Path(path)
    data = read_mapping(path)
    if model_cls is PoseConfig and set(data) == {"pose_config"}:
        data = data["pose_config"]
    if overrides:
        data = apply_overrides(data, overrides, model_cls, path)
    return validate(model_cls, data, path)


