"""What every spec model shares: unknown keys refused, and `SpecPath`, the marker on the fields
that hold filesystem paths (the launcher finds and translates them with `paths.spec_paths`)."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class _PathMarker:
    """Metadata marking a str field as a filesystem path (see `spec_paths`)."""

    def __repr__(self) -> str:
        return "SpecPath"


_PATH = _PathMarker()
SpecPath = Annotated[str, _PATH]


def _number_types(annotation: Any) -> set[type]:
    """The leaf types of a field's annotation: int | None -> {int, NoneType}, tuple[int, int] -> {int}."""
    if annotation in (int, float, bool, str):
        return {annotation}
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _number_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, tuple, list, dict):
        args = typing.get_args(annotation)
        args = args[1:] if origin is dict else args
        return set().union(*(_number_types(a) for a in args if a is not Ellipsis)) if args else set()
    return set()


def _holds_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_bool(v) for v in value)
    return isinstance(value, dict) and any(_holds_bool(v) for v in value.values())


class Strict(BaseModel):
    # An unknown key is almost always a typo: refuse it rather than silently ignore it. A NaN or
    # infinite float passes every range check (nan > 0 is False, yet so is nan <= 0) and
    # poisons training later: refused everywhere.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads `true` as 1 for an int or float field: `epochs: yes` would train one epoch.
        if _holds_bool(value):
            leaves = _number_types(cls.model_fields[info.field_name].annotation)
            if leaves & {int, float} and bool not in leaves:
                raise ValueError(f"{value!r} is a boolean where a number belongs; write a number")
        return value

