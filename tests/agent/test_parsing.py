"""Executor output -> calls: every form a small model writes parses; the rest is a readable error."""

from __future__ import annotations

import pytest

from mor_ext.agent.parsing import parse_executor_output
from mor_ext.data.trajectory import ToolCall

ADD = ToolCall("add", {"a": 2, "b": 3})
MUL = ToolCall("mul", {"x": 1})


@pytest.mark.parametrize("text, calls", [
    ('{"name": "add", "arguments": {"a": 2, "b": 3}}', [ADD]),
    ('[{"name": "add", "arguments": {"a": 2, "b": 3}}, {"name": "mul", "arguments": {"x": 1}}]', [ADD, MUL]),
    ('```json\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n```', [ADD]),
    ('```\n[{"name": "add", "arguments": {"a": 2, "b": 3}}]\n```\nThat is the call.', [ADD]),
    ('Calling: {"name": "add", "arguments": {"a": 2, "b": 3}} now', [ADD]),
    ('{"name": "add", "arguments": {"a": 2, "b": 3}}\nNext: reasoner {oops', [ADD]),
    ('{"name": "add", "parameters": {"a": 2, "b": 3}}', [ADD]),
    ('{"name": "add", "arguments": "{\\"a\\": 2, \\"b\\": 3}"}', [ADD]),
    ('{"type": "function", "function": {"name": "add", "arguments": "{\\"a\\": 2, \\"b\\": 3}"}}', [ADD]),
    ('{"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]}', [ADD]),
    ('{"name": "ping"}', [ToolCall("ping", {})]),
    ('{broken {"name": "add", "arguments": {"a": 2, "b": 3}}', [ADD]),
])
def test_call_forms(text, calls):
    parsed = parse_executor_output(text)
    assert parsed.ok and list(parsed.calls) == calls


@pytest.mark.parametrize("text, message", [
    ("I would add them", "could not read a tool call"),
    ('{"name": "add", "arguments": {"a": 2', "could not read a tool call"),
    ("[]", "empty"),
    ('{"arguments": {"a": 1}}', "no string 'name'"),
    ('{"name": "add", "arguments": [1, 2]}', "must be an object"),
    ('{"name": "add", "arguments": "{not json"}', "not valid JSON"),
    ("[1, 2]", "not an object"),
])
def test_unreadable_output_is_an_error_not_an_exception(text, message):
    parsed = parse_executor_output(text)
    assert not parsed.ok and not parsed.calls and message in parsed.error
