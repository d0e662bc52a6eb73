"""Source tool schemas normalised to JSON schema, and tool lists found in free text."""

from __future__ import annotations

import json
import re
from typing import Any

from ..trajectory import TrajectoryError
from .calls import safe_literal, literal_structure


RecordId = str | int | None  # how a source record is named in errors
EMPTY_SCHEMA = {"type": "object", "properties": {}}  # the schema of a tool a record calls but never lists


_TYPE_NAMES = {
    "str": "string", "string": "string", "text": "string",
    "int": "integer", "integer": "integer",
    "float": "number", "double": "number", "number": "number",
    "bool": "boolean", "boolean": "boolean",
    "list": "array", "array": "array", "tuple": "array", "set": "array", "sequence": "array",
    "dict": "object", "object": "object", "mapping": "object",
    "null": "null", "none": "null",
}


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _type_schema(type_name: str) -> dict[str, Any] | None:
    """A JSON-schema fragment for a Python/JSON type name (``List[int]`` gives an array of integers),
    or None if it cannot be mapped."""
    s = type_name.strip()
    m = re.fullmatch(r"optional\s*\[(.*)\]", s, re.I | re.S)
    if m:
        s = m.group(1).strip()
    m = re.fullmatch(r"([A-Za-z_][\w.]*)\s*(?:\[(.*)\])?", s, re.S)
    if not m:
        return None
    json_type = _TYPE_NAMES.get(m.group(1).rsplit(".", 1)[-1].lower())
    if json_type is None:
        return None
    out: dict[str, Any] = {"type": json_type}
    args = _split_top_level(m.group(2)) if m.group(2) else []
    if json_type == "array" and len(args) == 1:
        items = _type_schema(args[0])
        if items:
            out["items"] = items
    return out


def _normalize_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy with Python type names mapped to JSON-schema types, recursively."""
    out = dict(schema)
    t = out.get("type")
    if isinstance(t, str):
        fragment = _type_schema(t)
        del out["type"]
        # The source's own keys ("items", ...) win over what the type name implies.
        out = {**(fragment if fragment is not None else {"x-source-type": t}), **out}
    elif isinstance(t, list):
        out["type"] = [(_type_schema(x) or {}).get("type", x) if isinstance(x, str) else x for x in t]
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _normalize_schema(v) if isinstance(v, dict) else v
                             for k, v in out["properties"].items()}
    items = out.get("items")
    if isinstance(items, dict):
        out["items"] = _normalize_schema(items)
    elif isinstance(items, list):
        out["items"] = [_normalize_schema(v) if isinstance(v, dict) else v for v in items]
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _normalize_schema(out["additionalProperties"])
    return out


def _flat_parameters(params: dict[str, Any], rid: RecordId, field: str) -> dict[str, Any]:
    """xLAM's ``{param: {"type": "str, optional", "description", "default"?}}`` as a JSON schema.

    A parameter is required unless it has a default or "optional" in its type.
    """
    properties, required = {}, []
    for name, spec in params.items():
        if not isinstance(spec, dict):
            raise TrajectoryError(rid, f"{field}.{name}", f"must be an object with a 'type', got {type(spec).__name__}")
        raw_type = spec.get("type", "")
        if not isinstance(raw_type, str):
            raise TrajectoryError(rid, f"{field}.{name}.type", f"must be a string, got {type(raw_type).__name__}")
        optional = "optional" in raw_type.lower()
        bare = re.sub(r"\s*,\s*optional\s*$", "", raw_type, flags=re.I).strip()
        rest = {k: v for k, v in spec.items() if k != "type"}
        fragment = (_type_schema(bare) or {"x-source-type": raw_type}) if bare else {}
        properties[name] = {**fragment, **rest}
        if not optional and "default" not in spec:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def _tool(spec: Any, rid: RecordId, field: str, *, flat: bool = False) -> dict[str, Any]:
    """A tool dict (name, description, JSON-schema parameters) from a source's tool spec."""
    if not isinstance(spec, dict):
        raise TrajectoryError(rid, field, f"a tool must be an object, got {type(spec).__name__}")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TrajectoryError(rid, f"{field}.name", f"must be a non-empty string, got {name!r}")
    desc = spec.get("description")
    if desc is None:
        desc = ""
    if not isinstance(desc, str):
        raise TrajectoryError(rid, f"{field}.description", f"must be a string, got {type(desc).__name__}")
    params = spec.get("parameters")
    if params is None or params == {}:
        params = dict(EMPTY_SCHEMA)
    elif not isinstance(params, dict):
        raise TrajectoryError(rid, f"{field}.parameters", f"must be an object, got {type(params).__name__}")
    elif flat and not (params.get("type") == "object" and isinstance(params.get("properties", {}), dict)):
        params = _flat_parameters(params, rid, f"{field}.parameters")
    else:
        params = _normalize_schema(params)
        params.setdefault("type", "object")
    return {"name": name.strip(), "description": desc, "parameters": params}


def tool_dicts(specs: list[Any], rid: RecordId, field: str, *, flat: bool = False) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    for i, spec in enumerate(specs):
        tool = _tool(spec, rid, f"{field}[{i}]", flat=flat)
        if tool not in tools:  # some sources list a tool twice; an exact copy adds nothing
            tools.append(tool)
    return tools


def _bracket_end(text: str, start: int) -> int:
    """The index just past the bracket that closes ``text[start]``, or -1."""
    depth = 0
    for i, ch in literal_structure(text[start:]):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return start + i + 1
    return -1


def decode_json_text(text: str) -> Any:
    """JSON, else a Python literal (some sources print tool lists with repr), else ValueError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return safe_literal(text)


def _is_tool_spec(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("name"), str)
            and ("parameters" in value or "description" in value))


def tool_specs_in_text(text: str) -> list[dict[str, Any]]:
    """Tool specs embedded in prose: JSON (or Python-literal) objects and lists of objects with a
    "name" and a "description" or "parameters", in order of appearance."""
    specs: list[dict[str, Any]] = []
    pos = 0
    opening = re.compile(r"[\[{]")
    while (m := opening.search(text, pos)) is not None:
        end = _bracket_end(text, m.start())
        try:
            value = decode_json_text(text[m.start():end]) if end > 0 else None
        except ValueError:
            value = None
        if value is None:
            pos = m.start() + 1
            continue
        pos = end  # a whole value was read: do not look for specs nested inside it
        specs.extend(v for v in (value if isinstance(value, list) else [value]) if _is_tool_spec(v))
    return specs
