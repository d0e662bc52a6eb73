"""A compact way to declare formula-like tools: one row per tool, parameters as ``name:kind`` strings
whose kind picks both the JSON type and how a request samples the value (:data:`SAMPLERS`)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any, Callable

from .spec import ToolSpec, make_tool, prop

__all__ = ["SAMPLERS", "row", "words", "random_date"]

_WORD_LIST = ("river", "silver", "morning", "quiet", "garden", "window", "coffee", "yellow", "mountain",
              "paper", "little", "orange", "bright", "summer", "travel", "music", "forest", "planet",
              "simple", "harbor", "lantern", "meadow", "pencil", "rocket", "violet", "winter", "copper",
              "island", "marble", "thunder", "velvet", "puzzle", "candle", "falcon", "glacier", "jungle")


def words(rng: random.Random, lo: int = 2, hi: int = 6) -> str:
    return " ".join(rng.choice(_WORD_LIST) for _ in range(rng.randint(lo, hi)))


def random_date(rng: random.Random, lo: int = 1990, hi: int = 2030) -> str:
    start = dt.date(lo, 1, 1).toordinal()
    return dt.date.fromordinal(rng.randint(start, dt.date(hi, 12, 31).toordinal())).isoformat()


def _pos(rng: random.Random) -> int | float:
    return rng.choice((rng.randint(1, 60), round(rng.uniform(0.5, 40), 1)))


# kind: (JSON type, sampler, extra schema keywords)
SAMPLERS: dict[str, tuple[str, Callable[[random.Random], Any], dict[str, Any]]] = {
    "pos": ("number", _pos, {"exclusiveMinimum": 0}),
    "num": ("number", lambda r: rng_signed(r), {}),
    "small": ("integer", lambda r: r.randint(3, 12), {"minimum": 1}),
    "count": ("integer", lambda r: r.randint(1, 500), {"minimum": 0}),
    "int": ("integer", lambda r: r.randint(2, 200), {}),
    "big": ("integer", lambda r: r.randint(10, 100000), {"minimum": 0}),
    "roman": ("integer", lambda r: r.randint(1, 3999), {"minimum": 1, "maximum": 3999}),
    "pct": ("number", lambda r: r.choice((2, 3.5, 4, 5, 6, 7.5, 8, 10, 12, 15, 20, 25)), {"minimum": 0}),
    "money": ("number", lambda r: r.choice((r.randint(50, 90000), 1000, 2500, 10000, round(r.uniform(10, 999), 2))),
              {"minimum": 0}),
    "years": ("integer", lambda r: r.randint(1, 30), {"minimum": 1}),
    "angle": ("number", lambda r: r.randint(5, 85), {"minimum": 0, "maximum": 360}),
    "nums": ("array", lambda r: [r.randint(1, 99) if r.random() < 0.7 else round(r.uniform(1, 99), 1)
                                 for _ in range(r.randint(4, 7))], {"items": {"type": "number"}, "minItems": 1}),
    "ints": ("array", lambda r: [r.randint(1, 60) for _ in range(r.randint(4, 7))],
             {"items": {"type": "integer"}, "minItems": 1}),
    "text": ("string", lambda r: words(r), {}),
    "word": ("string", lambda r: r.choice(_WORD_LIST), {}),
    "date": ("string", random_date, {"format": "date"}),
    "mass": ("number", lambda r: r.randint(1, 120), {"exclusiveMinimum": 0}),
    "speed": ("number", lambda r: r.randint(2, 60), {"exclusiveMinimum": 0}),
    "time": ("number", lambda r: r.randint(1, 30), {"exclusiveMinimum": 0}),
}


def rng_signed(rng: random.Random) -> int | float:
    return rng.choice((rng.randint(-50, 50), round(rng.uniform(-20, 20), 2)))


def row(family: str, domain: str, name: str, description: str, params: str, fn: Callable[..., Any],
        ask: tuple[str, ...], item: str, label: str, does: str, *, axis: str = "wrong_quantity",
        vary: str | None = "", many: tuple[str, ...] = (), partial: dict[str, str] | None = None,
        check: Callable[[dict[str, Any]], bool] | None = None) -> ToolSpec:
    """One formula tool. ``params`` is ``"name:kind:description; ..."``; a ``?`` after the kind makes the
    parameter optional (``name:kind?=default:description``), and requests leave it out. ``vary``
    defaults to the first parameter; ``check`` rejects sampled fields (resampled) that the
    implementation would refuse (for example a triangle that breaks the triangle inequality)."""
    properties: dict[str, dict[str, Any]] = {}
    samplers: dict[str, Callable[[random.Random], Any]] = {}
    optional: list[str] = []
    for part in filter(None, (p.strip() for p in params.split(";"))):
        pname, kind, text = part.split(":", 2)
        default = None
        if "?" in kind:
            kind, default_text = kind.split("?")
            default = _literal(default_text.lstrip("="))
            optional.append(pname)
        json_type, sampler, extra = SAMPLERS[kind]
        schema = prop(json_type, text, **extra)
        if default is not None:
            schema["default"] = default
        else:
            samplers[pname] = sampler
        properties[pname] = schema

    def sample(rng: random.Random) -> dict[str, Any]:
        for _ in range(50):
            fields = {p: s(rng) for p, s in samplers.items()}
            if check is None or check(fields):
                return fields
        raise RuntimeError(f"{name}: no valid sample in 50 tries")

    tool = make_tool(name, description, properties, fn, domain, tuple(optional))
    return ToolSpec(tool, family, sample, ask, item, label, does, axis=axis,
                    vary=next(iter(samplers), None) if vary == "" else vary, many=many, partial=partial or {})


def _literal(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
