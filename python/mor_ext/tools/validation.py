"""Checking a call's arguments against a tool's JSON schema: a few safe coercions, then ``jsonschema``.

Coercions (applied first, recursively into arrays and objects; each one reported as a
:class:`Coercion`), only where nothing is lost:

==============  =========================================================================
kind            what
==============  =========================================================================
``type``        a value of an undeclared JSON type that converts exactly, tried in the order
                of the declared types: ``"3"`` -> 3 and 3.0 -> 3 (integer), ``"2.5"`` -> 2.5
                (number), ``"true"``/``"false"`` -> True/False (boolean), a finite number ->
                its text (string), the JSON text of an array/object -> that array/object
``enum``        a value outside ``enum`` that equals exactly one member ignoring case and type
                (``"Population"`` -> ``"population"``, ``"12"`` -> 12)
``dropped``     an argument the schema does not name, removed (only with ``drop_unknown``)
==============  =========================================================================

Validation is ``jsonschema`` (Draft 2020-12) with two deliberate differences from plain JSON
Schema, both because the arguments go to Python callables: a number must be finite (no NaN or
infinity) and an integer must be an ``int`` (3.0 is coerced instead), and arguments the schema does
not name are refused unless it sets ``additionalProperties``. Unknown ``type`` names in a schema
(datasets write ``"str"`` or ``"float"``) are ignored rather than fatal. Every problem is an
:class:`ArgumentError` naming the argument and what was expected.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator, ValidationError

__all__ = ["ArgumentError", "Coercion", "CheckedArguments", "coerce_arguments", "validate_arguments",
           "check_arguments", "ARGUMENT_ERROR_KINDS"]

# What an ArgumentError can be about, in the order they are reported.
ARGUMENT_ERROR_KINDS = ("arguments", "missing", "unexpected", "type", "enum", "range", "invalid")

_JSON_TYPES = ("number", "integer", "string", "boolean", "array", "object", "null")
_ARTICLE = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "a boolean",
            "array": "an array", "object": "an object", "null": "null"}
_INT_TEXT = re.compile(r"[+-]?\d+")
_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NO = object()  # "cannot be coerced"


@dataclass(frozen=True)
class ArgumentError:
    """One way the arguments break the schema; ``argument`` is a path such as ``values[1]`` (empty
    when it is about the arguments as a whole), ``kind`` one of :data:`ARGUMENT_ERROR_KINDS`."""

    argument: str
    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Coercion:
    """One value changed before validation (see the module docstring for the ``kind`` values)."""

    argument: str
    kind: str
    before: Any
    after: Any = None

    def __str__(self) -> str:
        if self.kind == "dropped":
            return f"argument {self.argument!r} is not a parameter; dropped"
        return f"argument {self.argument!r}: {self.before!r:.60} -> {self.after!r:.60}"


@dataclass(frozen=True)
class CheckedArguments:
    """The outcome of :func:`check_arguments`: the (coerced) arguments, what was coerced, and the
    problems left; ``ok`` when there are none."""

    arguments: dict[str, Any]
    coercions: tuple[Coercion, ...] = ()
    errors: tuple[ArgumentError, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def message(self) -> str:
        """All problems in one line (empty when ``ok``)."""
        return "; ".join(e.message for e in self.errors)


# ----------------------------------------------------------------------------------------- types
def _is(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "null":
        return value is None
    return isinstance(value, {"string": str, "boolean": bool, "array": list, "object": dict}[kind])


def _declared(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else list(kind) if isinstance(kind, list) else []
    return [k for k in kinds if k in _JSON_TYPES]


def _type_keyword(validator: Any, types: Any, instance: Any, schema: Any):
    """``type`` that ignores type names JSON Schema does not have (dataset schemas use some)."""
    kinds = _declared({"type": types})
    if kinds and not any(validator.is_type(instance, k) for k in kinds):
        yield ValidationError(f"{instance!r} is not of type {kinds}", validator="type", validator_value=kinds)


_TYPE_CHECKER = Draft202012Validator.TYPE_CHECKER.redefine_many({
    "number": lambda _, v: _is(v, "number"), "integer": lambda _, v: _is(v, "integer"),
})
_Validator = jsonschema.validators.extend(Draft202012Validator, validators={"type": _type_keyword},
                                          type_checker=_TYPE_CHECKER)


# ------------------------------------------------------------------------------------- coercion
def _coerce_type(value: Any, kind: str) -> Any:
    if kind == "integer":
        if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            return int(value.strip())
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
    elif kind == "number":
        if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
            text = value.strip()
            return int(text) if _INT_TEXT.fullmatch(text) else float(text)
    elif kind == "boolean":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    elif kind == "string":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return str(value)
    elif kind in ("array", "object") and isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return _NO
        if _is(decoded, kind):
            return decoded
    return _NO


def _coerce(value: Any, schema: Any, where: str, out: list[Coercion]) -> Any:
    if not isinstance(schema, Mapping):
        return value
    kinds = _declared(schema)
    if kinds and not any(_is(value, k) for k in kinds):
        new = next((c for c in (_coerce_type(value, k) for k in kinds) if c is not _NO), _NO)
        if new is not _NO:
            out.append(Coercion(where, "type", value, new))
            value = new
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum and isinstance(value, (str, int, float)):
        text = str(value).strip().lower()
        matches = [e for e in enum if isinstance(e, (str, int, float)) and str(e).lower() == text]
        if len(matches) == 1:
            out.append(Coercion(where, "enum", value, matches[0]))
            value = matches[0]
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        value = [_coerce(v, schema["items"], f"{where}[{i}]", out) for i, v in enumerate(value)]
    if isinstance(value, dict) and isinstance(schema.get("properties"), Mapping):
        props = schema["properties"]
        value = {k: _coerce(v, props.get(k), f"{where}.{k}", out) for k, v in value.items()}
    return value


def _properties(parameters: Mapping[str, Any]) -> Mapping[str, Any]:
    props = parameters.get("properties")
    return props if isinstance(props, Mapping) else {}


def _allows_extra(parameters: Mapping[str, Any]) -> bool:
    return parameters.get("additionalProperties", False) is not False


def coerce_arguments(parameters: Mapping[str, Any], arguments: Mapping[str, Any], *,
                     drop_unknown: bool = False) -> tuple[dict[str, Any], list[Coercion]]:
    """``arguments`` with the documented coercions applied, and the list of what changed."""
    props, out = _properties(parameters), []
    result: dict[str, Any] = {}
    for name, value in arguments.items():
        if name not in props and drop_unknown and not _allows_extra(parameters):
            out.append(Coercion(name, "dropped", value))
            continue
        result[name] = _coerce(value, props.get(name), name, out)
    return result, out


# ----------------------------------------------------------------------------------- validation
def _path(error: ValidationError) -> str:
    text = ""
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_RANGE = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}


def _describe(error: ValidationError) -> ArgumentError:
    where = _path(error)
    name = f"argument {where!r}" if where else "the arguments"
    value, bound, keyword = error.instance, error.validator_value, error.validator
    if keyword == "type":
        kinds = bound if isinstance(bound, list) else [bound]
        expected = " or ".join(_ARTICLE.get(k, k) for k in kinds)
        return ArgumentError(where, "type", f"{name} must be {expected}, got {type(value).__name__} {value!r:.60}")
    if keyword == "enum":
        return ArgumentError(where, "enum", f"{name} must be one of {bound}, got {value!r:.60}")
    if keyword in _RANGE:
        return ArgumentError(where, "range", f"{name} must be {_RANGE[keyword]} {bound}, got {value!r}")
    if keyword in ("minItems", "maxItems", "minLength", "maxLength"):
        least = keyword.startswith("min")
        unit = "item(s)" if keyword.endswith("Items") else "character(s)"
        return ArgumentError(where, "range", f"{name} must have {'at least' if least else 'at most'} {bound} "
                                             f"{unit}, got {len(value)}")
    return ArgumentError(where, "invalid", f"{name}: {error.message}")


def validate_arguments(parameters: Mapping[str, Any], arguments: Any) -> list[ArgumentError]:
    """Every way ``arguments`` break the tool's ``parameters`` schema (empty when they are valid):
    missing and unexpected arguments first, then the others in argument order."""
    if not isinstance(arguments, Mapping):
        return [ArgumentError("", "arguments", f"the arguments must be a JSON object, got {type(arguments).__name__}")]
    props = _properties(parameters)
    required = [p for p in parameters.get("required", []) if isinstance(p, str)]
    errors = [ArgumentError(p, "missing", f"missing required argument {p!r}") for p in required if p not in arguments]
    if not _allows_extra(parameters):
        errors += [ArgumentError(a, "unexpected", f"unexpected argument {a!r}; the parameters are {list(props)}")
                   for a in arguments if a not in props]
    # missing/unexpected are reported above (with the names); jsonschema checks each value
    schema = {k: v for k, v in parameters.items() if k not in ("required", "additionalProperties")}
    order = {a: i for i, a in enumerate(arguments)}
    try:
        found = sorted(_Validator(schema).iter_errors(dict(arguments)),
                       key=lambda e: (order.get(e.absolute_path[0], len(order)) if e.absolute_path else -1,
                                      list(map(str, e.absolute_path))))
    except Exception as exc:  # a broken schema (say, a non-number minimum) is reported, not raised
        return errors + [ArgumentError("", "invalid", f"the arguments cannot be checked against the schema: "
                                                      f"{type(exc).__name__}: {exc}")]
    return errors + [_describe(e) for e in found]


def check_arguments(parameters: Mapping[str, Any], arguments: Any, *, coerce: bool = True,
                    drop_unknown: bool = False) -> CheckedArguments:
    """Coerce (unless ``coerce`` is False), then validate; see the module docstring."""
    if not isinstance(arguments, Mapping):
        return CheckedArguments({}, (), tuple(validate_arguments(parameters, arguments)))
    if coerce:
        arguments, coercions = coerce_arguments(parameters, arguments, drop_unknown=drop_unknown)
    elif drop_unknown and not _allows_extra(parameters):
        props = _properties(parameters)
        coercions = [Coercion(k, "dropped", v) for k, v in arguments.items() if k not in props]
        arguments = {k: v for k, v in arguments.items() if k in props}
    else:
        coercions = []
    arguments = dict(arguments)
    return CheckedArguments(arguments, tuple(coercions), tuple(validate_arguments(parameters, arguments)))
