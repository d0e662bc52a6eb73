"""What the catalogue's domain modules share: result rounding, date and clock parsing, and the
schema pieces tools are declared with (:func:`define`)."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Callable, Iterable

from ..tool import Tool

def rounded(x: float, digits: int = 4) -> int | float:
    """``x`` rounded to ``digits`` decimals; an int when the rounded value is whole (for clean text)."""
    r = round(float(x), digits)
    if r == 0:
        return 0  # no "-0.0"
    return int(r) if r.is_integer() and abs(r) < 1e15 else r


def money(x: float) -> int | float:
    return rounded(x, 2)


def parse_date(text: str, what: str = "date") -> _dt.date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"{what} must be YYYY-MM-DD, got {text!r}")
    return _dt.date.fromisoformat(text)


def parse_clock(text: str) -> int:
    """Minutes after midnight of an ``HH:MM`` 24-hour time."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"time must be HH:MM (24-hour), got {text!r}")
    return int(m.group(1)) * 60 + int(m.group(2))


def clock_text(minutes: int) -> str:
    """``HH:MM``, with `` (+N day)``/`` (-N day)`` when ``minutes`` leaves the day."""
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}"
    if days:
        text += f" ({days:+d} day{'s' if abs(days) > 1 else ''})"
    return text


def nonempty(values: list[float], what: str = "values") -> list[float]:
    if not values:
        raise ValueError(f"{what} must not be empty")
    return values


def number(description: str, **limits: float) -> dict[str, Any]:
    return {"type": "number", "description": description, **limits}


def integer(description: str, **limits: int) -> dict[str, Any]:
    return {"type": "integer", "description": description, **limits}


def string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def one_of(values: Iterable[Any], description: str) -> dict[str, Any]:
    values = list(values)
    kind = "integer" if all(isinstance(v, int) for v in values) else "string"
    return {"type": kind, "enum": values, "description": description}


def numbers(description: str, min_items: int = 1) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "number"}, "minItems": min_items, "description": description}


DATE = "A calendar date as YYYY-MM-DD."
CLOCK = "A 24-hour clock time as HH:MM."


def define(domain: str, name: str, description: str, properties: dict[str, dict[str, Any]],
           fn: Callable[..., Any], example: dict[str, Any], optional: tuple[str, ...] = ()) -> Tool:
    """A catalogue tool with an explicit schema: every property is required unless in ``optional``
    (which must be the ones the implementation gives defaults)."""
    required = [p for p in properties if p not in optional]
    params = {"type": "object", "properties": properties, "required": required}
    return Tool(name, description, params, fn, domain, example)
