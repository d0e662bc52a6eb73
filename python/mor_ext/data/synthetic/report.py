"""The pattern mix of a trajectory set: :func:`pattern_report` (printed by ``mor-ext data generate``
and ``mor-ext data validate``), so the mix is visible and tunable.

Counted from the trajectories themselves (not from generator metadata), so it works on any file:
executor turns by number of calls, split into same-tool (every call of one tool), different-tool
(all distinct) and mixed; episodes without calls by refusal kind (``meta["refusal"]`` where the
generator wrote it, else ``no_call``); tools offered per episode; surface forms of same-tool
requests; schema features of the distinct tools offered; and, given a tokenizer, token lengths and
the share that fits ``max_length``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

from ..trajectory import Tool, Trajectory

__all__ = ["pattern_report", "schema_features", "format_report"]


def _walk(schema: Any) -> Iterable[dict]:
    stack = [schema]
    while stack:
        s = stack.pop()
        if isinstance(s, dict):
            yield s
            stack.extend(v for k, v in s.items() if k in ("properties",) for v in v.values())
            stack.extend(s[k] for k in ("items", "additionalProperties") if isinstance(s.get(k), dict))
            stack.extend(x for k in ("anyOf", "oneOf", "prefixItems") for x in s.get(k, []))


def schema_features(tool: Tool) -> set[str]:
    """Which of ``nested`` (an object parameter), ``array``, ``enum``, ``optional`` (a parameter
    not required) and ``default`` a tool's schema uses."""
    params = tool.parameters
    props = params.get("properties", {})
    out = set()
    if set(props) - set(params.get("required", [])):
        out.add("optional")
    for p in props.values():
        for s in _walk(p):
            kinds = s.get("type") if isinstance(s.get("type"), list) else [s.get("type")]
            if "object" in kinds:
                out.add("nested")
            if "array" in kinds:
                out.add("array")
            if "enum" in s:
                out.add("enum")
            if "default" in s:
                out.add("default")
    return out


def _share(counter: Counter, total: int) -> dict[str, Any]:
    return {str(k): {"count": v, "share": round(v / total, 3) if total else 0.0} for k, v in sorted(counter.items(), key=str)}


def pattern_report(trajectories: Sequence[Trajectory], tokenizer=None, max_length: int = 768) -> dict[str, Any]:
    """The pattern mix of ``trajectories`` as a JSON-ready dict (see the module docstring)."""
    n = len(trajectories)
    kinds = Counter(t.meta.get("kind", "unknown") for t in trajectories)
    turns_by_calls: Counter = Counter()
    shapes: Counter = Counter()
    refusals: Counter = Counter()
    tools_per: Counter = Counter()
    forms: Counter = Counter()
    distinct: dict[str, Tool] = {}
    for t in trajectories:
        tools_per[len(t.tools)] += 1
        for tool in t.tools:
            distinct.setdefault(tool.name, tool)
        executor = [turn for turn in t.turns if turn.role == "executor"]
        if not executor:
            refusals[t.meta.get("refusal", "no_call")] += 1
        if "form" in t.meta:
            forms[t.meta["form"]] += 1
        for turn in executor:
            names = [c.name for c in turn.calls]
            turns_by_calls[len(names)] += 1
            if len(names) == 1:
                shape = "single_call"
            elif len(set(names)) == 1:
                shape = "same_tool"
            elif len(set(names)) == len(names):
                shape = "different_tools"
            else:
                shape = "mixed"
            shapes[shape] += 1
    features = Counter(f for tool in distinct.values() for f in schema_features(tool))
    executor_turns = sum(turns_by_calls.values())
    report: dict[str, Any] = {
        "trajectories": n,
        "kinds": _share(kinds, n),
        "executor_turns": executor_turns,
        "calls_per_executor_turn": _share(turns_by_calls, executor_turns),
        "executor_turn_shapes": _share(shapes, executor_turns),
        "episodes_without_calls": _share(refusals, n),
        "tools_per_episode": _share(tools_per, n),
        "same_tool_surface_forms": _share(forms, sum(forms.values())),
        "distinct_tools": len(distinct),
        "schema_features": {"tools": len(distinct), **{k: features[k] for k in ("nested", "array", "enum", "optional", "default")}},
    }
    if tokenizer is not None:
        from ..tokenize import RoleTokenizer

        encoder = RoleTokenizer(tokenizer)
        lengths = sorted(len(encoder.encode(t).input_ids) for t in trajectories)
        fits = sum(x <= max_length for x in lengths)
        pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))] if lengths else 0  # noqa: E731
        report["tokens"] = {"max_length": max_length, "fits": fits, "share_fits": round(fits / n, 4) if n else 0.0,
                            "mean": round(sum(lengths) / n, 1) if n else 0.0, "p50": pick(0.5), "p90": pick(0.9),
                            "p99": pick(0.99), "max": lengths[-1] if lengths else 0}
    return report


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable rendering of :func:`pattern_report`."""
    def counts(d: dict) -> str:
        return ", ".join(f"{k} {v['count']} ({100 * v['share']:.0f}%)" for k, v in d.items()) or "none"

    lines = [f"{report['trajectories']} trajectories; kinds: {counts(report['kinds'])}",
             f"executor turns {report['executor_turns']}; calls per turn: {counts(report['calls_per_executor_turn'])}",
             f"  shapes: {counts(report['executor_turn_shapes'])}",
             f"  same-tool surface forms: {counts(report['same_tool_surface_forms'])}",
             f"no-call episodes: {counts(report['episodes_without_calls'])}",
             f"tools per episode: {counts(report['tools_per_episode'])}",
             "schema features of the {tools} distinct tools: nested {nested}, array {array}, enum {enum}, optional {optional}, "
             "default {default}".format(**report["schema_features"])]
    if "tokens" in report:
        tk = report["tokens"]
        lines.append(f"tokens: {tk['fits']}/{report['trajectories']} ({100 * tk['share_fits']:.1f}%) within {tk['max_length']}; "
                     f"mean {tk['mean']}, p50 {tk['p50']}, p90 {tk['p90']}, p99 {tk['p99']}, max {tk['max']}")
    return "\n".join(lines)
