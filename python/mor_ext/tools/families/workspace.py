"""Program-style APIs over named variables: the argument is a variable's name, given in the request's
prose (```dailyTotals```, ``'userNames'``, "the variable lapTimes"), not a value.

Library APIs are called this way: a request names the object to work on and the call passes that
name through ("sort the numbers in `lapTimes`" -> ``values="lapTimes"``). The other families give
every value literally, so a model trained on them alone declines such requests as "missing a
required argument" (RESULTS.md, stages six and seven). Tool names follow the conventions of such
APIs (``Class.method`` and camelCase), which the other families, all snake_case, do not show.

The variables live in :data:`WORKSPACE`, a fixed table; each tool reads one and computes on it (an
unknown name is an error the agent sees), so the implementations are real and deterministic.
"""

from __future__ import annotations

import random
import statistics
from typing import Any, Callable

from .spec import ToolSpec, make_tool, prop

__all__ = ["SPECS", "WORKSPACE"]

# name -> value; four kinds, each with enough names for same-tool parallel requests (2-4 calls).
NUMBER_LISTS: dict[str, list[float]] = {
    "dailyTotals": [42, 17, 88, 23, 61], "lapTimes": [71.2, 69.8, 70.5, 72.9], "sensorReadings": [3.1, 2.7, 3.9, 3.3, 2.8, 3.0],
    "monthlySales": [1200, 950, 1430, 1610, 1180], "priceHistory": [19.99, 21.5, 18.75, 22.0], "queueSizes": [4, 9, 2, 7, 5, 11],
    "stepCounts": [8042, 10311, 6520, 9987], "testScores": [78, 92, 85, 64, 99, 71],
}
TEXT_LISTS: dict[str, list[str]] = {
    "userNames": ["ada", "grace", "linus", "guido", "barbara"], "tagList": ["urgent", "backend", "bug", "ui"],
    "cityNames": ["Oslo", "Quito", "Hanoi", "Perth", "Accra"], "fileNames": ["notes.txt", "draft.md", "data.csv", "todo.txt"],
    "colorNames": ["teal", "amber", "crimson", "ivory", "slate"], "menuItems": ["soup", "salad", "stew", "sandwich"],
}
MAPS: dict[str, dict[str, Any]] = {
    "configMap": {"timeout": 30, "retries": 3, "mode": "fast", "verbose": False},
    "userProfile": {"name": "Mira", "age": 34, "city": "Lyon", "plan": "pro"},
    "envSettings": {"region": "eu-west", "debug": True, "workers": 8},
    "headerMap": {"accept": "text/html", "encoding": "gzip", "language": "en"},
    "inventoryCounts": {"apples": 40, "pears": 12, "plums": 0, "figs": 7},
}
TEXTS: dict[str, str] = {
    "welcomeMessage": "welcome back to the harbor lantern club", "commitTitle": "fix the window resize bug in the editor",
    "logLine": "worker seven finished the nightly export", "rawInput": "  quiet garden party at noon  ",
    "pageTitle": "summer music in the forest", "errorText": "disk quota exceeded for user ada",
}
WORKSPACE: dict[str, Any] = {**NUMBER_LISTS, **TEXT_LISTS, **MAPS, **TEXTS}

_KINDS = {"number list": NUMBER_LISTS, "list of texts": TEXT_LISTS, "map": MAPS, "text": TEXTS}


def _read(name: str, kind: str) -> Any:
    table = _KINDS[kind]
    if name not in table:
        raise ValueError(f"no {kind} variable named {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


# How a request refers to a variable: backticks, quotes, or words (the same name either way).
_REFS = ("`{n}`", "'{n}'", "the variable {n}", "a variable named {n}")


def _spec(family: str, kind: str, param: str, name: str, description: str, fn: Callable[..., Any],
          extra: dict[str, tuple[dict[str, Any], Callable[[random.Random, Any], dict[str, Any]]]],
          ask: tuple[str, ...], item: str, label: str, does: str, many: tuple[str, ...], partial: str) -> ToolSpec:
    """One tool over a variable of ``kind`` passed as ``param``; ``extra`` parameters map to (schema,
    sampler of fields from the variable's value: the argument plus any display-only wording)."""
    names = sorted(_KINDS[kind])
    properties = {param: prop("string", f"The name of the variable that holds the {kind}.")}
    properties.update({k: schema for k, (schema, _) in extra.items()})

    def run(**kw: Any) -> Any:
        return fn(_read(kw.pop(param), kind), **kw)

    def sample(rng: random.Random) -> dict[str, Any]:
        fields: dict[str, Any] = {param: rng.choice(names)}
        fields["ref"] = rng.choice(_REFS).format(n=fields[param])
        for _, draw in extra.values():
            fields.update(draw(rng, _KINDS[kind][fields[param]]))
        return fields

    tool = make_tool(name, description, properties, run, "code")
    return ToolSpec(tool, family, sample, ask, item, label, does, axis="wrong_operation", vary=param, many=many,
                    partial={param: partial})


def _order(rng: random.Random, _value: Any) -> dict[str, Any]:
    descending = rng.random() < 0.5
    return {"descending": descending, "order": "descending" if descending else "ascending"}


_DESCENDING = (prop("boolean", "True for largest first, false for smallest first."), _order)
_COUNT = (prop("integer", "How many values to return.", minimum=1), lambda rng, _: {"count": rng.randint(2, 4)})
_SEPARATOR = (prop("string", "What goes between the items."),
              lambda rng, _: (lambda s: {"separator": s, "sep_words": {", ": "a comma and a space", " | ": "' | '",
                                                                     "-": "a hyphen", "; ": "a semicolon and a space"}[s]})(
                  rng.choice((", ", " | ", "-", "; "))))
# Mostly a prefix some item has, sometimes one none has (an empty answer is an answer too).
_PREFIX = (prop("string", "The prefix the kept items start with."),
           lambda rng, items: {"prefix": rng.choice(items)[0].lower() if rng.random() < 0.8 else rng.choice("kqvxz")})
_TARGET = (prop("string", "The word to replace."), lambda rng, text: {"target": rng.choice(text.split())})
_REPLACEMENT = (prop("string", "The word to put in its place."), lambda rng, _: {"replacement": rng.choice(("our", "one", "into", "blue", "that"))})


def _key_field(rng: random.Random, mapping: dict[str, Any]) -> dict[str, Any]:
    """Mostly a key of this map, sometimes a key of another (absent: ``None`` / ``false``)."""
    keys = sorted(mapping) if rng.random() < 0.8 else sorted({k for m in MAPS.values() for k in m})
    return {"key": rng.choice(keys)}


_KEY = (prop("string", "The key to look up."), _key_field)

_N, _T, _M, _X = "number list", "list of texts", "map", "text"

SPECS: tuple[ToolSpec, ...] = (
    _spec("workspace_numbers", _N, "values", "NumberList.sortValues", "Sort the numbers held in a variable.",
          lambda v, descending: sorted(v, reverse=descending), {"descending": _DESCENDING},
          ("Help me sort the numbers stored in {ref} in {order} order.", "Sort {ref} in {order} order for me.",
           "I keep some numbers in {ref}; put them in {order} order."),
          "the numbers of {values} in {order} order", "the numbers sorted", "sorts the numbers of a variable",
          ("Sort each of {list} in {order} order.",), "Sort my list of numbers in {order} order."),
    _spec("workspace_numbers", _N, "values", "NumberList.totalOf", "Add up the numbers held in a variable.",
          lambda v: round(sum(v), 6), {},
          ("Help me add up the numbers in {ref}.", "What is the total of {ref}?", "Using {ref}, give me the sum of its numbers."),
          "the total of {values}", "the total", "adds up the numbers of a variable",
          ("What are the totals of {list}?",), "What do the numbers in my list add up to?"),
    _spec("workspace_numbers", _N, "values", "NumberList.averageValue", "The arithmetic mean of the numbers held in a variable.",
          lambda v: round(statistics.fmean(v), 6), {},
          ("Help me find the average of the numbers in {ref}.", "What is the mean of {ref}?"),
          "the average of {values}", "the average", "gives the mean of the numbers of a variable",
          ("What are the averages of {list}?",), "What is the average of my numbers?"),
    _spec("workspace_numbers", _N, "values", "numberListTopValues", "The largest numbers held in a variable, largest first.",
          lambda v, count: sorted(v, reverse=True)[:count], {"count": _COUNT},
          ("Help me get the {count} largest numbers from {ref}.", "Which are the top {count} values in {ref}?"),
          "the top {count} of {values}", "the largest values", "gives the largest numbers of a variable",
          ("Give me the top {count} values of each of {list}.",), "Which are the {count} largest numbers in my list?"),
    _spec("workspace_numbers", _N, "values", "numberListRunningTotal", "The running (cumulative) totals of the numbers held in a variable.",
          lambda v: [round(sum(v[: i + 1]), 6) for i in range(len(v))], {},
          ("Help me compute the running totals of {ref}.", "Give me the cumulative sums of the numbers in {ref}."),
          "the running totals of {values}", "the running totals", "gives the cumulative sums of a variable's numbers",
          ("Compute the running totals of {list}.",), "Give me the running totals of my numbers."),
    _spec("workspace_texts", _T, "items", "StringList.joinWith", "Join the texts held in a variable into one text with a separator.",
          lambda v, separator: separator.join(v), {"separator": _SEPARATOR},
          ("Help me join the items of {ref} with {sep_words} between them.", "Join {ref} into one string, separated by {sep_words}."),
          "the items of {items} joined with {sep_words}", "the joined text", "joins the texts of a variable",
          ("Join each of {list} with {sep_words} between the items.",), "Join my list with {sep_words} between the items."),
    _spec("workspace_texts", _T, "items", "StringList.filterByPrefix", "The texts held in a variable that start with a prefix.",
          lambda v, prefix: [s for s in v if s.lower().startswith(prefix.lower())], {"prefix": _PREFIX},
          ("Help me keep only the items of {ref} that start with '{prefix}'.", "Which entries in {ref} begin with \"{prefix}\"?"),
          "the items of {items} starting with {prefix}", "the items with a prefix", "filters the texts of a variable by prefix",
          ("Which items start with '{prefix}' in each of {list}?",), "Which of my items start with '{prefix}'?"),
    _spec("workspace_texts", _T, "items", "stringListCountItems", "How many texts a variable holds.",
          lambda v: len(v), {},
          ("Help me count the items in {ref}.", "How many entries does {ref} hold?"),
          "the number of items in {items}", "the item count", "counts the items of a variable",
          ("How many items do {list} hold?",), "How many items are in my list?"),
    _spec("workspace_maps", _M, "map", "KeyValueMap.getValue", "The value stored under a key of a map held in a variable.",
          lambda m, key: m[key] if key in m else None, {"key": _KEY},
          ("Help me read the '{key}' entry of {ref}.", "What is stored under \"{key}\" in {ref}?"),
          "the {key} entry of {map}", "a map entry", "reads one entry of a map variable",
          ("What is the '{key}' entry of each of {list}?",), "What is the '{key}' value in my settings?"),
    _spec("workspace_maps", _M, "map", "KeyValueMap.listKeys", "The keys of a map held in a variable, in order.",
          lambda m: list(m), {},
          ("Help me list the keys of {ref}.", "Which keys does {ref} have?"),
          "the keys of {map}", "the keys", "lists the keys of a map variable",
          ("List the keys of {list}.",), "Which keys does my map have?"),
    _spec("workspace_maps", _M, "map", "keyValueMapHasKey", "Whether a map held in a variable has a key.",
          lambda m, key: key in m, {"key": _KEY},
          ("Help me check whether {ref} has the key '{key}'.", "Does {ref} contain a \"{key}\" key?"),
          "whether {map} has {key}", "whether a key is present", "checks a map variable for a key",
          ("Check whether each of {list} has the key '{key}'.",), "Does my map have a '{key}' key?"),
    _spec("workspace_text", _X, "text", "TextVariable.toUpperCase", "The text held in a variable, in upper case.",
          lambda t: t.upper(), {},
          ("Help me turn the text in {ref} into upper case.", "Give me {ref} in capitals."),
          "the text of {text} in upper case", "the upper-case text", "upper-cases a text variable",
          ("Put each of {list} in upper case.",), "Turn my message into upper case."),
    _spec("workspace_text", _X, "text", "textVariableWordCount", "How many words the text held in a variable has.",
          lambda t: len(t.split()), {},
          ("Help me count the words of {ref}.", "How many words are in {ref}?"),
          "the word count of {text}", "the word count", "counts the words of a text variable",
          ("How many words do {list} have?",), "How many words does my message have?"),
    _spec("workspace_text", _X, "text", "TextVariable.replaceWord", "The text held in a variable with every whole word equal to a target replaced.",
          lambda t, target, replacement: " ".join(replacement if w == target else w for w in t.split()),
          {"target": _TARGET, "replacement": _REPLACEMENT},
          ("Help me replace the word '{target}' with '{replacement}' in {ref}.", "In {ref}, swap every \"{target}\" for \"{replacement}\"."),
          "the text of {text} with '{target}' replaced by '{replacement}'", "the text with a word replaced", "replaces a word in a text variable",
          ("Replace '{target}' with '{replacement}' in each of {list}.",), "Replace '{target}' with '{replacement}' in my message."),
)
