"""The multi-role trajectory: one tool-using episode, split into the turns of each role.

A JSON Lines file holds one trajectory per line::

    {"id": "calc-17",                                  # optional
     "system": "You are ...",                          # optional
     "tools": [{"name": "add", "description": "Add two numbers.",
                "parameters": {"type": "object",
                               "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                               "required": ["a", "b"]}}],
     "turns": [
       {"role": "user", "content": "What is 2 + 3?"},
       {"role": "reasoner", "content": "I should add the numbers.", "next": "executor"},
       {"role": "executor", "calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
       {"role": "observation", "content": "{\"result\": 5}"},
       {"role": "reasoner", "content": "I have the sum.", "next": "summarizer"},
       {"role": "summarizer", "content": "2 + 3 = 5."}]}

Rules: the first turn is the user's; every executor turn follows a reasoner turn whose ``next`` is
"executor" and is followed by one observation turn; the last turn is the summarizer's, after a
reasoner turn whose ``next`` is "summarizer". A reasoner's rendered text ends with
``Next: executor`` / ``Next: summarizer`` (:func:`render_content`), so the decision is what the model
learns to write. :func:`parse_trajectory` checks all of this and names the record and field of the
first problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..tools.tool import Tool  # the one tool type; tools read from files have no callable

__all__ = [
    "ROLE_TURNS", "CONTEXT_TURNS", "Tool", "ToolCall", "Turn", "Trajectory", "TrajectoryError",
    "parse_trajectory", "render_content", "parse_calls", "parse_next",
]

ROLE_TURNS = ("reasoner", "executor", "summarizer")  # turns a MoR role writes (and is trained on)
CONTEXT_TURNS = ("system", "user", "observation")  # turns the model reads
_NEXT_VALUES = ("executor", "summarizer")


class TrajectoryError(ValueError):
    """A record that is not a valid trajectory; ``record`` and ``field`` say where."""

    def __init__(self, record: str | int | None, field: str, message: str) -> None:
        self.record, self.field = record, field
        where = f"record {record}" if record is not None else "trajectory"
        super().__init__(f"{where}, field {field}: {message}")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class Turn:
    role: str  # one of CONTEXT_TURNS or ROLE_TURNS (except "system", which is Trajectory.system)
    content: str = ""
    next: str | None = None  # reasoner turns: "executor" or "summarizer"
    calls: tuple[ToolCall, ...] = ()  # executor turns

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role}
        if self.role == "executor":
            d["calls"] = [c.to_dict() for c in self.calls]
        else:
            d["content"] = self.content
        if self.next is not None:
            d["next"] = self.next
        return d


@dataclass(frozen=True)
class Trajectory:
    tools: tuple[Tool, ...]
    turns: tuple[Turn, ...]
    system: str | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # free-form provenance (source, generator, ...)

    @property
    def has_placeholders(self) -> bool:
        """Whether a converter left placeholder turns that a completer must still write
        (``meta["needs_completion"]`` / ``meta["needs_observation"]``): not training-ready."""
        return bool(self.meta.get("needs_completion") or self.meta.get("needs_observation"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.id is not None:
            d["id"] = self.id
        if self.system is not None:
            d["system"] = self.system
        d["tools"] = [t.to_dict() for t in self.tools]
        d["turns"] = [t.to_dict() for t in self.turns]
        if self.meta:
            d["meta"] = self.meta
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @property
    def query(self) -> str:
        return self.turns[0].content


def render_content(turn: Turn) -> str:
    """The text a turn contributes after its header: what the model reads or writes."""
    if turn.role == "reasoner":
        return f"{turn.content.rstrip()}\nNext: {turn.next}"
    if turn.role == "executor":
        calls = [c.to_dict() for c in turn.calls]
        return json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
    return turn.content


def parse_next(text: str) -> str | None:
    """The decision at the end of a reasoner's text, or None if it has none."""
    tail = text.strip().splitlines()[-1:] or [""]
    line = tail[0].strip()
    if line.lower().startswith("next:"):
        value = line[5:].strip().lower()
        return value if value in _NEXT_VALUES else None
    return None


def parse_calls(text: str) -> list[ToolCall]:
    """Tool calls from an executor's text (one JSON object, or a list of them). Raises ValueError."""
    data = json.loads(text)
    items = data if isinstance(data, list) else [data]
    calls = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"call {i} is not an object with a string 'name': {item!r}")
        args = item.get("arguments", {})
        if not isinstance(args, dict):
            raise ValueError(f"call {i} ({item['name']}): 'arguments' must be an object, got {type(args).__name__}")
        calls.append(ToolCall(item["name"], args))
    return calls


# ------------------------------------------------------------------------------------------- parsing
def _require(cond: bool, record, path: str, message: str) -> None:
    if not cond:
        raise TrajectoryError(record, path, message)


def _parse_tool(raw: Any, record, path: str) -> Tool:
    _require(isinstance(raw, dict), record, path, f"a tool must be an object, got {type(raw).__name__}")
    name = raw.get("name")
    _require(isinstance(name, str) and name != "", record, f"{path}.name", "must be a non-empty string")
    desc = raw.get("description", "")
    _require(isinstance(desc, str), record, f"{path}.description", "must be a string")
    params = raw.get("parameters", {"type": "object", "properties": {}})
    _require(isinstance(params, dict), record, f"{path}.parameters", "must be a JSON-schema object")
    _require(params.get("type", "object") == "object", record, f"{path}.parameters.type", "must be 'object'")
    props = params.get("properties", {})
    _require(isinstance(props, dict), record, f"{path}.parameters.properties", "must be an object")
    required = params.get("required", [])
    _require(isinstance(required, list) and all(isinstance(r, str) for r in required), record,
             f"{path}.parameters.required", "must be a list of parameter names")
    for r in required:
        _require(r in props, record, f"{path}.parameters.required", f"names {r!r}, which is not in properties")
    return Tool(name, desc, params)


def _parse_turn(raw: Any, record, path: str) -> Turn:
    _require(isinstance(raw, dict), record, path, f"a turn must be an object, got {type(raw).__name__}")
    role = raw.get("role")
    allowed = ("user", "observation") + ROLE_TURNS
    _require(role in allowed, record, f"{path}.role", f"must be one of {list(allowed)}, got {role!r}")
    if role == "executor":
        calls = raw.get("calls")
        _require(isinstance(calls, list) and len(calls) > 0, record, f"{path}.calls", "must be a non-empty list")
        parsed = []
        for j, c in enumerate(calls):
            cp = f"{path}.calls[{j}]"
            _require(isinstance(c, dict), record, cp, "must be an object")
            _require(isinstance(c.get("name"), str) and c["name"] != "", record, f"{cp}.name", "must be a non-empty string")
            args = c.get("arguments", {})
            _require(isinstance(args, dict), record, f"{cp}.arguments", "must be an object")
            parsed.append(ToolCall(c["name"], args))
        return Turn("executor", calls=tuple(parsed))
    content = raw.get("content")
    _require(isinstance(content, str), record, f"{path}.content", "must be a string")
    nxt = raw.get("next")
    if role == "reasoner":
        _require(nxt in _NEXT_VALUES, record, f"{path}.next", f"must be one of {list(_NEXT_VALUES)}, got {nxt!r}")
    else:
        _require(nxt is None, record, f"{path}.next", "only reasoner turns have 'next'")
    return Turn(role, content, nxt)


def parse_trajectory(raw: Any, record: str | int | None = None) -> Trajectory:
    """A validated :class:`Trajectory` from a decoded JSON record, or a :class:`TrajectoryError`."""
    _require(isinstance(raw, dict), record, "<record>", f"must be a JSON object, got {type(raw).__name__}")
    rid = raw.get("id", record if isinstance(record, str) else None)
    if rid is not None and not isinstance(rid, str):
        rid = str(rid)
    system = raw.get("system")
    _require(system is None or isinstance(system, str), record, "system", "must be a string")
    tools_raw = raw.get("tools", [])
    _require(isinstance(tools_raw, list), record, "tools", "must be a list")
    tools = tuple(_parse_tool(t, record, f"tools[{i}]") for i, t in enumerate(tools_raw))
    names = [t.name for t in tools]
    _require(len(set(names)) == len(names), record, "tools", f"tool names must be unique, got {names}")
    turns_raw = raw.get("turns")
    _require(isinstance(turns_raw, list) and turns_raw, record, "turns", "must be a non-empty list")
    turns = tuple(_parse_turn(t, record, f"turns[{i}]") for i, t in enumerate(turns_raw))

    _require(turns[0].role == "user", record, "turns[0].role", "the first turn must be the user's")
    _require(turns[-1].role == "summarizer", record, f"turns[{len(turns) - 1}].role",
             "the last turn must be the summarizer's")
    for i, turn in enumerate(turns):
        prev = turns[i - 1] if i > 0 else None
        if turn.role in ("executor", "summarizer"):
            _require(prev is not None and prev.role == "reasoner" and prev.next == turn.role, record,
                     f"turns[{i}].role", f"a {turn.role} turn must follow a reasoner turn with next={turn.role!r}")
        if turn.role == "executor":
            _require(i + 1 < len(turns) and turns[i + 1].role == "observation", record, f"turns[{i + 1}]",
                     "an executor turn must be followed by an observation turn")
        if turn.role == "observation":
            _require(prev is not None and prev.role == "executor", record, f"turns[{i}].role",
                     "an observation must follow an executor turn")
        if turn.role == "reasoner" and i + 1 < len(turns):
            _require(turns[i + 1].role == turn.next, record, f"turns[{i}].next",
                     f"says {turn.next!r} but the next turn is {turns[i + 1].role!r}")
    meta = raw.get("meta", {})
    _require(isinstance(meta, dict), record, "meta", "must be an object")
    return Trajectory(tools, turns, system, rid, dict(meta))
