"""Walking a spec's path fields (typed `SpecPath`): the launcher lists and translates them
(host <-> container) without knowing each spec's layout."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pose_workloads.specs.fields import _PATH


def _holds_paths(info: Any) -> bool:
    """True for `SpecPath`, `SpecPath | None` and `dict[str, SpecPath]` fields. pydantic keeps the
    marker in `info.metadata` for a bare SpecPath, and inside the type arguments otherwise."""
    if any(m is _PATH for m in info.metadata):
        return True
    return any(
        any(m is _PATH for m in getattr(arg, "__metadata__", ()))
        for arg in getattr(info.annotation, "__args__", ()) or ()
    )


def spec_paths(spec: BaseModel, prefix: str = "") -> list[tuple[str, str]]:
    """Every set path field as (dotted location, value), depth first in field order."""
    found: list[tuple[str, str]] = []
    for name, info in type(spec).model_fields.items():
        value = getattr(spec, name)
        loc = f"{prefix}{info.alias or name}"
        if _holds_paths(info):
            if isinstance(value, str):
                found.append((loc, value))
            elif isinstance(value, dict):
                found.extend((f"{loc}.{k}", v) for k, v in value.items() if isinstance(v, str))
        elif isinstance(value, BaseModel):
            found.extend(spec_paths(value, loc + "."))
    return found


def map_spec_paths(spec: BaseModel, fn) -> BaseModel:
    """A copy of `spec` with every path field passed through `fn(dotted_loc, value) -> new value`."""
    updates: dict[str, Any] = {}
    for name, info in type(spec).model_fields.items():
        value = getattr(spec, name)
        loc = info.alias or name
        if _holds_paths(info) and isinstance(value, str):
            updates[name] = fn(loc, value)
        elif _holds_paths(info) and isinstance(value, dict):
            updates[name] = {k: fn(f"{loc}.{k}", v) if isinstance(v, str) else v for k, v in value.items()}
        elif isinstance(value, BaseModel):
            updates[name] = map_spec_paths(value, lambda sub, v, _loc=loc: fn(f"{_loc}.{sub}", v))
    return spec.model_copy(update=updates)
