"""The executor: every failure is a ToolResult of its kind, never an exception; the time limit."""

from __future__ import annotations

import json
import threading
import time

import pytest

from mor_ext.tools import ERROR_KINDS, Tool, ToolRegistry, ToolResult, execute, observation_text, tool


@tool
def divide_numbers(a: float, b: float) -> float:
    """Divide a by b.

    Args:
        a: The dividend.
        b: The divisor.
    """
    return a / b


@tool
def sleepy_tool(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "awake"


@tool
def odd_result_tool(kind: str) -> object:
    """Return something that is not JSON."""
    return {"nan": float("nan"), "inf": float("inf"), "set": {1, 2}, "object": object()}[kind]


class Interrupted(BaseException):
    pass


@tool
def base_exception_tool() -> None:
    """Raise something that is not an Exception."""
    raise Interrupted("stop")


REGISTRY = ToolRegistry([divide_numbers, sleepy_tool, odd_result_tool, base_exception_tool,
                         Tool("schema_only_tool", "Read from a data file.", {"type": "object", "properties": {}})])


def test_success_with_coerced_arguments():
    result = execute(REGISTRY, "divide_numbers", {"a": "9", "b": 3})
    assert result == ToolResult(True, 3.0, None, "", {"a": 9, "b": 3}, result.coercions)
    assert [c.argument for c in result.coercions] == ["a"]
    assert result.observation() == {"result": 3.0} and result.observation_text() == '{"result": 3.0}'


@pytest.mark.parametrize("name, arguments, kind, fragment", [
    ("nope", {}, "unknown_tool", "unknown tool 'nope'; the tools are base_exception_tool, divide_numbers"),
    (None, {}, "unknown_tool", "unknown tool None"),
    (["divide_numbers"], {}, "unknown_tool", "unknown tool"),
    ("schema_only_tool", {}, "not_executable", "has no implementation"),
    ("divide_numbers", {"a": 1}, "bad_arguments", "divide_numbers: missing required argument 'b'"),
    ("divide_numbers", {"a": 1, "b": "two"}, "bad_arguments", "argument 'b' must be a number, got str 'two'"),
    ("divide_numbers", [1, 2], "bad_arguments", "must be a JSON object"),
    ("divide_numbers", {"a": 1, "b": 2, "c": 3}, "bad_arguments", "unexpected argument 'c'"),
    ("divide_numbers", {"a": 1, "b": 0}, "tool_error", "divide_numbers failed: ZeroDivisionError"),
    ("base_exception_tool", {}, "tool_error", "Interrupted: stop"),
    ("odd_result_tool", {"kind": "nan"}, "bad_result", "not JSON"),
    ("odd_result_tool", {"kind": "inf"}, "bad_result", "not JSON"),
    ("odd_result_tool", {"kind": "set"}, "bad_result", "not JSON"),
    ("odd_result_tool", {"kind": "object"}, "bad_result", "not JSON"),
    ("sleepy_tool", {"seconds": 5}, "timeout", "sleepy_tool did not finish within 0.2 s"),
])
def test_every_failure_is_a_result(name, arguments, kind, fragment):
    result = execute(REGISTRY, name, arguments, timeout=0.2)
    assert not result.ok and result.result is None
    assert result.error_kind == kind and kind in ERROR_KINDS
    assert fragment in result.message, result.message
    assert json.loads(result.observation_text()) == {"error": result.message}


def test_timeout_returns_promptly_and_no_limit_runs_inline():
    start = time.perf_counter()
    assert execute(REGISTRY, "sleepy_tool", {"seconds": 2}, timeout=0.1).error_kind == "timeout"
    assert time.perf_counter() - start < 1.5
    assert execute(REGISTRY, "sleepy_tool", {"seconds": 0.01}, timeout=1).result == "awake"
    seen = []

    @tool
    def where_am_i() -> str:
        """Name the thread it runs in."""
        seen.append(threading.current_thread())
        return "here"

    assert execute(ToolRegistry([where_am_i]), "where_am_i", {}, timeout=None).ok
    assert seen == [threading.current_thread()]


def test_coerce_false_is_strict():
    assert execute(REGISTRY, "divide_numbers", {"a": "9", "b": 3}, coerce=False).error_kind == "bad_arguments"


def test_any_mapping_of_tools_works_as_registry():
    assert execute({"divide_numbers": divide_numbers}, "divide_numbers", {"a": 1, "b": 4}).result == 0.25


def test_observation_text_of_a_turn():
    ok = execute(REGISTRY, "divide_numbers", {"a": 1, "b": 2})
    bad = execute(REGISTRY, "nope", {})
    assert observation_text([ok]) == '{"result": 0.5}'
    assert json.loads(observation_text([ok, bad])) == [{"result": 0.5}, {"error": bad.message}]
    assert json.loads(observation_text([])) == {"error": "no tool calls"}


def test_a_mapping_entry_that_is_not_a_tool_is_not_executable():
    result = execute({"print_it": print}, "print_it", {})  # type: ignore[dict-item]
    assert result.error_kind == "not_executable" and "'print_it' has no implementation" in result.message
