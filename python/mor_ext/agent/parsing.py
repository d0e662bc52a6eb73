"""Executor output -> tool calls, tolerant of the forms a small model writes.

The trajectory format's executor turn is one JSON object ``{"name": ..., "arguments": {...}}`` or a
list of them (:func:`mor_ext.data.trajectory.parse_calls` reads exactly that). Generated text is
messier, so :func:`parse_executor_output` also accepts: code fences (```json ... ```), text before or
after the JSON, ``{"calls": [...]}`` / ``{"tool_calls": [...]}`` wrappers, OpenAI's
``{"function": {"name": ..., "arguments": "<JSON string>"}}`` and ``parameters`` / ``args`` instead
of ``arguments``. Anything else is a :class:`ParsedCalls` with an ``error`` that the runtime shows the
reasoner as an observation; nothing here raises.

Argument checking against the tools' schemas is not done here but by :func:`mor_ext.tools.execute`,
the one executor.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..data.trajectory import ToolCall

__all__ = ["ParsedCalls", "parse_executor_output"]

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_ARGUMENT_KEYS = ("arguments", "parameters", "args", "input")
_WRAPPER_KEYS = ("calls", "tool_calls")


@dataclass(frozen=True)
class ParsedCalls:
    """The calls of one executor turn, or why there are none (``error``)."""

    calls: tuple[ToolCall, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _first_json_value(text: str) -> Any:
    """The first JSON object or list in ``text`` (anything around it ignored); ValueError if none."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, (dict, list)):
            return value
    raise ValueError("no JSON object or list found")


def _call(item: Any, index: int) -> ToolCall:
    if not isinstance(item, dict):
        raise ValueError(f"call {index} is not an object: {json.dumps(item)[:80]}")
    if isinstance(item.get("function"), dict):  # OpenAI tool_calls entry
        item = item["function"]
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"call {index} has no string 'name'")
    key = next((k for k in _ARGUMENT_KEYS if k in item), None)
    arguments = item.get(key, {}) if key else {}
    if isinstance(arguments, str):  # OpenAI sends arguments as a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"call {index} ({name}): arguments are not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"call {index} ({name}): arguments must be an object, got {type(arguments).__name__}")
    return ToolCall(name, arguments)


def parse_executor_output(text: str) -> ParsedCalls:
    """The tool calls in an executor's generated ``text`` (see the module docstring)."""
    fenced = _FENCE.findall(text)
    candidates = [*fenced, text] if fenced else [text]
    error = "no JSON object or list found"
    for candidate in candidates:
        try:
            value = _first_json_value(candidate)
        except ValueError as exc:
            error = str(exc)
            continue
        if isinstance(value, dict):
            wrapped = next((value[k] for k in _WRAPPER_KEYS if isinstance(value.get(k), list)), None)
            items = wrapped if wrapped is not None else [value]
        else:
            items = value
        if not items:
            return ParsedCalls(error="the call list is empty")
        try:
            return ParsedCalls(tuple(_call(item, i) for i, item in enumerate(items)))
        except ValueError as exc:
            return ParsedCalls(error=str(exc))
    return ParsedCalls(error=f'could not read a tool call ({error}); expected {{"name": TOOL, "arguments": {{...}}}}')
