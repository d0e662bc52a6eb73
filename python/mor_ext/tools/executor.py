"""Running one tool call: :func:`execute` turns every outcome into a :class:`ToolResult`.

An agent loop shows failures to the model as observations, so nothing here raises: an unknown
tool, bad arguments, an exception inside the tool, a call over its time limit and a result that is
not JSON (NaN, infinity, arbitrary objects) are each an error result with a kind
(:data:`ERROR_KINDS`) and a message that says what went wrong.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .tool import Tool
from .validation import Coercion, check_arguments

__all__ = ["ToolResult", "ERROR_KINDS", "DEFAULT_TIMEOUT", "execute", "observation_text"]

UNKNOWN_TOOL = "unknown_tool"
NOT_EXECUTABLE = "not_executable"  # the tool has no implementation (read from a data file)
BAD_ARGUMENTS = "bad_arguments"
TOOL_ERROR = "tool_error"  # the tool raised
TIMEOUT = "timeout"
BAD_RESULT = "bad_result"  # the result is not JSON
ERROR_KINDS = (UNKNOWN_TOOL, NOT_EXECUTABLE, BAD_ARGUMENTS, TOOL_ERROR, TIMEOUT, BAD_RESULT)

DEFAULT_TIMEOUT = 10.0  # seconds; the catalogue's tools take microseconds


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one call: ``result`` when ``ok``, else ``error_kind`` and ``message``.
    ``arguments`` are the arguments the tool ran with (after coercion), ``coercions`` what changed."""

    ok: bool
    result: Any = None
    error_kind: str | None = None
    message: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    coercions: tuple[Coercion, ...] = ()

    def observation(self) -> dict[str, Any]:
        """``{"result": ...}`` or ``{"error": "..."}``, as an observation turn shows it."""
        return {"result": self.result} if self.ok else {"error": self.message}

    def observation_text(self) -> str:
        return json.dumps(self.observation(), ensure_ascii=False, allow_nan=False)


def _failure(kind: str, message: str, **extra: Any) -> ToolResult:
    return ToolResult(False, None, kind, message, **extra)


def _run(fn: Any, arguments: dict[str, Any], timeout: float | None) -> tuple[bool, Any]:
    """(True, value) or (False, exception); None for a call still running after ``timeout``."""
    if timeout is None:
        try:
            return True, fn(**arguments)
        except Exception as exc:
            return False, exc
    box: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            box.append((True, fn(**arguments)))
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, whatever it is
            box.append((False, exc))

    # A daemon thread per call: Python cannot stop a thread, so a call over its limit is abandoned
    # (it finishes or not in the background) and reported as a timeout; tools should be pure.
    worker = threading.Thread(target=target, name="mor_ext-tool", daemon=True)
    worker.start()
    worker.join(timeout)
    return box[0] if box else None  # type: ignore[return-value]


def execute(registry: Mapping[str, Tool], name: Any, arguments: Any, *, timeout: float | None = DEFAULT_TIMEOUT,
            coerce: bool = True) -> ToolResult:
    """Run tool ``name`` of ``registry`` with ``arguments``; never raises.

    The arguments are coerced (unless ``coerce`` is False) and validated against the tool's schema
    (:mod:`mor_ext.tools.validation`) before the tool runs. ``timeout`` is in seconds (None: no limit,
    and the call runs in the caller's thread).
    """
    item = registry.get(name) if isinstance(name, str) else None
    if item is None:
        known = ", ".join(sorted(registry)) if len(registry) <= 20 else f"{len(registry)} tools"
        return _failure(UNKNOWN_TOOL, f"unknown tool {name!r}; the tools are {known}")
    if not isinstance(item, Tool) or item.fn is None:
        return _failure(NOT_EXECUTABLE, f"tool {name!r} has no implementation here")
    checked = check_arguments(item.parameters, arguments, coerce=coerce)
    if not checked.ok:
        return _failure(BAD_ARGUMENTS, f"{item.name}: {checked.message}", coercions=checked.coercions)
    done = _run(item.fn, checked.arguments, timeout)
    extra = {"arguments": checked.arguments, "coercions": checked.coercions}
    if done is None:
        return _failure(TIMEOUT, f"{item.name} did not finish within {timeout:g} s", **extra)
    ok, value = done
    if not ok:
        return _failure(TOOL_ERROR, f"{item.name} failed: {type(value).__name__}: {value}", **extra)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return _failure(BAD_RESULT, f"{item.name} returned a result that is not JSON: {exc}", **extra)
    return ToolResult(True, value, **extra)


def observation_text(results: Sequence[ToolResult]) -> str:
    """The observation of one executor turn: one call's observation, or a JSON list of several (in
    call order); an empty turn is an error observation."""
    if not results:
        return json.dumps({"error": "no tool calls"}, ensure_ascii=False)
    items = [r.observation() for r in results]
    return json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False, allow_nan=False)
