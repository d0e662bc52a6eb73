"""How values read in generated text (shared by the task tables and the generator)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

Fields = dict[str, Any]  # one sampled task: the tool's arguments plus display-only values


def fmt(value: Any) -> str:
    """How a value reads in text: numbers as JSON writes them, lists as ``a, b and c``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        items = [fmt(v) for v in value]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return str(value)


def joined(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def fill(template: str, fields: Mapping[str, Any]) -> str:
    return template.format(**{k: fmt(v) for k, v in fields.items()})


def bool_text(yes: str, no: str) -> Callable[[Any], str]:
    # ``yes`` must not be a substring of ``no``, so that tests can tell the answers apart.
    return lambda result: yes if result else no
