"""Between the agent's tool calls and BFCL's formats: calls -> BFCL's Python-call text, BFCL functions
-> schema-only :class:`~mor_ext.tools.Tool`.

BFCL's result files hold each answer as text in its prompt-mode format, ``[f(a=1), g(b='x')]``, which
BFCL decodes with ``default_decode_ast_prompting`` (Python's ``ast`` for Python, tree-sitter for Java
and JavaScript). :func:`call_text` writes the agent's JSON calls in that format so that BFCL's own
decoder reads them back as the same calls (the tests hold this round trip):

* Python: ``repr`` of each value, as BFCL's ``convert_to_function_call`` writes calls.
* Java and JavaScript: BFCL gives every parameter as "type in string representation" and its checker
  reads each value as source text (``"50"``, ``"true"``, ``"new int[]{1, 2}"``), a top-level string
  literal's quotes removed. A string is written as a double-quoted literal, or where that would need
  escapes (BFCL's parsers keep them as written) in the form BFCL's parser reads back unchanged;
  booleans, numbers and null as literals; lists and objects as JSON (a JavaScript literal; in Java,
  where ``[1]`` is no expression, a string literal of the JSON).

A keyword that is not a valid identifier (``from``, ``max-results``) cannot be written as a Python
call; such a call's text does not decode, and BFCL scores it wrong, as it would a prompt-mode model's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...data.trajectory import ToolCall
from ...tools import Tool
from .shim import bfcl

__all__ = ["LANGUAGES", "NO_CALL", "call_text", "calls_text", "schema_tools"]

LANGUAGES = ("python", "java", "javascript")
NO_CALL = "[]"  # BFCL decodes it to no call: wrong on AST categories, right on irrelevance


def _string_literal(value: str, language: str) -> str:
    """A Java/JavaScript string as source text that BFCL's parser reads back as ``value``: a double-quoted
    literal, unless that needs escapes (which BFCL's parsers keep as written); then the value bare (e.g.
    ``new Point("a", 1)``, a Java expression given as text) or, in JavaScript, single-quoted, whichever
    BFCL's decoder reads back unchanged."""
    quoted = json.dumps(value, ensure_ascii=False)
    if "\\" not in quoted:
        return quoted
    candidates = [value] + ([f"'{value}'"] if language == "javascript" and "'" not in value else [])
    form = getattr(bfcl().ReturnFormat, language.upper())
    for candidate in candidates:
        try:
            if bfcl().decode_ast(f"[f(x={candidate})]", form, False) == [{"f": {"x": value}}]:
                return candidate
        except Exception:  # not a readable expression: try the next form
            continue
    return quoted


def _literal(value: Any, language: str) -> str:
    if language == "python":
        return repr(value)
    if isinstance(value, str):
        return _string_literal(value, language)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    text = json.dumps(value, ensure_ascii=False)
    return json.dumps(text, ensure_ascii=False) if language == "java" else text


def call_text(call: ToolCall | Mapping[str, Any], language: str = "python") -> str:
    """One call as ``name(key=value, ...)`` in BFCL's prompt format for ``language``."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    name, arguments = (call.name, call.arguments) if isinstance(call, ToolCall) else (call["name"], call["arguments"])
    return f"{name}({', '.join(f'{k}={_literal(v, language)}' for k, v in arguments.items())})"


def calls_text(calls: Sequence[ToolCall], language: str = "python") -> str:
    """Calls as BFCL's result text, ``[f(a=1), g(b='x')]``; no calls: ``[]``."""
    return "[" + ", ".join(call_text(c, language) for c in calls) + "]"


def schema_tools(functions: Iterable[Mapping[str, Any]], convert=None) -> dict[str, Tool]:
    """BFCL function documents as schema-only tools (no implementation: nothing can run), keyed by name.

    ``convert``: BFCL's ``convert_to_tool`` (types as in JSON schema: ``dict`` -> ``object``, ``float``
    -> ``number``, ...), as BFCL prepares functions for function-calling models; the names are kept as
    BFCL wrote them (dots included), so the checker compares them as written.
    """
    functions = [copy.deepcopy(dict(f)) for f in functions]
    converted = convert(functions) if convert is not None else functions
    tools: dict[str, Tool] = {}
    for original, item in zip(functions, converted):
        parameters = dict(item.get("parameters") or {"type": "object", "properties": {}})
        parameters["type"] = "object"
        tools[original["name"]] = Tool(original["name"], item.get("description", ""), parameters)
    return tools
