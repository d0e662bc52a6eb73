"""Reading Python-like call syntax (``[f(x=1), g(y='a')]``) without evaluating it: ``ast.parse`` and a
whitelist of literal nodes."""

from __future__ import annotations

import ast
import math
import re
from typing import Any, Iterator

from ..trajectory import ToolCall


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


def safe_literal(text: str) -> Any:
    """A Python/JSON literal read from ``text`` without evaluating it. Raises ValueError."""
    try:
        return _literal(_parse_expression(text))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def literal_structure(text: str) -> Iterator[tuple[int, str]]:
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
    for i, ch in literal_structure(s):
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
