"""Building trajectories from the task tables: :func:`generate` (see the package docstring)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from typing import Any, Mapping

from ...tools import ToolResult, execute
from ...tools.catalogue import CATALOGUE
from ...tools.families import SPLITS, specs
from ..decontamination import assert_clean, check, load_bfcl_index
from ..tokenize import render_messages
from ..trajectory import Tool, ToolCall, Trajectory, Turn, parse_trajectory
from . import episodes
from .chains import CHAINS
from .formatting import fill, joined
from .phrasing import (
    DONE_MULTI,
    DONE_SINGLE,
    MID_MULTI,
    NO_TOOL,
    NO_TOOL_FILL,
    PLAN_MULTI,
    PLAN_NONE,
    PLAN_SINGLE,
)
from .tasks import TASKS, result_text

__all__ = ["KINDS", "DEFAULT_MIX", "HELDOUT_MIX", "generate"]

KINDS = ("single", "multi_step", "parallel_same", "parallel_multiple", "refusal_near_miss", "missing_argument", "no_tool")
DEFAULT_MIX: dict[str, float] = {"single": 0.28, "multi_step": 0.08, "parallel_same": 0.18, "parallel_multiple": 0.14,
                                 "refusal_near_miss": 0.14, "missing_argument": 0.08, "no_tool": 0.10}
# multi_step uses the catalogue's two-call chains, which are training tools: the held-out split has none.
HELDOUT_MIX: dict[str, float] = {k: w for k, w in DEFAULT_MIX.items() if k != "multi_step"}
MAX_TOOLS = 4  # tools offered per episode, at most (BFCL offers 1 to 4)
CATALOGUE_SHARE = 0.25  # share of training ``single`` episodes drawn from the hand-written catalogue tasks
MAX_CHARS = 2100  # rendered characters per trajectory; about 768 SmolLM2 tokens (see README)
_ATTEMPTS = 12  # episodes built per slot until one fits MAX_CHARS (and is BFCL-clean); else the shortest
_BUILDERS = {"single": episodes.single, "parallel_same": episodes.parallel_same,
             "parallel_multiple": episodes.parallel_multiple, "refusal_near_miss": episodes.refusal_near_miss,
             "missing_argument": episodes.missing_argument}


def _run(call: ToolCall) -> ToolResult:
    """A call run on the catalogue (a failing call is a template bug). No coercion, so a template that
    writes a wrongly typed argument fails loudly; no time limit, so the output never depends on load."""
    result = execute(CATALOGUE, call.name, call.arguments, timeout=None, coerce=False)
    if not result.ok:
        raise RuntimeError(f"synthetic template made a failing call {call}: {result.message}")
    return result


def _raw(result: Any) -> str:
    return json.dumps(result, ensure_ascii=False)


def _tools(rng: random.Random, needed: list[str], max_tools: int = MAX_TOOLS) -> tuple[Tool, ...]:
    needed = list(dict.fromkeys(needed))
    others = [name for name in CATALOGUE if name not in needed]
    names = needed + rng.sample(others, max(0, rng.randint(max(len(needed), 1), max(max_tools, len(needed))) - len(needed)))
    rng.shuffle(names)
    return tuple(CATALOGUE[n] for n in names)


def _single(rng: random.Random) -> tuple[list[str], list[Turn], list[str]]:
    task = rng.choice(TASKS)
    fields = task.sample(rng)
    call = ToolCall(task.tool, task.arguments(fields))
    run = _run(call)
    observation, result = run.observation_text(), run.result
    text = {**fields, "result": task.show(result)}
    turns = [
        Turn("user", fill(rng.choice(task.queries), fields)),
        Turn("reasoner", rng.choice(PLAN_SINGLE).format(goal=fill(task.goal, fields), tool=task.tool), "executor"),
        Turn("executor", calls=(call,)),
        Turn("observation", observation),
        Turn("reasoner", rng.choice(DONE_SINGLE).format(tool=task.tool, raw=_raw(result)), "summarizer"),
        Turn("summarizer", fill(rng.choice(task.answers), text)),
    ]
    return [task.tool], turns, ["to " + fill(task.goal, fields)]


def _multi_step(rng: random.Random) -> tuple[list[str], list[Turn], list[str]]:
    chain = rng.choice(CHAINS)
    fields = chain.sample(rng)
    call1 = ToolCall(chain.tools[0], chain.first(fields))
    run1 = _run(call1)
    obs1, r1 = run1.observation_text(), run1.result
    call2 = ToolCall(chain.tools[1], chain.second(fields, r1))
    run2 = _run(call2)
    obs2, r2 = run2.observation_text(), run2.result
    goal1, goal2 = (fill(g, fields) for g in chain.goals)
    names = {"tool1": chain.tools[0], "tool2": chain.tools[1]}
    turns = [
        Turn("user", fill(rng.choice(chain.queries), fields)),
        Turn("reasoner", rng.choice(PLAN_MULTI).format(goal1=goal1, goal2=goal2, **names), "executor"),
        Turn("executor", calls=(call1,)),
        Turn("observation", obs1),
        Turn("reasoner", rng.choice(MID_MULTI).format(raw1=_raw(r1), goal2=goal2, **names), "executor"),
        Turn("executor", calls=(call2,)),
        Turn("observation", obs2),
        Turn("reasoner", rng.choice(DONE_MULTI).format(raw2=_raw(r2), **names), "summarizer"),
        Turn("summarizer", fill(rng.choice(chain.answers),
                                 {**fields, "r1": r1, "r2": result_text(chain.tools[1], r2)})),
    ]
    # one request, whose answer takes two steps: one call in each executor turn
    return list(chain.tools), turns, ["to " + goal2]


def _no_tool(rng: random.Random, tools: tuple[Tool, ...]) -> tuple[list[Turn], list[str]]:
    queries, need, declines, answers = rng.choice(NO_TOOL)
    fill = {k: rng.choice(v) for k, v in NO_TOOL_FILL.items()}
    one = len(tools) == 1
    plan = rng.choice(PLAN_NONE).format(
        need=need.format(**fill), tools=joined([t.name for t in tools]),
        plan=rng.choice(("say that I can't do this", "explain politely that this is outside what I can do")
                        if declines else ("answer directly", "reply from what I know")),
        are="is" if one else "are", do="does" if one else "do",
        none="it can't" if one else "none can", they="it doesn't" if one else "they don't")
    turns = [
        Turn("user", rng.choice(queries).format(**fill)),
        Turn("reasoner", plan, "summarizer"),
        Turn("summarizer", rng.choice(answers).format(**fill)),
    ]
    return turns, [need.format(**fill)]


def _kind_counts(n: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Exact per-kind counts for ``n`` items (largest remainder), so proportions hold for small n."""
    total = sum(mix.values())
    shares = {k: n * w / total for k, w in mix.items()}
    counts = {k: math.floor(s) for k, s in shares.items()}
    for k in sorted(shares, key=lambda k: (counts[k] - shares[k], KINDS.index(k)))[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _check_mix(mix: Mapping[str, float] | None) -> dict[str, float]:
    if mix is None:
        return dict(DEFAULT_MIX)
    unknown = [k for k in mix if k not in KINDS]
    if unknown:
        raise ValueError(f"mix has unknown kind(s) {unknown}; the kinds are {list(KINDS)}")
    bad = {k: w for k, w in mix.items() if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0}
    if bad:
        raise ValueError(f"mix weights must be finite and >= 0, got {bad}")
    if sum(mix.values()) <= 0:
        raise ValueError(f"mix weights must not all be zero, got {dict(mix)}")
    return {k: float(w) for k, w in mix.items() if w > 0}


def _with_requests_listed(turns: list[Turn], requests: list[str]) -> list[Turn]:
    """``turns`` with the first reasoner turn opened by :func:`episodes.requests_listed`."""
    first = next(i for i, t in enumerate(turns) if t.role == "reasoner")
    opened = replace(turns[first], content=f"{episodes.requests_listed(requests)} {turns[first].content}")
    return turns[:first] + [opened] + turns[first + 1:]


def _episode(kind: str, pool: episodes.Pool, rng: random.Random, max_tools: int, forms: tuple[str, ...],
             with_catalogue: bool, split: str, tid: str, list_requests: bool = False) -> Trajectory:
    """One trajectory of ``kind``, drawn with ``rng`` (the same draws whether or not ``list_requests``)."""
    extra: dict[str, Any] = {}
    if kind == "no_tool":
        offered = rng.sample(pool.specs, rng.randint(1, min(3, max_tools)))
        tools = tuple(s.tool for s in offered)
        turns, requests = _no_tool(rng, tools)
        extra = {"calls": [], "refusal": "off_topic", "tools": len(tools)}
    elif kind == "multi_step" or (kind == "single" and with_catalogue and rng.random() < CATALOGUE_SHARE):
        needed, turns, requests = (_multi_step if kind == "multi_step" else _single)(rng)
        tools = _tools(rng, needed, max_tools)
        extra = {"calls": [1] * sum(t.role == "executor" for t in turns), "tools": len(tools)}
    else:
        builder = _BUILDERS[kind]
        made = builder(pool, rng, max_tools, forms) if kind in ("parallel_same", "parallel_multiple") else builder(pool, rng, max_tools)
        tools, turns, extra = tuple(made[0]), made[1], made[2]
        requests = extra.pop(episodes.REQUESTS)
    if list_requests:
        turns = _with_requests_listed(turns, requests)
    traj = Trajectory(tuple(tools), tuple(turns), id=tid, meta={"source": "synthetic", "kind": kind, "split": split, **extra})
    parse_trajectory(traj.to_dict(), traj.id)  # the generator's own output must always be valid
    return traj


def generate(n: int, *, seed: int = 0, mix: Mapping[str, float] | None = None, split: str = "train",
             max_tools: int = MAX_TOOLS, forms: tuple[str, ...] = episodes.SURFACE_FORMS,
             max_chars: int | None = MAX_CHARS, list_requests: bool = False,
             skip_decontamination_for_generator_tests: bool = False) -> list[Trajectory]:
    """``n`` synthetic trajectories, deterministic for ``seed``, kinds in proportion to ``mix``.

    ``split`` picks the tools: ``train`` (the catalogue and every family not held out), ``heldout``
    (only :data:`~mor_ext.tools.families.HELDOUT_FAMILIES`: tools never seen in training) or ``all``.
    ``mix`` maps kinds (:data:`KINDS`) to weights (default :data:`DEFAULT_MIX`, or :data:`HELDOUT_MIX`
    for ``heldout``); counts are exact up to rounding. ``max_tools`` caps the tools offered per
    episode (1-4 like BFCL by default); ``forms`` picks the request forms of parallel episodes: a
    non-empty subset of :data:`episodes.SURFACE_FORMS` (the default, all four) and
    :data:`episodes.EXTRA_FORMS` with at least one same-tool form (all but ``joined``).
    ``max_chars`` bounds an episode's rendered text (tools, turns): up to 12 episodes of the slot's
    kind are drawn until one fits, else the shortest is kept (None: no bound, the first is kept).
    ``list_requests`` opens every first plan with the user's requests, numbered, one per call of the
    first executor turn ("Asked: 1) ...; 2) ...", :func:`episodes.requests_listed`); the episodes are
    drawn as without it (only the redraws for ``max_chars`` can then pick others).
    Episodes whose query shares an n-gram with a BFCL question are redrawn the same way (so output
    with and without the BFCL check can differ where a template met a BFCL question by chance).
    Every trajectory passes :func:`parse_trajectory`; every call was executed and its summarizer
    states the result. The output is checked against BFCL and a
    :class:`~mor_ext.data.decontamination.ContaminationError` is raised instead of returning
    contaminated data (needs ``pip install --no-deps bfcl-eval``).
    ``skip_decontamination_for_generator_tests`` skips that check; it exists only for tests of the
    generator itself and must not be set when making training data.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(max_tools, int) or max_tools < 1:
        raise ValueError(f"max_tools must be an integer >= 1, got {max_tools!r}")
    known = episodes.SURFACE_FORMS + episodes.EXTRA_FORMS
    if any(f not in known for f in forms) or not set(forms) & set(episodes.SAME_TOOL_FORMS):
        raise ValueError(f"forms must be a subset of {known} with at least one same-tool form (not only 'joined'), "
                         f"got {list(forms)}")
    weights = _check_mix(mix if mix is not None else HELDOUT_MIX if split == "heldout" else None)
    if split == "heldout" and weights.get("multi_step"):
        raise ValueError("multi_step uses the catalogue's training tools; it cannot be in a heldout mix")
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 1):
        raise ValueError(f"max_chars must be a positive integer or None, got {max_chars!r}")
    pool = episodes.Pool(specs(split))
    with_catalogue = split != "heldout"
    index = None if skip_decontamination_for_generator_tests else load_bfcl_index()
    master = random.Random(seed)
    kinds = [k for k, c in _kind_counts(n, weights).items() for _ in range(c)]
    master.shuffle(kinds)
    out: list[Trajectory] = []
    for i, kind in enumerate(kinds):
        rng = random.Random(f"mor_ext.synthetic:{seed}:{split}:{i}")
        best: tuple[int, Trajectory] | None = None
        for _ in range(_ATTEMPTS):
            traj = _episode(kind, pool, rng, max_tools, forms, with_catalogue, split, f"synthetic-{split}-{seed}-{i}",
                            list_requests)
            if index is not None and not check([traj], index).clean:
                continue  # a template met a BFCL question by chance: draw again
            size = sum(len(m["content"]) for m in render_messages(traj))
            if best is None or size < best[0]:
                best = (size, traj)
            if max_chars is None or size <= max_chars:
                break
        # never clean (a planted or systematic overlap): keep it, so that assert_clean below fails loudly
        out.append(best[1] if best is not None else traj)
    if not skip_decontamination_for_generator_tests:
        library = list(pool.tools.values()) + (list(CATALOGUE.values()) if with_catalogue else [])
        assert_clean(out, tools=library)
    return out
