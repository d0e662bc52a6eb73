""":class:`ToolSpec`: one procedurally built tool plus what a data generator needs to ask for it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..tool import Tool

__all__ = ["ToolSpec", "Fields", "REFUSAL_AXES", "make_tool", "prop"]

Fields = dict[str, Any]  # one sampled request: the tool's arguments plus display-only values

# How the tools of one family differ, hence why a sibling cannot answer a request for another:
# a different quantity of the same object (population vs capital), a different object or
# direction (miles->km vs km->miles), or a different operation on the same input.
REFUSAL_AXES = ("wrong_quantity", "wrong_object", "wrong_operation")


def prop(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    """One JSON-schema property: ``kind`` is a JSON type name."""
    return {"type": kind, "description": description, **extra}


def make_tool(name: str, description: str, properties: Mapping[str, dict[str, Any]], fn: Callable[..., Any],
              domain: str, optional: tuple[str, ...] = ()) -> Tool:
    """A tool with an explicit schema; every property is required unless in ``optional`` (whose
    implementation defaults must match any ``default`` written in the schema)."""
    unknown = set(optional) - set(properties)
    if unknown:
        raise ValueError(f"tool {name!r}: optional names unknown properties {sorted(unknown)}")
    params = {"type": "object", "properties": dict(properties),
              "required": [p for p in properties if p not in optional]}
    return Tool(name, description, params, fn, domain)


@dataclass(frozen=True)
class ToolSpec:
    """A tool of a family with its request templates.

    ``sample(rng)`` returns fields: every required argument (and any optional one to pass) under its
    parameter name, plus display-only values the templates use. ``arguments`` turns fields into the
    call's arguments (default: the fields named like parameters). Templates are ``str.format``
    strings over the fields:

    * ``ask``: whole requests for one call; ``item``: a noun phrase naming one call's answer
      ("the capital of {country}"), used in answers, lists and the reasoner's text;
    * ``label``: what the tool computes, without values ("the capital city");
    * ``vary``: the parameter that changes between calls of this tool in one turn (None: no
      same-tool parallel requests), ``many``: requests over ``{list}`` of its values (others fixed);
    * ``partial``: parameter -> a request that omits that (required) parameter;
    * ``does``: what the tool does, for a reasoner explaining why it does not fit.
    """

    tool: Tool
    family: str
    sample: Callable[[random.Random], Fields]
    ask: tuple[str, ...]
    item: str
    label: str
    does: str
    axis: str = "wrong_object"
    vary: str | None = None
    many: tuple[str, ...] = ()
    partial: Mapping[str, str] = field(default_factory=dict)
    build: Callable[[Fields], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.axis not in REFUSAL_AXES:
            raise ValueError(f"{self.tool.name}: axis must be one of {REFUSAL_AXES}, got {self.axis!r}")
        props = self.tool.parameters["properties"]
        for name in ([self.vary] if self.vary else []) + list(self.partial):
            if name not in props:
                raise ValueError(f"{self.tool.name}: {name!r} is not a parameter")
        missing = [p for p in self.partial if p not in self.tool.required]
        if missing:
            raise ValueError(f"{self.tool.name}: partial requests may only omit required parameters, not {missing}")

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def domain(self) -> str:
        return self.tool.domain or self.family

    @property
    def takes_numbers(self) -> bool:
        """Whether the tool requires two or more numbers (a triangle's sides, a loan's amount and rate)."""
        props = self.tool.parameters["properties"]
        return sum(props[p].get("type") in ("number", "integer") for p in self.tool.required) >= 2

    def arguments(self, fields: Fields) -> dict[str, Any]:
        if self.build is not None:
            return self.build(fields)
        props = self.tool.parameters["properties"]
        return {k: v for k, v in fields.items() if k in props}
