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

# A spec is a page of settings. The caps refuse YAML alias bombs ("billion laughs": a few lines
# that expand to gigabytes once pydantic walks them) and absurd nesting before they cost memory.
MAX_SPEC_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_DEPTH = 32
# Values once every alias is expanded (the loader shares them; validation would not).
MAX_VALUES = 100_000


class _CappedLoader(yaml.SafeLoader):
    """yaml.SafeLoader (plain data only, no Python objects) that counts aliases and depth."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _TooComplex(f"more than {MAX_ALIASES} aliases (*name)")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooComplex(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _TooComplex(Exception):
    pass


def load_yaml(text: str, where: str, not_yaml_as_text: bool = False) -> Any:
    """YAML text -> plain data through the capped safe loader. Raises SpecError naming `where`
    (invalid YAML returns `text` itself with `not_yaml_as_text`)."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{where}: {len(text):,} characters, more than a spec's {MAX_SPEC_BYTES:,}; give the spec itself")
    loader = _CappedLoader(text)
    try:
        data = loader.get_single_data()
        _expanded_size(data, {})
        return data
    except _TooComplex as err:
        raise SpecError(f"{where}: {err}; write the values out plainly") from None
    except yaml.YAMLError as err:
        if not_yaml_as_text:
            return text
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or err
        raise SpecError(f"{where}: not valid YAML ({line}{problem}); fix the syntax") from None
    finally:
        loader.dispose()


def read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"{path}: file not found; check the path (and that its folder is mounted)")
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"{path}: {size:,} bytes, more than a spec's {MAX_SPEC_BYTES:,}; check that this is the spec file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(
            f"{path}: not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}); save it as UTF-8") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(
                f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); fix the syntax") from None
        except RecursionError:
            raise SpecError(f"{path}: nested more than {MAX_DEPTH} levels deep; write the values out plainly") from None
        try:
            _expanded_size(data, {})
        except _TooComplex as err:
            raise SpecError(f"{path}: {err}; write the values out plainly") from None
    else:
        data = load_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: top level must be a mapping of fields, got {type(data).__name__}")
    return data


def _expanded_size(data: Any, seen: dict[int, tuple[int, int] | None], level: int = 0) -> tuple[int, int]:
    """(values, depth) of `data` with shared (aliased) parts counted each time they appear;
    memoised by identity, so a bomb is measured without being expanded. `level`: how deep
    `data` sits, so that a chain of aliases is refused before it is walked to the end."""
    if not isinstance(data, (dict, list)):
        return 1, 0
    key = id(data)
    if key in seen:
        if seen[key] is None:
            raise _TooComplex("contains itself through an alias (*name)")
        values, depth = seen[key]
    else:
        if level >= MAX_DEPTH:
            raise _TooComplex(f"nested more than {MAX_DEPTH} levels deep")
        seen[key] = None  # in progress: meeting it again below is a cycle
        values, depth = 1, 0
        for child in data.values() if isinstance(data, dict) else data:
            child_values, child_depth = _expanded_size(child, seen, level + 1)
            values, depth = values + child_values, max(depth, child_depth)
            if values > MAX_VALUES:
                raise _TooComplex(f"expands to more than {MAX_VALUES:,} values through its aliases (*name)")
        depth += 1
        seen[key] = (values, depth)
    if level + depth > MAX_DEPTH:
        raise _TooComplex(f"nested more than {MAX_DEPTH} levels deep")
    return values, depth


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
        # Our own messages already end with their fix ("...; write a number").
        parts.append(f"{loc}: {msg}" if ";" in msg else f"{loc}: {msg}; {_fix_hint(e)}")
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

