"""Building trajectories from the task tables: :func:`generate` (see the package docstring)."""

from __future__ import annotations

import json
import math
import random
from typing import Any, Mapping

from ...tools import ToolResult, execute, observation_text
from ...tools.catalogue import CATALOGUE
from ..decontamination import assert_clean
from ..trajectory import Tool, ToolCall, Trajectory, Turn, parse_trajectory
from .chains import CHAINS
from .formatting import fill, joined
from .phrasing import (
    DONE_MULTI,
    DONE_PARALLEL,
    DONE_SINGLE,
    JOIN_PARALLEL,
    MID_MULTI,
    NO_TOOL,
    NO_TOOL_FILL,
    NUMBER_WORDS,
    PLAN_MULTI,
    PLAN_NONE,
    PLAN_PARALLEL,
    PLAN_SINGLE,
)
from .tasks import TASKS, result_text

__all__ = ["KINDS", "DEFAULT_MIX", "generate"]

KINDS = ("single", "multi_step", "parallel", "no_tool")
DEFAULT_MIX: dict[str, float] = {"single": 0.4, "multi_step": 0.25, "parallel": 0.2, "no_tool": 0.15}
_DISTRACTORS = (2, 5)  # inclusive range of distractor tools per trajectory


def _run(call: ToolCall) -> ToolResult:
    """A call run on the catalogue (a failing call is a template bug). No coercion, so a template that
    writes a wrongly typed argument fails loudly; no time limit, so the output never depends on load."""
    result = execute(CATALOGUE, call.name, call.arguments, timeout=None, coerce=False)
    if not result.ok:
        raise RuntimeError(f"synthetic template made a failing call {call}: {result.message}")
    return result


def _raw(result: Any) -> str:
    return json.dumps(result, ensure_ascii=False)


def _tools(rng: random.Random, needed: list[str]) -> tuple[Tool, ...]:
    others = [name for name in CATALOGUE if name not in needed]
    names = list(dict.fromkeys(needed)) + rng.sample(others, rng.randint(*_DISTRACTORS))
    rng.shuffle(names)
    return tuple(CATALOGUE[n] for n in names)


def _single(rng: random.Random) -> tuple[list[str], list[Turn]]:
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
    return [task.tool], turns


def _multi_step(rng: random.Random) -> tuple[list[str], list[Turn]]:
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
    return list(chain.tools), turns


def _parallel(rng: random.Random) -> tuple[list[str], list[Turn]]:
    k = rng.choice((2, 2, 3))
    if rng.random() < 0.3:  # the same tool with different values ("capital of X and of Y")
        tasks = [rng.choice(TASKS)] * k
    else:
        tasks = rng.sample(TASKS, k)
    calls, runs, queries, goals, answers = [], [], [], [], []
    for task in tasks:
        for _ in range(20):  # distinct calls (a repeated tool with repeated values would be odd)
            fields = task.sample(rng)
            call = ToolCall(task.tool, task.arguments(fields))
            if call not in calls:
                break
        run = _run(call)
        result = run.result
        calls.append(call)
        runs.append(run)
        queries.append(fill(rng.choice(task.queries), fields))
        goals.append(fill(task.goal, fields))
        answers.append(fill(rng.choice(task.answers), {**fields, "result": task.show(result)}))
    observation = observation_text(runs)
    count, every = NUMBER_WORDS[k]
    raws = "; ".join(_raw(o.get("result")) for o in json.loads(observation))
    turns = [
        Turn("user", rng.choice(JOIN_PARALLEL)[k - 2].format(*queries)),
        Turn("reasoner", rng.choice(PLAN_PARALLEL).format(k=count, all_k=every, goals=joined(goals)), "executor"),
        Turn("executor", calls=tuple(calls)),
        Turn("observation", observation),
        Turn("reasoner", rng.choice(DONE_PARALLEL).format(All_k=every.capitalize(), raws=raws), "summarizer"),
        # numbered in question order, so answers stay unambiguous when a tool is asked twice
        Turn("summarizer", rng.choice(("", "Here you go. ", "Here are the results. "))
             + " ".join(f"{j}) {a}" for j, a in enumerate(answers, 1))),
    ]
    return [t.tool for t in tasks], turns


def _no_tool(rng: random.Random, tools: tuple[Tool, ...]) -> list[Turn]:
    queries, need, declines, answers = rng.choice(NO_TOOL)
    fill = {k: rng.choice(v) for k, v in NO_TOOL_FILL.items()}
    tool_names = joined([t.name for t in tools])
    plan = rng.choice(("say that I can't do this", "explain politely that this is outside what I can do")
                      if declines else ("answer directly", "reply from what I know"))
    return [
        Turn("user", rng.choice(queries).format(**fill)),
        Turn("reasoner", rng.choice(PLAN_NONE).format(need=need.format(**fill), tools=tool_names, plan=plan), "summarizer"),
        Turn("summarizer", rng.choice(answers).format(**fill)),
    ]


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


def generate(n: int, *, seed: int = 0, mix: Mapping[str, float] | None = None,
             skip_decontamination_for_generator_tests: bool = False) -> list[Trajectory]:
    """``n`` synthetic trajectories, deterministic for ``seed``, kinds in proportion to ``mix``.

    ``mix`` maps kinds (:data:`KINDS`) to weights (default :data:`DEFAULT_MIX`); counts are exact up to
    rounding. Every trajectory passes :func:`parse_trajectory`, and its summarizer states the executed
    result. The output is checked against BFCL and a :class:`~mor_ext.data.decontamination.ContaminationError`
    is raised instead of returning contaminated data (needs ``pip install --no-deps bfcl-eval``).
    ``skip_decontamination_for_generator_tests`` skips that check; it exists only for tests of the
    generator itself and must not be set when making training data.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    weights = _check_mix(mix)
    master = random.Random(seed)
    kinds = [k for k, c in _kind_counts(n, weights).items() for _ in range(c)]
    master.shuffle(kinds)
    out: list[Trajectory] = []
    for i, kind in enumerate(kinds):
        rng = random.Random(f"mor_ext.synthetic:{seed}:{i}")
        if kind == "no_tool":
            tools = _tools(rng, [])
            turns = _no_tool(rng, tools)
        else:
            needed, turns = {"single": _single, "multi_step": _multi_step, "parallel": _parallel}[kind](rng)
            tools = _tools(rng, needed)
        traj = Trajectory(tools, tuple(turns), id=f"synthetic-{seed}-{i}", meta={"source": "synthetic", "kind": kind})
        parse_trajectory(traj.to_dict(), traj.id)  # the generator's own output must always be valid
        out.append(traj)
    if not skip_decontamination_for_generator_tests:
        assert_clean(out, tools=list(CATALOGUE.values()))
    return out
