"""Converters from public tool-use data formats into multi-role :class:`Trajectory` records.

Each ``from_<format>(record, *, record_id=None)`` turns one decoded source record into one trajectory
or raises :class:`TrajectoryError` naming the record (``record_id``, else the record's own ``id``) and
the source field it could not understand. :data:`CONVERTERS` maps format names to them and
:func:`convert_file` runs one over a whole file (JSON Lines, or one JSON array as these datasets ship).

Choices that hold for every format:

- **One episode per record.** A trajectory is one query answered with tools, so a multi-turn chat keeps
  its first user message and everything up to the next user message; later messages are dropped and
  counted in ``meta["dropped_messages"]``. (A follow-up question depends on the earlier exchange, so
  splitting it into a trajectory of its own would give a query that cannot be understood alone.)
- **No source system prompt.** The system prompts of these datasets teach their own call syntax
  (``<functioncall>``, ``[f(x=1)]``, ``Action:``), which contradicts the executor's JSON calls; only
  the tools they list are kept (``system`` is None) and the training template supplies its own.
- **Placeholders, marked.** What a source lacks (a reasoner's thought, an observation, a final answer)
  becomes a turn with content :data:`PLACEHOLDER`; ``meta["placeholder_turns"]`` lists their indices,
  ``meta["needs_completion"]`` the role turns a completer must write and ``meta["needs_observation"]``
  says a tool must be run. Such trajectories are not training-ready until completed.
- **Every called tool is declared.** A call of a tool the record does not list adds a Tool with an
  empty schema, named in ``meta["added_tools"]``.
- **Source schemas are normalised** to JSON schema: Python type names (``str``, ``dict``,
  ``List[int]``, ...) become JSON-schema types; a type that cannot be mapped is kept in
  ``"x-source-type"``.
- **Nothing is evaluated.** Python-like call syntax and Python-repr tool lists are read with
  ``ast.parse`` and a whitelist of literal nodes.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from collections import Counter
from typing import Any, Callable, Iterator

from .jsonl import (
    OnError, PathLike, check_on_error, error_counts, error_dicts, iter_json_lines, parse_records, write_trajectories,
)
from .trajectory import ROLE_TURNS, ToolCall, Trajectory, TrajectoryError, parse_trajectory

__all__ = [
    "PLACEHOLDER", "CONVERTERS", "from_glaive", "from_xlam", "from_toolace", "from_toolbench",
    "convert_file", "parse_pythonic_calls", "iter_source_records",
]

PLACEHOLDER = "[needs completion]"  # content of a turn the source lacks; see meta["placeholder_turns"]

RecordId = str | int | None
_EMPTY_SCHEMA = {"type": "object", "properties": {}}


# ------------------------------------------------------------------------------ safe literal reading
_JSON_NAMES = {"true": True, "false": False, "null": None}  # bare JSON words some sources write


def _literal(node: ast.AST) -> Any:
    """The value of a literal node; anything else (a call, a name, an attribute, ...) is refused."""
    if isinstance(node, ast.Constant):
        v = node.value
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            if not math.isfinite(v):
                raise ValueError(f"{v} is not a JSON number")
            return v
        raise ValueError(f"{type(v).__name__} literals are not allowed")
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)):
        v = _literal(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                raise ValueError("'**' in a dict is not allowed")
            key = _literal(k)
            if not isinstance(key, str):
                raise ValueError(f"dict keys must be strings, got {key!r}")
            out[key] = _literal(v)
        return out
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    raise ValueError(f"{type(node).__name__} is not a literal")


_PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)


def _parse_expression(text: str) -> ast.expr:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except _PARSE_ERRORS as e:
        raise ValueError(f"not valid syntax ({type(e).__name__}: {e})") from None


def _safe_literal(text: str) -> Any:
    """A Python/JSON literal read from ``text`` without evaluating it. Raises ValueError."""
    try:
        return _literal(_parse_expression(text))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _structure(text: str) -> Iterator[tuple[int, str]]:
    """``(index, char)`` of each bracket and comma outside quoted strings."""
    quote, escaped = None, False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "()[]{},":
            yield i, ch


# Tool names in call syntax: identifiers, plus the dots, hyphens and spaces some datasets' names have.
_CALL_NAME = re.compile(r"[A-Za-z_][\w.\- ]*")


def _mask_call_names(text: str) -> tuple[str, dict[str, str]]:
    """``text`` with each top-level call's name replaced by an identifier ``ast`` can parse."""
    s = text.strip()
    if not (s.startswith("[") and s.endswith("]")):
        raise ValueError("expected a list of calls in brackets, like [name(arg=value)]")
    pieces, names = [], {}
    depth, segment, last = 0, 1, 0
    for i, ch in _structure(s):
        if ch in "([{":
            if ch == "(" and depth == 1:
                name = s[segment:i].strip()
                if not _CALL_NAME.fullmatch(name):
                    raise ValueError(f"{name[:60]!r} is not a tool name")
                key = f"_mor_call_{len(names)}"
                names[key] = name
                pieces += [s[last:segment], " ", key]
                last = i
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 1:  # a comma between calls
            segment = i + 1
    pieces.append(s[last:])
    return "".join(pieces), names


def parse_pythonic_calls(text: str) -> list[ToolCall]:
    """Calls written as a Python-like list, ``[get_weather(city="Oslo", days=3), other(x=[1, 2])]``.

    Read with ``ast.parse``; never evaluated. Arguments must be keyword arguments whose values are
    literals (numbers, strings, lists, tuples, dicts, True/False/None or true/false/null); anything
    else (a nested call, a name, an attribute, an operator, positional arguments) raises ValueError.
    """
    masked, names = _mask_call_names(text)
    body = _parse_expression(masked)
    if not isinstance(body, ast.List) or not body.elts:
        raise ValueError("expected a non-empty list of calls, like [name(arg=value)]")
    calls = []
    for i, node in enumerate(body.elts):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.func.id not in names:
            raise ValueError(f"element {i} is not a call of a tool by name ({type(node).__name__})")
        name = names[node.func.id]
        if node.args:
            raise ValueError(f"call {i} ({name}): positional arguments are not allowed; write name=value")
        arguments = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError(f"call {i} ({name}): '**' arguments are not allowed")
            try:
                arguments[kw.arg] = _literal(kw.value)
            except ValueError as e:
                raise ValueError(f"call {i} ({name}), argument {kw.arg}: {e}") from None
            except RecursionError:
                raise ValueError(f"call {i} ({name}), argument {kw.arg}: nested too deeply") from None
        calls.append(ToolCall(name, arguments))
    return calls


# ----------------------------------------------------------------------------------- tool schemas
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
        params = dict(_EMPTY_SCHEMA)
    elif not isinstance(params, dict):
        raise TrajectoryError(rid, f"{field}.parameters", f"must be an object, got {type(params).__name__}")
    elif flat and not (params.get("type") == "object" and isinstance(params.get("properties", {}), dict)):
        params = _flat_parameters(params, rid, f"{field}.parameters")
    else:
        params = _normalize_schema(params)
        params.setdefault("type", "object")
    return {"name": name.strip(), "description": desc, "parameters": params}


def _tools(specs: list[Any], rid: RecordId, field: str, *, flat: bool = False) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    for i, spec in enumerate(specs):
        tool = _tool(spec, rid, f"{field}[{i}]", flat=flat)
        if tool not in tools:  # some sources list a tool twice; an exact copy adds nothing
            tools.append(tool)
    return tools


def _bracket_end(text: str, start: int) -> int:
    """The index just past the bracket that closes ``text[start]``, or -1."""
    depth = 0
    for i, ch in _structure(text[start:]):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return start + i + 1
    return -1


def _decode(text: str) -> Any:
    """JSON, else a Python literal (some sources print tool lists with repr), else ValueError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return _safe_literal(text)


def _is_tool_spec(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("name"), str)
            and ("parameters" in value or "description" in value))


def _tool_specs_in_text(text: str) -> list[dict[str, Any]]:
    """Tool specs embedded in prose: JSON (or Python-literal) objects and lists of objects with a
    "name" and a "description" or "parameters", in order of appearance."""
    specs: list[dict[str, Any]] = []
    pos = 0
    opening = re.compile(r"[\[{]")
    while (m := opening.search(text, pos)) is not None:
        end = _bracket_end(text, m.start())
        try:
            value = _decode(text[m.start():end]) if end > 0 else None
        except ValueError:
            value = None
        if value is None:
            pos = m.start() + 1
            continue
        pos = end  # a whole value was read: do not look for specs nested inside it
        specs.extend(v for v in (value if isinstance(value, list) else [value]) if _is_tool_spec(v))
    return specs


# ------------------------------------------------------------------------------------ the episode
class _Episode:
    """Builds the turns of one episode from a source's events, inserting marked placeholders where
    the source lacks a turn the format requires."""

    def __init__(self, query: str) -> None:
        self.turns: list[dict[str, Any]] = [{"role": "user", "content": query}]
        self.placeholders: list[int] = []
        self.thoughts: list[str] = []
        self.done = False
        self.dropped = 0

    def _add(self, turn: dict[str, Any], placeholder: bool = False) -> None:
        if placeholder:
            self.placeholders.append(len(self.turns))
        self.turns.append(turn)

    def thought(self, text: str | None) -> None:
        if text and text.strip():
            self.thoughts.append(text.strip())

    def _reasoner(self, next_role: str, thought: str | None) -> None:
        self.thought(thought)
        text = "\n\n".join(self.thoughts)
        self.thoughts = []
        self._add({"role": "reasoner", "content": text or PLACEHOLDER, "next": next_role}, placeholder=not text)

    def _close_executor(self) -> None:
        if self.turns[-1]["role"] == "executor":
            self._add({"role": "observation", "content": PLACEHOLDER}, placeholder=True)

    def calls(self, calls: list[ToolCall], thought: str | None = None) -> None:
        self._close_executor()
        self._reasoner("executor", thought)
        self._add({"role": "executor", "calls": [c.to_dict() for c in calls]})

    def observation(self, text: str) -> bool:
        """Add a tool's output; False if no call is waiting for one."""
        last = len(self.turns) - 1
        if self.turns[last]["role"] == "executor":
            self._add({"role": "observation", "content": text})
        elif self.turns[last]["role"] == "observation" and last not in self.placeholders:
            # Parallel calls answered in separate messages: one observation turn holds them all.
            self.turns[last]["content"] += "\n" + text
        else:
            return False
        return True

    def answer(self, text: str | None, thought: str | None = None) -> None:
        self._close_executor()
        self._reasoner("summarizer", thought)
        self._add({"role": "summarizer", "content": text or PLACEHOLDER}, placeholder=not text)
        self.done = True

    def run(self, events: list[tuple], rid: RecordId) -> None:
        """Apply ``(kind, payload, thought, field)`` events: kind "calls", "observation", "answer", or
        "text" (a final answer when it is the last event, else a thought for the next reasoner)."""
        for k, (kind, payload, thought, field) in enumerate(events):
            if self.done:
                self.dropped += len(events) - k
                return
            if kind == "calls":
                self.calls(payload, thought)
            elif kind == "observation":
                if not self.observation(payload):
                    raise TrajectoryError(rid, field, "a tool response with no tool call before it")
            elif kind == "answer" or k == len(events) - 1:
                self.answer(payload, thought)
            else:
                self.thought(payload)

    def finish(self) -> list[dict[str, Any]]:
        if not self.done:
            self.answer(None)
        return self.turns

    def meta(self) -> dict[str, Any]:
        roles = {self.turns[i]["role"] for i in self.placeholders}
        meta: dict[str, Any] = {}
        if roles & set(ROLE_TURNS):
            meta["needs_completion"] = [r for r in ROLE_TURNS if r in roles]
        if "observation" in roles:
            meta["needs_observation"] = True
        if self.placeholders:
            meta["placeholder_turns"] = list(self.placeholders)
        if self.dropped:
            meta["dropped_messages"] = self.dropped
        return meta


def _record_id(record: Any, record_id: RecordId) -> RecordId:
    """The name errors use: ``record_id`` if given, else the record's own id."""
    if record_id is not None:
        return record_id
    if isinstance(record, dict) and isinstance(record.get("id"), (str, int)):
        return record["id"]
    return None


def _check_record(record: Any, rid: RecordId) -> None:
    if not isinstance(record, dict):
        raise TrajectoryError(rid, "<record>", f"must be a JSON object, got {type(record).__name__}")


def _text(record: dict[str, Any], key: str, rid: RecordId, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise TrajectoryError(rid, key, f"must be a {'non-empty ' if required else ''}string, got {value!r:.60}")
    return value


def _from_json_string(value: Any, rid: RecordId, field: str) -> Any:
    """``value``, decoded first if it is a string: sources store lists and objects both ways."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise TrajectoryError(rid, field, f"invalid JSON: {e.msg} at column {e.colno}") from None


def _json_list(record: dict[str, Any], key: str, rid: RecordId) -> list[Any]:
    value = _from_json_string(record.get(key), rid, key)
    if not isinstance(value, list):
        raise TrajectoryError(rid, key, f"must be a list (or a JSON string of one), got {type(value).__name__}")
    return value


def _arguments(value: Any, rid: RecordId, field: str) -> dict[str, Any]:
    """Call arguments: an object, a JSON string of one, or nothing (no arguments)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    value = _from_json_string(value, rid, field)
    if not isinstance(value, dict):
        raise TrajectoryError(rid, field, f"must be an object, got {type(value).__name__}")
    return value


def _call(obj: Any, rid: RecordId, field: str) -> ToolCall:
    if not isinstance(obj, dict):
        raise TrajectoryError(rid, field, f"a call must be an object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TrajectoryError(rid, f"{field}.name", f"must be a non-empty string, got {name!r:.60}")
    return ToolCall(name.strip(), _arguments(obj.get("arguments"), rid, f"{field}.arguments"))


def _trajectory(fmt: str, record: dict[str, Any], record_id: RecordId, tools: list[dict[str, Any]],
                episode: _Episode, **meta: Any) -> Trajectory:
    """The validated trajectory, with provenance and completion marks in ``meta``."""
    rid = _record_id(record, record_id)
    turns = episode.finish()
    known = {t["name"] for t in tools}
    added: list[str] = []
    for turn in turns:
        for call in turn.get("calls", ()):
            if call["name"] not in known and call["name"] not in added:
                added.append(call["name"])
    tools = tools + [{"name": n, "description": "", "parameters": dict(_EMPTY_SCHEMA)} for n in added]
    source_id = record.get("id")
    name = source_id if source_id is not None else record_id
    full_meta: dict[str, Any] = {"source": fmt}
    if source_id is not None:
        full_meta["source_id"] = source_id
    full_meta.update(episode.meta())
    if added:
        full_meta["added_tools"] = added
    full_meta.update(meta)
    raw = {"tools": tools, "turns": turns, "meta": full_meta}
    if name is not None:
        raw["id"] = f"{fmt}-{name}"
    return parse_trajectory(raw, record=rid)


# ------------------------------------------------------------------------------------------ glaive
_GLAIVE_SPEAKER = re.compile(r"(?:^|(?<=\s))(USER|ASSISTANT|FUNCTION RESPONSE):")
_GLAIVE_CALL = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*\'(.*)\'\s*\}', re.S)


def _glaive_call(blob: str, rid: RecordId) -> ToolCall:
    blob = blob.strip()
    try:
        obj, _ = json.JSONDecoder().raw_decode(blob)
    except json.JSONDecodeError:
        # Glaive writes the arguments as a single-quoted JSON string: {"name": "f", "arguments": '{"a": 1}'}.
        # Greedy up to the last quote, because the JSON inside may hold apostrophes.
        m = _GLAIVE_CALL.fullmatch(blob)
        if m is None:
            raise TrajectoryError(rid, "chat", f"cannot read the function call {blob[:80]!r}") from None
        obj = {"name": json.loads(f'"{m.group(1)}"'), "arguments": m.group(2)}
    return _call(obj, rid, "chat")


def from_glaive(record: dict[str, Any], *, record_id: RecordId = None) -> Trajectory:
    """A glaive-function-calling-v2 record ``{"system": "SYSTEM: ... {spec} {spec}", "chat": "USER: ...
    ASSISTANT: <functioncall> {...} <|endoftext|> FUNCTION RESPONSE: ... ASSISTANT: ..."}``.

    The tools are the JSON specs in the system prompt. Text before ``<functioncall>`` becomes the
    reasoner's thought (glaive rarely has any, so the reasoner turns are mostly placeholders); the
    assistant's last message of the episode is the summary.
    """
    rid = _record_id(record, record_id)
    _check_record(record, rid)
    system = _text(record, "system", rid, required=False)
    chat = _text(record, "chat", rid)
    tools = _tools(_tool_specs_in_text(system), rid, "system")
    parts = _GLAIVE_SPEAKER.split(chat)
    if parts[0].strip() or len(parts) < 3 or parts[1] != "USER":
        raise TrajectoryError(rid, "chat", "must start with 'USER:'")
    messages = [(parts[i], parts[i + 1].replace("<|endoftext|>", "").strip()) for i in range(1, len(parts), 2)]
    query = messages[0][1]
    if not query:
        raise TrajectoryError(rid, "chat", "the first USER message is empty")
    episode = messages[1:]
    following_user = next((k for k, (speaker, _) in enumerate(episode) if speaker == "USER"), len(episode))
    episode, dropped = episode[:following_user], len(episode) - following_user
    if not episode:
        raise TrajectoryError(rid, "chat", "no ASSISTANT message answers the first USER message")
    events: list[tuple] = []
    for speaker, text in episode:
        if speaker == "FUNCTION RESPONSE":
            events.append(("observation", text, None, "chat"))
        elif "<functioncall>" in text:
            thought, *blobs = text.split("<functioncall>")
            events.append(("calls", [_glaive_call(b, rid) for b in blobs], thought, "chat"))
        else:
            events.append(("text", text, None, "chat"))
    ep = _Episode(query)
    ep.run(events, rid)
    ep.dropped += dropped
    return _trajectory("glaive", record, record_id, tools, ep)


# -------------------------------------------------------------------------------------------- xLAM
def from_xlam(record: dict[str, Any], *, record_id: RecordId = None) -> Trajectory:
    """An xLAM / APIGen record ``{"query", "tools", "answers"}`` (tools and answers as lists or JSON
    strings; tool parameters as a flat ``{param: {"type", "description", "default"?}}``).

    xLAM has calls but no thoughts, tool outputs or answers: the result is reasoner → executor (all
    answers as parallel calls) → observation → reasoner → summarizer with every turn but the user's
    and the executor's a placeholder (``needs_completion = ["reasoner", "summarizer"]``,
    ``needs_observation``). A record with no answers becomes reasoner → summarizer, both placeholders.
    """
    rid = _record_id(record, record_id)
    _check_record(record, rid)
    query = _text(record, "query", rid)
    tools = _tools(_json_list(record, "tools", rid), rid, "tools", flat=True)
    calls = [_call(a, rid, f"answers[{i}]") for i, a in enumerate(_json_list(record, "answers", rid))]
    ep = _Episode(query)
    if calls:
        ep.calls(calls)
    return _trajectory("xlam", record, record_id, tools, ep)


# ----------------------------------------------------------------------------------------- ToolACE
_SPEAKERS = {
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant",
    "tool": "tool", "function": "tool", "observation": "tool",
    "system": "system",
}


def _messages(record: dict[str, Any], rid: RecordId) -> list[tuple[str, str, str]]:
    """``(speaker, text, field)`` for each message of ``record["conversations"]``, speakers
    normalised to user / assistant / tool / system."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise TrajectoryError(rid, "conversations", "must be a non-empty list of messages")
    out = []
    for i, msg in enumerate(conversations):
        field = f"conversations[{i}]"
        if not isinstance(msg, dict):
            raise TrajectoryError(rid, field, f"a message must be an object, got {type(msg).__name__}")
        speaker = msg.get("from", msg.get("role"))
        if not isinstance(speaker, str) or speaker not in _SPEAKERS:
            raise TrajectoryError(rid, f"{field}.from", f"must be one of {sorted(_SPEAKERS)}, got {speaker!r:.40}")
        text = msg.get("value", msg.get("content"))
        if not isinstance(text, str):
            raise TrajectoryError(rid, f"{field}.value", f"must be a string, got {type(text).__name__}")
        out.append((_SPEAKERS[speaker], text, f"{field}.value"))
    return out


def _split_episode(messages: list[tuple[str, str, str]], rid: RecordId) -> tuple[str, list, int]:
    """The first user message, the messages answering it, and how many later messages are dropped."""
    rest = [m for m in messages if m[0] != "system"]
    if not rest or rest[0][0] != "user":
        raise TrajectoryError(rid, "conversations", "the first message (after system ones) must be the user's")
    query, field = rest[0][1].strip(), rest[0][2]
    if not query:
        raise TrajectoryError(rid, field, "the user's message is empty")
    episode = rest[1:]
    following_user = next((k for k, m in enumerate(episode) if m[0] == "user"), len(episode))
    if following_user == 0:
        raise TrajectoryError(rid, "conversations", "no assistant message answers the first user message")
    return query, episode[:following_user], len(episode) - following_user


_CALL_HEAD = re.compile(r"\[\s*([^\[\](){}\"'=,]+?)\s*\(")
_IDENTIFIER = re.compile(r"[A-Za-z_][\w.\-]*")


def _toolace_calls(text: str, tool_names: set[str], rid: RecordId, field: str) -> list[ToolCall] | None:
    """The calls of an assistant message in ToolACE's ``[f(a=1)]`` syntax, or None for plain text."""
    s = text.strip()
    head = _CALL_HEAD.match(s)
    if not (head and s.endswith("]")):
        return None
    name = head.group(1).strip()
    # "[Note (see below)]" is prose; a known tool or an identifier before "(" is a call list, and
    # one that cannot be read is an error rather than a final answer.
    if name not in tool_names and not _IDENTIFIER.fullmatch(name):
        return None
    try:
        return parse_pythonic_calls(s)
    except ValueError as e:
        raise TrajectoryError(rid, field, f"cannot read the call list: {e}") from None


def from_toolace(record: dict[str, Any], *, record_id: RecordId = None) -> Trajectory:
    """A ToolACE record ``{"system": "... [tool specs as JSON] ...", "conversations": [{"from":
    "user"|"assistant"|"tool", "value"}, ...]}``; a ``"tools"`` field, if present, is used instead
    of the specs in the system prompt.

    An assistant message ``[f(a=1), g(b="x")]`` is one executor turn of parallel calls (read with
    :func:`parse_pythonic_calls`, never evaluated), a tool message its observation, and the last
    assistant text the summary. ToolACE has no thoughts, so reasoner turns are placeholders.
    """
    rid = _record_id(record, record_id)
    _check_record(record, rid)
    system = _text(record, "system", rid, required=False)
    specs = _json_list(record, "tools", rid) if "tools" in record else _tool_specs_in_text(system)
    tools = _tools(specs, rid, "tools" if "tools" in record else "system")
    query, episode, dropped = _split_episode(_messages(record, rid), rid)
    names = {t["name"] for t in tools}
    events: list[tuple] = []
    for speaker, text, field in episode:
        if speaker == "tool":
            events.append(("observation", text.strip(), None, field))
            continue
        calls = _toolace_calls(text, names, rid, field)
        events.append(("calls", calls, None, field) if calls else ("text", text.strip(), None, field))
    ep = _Episode(query)
    ep.run(events, rid)
    ep.dropped += dropped
    return _trajectory("toolace", record, record_id, tools, ep)


# --------------------------------------------------------------------------------------- ToolBench
_ACTION_LINE = re.compile(r"^[ \t]*Action:[ \t]*(.*?)[ \t]*$", re.M)
_ACTION_INPUT = re.compile(r"\s*Action Input:(.*)\Z", re.S)
_FINISH = "Finish"  # ToolBench's control action: its input carries the final answer


def _toolbench_step(text: str, rid: RecordId, field: str) -> tuple[tuple, str | None]:
    """The event of ``"Thought: ...\\nAction: name\\nAction Input: {json}"``, and Finish's
    ``return_type`` if it is not give_answer."""
    action = _ACTION_LINE.search(text)
    if action is None or not action.group(1):
        raise TrajectoryError(rid, field, "has no 'Action: <tool name>' line")
    thought = re.sub(r"^\s*Thought:", "", text[:action.start()]).strip()
    given = _ACTION_INPUT.match(text, action.end())
    if given is None:
        raise TrajectoryError(rid, field, f"has no 'Action Input:' after 'Action: {action.group(1)}'")
    raw_input = given.group(1).strip()
    try:
        arguments = _decode(raw_input) if raw_input else {}
    except ValueError:
        raise TrajectoryError(rid, field, f"Action Input is not JSON: {raw_input[:80]!r}") from None
    if not isinstance(arguments, dict):
        raise TrajectoryError(rid, field, f"Action Input must be an object, got {type(arguments).__name__}")
    name = action.group(1)
    if name != _FINISH:
        return ("calls", [ToolCall(name, arguments)], thought, field), None
    return_type = arguments.get("return_type", "give_answer")
    if return_type != "give_answer":
        return ("answer", None, thought, field), str(return_type)
    final = arguments.get("final_answer")
    if not isinstance(final, str):
        raise TrajectoryError(rid, field, f"Finish with give_answer needs a string final_answer, got {final!r:.60}")
    return ("answer", final.strip(), thought, field), None


def from_toolbench(record: dict[str, Any], *, record_id: RecordId = None) -> Trajectory:
    """A ToolBench / ToolLLaMA conversation ``{"query", "conversations": [system, user, assistant
    "Thought/Action/Action Input", function, ..., assistant "Action: Finish"]}``.

    The tools are the specs listed in the system message (JSON or Python repr; ``Finish`` is a control
    action, not a tool). Thought → reasoner, Action → executor, function output → observation,
    Finish's final_answer → summarizer. The query is ``record["query"]``, else the user message without
    ToolLLaMA's trailing "Begin!". A Finish that gives up (``return_type`` other than give_answer)
    keeps its path with a placeholder summary and ``meta["finish"]`` set to the return type.
    """
    rid = _record_id(record, record_id)
    _check_record(record, rid)
    messages = _messages(record, rid)
    tools: list[dict[str, Any]] = []
    for speaker, text, field in messages:
        if speaker == "system":
            found = _tools(_tool_specs_in_text(text), rid, field)
            tools += [t for t in found if t["name"] != _FINISH and t not in tools]
    query, episode, dropped = _split_episode(messages, rid)
    if isinstance(record.get("query"), str) and record["query"].strip():
        query = record["query"].strip()
    else:
        query = re.sub(r"\s*Begin!\s*$", "", query).strip()
    events: list[tuple] = []
    meta: dict[str, Any] = {}
    for k, (speaker, text, field) in enumerate(episode):
        if events and events[-1][0] == "answer":  # Finish ends the episode; what follows is not read
            dropped += len(episode) - k
            break
        if speaker == "tool":
            events.append(("observation", text.strip(), None, field))
        elif speaker == "assistant":
            event, gave_up = _toolbench_step(text, rid, field)
            if gave_up is not None:
                meta["finish"] = gave_up
            events.append(event)
    ep = _Episode(query)
    ep.run(events, rid)
    ep.dropped += dropped
    return _trajectory("toolbench", record, record_id, tools, ep, **meta)


CONVERTERS: dict[str, Callable[..., Trajectory]] = {
    "glaive": from_glaive,
    "xlam": from_xlam,
    "toolace": from_toolace,
    "toolbench": from_toolbench,
}


# ------------------------------------------------------------------------------------------- files
def iter_source_records(path: PathLike) -> Iterator[tuple[int, Any]]:
    """``(record_number, value)`` for each record of a JSON Lines file (1-based line numbers) or of a
    file holding one JSON array (0-based indices, as ``data[i]`` finds them). For JSON Lines, a line
    that is not JSON gives a :class:`TrajectoryError` value; an array file that is not JSON raises
    ValueError, since no record of it can be read."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"["):
        yield from iter_json_lines(path)
        return
    # The whole array is loaded: these datasets ship as arrays of a few hundred MB at most.
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{os.fspath(path)}: starts with '[' but is not a JSON array: {e}") from None
    if not isinstance(data, list):
        raise ValueError(f"{os.fspath(path)}: expected a JSON array, got {type(data).__name__}")
    yield from enumerate(data)


def convert_file(in_path: PathLike, fmt: str, out_path: PathLike, *, on_error: OnError = "skip") -> dict[str, Any]:
    """Convert every record of ``in_path`` (JSON Lines or a JSON array) from format ``fmt`` (a key of
    :data:`CONVERTERS`) and write the trajectories to ``out_path`` atomically, as JSON Lines.

    ``on_error="skip"``: bad records are logged (a warning each) and reported; ``"raise"``: the first
    :class:`TrajectoryError` is raised and ``out_path`` is not touched. Returns ``{"format", "input",
    "output", "records", "converted", "bad", "needs_completion", "needs_observation", "added_tools",
    "errors_by_field", "errors"}``, the middle three counting trajectories so marked.
    """
    check_on_error(on_error)
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(CONVERTERS)}")
    convert = CONVERTERS[fmt]
    errors: list[TrajectoryError] = []
    counts: Counter[str] = Counter()

    def counted(records: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
        for number_and_value in records:
            counts["records"] += 1
            yield number_and_value

    def converted() -> Iterator[Trajectory]:
        for traj in parse_records(counted(iter_source_records(in_path)),
                                  lambda record, number: convert(record, record_id=number),
                                  on_error=on_error, errors=errors, source=in_path):
            for key in ("needs_completion", "needs_observation", "added_tools"):
                counts[key] += key in traj.meta
            yield traj

    written = write_trajectories(out_path, converted())
    return {
        "format": fmt,
        "input": os.fspath(in_path),
        "output": os.fspath(out_path),
        "records": counts["records"],
        "converted": written,
        "bad": len(errors),
        "needs_completion": counts["needs_completion"],
        "needs_observation": counts["needs_observation"],
        "added_tools": counts["added_tools"],
        "errors_by_field": error_counts(errors),
        "errors": error_dicts(errors),
    }
