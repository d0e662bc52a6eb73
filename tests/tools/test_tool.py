"""The Tool type and the @tool decorator: schemas derived from type hints and docstrings."""

from __future__ import annotations

import enum
from typing import Annotated, Literal, Optional

import pytest

from mor_ext.data.trajectory import parse_trajectory
from mor_ext.tools import Tool, ToolRegistry, execute, tool


@tool(domain="test", example={"city": "Oslo", "days": 3})
def forecast_lookup(city: str, days: int = 1, units: Literal["metric", "imperial"] = "metric",
                    hourly: bool = False, tags: Optional[list[str]] = None) -> dict:
    """Look up a made-up forecast for a city.

    Used only by the tests.

    Args:
        city: The city name.
        days: How many days ahead.
        units: Metric or imperial units.
        hourly: Hourly rather than daily values.
    """
    return {"city": city, "days": days, "units": units, "hourly": hourly, "tags": tags or []}


def test_schema_from_hints_and_google_docstring():
    assert isinstance(forecast_lookup, Tool)
    assert forecast_lookup.name == "forecast_lookup"
    assert forecast_lookup.description == "Look up a made-up forecast for a city.\n\nUsed only by the tests."
    params = forecast_lookup.parameters
    assert params["type"] == "object" and params["required"] == ["city"]
    props = params["properties"]
    assert props["city"] == {"type": "string", "description": "The city name."}
    assert props["days"] == {"type": "integer", "description": "How many days ahead.", "default": 1}
    assert props["units"] == {"type": "string", "enum": ["metric", "imperial"],
                              "description": "Metric or imperial units.", "default": "metric"}
    assert props["hourly"]["type"] == "boolean" and props["hourly"]["default"] is False
    # Optional[...] = None: simply optional, no description in the docstring -> none in the schema
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert forecast_lookup.domain == "test" and forecast_lookup.example == {"city": "Oslo", "days": 3}


def test_decorated_tool_stays_callable_and_runs_through_the_executor():
    assert forecast_lookup(city="Oslo")["days"] == 1
    registry = ToolRegistry([forecast_lookup])
    result = execute(registry, "forecast_lookup", {"city": "Oslo", "days": "2", "units": "Imperial"})
    assert result.ok and result.result["days"] == 2 and result.result["units"] == "imperial"


def test_numpy_and_rest_docstrings():
    def numpy_style(x: float, n: int = 2) -> float:
        """Scale a number.

        Parameters
        ----------
        x : float
            The number.
        n : int
            The factor.
        """
        return x * n

    def rest_style(x: float) -> float:
        """Halve a number.

        :param x: The number to halve.
        """
        return x / 2

    a, b = tool(numpy_style), tool(rest_style)
    assert a.parameters["properties"]["x"]["description"] == "The number."
    assert a.parameters["properties"]["n"] == {"type": "integer", "description": "The factor.", "default": 2}
    assert b.description == "Halve a number." and b.parameters["properties"]["x"]["description"] == "The number to halve."


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_more_hint_shapes():
    @tool(name="shapes_tool", description="Shapes.")
    def f(a: Annotated[float, {"minimum": 0}], b: Colour, c: tuple[int, int], d: dict[str, float],
          e: int | None, g: Literal[1, 2, 3] = 2, h: list[float] | None = None) -> None:
        return None

    props = f.parameters["properties"]
    assert f.name == "shapes_tool" and f.description == "Shapes."
    assert props["a"] == {"type": "number", "minimum": 0}
    assert props["b"] == {"type": "string", "enum": ["red", "blue"]}
    assert props["c"] == {"type": "array", "prefixItems": [{"type": "integer"}] * 2, "minItems": 2, "maxItems": 2}
    assert props["d"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["e"] == {"type": ["integer", "null"]}  # no default: required, and null is allowed
    assert props["g"] == {"type": "integer", "enum": [1, 2, 3], "default": 2}
    assert props["h"] == {"type": "array", "items": {"type": "number"}}
    assert f.parameters["required"] == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("source, message", [
    ("def f(x): 'Doc.'", "needs a type hint"),
    ("def f(*xs: int): 'Doc.'", "named arguments only"),
    ("def f(**kw: int): 'Doc.'", "named arguments only"),
    ("def f(x: int): pass", "a description is needed"),
    ("def f(x: set): 'Doc.'", "no JSON schema for type hint"),
    ("def f(x: 'Literal[object()]'): 'Doc.'", "Literal values must be str, int, float or bool"),
])
def test_decorator_refuses_what_it_cannot_describe(source, message):
    scope: dict = {"Literal": Literal}
    exec(source, scope)  # noqa: S102 - test-only definitions of malformed tool functions
    with pytest.raises(TypeError, match=message):
        tool(scope["f"])


def test_serialises_to_the_trajectory_format_and_openai():
    d = forecast_lookup.to_dict()
    assert set(d) == {"name", "description", "parameters"}
    assert forecast_lookup.to_openai() == {"type": "function", "function": d}
    record = {"tools": [d], "turns": [{"role": "user", "content": "hi"},
                                      {"role": "reasoner", "content": "x", "next": "summarizer"},
                                      {"role": "summarizer", "content": "hi"}]}
    read_back = parse_trajectory(record).tools[0]
    assert read_back == forecast_lookup and read_back.fn is None  # equality: what the model sees
    with pytest.raises(TypeError, match="no implementation"):
        read_back(city="Oslo")


def test_registry():
    registry = ToolRegistry()

    @registry.register(domain="maths")
    def add_two_numbers(a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    registry.add(forecast_lookup)
    assert list(registry) == ["add_two_numbers", "forecast_lookup"] and len(registry) == 2
    assert registry.domains == ("maths", "test") and registry.in_domain("maths") == [add_two_numbers]
    assert list(registry.subset(["forecast_lookup"])) == ["forecast_lookup"]
    assert registry.schemas()[0]["name"] == "add_two_numbers"
    assert ToolRegistry.of(registry) is registry and list(ToolRegistry.of({"x": forecast_lookup})) == ["forecast_lookup"]
    with pytest.raises(ValueError, match="duplicate tool name 'forecast_lookup'"):
        registry.add(forecast_lookup)
    with pytest.raises(TypeError, match="Tool objects"):
        registry.add(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        registry.subset(["nope"])


def test_readme_tools_example_runs(capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "@tool" in b)
    exec(compile(block, "README.md:tools", "exec"), {})  # noqa: S102 - the README's own example
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == 'True 29.008 {"result": 29.008}'
    assert lines[2].endswith("missing required argument 'value'")
