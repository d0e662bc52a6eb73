"""Episodes over the procedural tool families (:mod:`mor_ext.tools.families`), a few tools offered each:

* ``single``: one call of the right tool, beside 0-3 distractors (often same-family siblings);
  :data:`NUMBERS_SHARE` of them use a tool that takes several numbers, and then often a plan that
  counts the request's values and still makes one call;
* ``parallel_same``: one executor turn calling ONE tool 2-4 times with different arguments; the
  request takes one of :data:`SURFACE_FORMS` (``and_list`` "A, B and C", ``respectively``,
  ``for_each``, ``bullets``; on request also ``slot_list``, the request with its list in the varied
  slot, "the payment of a 400000 loan over 15, 20 and 30 years"); the reasoner names every call;
* ``parallel_multiple``: one turn calling several tools, usually a same-tool group plus others (on
  request the ``joined`` form: every request in one sentence, "What are A and B?");
* ``refusal_near_miss``: only tools of the request's own family are offered and none answers it
  (a different quantity, object or operation, :data:`~mor_ext.tools.families.REFUSAL_AXES`): the
  reasoner says why each does not fit and goes to the summarizer, who says so;
* ``missing_argument``: the right tool is offered but the request lacks a required argument: the
  reasoner does not guess, and the summarizer asks for the value.

Each builder returns ``(tools offered, turns, meta)``, the meta with the user's requests under
:data:`REQUESTS`; the generator assembles trajectories.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any, Sequence

from ...tools import Tool, ToolResult, execute, observation_text
from ...tools.families import ToolSpec
from ..trajectory import ToolCall, Turn

__all__ = ["SURFACE_FORMS", "EXTRA_FORMS", "SAME_TOOL_FORMS", "REQUESTS", "Pool", "show", "fill_spec", "requests_listed", "count_listed_requests"]

SURFACE_FORMS = ("and_list", "respectively", "for_each", "bullets")
# Forms used only when asked for (``generate(forms=...)``), so the default data stays as it was:
# ``slot_list`` is a same-tool form; ``joined`` words a parallel_multiple query as one sentence.
EXTRA_FORMS = ("slot_list", "joined")
SAME_TOOL_FORMS = SURFACE_FORMS + ("slot_list",)  # the forms a parallel_same request can take
# The meta key under which each builder returns the user's requests, one per call of the first
# executor turn (one for an episode without calls): the generator lists them at the start of the
# first plan when asked to (``generate(list_requests=True)``) and drops the key from the meta.
REQUESTS = "_requests"


def brief(value: Any) -> str:
    """How an answer states a result: :func:`show`, with objects cut to their first three fields (the
    full result is in the observation; answers should stay short)."""
    if isinstance(value, dict) and len(value) > 3:
        value = dict(list(value.items())[:3])
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return " | ".join(brief(v) for v in value)
    return show(value)


def show(value: Any) -> str:
    """How a value reads in a request or an answer (lists in brackets, objects as ``key: value``)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "; ".join(f"{k.replace('_', ' ')}: {show(v)}" for k, v in value.items())
    return str(value)


def joined(items: Sequence[str], word: str = "and") -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {word} " + items[-1]


def fill_spec(template: str, fields: dict[str, Any], **extra: Any) -> str:
    values = {k: show(v) for k, v in fields.items()}
    values.update(extra)
    return template.format(**values)


def requests_listed(requests: Sequence[str]) -> str:
    """The opening of a first plan that lists the user's requests, one per call this turn:
    ``"Asked: 1) 52 quarts in pints."``, ``"Asked: 1) the weather in Paris; 2) the weather in Oslo."``.

    Every kind opens the same way, so no opening stands for a count: a model decides how many calls
    to make one request at a time, by copying the next request from the query or ending the list.
    (Each plan wording that opened one kind became an attractor on BFCL: a one-call question answered
    with a several-call opening got several calls, RESULTS.md stages three to six.)"""
    if not requests:
        raise ValueError("an episode lists at least one request")
    return "Asked: " + "; ".join(f"{j}) {r}" for j, r in enumerate(requests, 1)) + "."


def count_listed_requests(plan: str) -> int | None:
    """How many requests a plan opened by :func:`requests_listed` lists (the calls it announces for
    the executor's next turn), None for a plan without that opening.

    The items are read in order, ``1) `` then ``; 2) `` and so on; the listing ends at the first
    sentence end (". ") before the next number, so a plan's later numbered calls ("... . 1) f(x=1);
    2) ...") and decimal points ("6.7 seconds") do not count."""
    if not plan.startswith("Asked: 1) "):
        return None
    count, at = 1, len("Asked: 1) ")
    while True:
        nxt = plan.find(f"; {count + 1}) ", at)
        if nxt < 0 or ". " in plan[at:nxt]:
            return count
        count, at = count + 1, nxt + len(f"; {count + 1}) ")


def _listed(value: Any) -> str:
    """A value in a list of values: texts with spaces quoted, so that the items stay apart."""
    return f'"{value}"' if isinstance(value, str) and " " in value else show(value)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _uncap(text: str) -> str:
    """A sentence continued after "Also, ": its first letter lowered unless its first word is "I"
    ("I have", "I'd") or an acronym ("HTML")."""
    word = re.match(r"[\w']*", text).group()
    if word == "I" or word.startswith("I'") or word[1:2].isupper() or text[:1].islower():
        return text
    return text[:1].lower() + text[1:]


def _raw(result: Any) -> str:
    return json.dumps(result, ensure_ascii=False)


def _done(rng: random.Random, results: list[Any]) -> str:
    """The reasoner after the observation: short results are repeated, long ones only acknowledged."""
    raws = [_raw(r) for r in results]
    if sum(map(len, raws)) > 120:
        return rng.choice(("Every call succeeded; the observation has what the user asked for.",
                           "The results are in and answer the request."))
    if len(raws) == 1:
        return rng.choice(("The tool returned {r}. That answers the question.", "The result is {r}; I can answer now.")).format(r=raws[0])
    return f"All {len(raws)} calls returned: " + "; ".join(raws) + "."


def _arg_text(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())


class Pool:
    """The specs one generation run may use (one split), indexed by family, with the executor."""

    def __init__(self, specs: Sequence[ToolSpec]) -> None:
        if not specs:
            raise ValueError("no tool specs to generate from")
        self.specs = tuple(specs)
        self.by_name = {s.name: s for s in self.specs}
        self.tools = {s.name: s.tool for s in self.specs}
        self.families: dict[str, list[ToolSpec]] = {}
        for s in self.specs:
            self.families.setdefault(s.family, []).append(s)
        self.family_names = sorted(self.families)
        self.parallel_families = sorted(f for f, v in self.families.items() if any(s.vary for s in v))
        self.sibling_families = sorted(f for f, v in self.families.items() if len(v) >= 3)
        self.partial_families = sorted(f for f, v in self.families.items() if any(s.partial for s in v))
        self.numbers_families = sorted(f for f, v in self.families.items() if any(s.takes_numbers for s in v))

    # ------------------------------------------------------------------------------------ picking
    def pick(self, rng: random.Random, families: Sequence[str] | None = None, need: str = "") -> ToolSpec:
        """A spec from a uniformly chosen family (so big families such as unit pairs do not dominate)."""
        family = rng.choice(list(families or self.family_names))
        options = [s for s in self.families[family] if not need or getattr(s, need)]
        return rng.choice(options)

    def run(self, spec: ToolSpec, args: dict[str, Any]) -> ToolResult:
        result = execute(self.tools, spec.name, args, timeout=None, coerce=False)
        if not result.ok:
            raise RuntimeError(f"synthetic template made a failing call {spec.name}({args}): {result.message}")
        return result

    def distractors(self, rng: random.Random, needed: Sequence[ToolSpec], total: int,
                    siblings_first: float = 0.5) -> list[Tool]:
        """``needed``'s tools plus distractors up to ``total`` tools, shuffled; same-family siblings
        (hard negatives) with probability ``siblings_first`` each, otherwise tools of other families."""
        names = list(dict.fromkeys(s.name for s in needed))
        families = {s.family for s in needed}
        while len(names) < total:
            if rng.random() < siblings_first:
                family = rng.choice(sorted(families))
                options = [s.name for s in self.families[family] if s.name not in names]
            else:
                other = [f for f in self.family_names if f not in families] or self.family_names
                options = [s.name for s in self.families[rng.choice(other)] if s.name not in names]
            if options:
                names.append(rng.choice(options))
            elif all(n in names for n in self.by_name):
                break
        rng.shuffle(names)
        return [self.tools[n] for n in names]


# ----------------------------------------------------------------------------------------- builders
def _answer(rng: random.Random, spec: ToolSpec, fields: dict[str, Any], result: Any) -> str:
    item = fill_spec(spec.item, fields)
    forms = ["{Item}: {r}.", "Here is {item}: {r}."]
    if not isinstance(result, (bool, dict, list)):
        forms.append("{Item} is {r}.")
    return rng.choice(forms).format(Item=_cap(item), item=item, r=brief(result))


NUMBERS_SHARE = 0.3  # share of single episodes whose tool takes several numbers in one call
TOGETHER_PLAN_SHARE = 0.6  # of single episodes with 2+ numeric arguments: the plan that counts them


def single(pool: Pool, rng: random.Random, max_tools: int) -> tuple[list[Tool], list[Turn], dict]:
    # Tools that take several numbers at once are few in the families (unit conversions and bookings
    # dominate) but common in real APIs (physics, finance): draw them more often, so that "the request
    # names 3 values" also ends in one call, not only in the parallel episodes' 3 calls.
    numbers = pool.numbers_families and rng.random() < NUMBERS_SHARE
    spec = pool.pick(rng, pool.numbers_families, need="takes_numbers") if numbers else pool.pick(rng)
    fields = spec.sample(rng)
    args = spec.arguments(fields)
    run = pool.run(spec, args)
    item = fill_spec(spec.item, fields)
    # The last form says the count: one request, one call, so a reasoner learns to count calls from
    # the request in single episodes as in the parallel ones (not to take the count from a template).
    plan = rng.choice(("The user wants {item}. {tool} {does}, so I'll call it with {args}.",
                       "I need {item}. {tool} {does}, which fits; calling it with {args}.",
                       "{tool} {does}; that gives {item}. Call: {args}.",
                       "One request: {item}. One call of {tool} is enough: {args}."))
    together = _numbers_taken_together(args)
    counted = len(together) >= 2 and rng.random() < TOGETHER_PLAN_SHARE
    if counted:
        plan = _together_plan(rng, together)
    turns = [
        Turn("user", fill_spec(rng.choice(spec.ask), fields)),
        Turn("reasoner", plan.format(item=item, tool=spec.name, does=spec.does, args=_arg_text(args)), "executor"),
        Turn("executor", calls=(ToolCall(spec.name, args),)),
        Turn("observation", run.observation_text()),
        Turn("reasoner", _done(rng, [run.result]), "summarizer"),
        Turn("summarizer", _answer(rng, spec, fields, run.result)),
    ]
    tools = pool.distractors(rng, [spec], rng.randint(1, max_tools))
    return tools, turns, {"calls": [1], "tools": len(tools), **({"plan": "together"} if counted else {}),
                          REQUESTS: [item]}


def _numbers_taken_together(args: dict[str, Any]) -> dict[str, int | float]:
    """The call's numeric scalar arguments (a triangle's three sides, a loan's amount and rate)."""
    return {k: v for k, v in args.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# Single-call plans for a request with several numbers: each counts the values, names the parameters
# that take them and makes one call. Six openings, no two alike: with two, "The request names N
# values" became the tuned reasoner's opening for nearly every BFCL question (RESULTS.md, stage three),
# and it then sometimes went on as the parallel plans do, "N calls".
# Templates for ``str.format`` in two passes: {n}, {values}, {params} here, {tool}/{item}/{args} later.
TOGETHER_PLANS = (
    "The request names {n} values ({values}), and {{tool}} takes them together as {params}: one call, "
    "not {n}. Call: {{args}}.",
    "{n} values, one question: {values} are {{tool}}'s {params}, all in the same call. One call: {{args}}.",
    "{{tool}} takes {params} at once, and the user gives all {n} ({values}): a single call with {{args}}.",
    "All {n} numbers ({values}) are {{tool}}'s {params}, so it is one call: {{args}}.",
    "The user wants {{item}}. {{tool}} needs {params}; the request gives them ({values}), so {n} values "
    "make one call: {{args}}.",
    "Here {params} are {values}: {n} arguments of the same {{tool}} call, not {n} calls. Calling it once "
    "with {{args}}.",
)


def _together_plan(rng: random.Random, numbers: dict[str, int | float]) -> str:
    """A single-call plan that counts the request's values and still makes one call: several values
    are not several calls when one call takes them all (BFCL's "multiple" questions give a tool's
    three sides or two points; a reasoner that learnt "N values, N calls" from the parallel
    episodes alone repeats such a call N times). The result is a template for ``str.format``."""
    values = joined([show(v) for v in numbers.values()])
    return rng.choice(TOGETHER_PLANS).format(n=len(numbers), values=values.replace("{", "{{").replace("}", "}}"),
                                             params=joined(list(numbers)))


def _varied(pool: Pool, rng: random.Random, spec: ToolSpec, k: int, keys: Sequence[str]) -> list[dict[str, Any]]:
    """``k`` field sets that share everything but ``keys`` (resampled), with distinct calls."""
    base = spec.sample(rng)
    out, seen = [], []
    for _ in range(20 * k):
        fresh = spec.sample(rng)
        fields = {**base, **{key: fresh[key] for key in keys}}
        args = spec.arguments(fields)
        if args not in seen:
            seen.append(args)
            out.append(fields)
        if len(out) == k:
            return out
    if len(out) >= 2:  # a small value range (an enum of three): fewer calls rather than repeats
        return out
    raise RuntimeError(f"{spec.name}: cannot vary {list(keys)} into 2 distinct calls")


def _second_key(spec: ToolSpec, fields: dict[str, Any]) -> str | None:
    """Another required scalar parameter to vary along with ``spec.vary`` (for ``respectively``)."""
    for p in spec.tool.required:
        if p != spec.vary and p in fields and isinstance(fields[p], (int, float, str)) and not isinstance(fields[p], bool):
            return p
    return None


def _slot_phrase(spec: ToolSpec, group: list[dict[str, Any]]) -> str:
    """The item phrase of ``group`` with the list of its varied values in the varied slot ("12, 15 and
    18 feet in meters"), as BFCL words most parallel questions; the items joined by "and" where another
    slot of the phrase differs too (a display field derived from the varied value)."""
    slots = set(re.findall(r"{(\w+)", spec.item))
    if any(f[key] != group[0][key] for f in group for key in slots - {spec.vary} if key in f):
        return joined([fill_spec(spec.item, f) for f in group])
    return fill_spec(spec.item, group[0], **{spec.vary: joined([_listed(f[spec.vary]) for f in group])})


def _same_request(rng: random.Random, spec: ToolSpec, group: list[dict[str, Any]], form: str,
                  keys: Sequence[str]) -> str:
    items = [fill_spec(spec.item, f) for f in group]
    lists = [joined([_listed(f[key]) for f in group]) for key in keys]
    word = lambda p: p.replace("_", " ")  # noqa: E731
    if form == "and_list":
        if spec.many and len(keys) == 1:
            return fill_spec(rng.choice(spec.many), group[0], list=lists[0])
        return f"What are {joined(items)}?"
    if form == "slot_list":
        return rng.choice(("What is {p}?", "Find {p}.", "Calculate {p}.", "I need {p}.", "Can you get me {p}?")).format(
            p=_slot_phrase(spec, group))
    if form == "respectively":
        pairs = " and ".join(f"{word(k)} {v}" for k, v in zip(keys, lists))
        return rng.choice((f"Find {spec.label} for {pairs}, respectively.",
                           f"I need {spec.label} with {pairs} respectively."))
    if form == "for_each":
        fixed = [p for p in spec.tool.required if p not in keys and p in group[0]]
        rest = f" (with {', '.join(f'{word(p)} {show(group[0][p])}' for p in fixed)})" if fixed else ""
        return rng.choice((f"For each {word(keys[0])} in {lists[0]}, tell me {spec.label}{rest}.",
                           f"Give me {spec.label}{rest} for each of these {word(keys[0])} values: {lists[0]}."))
    return rng.choice(("I need a few things:\n", "Please get me:\n", "")) + "\n".join(f"- {_cap(i)}" for i in items)


def _calls_text(calls: Sequence[ToolCall]) -> str:
    return "; ".join(f"{j}) {c.name}({_arg_text(c.arguments)})" for j, c in enumerate(calls, 1))


def parallel_same(pool: Pool, rng: random.Random, max_tools: int,
                  forms: Sequence[str] = SURFACE_FORMS) -> tuple[list[Tool], list[Turn], dict]:
    spec = pool.pick(rng, pool.parallel_families, need="vary")
    k = rng.choice((2, 2, 3, 3, 4))
    form = rng.choice([f for f in forms if f in SAME_TOOL_FORMS])
    keys = [spec.vary]
    if form == "respectively":
        second = _second_key(spec, spec.sample(rng))
        if second is not None:
            keys.append(second)
    group = _varied(pool, rng, spec, k, keys)
    k = len(group)
    calls = [ToolCall(spec.name, spec.arguments(f)) for f in group]
    runs = [pool.run(spec, c.arguments) for c in calls]
    values = joined([_listed(f[spec.vary]) for f in group])
    plan = rng.choice((
        "The user wants {label} for {k} different inputs. {tool} handles one input per call, so I'll call it {k} times "
        "in one turn: {calls}.",
        "{k} separate values, one tool: {tool} {does}. One call each, all at once: {calls}.",
        "The request names {k} values of {key}: {values}. {tool} takes one {key} per call, so {k} calls in one "
        "turn: {calls}.",
        "{tool} takes a single {key}, and the user gives {k}: {values}. So {k} calls, all in this turn: {calls}.",
        "Each of the {k} values of {key}, {values}, needs its own {tool} call; none depends on another, so "
        "they go together: {calls}.",
    )).format(label=spec.label, k=k, tool=spec.name, does=spec.does, calls=_calls_text(calls),
              key=spec.vary.replace("_", " "), values=values)
    answers = [f"{j}) {_cap(fill_spec(spec.item, f))}: {brief(r.result)}." for j, (f, r) in enumerate(zip(group, runs), 1)]
    turns = [
        Turn("user", _same_request(rng, spec, group, form, keys)),
        Turn("reasoner", plan, "executor"),
        Turn("executor", calls=tuple(calls)),
        Turn("observation", observation_text(runs)),
        Turn("reasoner", _done(rng, [r.result for r in runs]), "summarizer"),
        Turn("summarizer", " ".join(answers)),
    ]
    tools = pool.distractors(rng, [spec], rng.randint(1, max_tools))
    return tools, turns, {"calls": [k], "form": form, "tools": len(tools),
                          REQUESTS: [fill_spec(spec.item, f) for f in group]}


def parallel_multiple(pool: Pool, rng: random.Random, max_tools: int,
                      forms: Sequence[str] = SURFACE_FORMS) -> tuple[list[Tool], list[Turn], dict]:
    n_tools = rng.randint(2, min(3, max_tools))
    first = pool.pick(rng, pool.parallel_families, need="vary")
    chosen = [first]
    while len(chosen) < n_tools:
        s = pool.pick(rng)
        if s.name not in {c.name for c in chosen}:
            chosen.append(s)
    same = rng.random() < 0.75  # usually one of the tools is called for several inputs
    parts: list[tuple[ToolSpec, list[dict[str, Any]]]] = []
    for i, s in enumerate(chosen):
        group = _varied(pool, rng, s, rng.randint(2, 3), [s.vary]) if i == 0 and same else [s.sample(rng)]
        parts.append((s, group))
    requests = []
    group_forms = ("and_list", "for_each") + (("slot_list",) if "slot_list" in forms else ())
    for s, group in parts:
        if len(group) > 1:
            requests.append(_same_request(rng, s, group, rng.choice(group_forms), [s.vary]))
        else:
            requests.append(fill_spec(rng.choice(s.ask), group[0]))
    style = rng.choice(("also", "numbered", "plain") + (("joined",) if "joined" in forms else ()))
    if style == "joined":
        phrases = [_slot_phrase(s, g) if len(g) > 1 else fill_spec(s.item, g[0]) for s, g in parts]
        query = rng.choice(("What are {p}?", "Find {p}.", "I need {p}.", "Get me {p}, please.")).format(p=joined(phrases))
    elif style == "numbered":
        query = f"{len(requests)} requests. " + " ".join(f"({j}) {r}" for j, r in enumerate(requests, 1))
    elif style == "also":
        query = requests[0] + "".join(f" Also, {_uncap(r)}" for r in requests[1:])
    else:
        query = " ".join(requests)
    calls, runs, answers = [], [], []
    for s, group in parts:
        for f in group:
            call = ToolCall(s.name, s.arguments(f))
            calls.append(call)
            run = pool.run(s, call.arguments)
            runs.append(run)
            answers.append(f"{len(answers) + 1}) {_cap(fill_spec(s.item, f))}: {brief(run.result)}.")
    # Several wordings (a single fixed one became an attractor: a model trained on it opened single
    # requests with it and asked for 3 calls where one was due); each gives the count per request,
    # as "name 2 times" or by listing every call, and names the tools before "one turn" (see PLAN_MULTI
    # in phrasing.py, the chains' plans).
    asks = [f"{s.name} {'once' if len(g) == 1 else f'{len(g)} times'}" for s, g in parts]
    plan = rng.choice((
        "{asks}: none needs another's result, so all {n} calls go in one turn: {calls}.",
        "The user asks for {m} things: {asks}. They are independent, so {n} calls made together: {calls}.",
        "{calls}. No call waits for another's result, so these {n} go in one turn.",
        "{m} requests, {asks}; each stands alone, so this is {n} independent calls in one turn: {calls}.",
    )).format(n=len(calls), m=len(parts), asks=joined(asks), calls=_calls_text(calls))
    turns = [
        Turn("user", query),
        Turn("reasoner", plan, "executor"),
        Turn("executor", calls=tuple(calls)),
        Turn("observation", observation_text(runs)),
        Turn("reasoner", _done(rng, [r.result for r in runs]), "summarizer"),
        Turn("summarizer", " ".join(answers)),
    ]
    tools = pool.distractors(rng, chosen, rng.randint(len(chosen), max(len(chosen), max_tools)))
    return tools, turns, {"calls": [len(calls)], "tools": len(tools),
                          REQUESTS: [fill_spec(s.item, f) for s, group in parts for f in group]}


def _chains(asked: ToolSpec, other: ToolSpec) -> bool:
    """Whether ``other`` shares an end with ``asked`` (a unit pair): two such siblings could be chained
    into the asked conversion, so they would not be a fair 'cannot answer'."""
    a, b = asked.name.split("_into_"), other.name.split("_into_")
    if len(a) != 2 or len(b) != 2:
        return False
    return a[0] == b[0] or a[1] == b[1]


def refusal_near_miss(pool: Pool, rng: random.Random, max_tools: int) -> tuple[list[Tool], list[Turn], dict]:
    spec = pool.pick(rng, pool.sibling_families)
    siblings = [s for s in pool.families[spec.family] if s.name != spec.name and not _chains(spec, s)]
    offered = rng.sample(siblings, min(len(siblings), rng.randint(1, max(1, min(3, max_tools)))))
    fields = spec.sample(rng)
    item = fill_spec(spec.item, fields)
    why = "; ".join(f"{s.name} {s.does}" for s in offered)
    one = len(offered) == 1
    axis_text = {"wrong_quantity": "give{s} a different quantity", "wrong_object": "work{s} on something else",
                 "wrong_operation": "do{es} a different operation"}[spec.axis].format(s="s" if one else "", es="es" if one else "")
    axis_text = ("it " if one else "they ") + axis_text
    # Each wording names the offered tools before it decides, as the single plans name theirs: the
    # sentence after the request's restatement always starts with a tool, so whether to call is
    # decided after the tool's description is written, not at an opening. (With "The offered tools
    # look close" and "Checking the tools:" right after "The user wants X." / "I need X.", which open
    # single plans too, tuned models declined half of BFCL's call-needing questions: RESULTS.md.)
    plan = rng.choice((
        "The user wants {item}. {why}. So {axis}, not {item}, and calling one would give the wrong "
        "answer. No call; I'll tell the user.",
        "I need {item}. {why}: {axis}. None of them provides it, so I won't call one.",
        "{why}. The request asks for {item}, which {none}; no call.",
        "One request: {item}. {why}; {axis}, so no call: it would answer something else. I'll say so instead.",
    )).format(item=item, why=why, axis=axis_text,
              none="it does not give" if one else "none of them gives")
    answer = rng.choice((
        "I can't get {item} with the tools available here: {caps}.",
        "Sorry, none of my tools can provide {item} ({caps}).",
    )).format(item=item, caps=joined([f"{s.name} {s.does}" for s in offered]))
    turns = [
        Turn("user", fill_spec(rng.choice(spec.ask), fields)),
        Turn("reasoner", plan, "summarizer"),
        Turn("summarizer", answer),
    ]
    tools = [s.tool for s in offered]
    rng.shuffle(tools)
    return tools, turns, {"calls": [], "refusal": spec.axis, "tools": len(tools), "asked": spec.name,
                          REQUESTS: [item]}


def missing_argument(pool: Pool, rng: random.Random, max_tools: int) -> tuple[list[Tool], list[Turn], dict]:
    spec = pool.pick(rng, pool.partial_families, need="partial")
    param = rng.choice(sorted(spec.partial))
    fields = spec.sample(rng)
    schema = spec.tool.parameters["properties"][param]
    what = (schema.get("description") or param.replace("_", " ")).rstrip(".")
    what = what[:1].lower() + what[1:]
    plan = rng.choice((
        "The user wants {label}. {tool} can do it, but it needs {param} ({what}) and the request does not give it. "
        "I must not guess a value, so I'll ask for it instead of calling.",
        "{tool} fits, but its required argument {param} ({what}) is missing from the request. No call until the "
        "user provides it.",
    )).format(label=spec.label, tool=spec.name, param=param, what=what)
    answer = rng.choice((
        "I can do that, but I need one more detail: {what}. Could you tell me?",
        "To get {label}, please tell me {what} first.",
    )).format(what=what, label=spec.label)
    turns = [
        Turn("user", fill_spec(spec.partial[param], fields)),
        Turn("reasoner", plan, "summarizer"),
        Turn("summarizer", answer),
    ]
    tools = pool.distractors(rng, [spec], rng.randint(1, max(1, min(3, max_tools))))
    return tools, turns, {"calls": [], "refusal": "missing_argument", "tools": len(tools), "missing": param,
                          "asked": spec.name, REQUESTS: [spec.label]}
