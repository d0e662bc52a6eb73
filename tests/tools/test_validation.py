"""Argument checking: the documented coercions, jsonschema validation, and messages that name the
argument and what was expected."""

from __future__ import annotations

import math

import pytest

from mor_ext.tools import check_arguments, coerce_arguments, validate_arguments

SCHEMA = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 20},
        "x": {"type": "number", "exclusiveMinimum": 0},
        "flag": {"type": "boolean"},
        "label": {"type": "string", "maxLength": 5},
        "kind": {"type": "string", "enum": ["sample", "population"]},
        "size": {"type": "integer", "enum": [1, 12]},
        "values": {"type": "array", "items": {"type": "number"}, "minItems": 1},
        "options": {"type": "object", "properties": {"depth": {"type": "integer"}}},
    },
    "required": ["n"],
}


@pytest.mark.parametrize("argument, given, expected", [
    ("n", "3", 3), ("n", " -0 ", 0), ("n", 3.0, 3), ("x", "2.5", 2.5), ("x", "4", 4), ("x", "1e3", 1000.0),
    ("flag", "true", True), ("flag", "FALSE", False), ("label", 7, "7"), ("label", 2.5, "2.5"),
    ("values", "[1, 2]", [1, 2]), ("options", '{"depth": 2}', {"depth": 2}),
    ("kind", "Population", "population"), ("size", "12", 12), ("values", ["1", 2], [1, 2]),
    ("options", {"depth": "4"}, {"depth": 4}),
])
def test_documented_coercions(argument, given, expected):
    checked = check_arguments(SCHEMA, {"n": 1, argument: given})
    assert checked.ok, checked.message
    assert checked.arguments[argument] == expected and type(checked.arguments[argument]) is type(expected)
    assert len(checked.coercions) == 1, checked.coercions  # each change is reported, with where it was
    c = checked.coercions[0]
    assert c.argument.startswith(argument) and (c.before, type(c.before)) != (c.after, type(c.after)) and str(c).startswith(f"argument '{c.argument}'")


@pytest.mark.parametrize("argument, given", [
    ("n", "3.5"), ("n", 3.5), ("n", True), ("x", "three"), ("x", math.nan), ("x", math.inf), ("x", True),
    ("flag", "yes"), ("flag", 1), ("label", True), ("label", math.inf), ("values", "1, 2"), ("values", "{}"),
    ("options", "[]"),
])
def test_no_coercion_that_loses_or_invents_information(argument, given):
    checked = check_arguments(SCHEMA, {"n": 1, argument: given})
    assert not checked.ok and checked.errors[0].kind == "type" and checked.errors[0].argument == argument


def test_enum_coercion_needs_exactly_one_match():
    schema = {"type": "object", "properties": {"u": {"type": "string", "enum": ["MB", "mb", "GB"]}}}
    assert check_arguments(schema, {"u": "gb"}).arguments == {"u": "GB"}
    checked = check_arguments(schema, {"u": "Mb"})  # two members match ignoring case: no guess
    assert checked.errors[0].kind == "enum" and "must be one of ['MB', 'mb', 'GB']" in checked.message


@pytest.mark.parametrize("arguments, kind, where, fragment", [
    ({}, "missing", "n", "missing required argument 'n'"),
    ({"n": 1, "colour": "red"}, "unexpected", "colour", "unexpected argument 'colour'; the parameters are ['n'"),
    ({"n": -1}, "range", "n", "argument 'n' must be >= 0, got -1"),
    ({"n": 21}, "range", "n", "argument 'n' must be <= 20, got 21"),
    ({"n": 1, "x": 0}, "range", "x", "argument 'x' must be > 0, got 0"),
    ({"n": 1, "values": []}, "range", "values", "argument 'values' must have at least 1 item(s), got 0"),
    ({"n": 1, "label": "toolong"}, "range", "label", "must have at most 5 character(s)"),
    ({"n": 1, "values": [1, "x"]}, "type", "values[1]", "argument 'values[1]' must be a number, got str 'x'"),
    ({"n": 1, "kind": "median"}, "enum", "kind", "argument 'kind' must be one of ['sample', 'population'], got 'median'"),
    ({"n": 1, "options": {"depth": "deep"}}, "type", "options.depth", "argument 'options.depth' must be an integer"),
])
def test_errors_name_the_argument_and_what_was_expected(arguments, kind, where, fragment):
    checked = check_arguments(SCHEMA, arguments)
    assert not checked.ok
    first = checked.errors[0]
    assert (first.kind, first.argument) == (kind, where) and fragment in first.message, first


def test_all_errors_reported_missing_first_then_in_argument_order():
    errors = validate_arguments(SCHEMA, {"kind": "median", "x": -1, "extra": 1})
    assert [(e.kind, e.argument) for e in errors] == [("missing", "n"), ("unexpected", "extra"),
                                                       ("enum", "kind"), ("range", "x")]


def test_arguments_must_be_an_object():
    errors = validate_arguments(SCHEMA, ["n", 1])
    assert errors[0].kind == "arguments" and "must be a JSON object, got list" in errors[0].message
    assert not check_arguments(SCHEMA, None).ok


def test_coerce_false_and_drop_unknown():
    assert not check_arguments(SCHEMA, {"n": "3"}, coerce=False).ok
    checked = check_arguments(SCHEMA, {"n": 3, "colour": "red"}, coerce=False, drop_unknown=True)
    assert checked.ok and checked.arguments == {"n": 3} and checked.coercions[0].kind == "dropped"
    args, coercions = coerce_arguments(SCHEMA, {"n": "2", "colour": "red"}, drop_unknown=True)
    assert args == {"n": 2} and [(c.argument, c.kind) for c in coercions] == [("n", "type"), ("colour", "dropped")]
    # a schema that allows extra properties keeps them
    assert check_arguments({**SCHEMA, "additionalProperties": True}, {"n": 1, "colour": "red"}, drop_unknown=True).ok


def test_dataset_schemas_with_unknown_type_names_or_broken_keywords():
    loose = {"type": "object", "properties": {"q": {"type": "str"}, "k": {"type": ["float", "integer"]}}}
    assert check_arguments(loose, {"q": 3, "k": 2}).ok  # "str"/"float" are not JSON types: ignored
    assert check_arguments(loose, {"k": "x"}).errors[0].kind == "type"  # "integer" still counts
    broken = {"type": "object", "properties": {"v": {"type": "number", "minimum": "5"}}}
    checked = check_arguments(broken, {"v": 3})  # reported, not raised
    assert not checked.ok and checked.errors[0].kind == "invalid" and "cannot be checked" in checked.message
    nested = {"type": "object", "properties": {"o": {"type": "object", "required": ["a"]}}}
    assert check_arguments(nested, {"o": {}}).errors[0].kind == "invalid"
