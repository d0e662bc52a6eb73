"""The one tool type, and a decorator that builds it from a typed, documented Python function."""

from __future__ import annotations

import enum
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

import docstring_parser

__all__ = ["Tool", "tool", "schema_for_type"]


@dataclass(frozen=True)
class Tool:
    """One tool: what a model sees (``name``, ``description``, JSON-schema ``parameters`` of type
    object) and, when it can run here, the callable ``fn`` taking the arguments as keywords.

    Tools read from data files have no ``fn``. Equality looks at what the model sees only, so a tool
    read back from a trajectory file equals the catalogue tool it was written from.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    domain: str | None = field(default=None, compare=False)  # catalogue grouping (math, units, ...)
    example: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)  # a valid call

    @property
    def required(self) -> list[str]:
        return list(self.parameters.get("required", []))

    def to_dict(self) -> dict[str, Any]:
        """The trajectory format's tool entry (also an OpenAI-style ``function`` object)."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat-completions ``tools`` entry."""
        return {"type": "function", "function": self.to_dict()}

    def __call__(self, **arguments: Any) -> Any:
        """Run ``fn`` directly (no validation; :func:`mor_ext.tools.execute` is the checked way)."""
        if self.fn is None:
            raise TypeError(f"tool {self.name!r} has no implementation")
        return self.fn(**arguments)


_SCALARS: dict[Any, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _literal_schema(values: tuple[Any, ...], where: str) -> dict[str, Any]:
    kinds = {_SCALARS.get(type(v)) for v in values}
    if None in kinds:
        raise TypeError(f"{where}: Literal values must be str, int, float or bool, got {values!r}")
    if kinds <= {"integer", "number"} and len(kinds) == 2:
        kinds = {"number"}
    schema: dict[str, Any] = {"enum": list(values)}
    if len(kinds) == 1:
        schema = {"type": kinds.pop(), **schema}
    return schema


def schema_for_type(hint: Any, where: str = "type") -> dict[str, Any]:
    """The JSON schema of a type hint: int, float, str, bool, Literal[...], Enum subclasses,
    list/tuple/Sequence[X], dict/Mapping[str, X], X | None, and Annotated[X, {extra schema}]."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is typing.Annotated:
        schema = schema_for_type(args[0], where)
        for extra in args[1:]:
            if isinstance(extra, Mapping):  # e.g. Annotated[float, {"minimum": 0}]
                schema.update(extra)
        return schema
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if origin is Literal:
        return _literal_schema(args, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _literal_schema(tuple(m.value for m in hint), where)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        schemas = [schema_for_type(a, where) for a in options]
        if len(options) < len(args):
            schemas.append({"type": "null"})
        if all(set(s) == {"type"} and isinstance(s["type"], str) for s in schemas):
            return {"type": [s["type"] for s in schemas]}
        return {"anyOf": schemas}
    if hint in (list, tuple) or origin in (list, tuple, Sequence):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            # a fixed-length tuple: one schema per position
            return {"type": "array", "prefixItems": [schema_for_type(a, where) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        schema: dict[str, Any] = {"type": "array"}
        if args:
            schema["items"] = schema_for_type(args[0], where)
        return schema
    if hint is dict or origin in (dict, Mapping):
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = schema_for_type(args[1], where)
        return schema
    raise TypeError(f"{where}: no JSON schema for type hint {hint!r}")


def _json_default(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema.get("type"), list):
        kinds = [k for k in schema["type"] if k != "null"]
        return {**schema, "type": kinds[0] if len(kinds) == 1 else kinds}
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o != {"type": "null"}]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return {**options[0], **rest} if len(options) == 1 else {**rest, "anyOf": options}
    return schema


def _derive(fn: Callable[..., Any], name: str | None, description: str | None) -> Tool:
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    text = description or "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
    if not text:
        raise TypeError(f"tool {fn.__name__!r}: a description is needed (a docstring, or description=...)")
    param_docs = {p.arg_name: p.description for p in doc.params if p.description}
    hints = get_type_hints(fn, include_extras=True)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for pname, p in inspect.signature(fn).parameters.items():
        where = f"tool {fn.__name__!r}, parameter {pname!r}"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise TypeError(f"{where}: tools take named arguments only (no *args, **kwargs or positional-only)")
        if pname not in hints:
            raise TypeError(f"{where}: needs a type hint (the schema is derived from it)")
        schema = schema_for_type(hints[pname], where)
        if pname in param_docs:
            schema["description"] = param_docs[pname]
        if p.default is p.empty:
            required.append(pname)
        else:
            if p.default is None:
                schema = _without_null(schema)  # X | None = None: callers simply leave it out
            elif _json_default(p.default):
                schema["default"] = p.default.value if isinstance(p.default, enum.Enum) else p.default
        properties[pname] = schema
    parameters = {"type": "object", "properties": properties, "required": required}
    return Tool(name or fn.__name__, text, parameters, fn)


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None,
         domain: str | None = None, example: Mapping[str, Any] | None = None) -> Any:
    """Make a :class:`Tool` of a function; use as ``@tool`` or ``@tool(name=..., domain=...)``.

    The schema comes from the signature and the docstring (parsed by ``docstring-parser``: Google,
    NumPy, reST or Epydoc style): the description is the docstring's text before the parameter
    section, each parameter's description its entry there; parameters without a default are
    required; ``Literal[...]`` and ``Enum`` hints become ``enum``; ``X | None`` adds ``null`` unless the
    default is None (then the argument is simply optional); ``Annotated[X, {...}]`` adds schema
    keywords such as ``minimum``. The result is still callable like the function.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        derived = _derive(f, name, description)
        return Tool(derived.name, derived.description, derived.parameters, f, domain,
                    dict(example) if example is not None else None)

    return wrap(fn) if fn is not None else wrap
