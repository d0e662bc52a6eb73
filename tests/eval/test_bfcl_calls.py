"""The agent's calls -> BFCL's Python-call text -> BFCL's own decoder gives the same calls back, and
BFCL functions become schema-only tools."""

from __future__ import annotations

import pytest

from mor_ext.data.trajectory import ToolCall
from mor_ext.eval.bfcl import calls_text, schema_tools
from mor_ext.eval.bfcl.shim import bfcl

pytestmark = pytest.mark.bfcl


def _decode(text: str, language: str):
    b = bfcl()
    return b.decode_ast(text, getattr(b.ReturnFormat, language.upper()), False)


PYTHON_CALLS = [
    ToolCall("calculate_area", {"base": 10, "height": 5.5, "unit": "cm"}),
    ToolCall("math.factorial", {"number": -3}),
    ToolCall("search", {"query": "it's \"quoted\" \\ back", "tags": ["a", "b"], "filters": {"min": 1, "deep": {"x": [1.5]}},
                        "exact": True, "page": None}),
    ToolCall("no_args", {}),
    ToolCall("unicode", {"city": "Zürich", "note": "line\nbreak"}),
]


def test_python_calls_round_trip_through_bfcls_decoder():
    text = calls_text(PYTHON_CALLS)
    assert text.startswith("[calculate_area(base=10, height=5.5, unit='cm'), math.factorial(number=-3)")
    assert _decode(text, "python") == [{c.name: c.arguments} for c in PYTHON_CALLS]


def test_no_calls_is_an_empty_list_that_bfcl_reads_as_no_call():
    text = calls_text([])
    assert text == "[]" and _decode(text, "python") == [] and bfcl().is_empty_output(_decode(text, "python"))


@pytest.mark.parametrize("language", ["java", "javascript"])
def test_java_and_javascript_values_round_trip_as_their_source_text(language):
    call = ToolCall("Geometry.create", {"controller": "mapController", "name": "Customers", "flag": True, "off": False,
                                        "count": 50, "ratio": 0.5, "missing": None,
                                        "sql": "SELECT * FROM t WHERE s = 'active'",
                                        "point": 'new Point("a", 1)'})
    decoded = _decode(calls_text([call], language), language)
    assert decoded == [{"Geometry.create": {"controller": "mapController", "name": "Customers", "flag": "true",
                                            "off": "false", "count": "50", "ratio": "0.5", "missing": "null",
                                            "sql": "SELECT * FROM t WHERE s = 'active'",
                                            "point": 'new Point("a", 1)'}}]


def test_javascript_arrays_and_objects_are_literals():
    call = ToolCall("f", {"items": [1, "two"], "options": {"deep": True}})
    assert _decode(calls_text([call], "javascript"), "javascript") == [
        {"f": {"items": '[1, "two"]', "options": '{"deep": true}'}}]


def test_an_unknown_language_is_refused():
    with pytest.raises(ValueError, match="language must be one of"):
        calls_text([ToolCall("f", {})], "rust")


def test_a_keyword_argument_that_python_cannot_write_does_not_decode():
    with pytest.raises(SyntaxError):
        _decode(calls_text([ToolCall("f", {"from": 1})]), "python")


def test_schema_tools_keep_names_and_convert_types_as_bfcl_does():
    b = bfcl()
    functions = [{"name": "math.hypot", "description": "Hypotenuse.",
                  "parameters": {"type": "dict", "required": ["x"],
                                 "properties": {"x": {"type": "float", "description": "A side."},
                                                "pts": {"type": "tuple", "items": {"type": "integer"}, "description": "P."},
                                                "opts": {"type": "dict", "description": "O.",
                                                         "properties": {"k": {"type": "any", "description": "K."}}}}}}]
    tools = schema_tools(functions, lambda f: b.convert_to_tool(f, b.GORILLA_TO_OPENAPI, b.ModelStyle.OSSMODEL))
    tool = tools["math.hypot"]
    assert tool.name == "math.hypot" and tool.fn is None
    props = tool.parameters["properties"]
    assert tool.parameters["type"] == "object" and tool.parameters["required"] == ["x"]
    assert props["x"]["type"] == "number" and props["pts"] == {"type": "array", "items": {"type": "integer"},
                                                               "description": "P."}
    assert props["opts"]["type"] == "object" and props["opts"]["properties"]["k"]["type"] == "string"
    assert functions[0]["parameters"]["type"] == "dict"  # the question's own functions are left alone
