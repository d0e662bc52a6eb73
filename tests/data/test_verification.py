"""Reliability verification: each rule rejects or repairs, counted by reason; execution, judge, report."""

from __future__ import annotations

import json
import time

import pytest

from mor_ext.data.converters import PLACEHOLDER, from_xlam
from mor_ext.data.trajectory import Trajectory, parse_trajectory
from mor_ext.data.verification import VerificationReport, run_call, verify, verify_all
from mor_ext.tools.catalogue import CATALOGUE

GCD = CATALOGUE["greatest_common_divisor_of"].to_dict()
STD = CATALOGUE["stats_standard_deviation"].to_dict()
PCT = CATALOGUE["percent_change_between"].to_dict()
FREE = {"name": "lookup_note", "description": "A tool with no implementation.",
        "parameters": {"type": "object", "properties": {"key": {"type": "string"}, "n": {"type": "number"}},
                       "required": ["key"]}}


CODED = {"name": "lookup_code", "description": "Codes are three capitals.",
         "parameters": {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
                        "required": ["code"]}}


def traj(calls, tools=(GCD, STD, PCT, FREE), observation='{"result": 12}', meta=None, summary="It is 12.",
         thought="I should call the tool.") -> Trajectory:
    raw = {"id": "t", "tools": list(tools), "turns": [
        {"role": "user", "content": "What is gcd(84, 36)?"},
        {"role": "reasoner", "content": thought, "next": "executor"},
        {"role": "executor", "calls": calls},
        {"role": "observation", "content": observation},
        {"role": "reasoner", "content": "Done.", "next": "summarizer"},
        {"role": "summarizer", "content": summary}]}
    if meta:
        raw["meta"] = meta
    return parse_trajectory(raw)


def call(name, **arguments):
    return {"name": name, "arguments": arguments}


def reasons(result):
    return [(i.action, i.reason) for i in result.issues]


def test_clean_trajectory_is_kept_unchanged():
    t = traj([call("greatest_common_divisor_of", a=84, b=36)])
    r = verify(t)
    assert r.ok and r.issues == () and r.trajectory == t


def test_unknown_function_rejects():
    r = verify(traj([call("launch_rocket", target="moon")]))
    assert not r.ok and r.rejection.reason == "unknown function" and "launch_rocket" in r.rejection.detail


def test_tools_added_by_a_converter_are_not_candidates():
    t = traj([call("lookup_note", key="x")], meta={"added_tools": ["lookup_note"]})
    assert verify(t).rejection.reason == "unknown function"


def test_missing_required_parameter_rejects():
    r = verify(traj([call("greatest_common_divisor_of", a=84)]))
    assert not r.ok and r.rejection.reason == "missing parameter" and "'b'" in r.rejection.detail


def test_unknown_parameter_is_dropped_and_counted():
    r = verify(traj([call("greatest_common_divisor_of", a=84, b=36, c=5, verbose=True)]))
    assert r.ok and reasons(r) == [("repair", "unknown parameter")] * 2
    assert r.trajectory.turns[2].calls[0].arguments == {"a": 84, "b": 36}
    assert r.trajectory.meta["repairs"] == {"unknown parameter": 2}
    strict = verify(traj([call("greatest_common_divisor_of", a=84, b=36, c=5)]), repair=False)
    assert not strict.ok and strict.rejection.reason == "unknown parameter"


@pytest.mark.parametrize("name, given, repaired", [
    ("greatest_common_divisor_of", {"a": "84", "b": 36.0}, {"a": 84, "b": 36}),
    ("percent_change_between", {"old_value": "80", "new_value": "100.5"}, {"old_value": 80, "new_value": 100.5}),
    ("stats_standard_deviation", {"values": "[2, 4]", "kind": "Population"}, {"values": [2, 4], "kind": "population"}),
    ("stats_standard_deviation", {"values": ["2", 4.5]}, {"values": [2, 4.5]}),
    ("lookup_note", {"key": 10115, "n": "3"}, {"key": "10115", "n": 3}),
])
def test_safe_type_mismatches_are_repaired(name, given, repaired):
    r = verify(traj([call(name, **given)]))
    assert r.ok, r.issues
    assert r.trajectory.turns[2].calls[0].arguments == repaired
    assert {i.reason for i in r.repairs} <= {"type mismatch", "enum violation"} and r.repairs
    assert not verify(traj([call(name, **given)]), repair=False).ok


@pytest.mark.parametrize("arguments, reason", [
    ({"a": "eighty-four", "b": 36}, "type mismatch"),
    ({"a": 84.5, "b": 36}, "type mismatch"),
    ({"a": True, "b": 36}, "type mismatch"),
    ({"a": [84], "b": 36}, "type mismatch"),
])
def test_unsafe_type_mismatches_reject(arguments, reason):
    r = verify(traj([call("greatest_common_divisor_of", **arguments)]))
    assert not r.ok and r.rejection.reason == reason


def test_enum_and_range_violations_reject():
    enum = verify(traj([call("stats_standard_deviation", values=[1, 2], kind="weighted")]))
    assert enum.rejection.reason == "enum violation"
    empty = verify(traj([call("stats_standard_deviation", values=[])]))
    assert empty.rejection.reason == "out of range"


def test_execution_error_rejects():
    # Schema-valid, but the tool raises (percent change from zero).
    r = verify(traj([call("percent_change_between", old_value=0, new_value=5)]))
    assert not r.ok and r.rejection.reason == "execution error" and "percent_change_between" in r.rejection.detail
    # A tool without an implementation is checked but not run.
    assert verify(traj([call("lookup_note", key="k")])).ok


def test_plain_callable_implementations_and_run_call():
    def boom(key, n=1):
        raise RuntimeError("backend down")

    t = traj([call("lookup_note", key="k")])
    r = verify(t, implementations={"lookup_note": boom})
    assert r.rejection.reason == "execution error" and "backend down" in r.rejection.detail
    assert verify(t, implementations={"lookup_note": lambda key, n=1: {"note": key}}).ok
    assert run_call(lambda **kw: float("nan"), {})[0] is False  # not JSON
    assert run_call(CATALOGUE["greatest_common_divisor_of"], {"a": 84, "b": 36}) == (True, 12)
    assert run_call(CATALOGUE["greatest_common_divisor_of"], {"a": 84}) [0] is False


def test_placeholder_observation_is_derived_from_execution():
    t = traj([call("greatest_common_divisor_of", a="84", b=36)], observation=PLACEHOLDER,
             meta={"needs_observation": True, "placeholder_turns": [3]})
    r = verify(t)
    assert r.ok, r.issues
    assert json.loads(r.trajectory.turns[3].content) == {"result": 12}
    assert r.trajectory.meta == {"repairs": {"type mismatch": 1, "observation derived": 1}}
    assert not verify(t, derive=False).ok


def test_placeholders_left_reject_as_needs_completion():
    t = traj([call("greatest_common_divisor_of", a=84, b=36)], thought=PLACEHOLDER,
             meta={"needs_completion": ["reasoner"], "placeholder_turns": [1]})
    r = verify(t)
    assert not r.ok and r.rejection.reason == "needs completion" and r.rejection.turn == 1
    xlam = from_xlam({"query": "Roll dice.", "tools": [{"name": "roll_dice", "description": "Roll.",
                                                         "parameters": {"count": {"type": "int"}}}],
                      "answers": [{"name": "roll_dice", "arguments": {"count": 2}}]})
    r = verify(xlam)  # no implementation: the observation cannot be derived either
    assert not r.ok and {i.reason for i in r.issues} == {"needs completion"} and len(r.issues) == 4


def test_judge_hook():
    t = traj([call("greatest_common_divisor_of", a=84, b=36)])
    seen = []

    def judge(x):
        seen.append(x)
        return len(x.turns[1].content) > 40, "thought too short"

    r = verify(t, judge=judge)
    assert not r.ok and r.rejection.reason == "judge: thought too short" and seen == [t]
    assert verify(t, judge=lambda x: (True, "")).ok

    def broken(x):
        raise ValueError("no model")

    assert verify(t, judge=broken).rejection.reason == "judge: error (ValueError)"
    seen.clear()  # the judge is not asked about what the rules already rejected
    verify(traj([call("nope")]), judge=judge)
    assert seen == []


def test_verify_all_report_counts_add_up():
    ok = traj([call("greatest_common_divisor_of", a=84, b=36)])
    batch = [
        ok,
        traj([call("greatest_common_divisor_of", a="84", b=36, extra=1)]),  # 2 repairs, kept
        traj([call("nope")]),
        traj([call("greatest_common_divisor_of", a=84)]),
        traj([call("greatest_common_divisor_of", a=84)]),
        traj([call("percent_change_between", old_value=0, new_value=5)]),
        traj([call("greatest_common_divisor_of", a=84, b=36)], summary=PLACEHOLDER),
        traj([call("greatest_common_divisor_of", a=84, b=36)], summary="x"),
    ]
    judge = lambda t: (t.turns[-1].content != "x", "empty summary")  # noqa: E731
    kept, report = verify_all(batch, judge=judge)
    assert len(kept) == report.kept == 2 and report.repaired == 1
    assert dict(report.rejected_by_reason) == {"unknown function": 1, "missing parameter": 2, "execution error": 1,
                                               "needs completion": 1, "judge: empty summary": 1}
    assert report.rejected == 6 and report.kept + report.rejected == report.total == len(batch)
    assert dict(report.repairs_by_reason) == {"type mismatch": 1, "unknown parameter": 1}
    assert report.to_dict()["rejected"] == 6
    text = report.format()
    assert "8 trajectories: 2 kept (1 repaired), 6 rejected" in text
    assert "missing parameter" in text and "judge: empty summary" in text and "unknown parameter" in text
    assert VerificationReport().format().startswith("verified 0 trajectories")


def test_repaired_trajectory_round_trips():
    r = verify(traj([call("stats_standard_deviation", values="[2, 4, 4, 4, 5, 5, 7, 9]", kind="POPULATION",
                          note="x")]))
    assert r.ok
    again = parse_trajectory(json.loads(r.trajectory.to_json()))
    assert verify(again).issues == ()


def test_other_schema_rules_reject_as_schema_violation():
    r = verify(traj([call("lookup_code", code="usd")], tools=(CODED,)), implementations={})
    assert r.rejection.reason == "schema violation" and "'code'" in r.rejection.detail
    assert verify(traj([call("lookup_code", code="USD")], tools=(CODED,)), implementations={}).ok


def test_a_call_over_the_time_limit_is_an_execution_error(monkeypatch):
    from mor_ext.data import verification

    run = verification.execute
    monkeypatch.setattr(verification, "execute", lambda *a, **k: run(*a, **{**k, "timeout": 0.1}))
    r = verify(traj([call("lookup_code", code="USD")], tools=(CODED,)),
               implementations={"lookup_code": lambda code: time.sleep(30)})
    assert r.rejection.reason == "execution error" and "did not finish within 0.1 s" in r.rejection.detail
