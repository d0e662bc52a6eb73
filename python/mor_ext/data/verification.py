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
schema violation          reject      any other JSON-schema rule broken (``pattern``, a nested ``required``, ...)
judge: <reason>           reject      the optional ``judge(trajectory) -> (ok, reason)`` said no
========================  ==========  ==================================================================

With ``repair=False`` every repairable issue rejects instead. The checks and repairs are those of
:mod:`mor_ext.tools.validation` (``jsonschema`` plus its documented coercions). Calls are run only
after their arguments passed the schema, only through the ``implementations`` mapping (name →
:class:`~mor_ext.tools.Tool` or a plain callable taking keyword arguments; default the built-in
:data:`~mor_ext.tools.catalogue.CATALOGUE`) and only by :func:`mor_ext.tools.execute`: model text
is never evaluated.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ..tools import Tool, ToolResult, check_arguments, execute, observation_text
from ..tools.catalogue import CATALOGUE
from .converters import PLACEHOLDER
from .trajectory import ToolCall, Trajectory, Turn, parse_trajectory

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
SCHEMA_VIOLATION = "schema violation"  # any other JSON-schema keyword (pattern, nested required, ...)


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


# mor_ext.tools.validation's kinds -> this module's reasons
_ERROR_REASONS = {"missing": MISSING_PARAMETER, "unexpected": UNKNOWN_PARAMETER, "type": TYPE_MISMATCH,
                  "arguments": TYPE_MISMATCH, "enum": ENUM_VIOLATION, "range": OUT_OF_RANGE,
                  "invalid": SCHEMA_VIOLATION}
_REPAIR_REASONS = {"type": TYPE_MISMATCH, "enum": ENUM_VIOLATION, "dropped": UNKNOWN_PARAMETER}


def _check_call(call: ToolCall, tool: Tool, repair: bool, fixes: list[tuple[str, str]]) -> dict[str, Any]:
    """The call's arguments checked against ``tool``'s schema and repaired where safe (the coercions of
    :mod:`mor_ext.tools.validation`; each fix appended to ``fixes``); raises :class:`_Reject` otherwise."""
    checked = check_arguments(tool.parameters, call.arguments, drop_unknown=True)
    missing = [e.argument for e in checked.errors if e.kind == "missing"]
    if missing:
        raise _Reject(MISSING_PARAMETER, f"{call.name}: missing required parameter(s) {missing}")
    for c in checked.coercions:
        reason, detail = _REPAIR_REASONS[c.kind], f"{call.name}: {c}"
        if not repair:
            raise _Reject(reason, detail)
        fixes.append((reason, detail))
    if checked.errors:
        first = checked.errors[0]
        raise _Reject(_ERROR_REASONS[first.kind], f"{call.name}: {first.message}")
    return checked.arguments


# ------------------------------------------------------------------------------------- execution
_ANY_ARGUMENTS = {"type": "object", "additionalProperties": True}


def _execute(implementations: Mapping[str, Any], name: str, arguments: dict[str, Any]) -> ToolResult:
    """Run a schema-checked call through :func:`mor_ext.tools.execute`. A :class:`~mor_ext.tools.Tool`
    implementation also checks the arguments against its own schema, which may be stricter than the
    trajectory's (without coercion: the trajectory's schema already had its say); a plain callable
    takes them as they are."""
    item = implementations[name]
    if not isinstance(item, Tool):
        item = Tool(name, "", _ANY_ARGUMENTS, item)
    return execute({name: item}, name, arguments, coerce=False)


def run_call(implementation: Any, arguments: dict[str, Any]) -> tuple[bool, Any]:
    """Run a schema-checked call: ``(True, result)`` or ``(False, error message)``; never raises.
    ``implementation`` is a :class:`~mor_ext.tools.Tool` or a plain callable (see :func:`_execute`);
    the result must be JSON (no NaN/Infinity), as an observation has to be."""
    name = getattr(implementation, "name", "call")
    result = _execute({name: implementation}, name, arguments)
    return (True, result.result) if result.ok else (False, result.message)


def derive_observations(trajectory: Trajectory, implementations: Mapping[str, Any] = CATALOGUE
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
        runs = [_execute(implementations, c.name, a) for c, a in zip(turn.calls, arguments)]
        if all(r.ok for r in runs):
            turns[i + 1] = dataclasses.replace(turns[i + 1], content=observation_text(runs))
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
    implementations: Mapping[str, Any] = CATALOGUE,
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
                result = _execute(implementations, call.name, arguments)
                if not result.ok:
                    issues.append(Issue("reject", EXECUTION_ERROR, result.message, i))
                results.append(result)
        turns[i] = dataclasses.replace(turn, calls=tuple(new_calls))
        observed = i + 1 < len(turns) and turns[i + 1].content == PLACEHOLDER
        if (derive and observed and trajectory.meta.get("needs_observation")
                and len(results) == len(turn.calls) and all(r.ok for r in results)):
            turns[i + 1] = dataclasses.replace(turns[i + 1], content=observation_text(results))
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
