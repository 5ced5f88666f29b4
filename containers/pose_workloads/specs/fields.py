"""What every spec model shares: unknown keys refused, and `SpecPath`, the marker on the fields
that hold filesystem paths (the launcher finds and translates them with `paths.spec_paths`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict


class _PathMarker:
    """Metadata marking a str field as a filesystem path (see `spec_paths`)."""

    def __repr__(self) -> str:
        return "SpecPath"


_PATH = _PathMarker()
SpecPath = Annotated[str, _PATH]


class Strict(BaseModel):
    # An unknown key is almost always a typo: refuse it rather than silently ignore it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

