"""Reliability verification of multi-role trajectories (the MoRAgent paper's data filter).

:func:`verify` checks one trajectory and returns a :class:`VerificationResult`: the trajectory to
keep (possibly repaired) or None, and every :class:`Issue` found. :func:`verify_all` runs it over
many and returns the kept ones with a :class:`VerificationReport` that counts rejections and repairs
by reason. The rules, each with the reason it is counted under:

========================  ==========  ==================================================================
reason                    action      when
========================  ==========  ==================================================================
unknown function          reject      a call names a tool that is not among the trajectory's candidates
                                      (tools a converter added with an empty schema, listed in
                                      ``meta["added_tools"]``, do not count as candidates)
missing parameter         reject      a required parameter is absent
unknown parameter         repair      a parameter the schema does not name (dropped), unless the schema
                                      allows ``additionalProperties``
type mismatch             repair      a value of the wrong JSON type that converts without loss:
                                      ``"3"`` → 3 (integer), ``"2.5"`` → 2.5 (number), 3.0 → 3
                                      (integer), ``"true"`` → True, 3 → ``"3"`` (string), a JSON string of
                                      an array/object → the array/object; any other mismatch rejects
enum violation            repair      a value outside ``enum`` that matches exactly one member ignoring
                                      case and type (``"Population"`` → ``"population"``, ``"12"`` → 12);
                                      otherwise reject
out of range              reject      ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``/
                                      ``minItems``/``maxItems`` broken
execution error           reject      the tool has an implementation and running the call raises, or its
                                      result is not JSON
observation derived       repair      a placeholder observation (``meta["needs_observation"]``) replaced by
                                      the output of running the calls
needs completion          reject      a turn still holds the converters' ``PLACEHOLDER``
judge: <reason>           reject      the optional ``judge(trajectory) -> (ok, reason)`` said no
========================  ==========  ==================================================================

With ``repair=False`` every repairable issue rejects instead. Calls are run only after their arguments
passed the schema, and only through the ``implementations`` mapping (name → :class:`ToolSpec` or a
plain callable taking keyword arguments): model text is never evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .converters import PLACEHOLDER
from .tools import TOOLS
from .trajectory import Tool, ToolCall, Trajectory, Turn, parse_trajectory

__all__ = [
    "Issue", "VerificationResult", "VerificationReport", "verify", "verify_all", "run_call",
    "derive_observations", "Judge",
]

Judge = Callable[[Trajectory], "tuple[bool, str]"]

# Reasons, one place (the report groups by them).
UNKNOWN_FUNCTION = "unknown function"
MISSING_PARAMETER = "missing parameter"
UNKNOWN_PARAMETER = "unknown parameter"
TYPE_MISMATCH = "type mismatch"
ENUM_VIOLATION = "enum violation"
OUT_OF_RANGE = "out of range"
EXECUTION_ERROR = "execution error"
OBSERVATION_DERIVED = "observation derived"
NEEDS_COMPLETION = "needs completion"


@dataclass(frozen=True)
class Issue:
    """One finding: ``action`` is "reject" or "repair"; ``turn`` the turn index it is about, if any."""

    action: str
    reason: str
    detail: str
    turn: int | None = None

    def __str__(self) -> str:
        where = f"turn {self.turn}: " if self.turn is not None else ""
        return f"{self.action} ({self.reason}): {where}{self.detail}"


@dataclass(frozen=True)
class VerificationResult:
    trajectory: Trajectory | None  # the trajectory to keep (repaired if needed), None if rejected
    issues: tuple[Issue, ...]

    @property
    def ok(self) -> bool:
        return self.trajectory is not None

    @property
    def rejection(self) -> Issue | None:
        """The first rejecting issue (the one the report counts), or None."""
        return next((i for i in self.issues if i.action == "reject"), None)

    @property
    def repairs(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.action == "repair")


# --------------------------------------------------------------------------------- schema checking
class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


_NO = object()  # "cannot be converted"
_INT_TEXT = re.compile(r"[+-]?\d+")
_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _is(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "null":
        return value is None
    return isinstance(value, {"string": str, "boolean": bool, "array": list, "object": dict}[kind])


def _coerce(value: Any, kind: str) -> Any:
    """``value`` converted to JSON type ``kind`` without losing information, or ``_NO``."""
    if kind == "integer":
        if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            return int(value.strip())
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
    elif kind == "number":
        if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
            text = value.strip()
            return int(text) if _INT_TEXT.fullmatch(text) else float(text)
    elif kind == "boolean":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    elif kind == "string":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return str(value)
    elif kind in ("array", "object") and isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return _NO
        if _is(decoded, kind):
            return decoded
    return _NO


def _conform(value: Any, schema: Any, where: str, repair: bool, fixes: list[tuple[str, str]]) -> Any:
    """``value`` checked against ``schema`` (the JSON-schema subset tool specs use), repaired where
    safe (each fix appended to ``fixes``); raises :class:`_Reject` otherwise."""
    if not isinstance(schema, dict):
        return value

    def fix(reason: str, new: Any, detail: str) -> Any:
        if not repair:
            raise _Reject(reason, detail)
        fixes.append((reason, f"{detail}; repaired to {new!r}"))
        return new

    declared = schema.get("type")
    kinds = [declared] if isinstance(declared, str) else list(declared) if isinstance(declared, list) else []
    kinds = [k for k in kinds if k in ("number", "integer", "string", "boolean", "array", "object", "null")]
    if kinds and not any(_is(value, k) for k in kinds):
        detail = f"{where} must be {' or '.join(kinds)}, got {type(value).__name__} {value!r:.60}"
        coerced = next((c for c in (_coerce(value, k) for k in kinds) if c is not _NO), _NO)
        if coerced is _NO:
            raise _Reject(TYPE_MISMATCH, detail)
        value = fix(TYPE_MISMATCH, coerced, detail)
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        detail = f"{where} must be one of {enum}, got {value!r:.60}"
        text = str(value).strip().lower() if isinstance(value, (str, int, float)) else None
        matches = [e for e in enum if text is not None and isinstance(e, (str, int, float)) and str(e).lower() == text]
        if len(matches) != 1:
            raise _Reject(ENUM_VIOLATION, detail)
        value = fix(ENUM_VIOLATION, matches[0], detail)
    if _is(value, "number"):
        for key, broken in (("minimum", lambda v, b: v < b), ("maximum", lambda v, b: v > b),
                            ("exclusiveMinimum", lambda v, b: v <= b), ("exclusiveMaximum", lambda v, b: v >= b)):
            bound = schema.get(key)
            if _is(bound, "number") and broken(value, bound):
                raise _Reject(OUT_OF_RANGE, f"{where} = {value!r} breaks {key} {bound!r}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", math.inf):
            raise _Reject(OUT_OF_RANGE, f"{where} has {len(value)} item(s), outside "
                                        f"[{schema.get('minItems', 0)}, {schema.get('maxItems', 'inf')}]")
        value = [_conform(v, schema.get("items"), f"{where}[{i}]", repair, fixes) for i, v in enumerate(value)]
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        value = {k: _conform(v, props.get(k), f"{where}.{k}", repair, fixes) for k, v in value.items()}
    return value


def _check_call(call: ToolCall, tool: Tool, repair: bool, fixes: list[tuple[str, str]]) -> dict[str, Any]:
    """The call's arguments checked against ``tool``'s schema and repaired where safe."""
    params = tool.parameters
    props = params.get("properties", {})
    missing = [p for p in tool.required if p not in call.arguments]
    if missing:
        raise _Reject(MISSING_PARAMETER, f"{call.name}: missing required parameter(s) {missing}")
    arguments = dict(call.arguments)
    if not params.get("additionalProperties", False):
        for name in [a for a in arguments if a not in props]:
            detail = f"{call.name}: unknown parameter {name!r}; it takes {list(props)}"
            if not repair:
                raise _Reject(UNKNOWN_PARAMETER, detail)
            del arguments[name]
            fixes.append((UNKNOWN_PARAMETER, f"{detail}; dropped"))
    return {k: _conform(v, props.get(k), f"{call.name}.{k}", repair, fixes) for k, v in arguments.items()}


# ------------------------------------------------------------------------------------- execution
def run_call(implementation: Any, arguments: dict[str, Any]) -> tuple[bool, Any]:
    """Run a schema-checked call: ``(True, result)`` or ``(False, error message)``; never raises.

    ``implementation`` is a :class:`~mor_ext.data.tools.ToolSpec` (its ``fn``; the arguments are also
    checked against its own schema, which may be stricter than the trajectory's) or a plain callable.
    The result must be JSON (no NaN/Infinity), as an observation has to be.
    """
    fn = getattr(implementation, "fn", implementation)
    spec_tool = getattr(implementation, "tool", None)
    try:
        if isinstance(spec_tool, Tool):
            arguments = _check_call(ToolCall(spec_tool.name, arguments), spec_tool, False, [])
        result = fn(**arguments)
        json.dumps(result, allow_nan=False)
    except _Reject as e:
        return False, e.detail
    except Exception as e:  # the tool's failure is the finding, not a crash of the verifier
        return False, f"{type(e).__name__}: {e}"
    return True, result


def _observation(results: list[Any]) -> str:
    """Observation text for executed calls, in the format of :func:`~mor_ext.data.tools.execute_all`."""
    items = [{"result": r} for r in results]
    return json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False)


def derive_observations(trajectory: Trajectory, implementations: Mapping[str, Any] = TOOLS
                        ) -> tuple[Trajectory, list[int]]:
    """Fill each placeholder observation whose calls all have implementations and run cleanly with the
    calls' output. Returns the trajectory and the indices of the observations it filled. The calls are
    run with their arguments checked and safely repaired against the trajectory's schemas, as
    :func:`verify` would repair them; a call that fails the check leaves its observation unfilled."""
    candidates = {t.name: t for t in trajectory.tools}
    turns = list(trajectory.turns)
    filled = []
    for i, turn in enumerate(turns[:-1]):
        if turn.role != "executor" or turns[i + 1].content != PLACEHOLDER:
            continue
        if not all(c.name in implementations and c.name in candidates for c in turn.calls):
            continue
        try:
            arguments = [_check_call(c, candidates[c.name], True, []) for c in turn.calls]
        except _Reject:
            continue
        runs = [run_call(implementations[c.name], a) for c, a in zip(turn.calls, arguments)]
        if all(ok for ok, _ in runs):
            turns[i + 1] = dataclasses.replace(turns[i + 1], content=_observation([r for _, r in runs]))
            filled.append(i + 1)
    if not filled:
        return trajectory, []
    return dataclasses.replace(trajectory, turns=tuple(turns), meta=_resolved_meta(trajectory.meta, turns)), filled


def _resolved_meta(meta: dict[str, Any], turns: list[Turn]) -> dict[str, Any]:
    """``meta`` with the converters' completion marks updated to the placeholders still left."""
    out = {k: v for k, v in meta.items() if k not in ("placeholder_turns", "needs_completion", "needs_observation")}
    left = [i for i, t in enumerate(turns) if t.role != "executor" and t.content == PLACEHOLDER]
    roles = {turns[i].role for i in left}
    if any(r in roles for r in ("reasoner", "summarizer")):
        out["needs_completion"] = [r for r in ("reasoner", "executor", "summarizer") if r in roles]
    if "observation" in roles:
        out["needs_observation"] = True
    if left:
        out["placeholder_turns"] = left
    return out


# -------------------------------------------------------------------------------------- verifying
def verify(
    trajectory: Trajectory,
    *,
    implementations: Mapping[str, Any] = TOOLS,
    repair: bool = True,
    judge: Judge | None = None,
    derive: bool = True,
) -> VerificationResult:
    """Check one trajectory against the rules in the module docstring.

    Every call is checked (so all issues are listed), the calls are run only when their schema check
    passed, placeholder observations are derived from the run when ``derive``, and the judge is asked
    only about a trajectory that passed everything else. A kept trajectory has its repaired arguments,
    derived observations and ``meta["repairs"]`` (count by reason) when anything was repaired.
    """
    issues: list[Issue] = []
    candidates = {t.name: t for t in trajectory.tools if t.name not in trajectory.meta.get("added_tools", ())}
    turns = list(trajectory.turns)
    for i, turn in enumerate(turns):
        if turn.role != "executor":
            continue
        new_calls, results = [], []
        for call in turn.calls:
            tool = candidates.get(call.name)
            if tool is None:
                issues.append(Issue("reject", UNKNOWN_FUNCTION,
                                    f"{call.name!r} is not a candidate tool; candidates: {sorted(candidates)}", i))
                new_calls.append(call)
                continue
            fixes: list[tuple[str, str]] = []
            try:
                arguments = _check_call(call, tool, repair, fixes)
            except _Reject as e:
                issues += [Issue("repair", r, d, i) for r, d in fixes]
                issues.append(Issue("reject", e.reason, e.detail, i))
                new_calls.append(call)
                continue
            issues += [Issue("repair", r, d, i) for r, d in fixes]
            new_calls.append(ToolCall(call.name, arguments))
            if call.name in implementations:
                ok, result = run_call(implementations[call.name], arguments)
                if not ok:
                    issues.append(Issue("reject", EXECUTION_ERROR, f"{call.name}: {result}", i))
                results.append((ok, result))
        turns[i] = dataclasses.replace(turn, calls=tuple(new_calls))
        observed = i + 1 < len(turns) and turns[i + 1].content == PLACEHOLDER
        if (derive and observed and trajectory.meta.get("needs_observation")
                and len(results) == len(turn.calls) and all(ok for ok, _ in results)):
            turns[i + 1] = dataclasses.replace(turns[i + 1], content=_observation([r for _, r in results]))
            issues.append(Issue("repair", OBSERVATION_DERIVED, f"observation filled from running {len(results)} call(s)",
                                i + 1))
    for i, turn in enumerate(turns):
        if turn.role != "executor" and turn.content == PLACEHOLDER:
            issues.append(Issue("reject", NEEDS_COMPLETION, f"the {turn.role} turn is a placeholder", i))
    if any(x.action == "reject" for x in issues):
        return VerificationResult(None, tuple(issues))

    repairs = Counter(x.reason for x in issues if x.action == "repair")
    meta = _resolved_meta(trajectory.meta, turns)
    if repairs:
        meta["repairs"] = dict(repairs)
    checked = dataclasses.replace(trajectory, turns=tuple(turns), meta=meta)
    parse_trajectory(checked.to_dict(), record=trajectory.id)  # repairs must leave a valid trajectory
    if judge is not None:
        try:
            ok, reason = judge(checked)
        except Exception as e:  # a failing judge rejects the record, it does not stop a whole run
            ok, reason = False, f"error ({type(e).__name__})"
        if not ok:
            issues.append(Issue("reject", f"judge: {reason}", str(reason)))
            return VerificationResult(None, tuple(issues))
    return VerificationResult(checked, tuple(issues))


@dataclass
class VerificationReport:
    """Counts over one :func:`verify_all` run. ``rejected_by_reason`` counts each rejected trajectory
    once, under its first rejection (so it sums to ``rejected``); ``repairs_by_reason`` counts every
    repair of the kept trajectories; ``repaired`` is how many kept trajectories had any."""

    total: int = 0
    kept: int = 0
    repaired: int = 0
    rejected_by_reason: Counter = field(default_factory=Counter)
    repairs_by_reason: Counter = field(default_factory=Counter)
    rejected_ids: list = field(default_factory=list)  # (id or position, reason) per rejection

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def add(self, result: VerificationResult, name: str | int) -> None:
        self.total += 1
        if result.ok:
            self.kept += 1
            self.repaired += bool(result.repairs)
            self.repairs_by_reason.update(i.reason for i in result.repairs)
        else:
            reason = result.rejection.reason
            self.rejected_by_reason[reason] += 1
            self.rejected_ids.append((name, reason))

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "kept": self.kept, "rejected": self.rejected, "repaired": self.repaired,
                "rejected_by_reason": dict(self.rejected_by_reason.most_common()),
                "repairs_by_reason": dict(self.repairs_by_reason.most_common())}

    def format(self) -> str:
        lines = [f"verified {self.total} trajectories: {self.kept} kept ({self.repaired} repaired), "
                 f"{self.rejected} rejected"]
        for title, counts in (("rejected by reason", self.rejected_by_reason),
                              ("repairs by reason", self.repairs_by_reason)):
            if counts:
                width = max(len(r) for r in counts)
                lines.append(f"{title}:")
                lines += [f"  {reason:<{width}}  {n:>6}" for reason, n in counts.most_common()]
        return "\n".join(lines)


def verify_all(trajectories: Iterable[Trajectory], **options: Any) -> tuple[list[Trajectory], VerificationReport]:
    """:func:`verify` each trajectory (``options`` are its keyword arguments); the kept ones, in order,
    and the report."""
    kept, report = [], VerificationReport()
    for n, traj in enumerate(trajectories):
        result = verify(traj, **options)
        report.add(result, traj.id if traj.id is not None else n)
        if result.ok:
            kept.append(result.trajectory)
    return kept, report
