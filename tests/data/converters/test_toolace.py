"""ToolACE records -> trajectories, and its call syntax read without evaluating it.

Every sample is hand-written (invented tools and queries) in the shape of its source format.
"""

from __future__ import annotations

import copy
import os

import pytest

from mor_ext.data import TrajectoryError
from mor_ext.data.converters import from_toolace, parse_pythonic_calls

from converter_samples import P, turns, assert_valid, TOOLACE_TOOLS, TOOLACE


def test_toolace_parallel_calls_turn_by_turn():
    traj = from_toolace(TOOLACE, record_id=5)
    assert_valid(traj)
    assert traj.id == "toolace-5"
    assert turns(traj) == [
        ("user", "When is high tide in Porthmadog, and what is the moon doing on 2031-05-04?", None),
        ("reasoner", P, "executor"),
        ("executor", [{"name": "Tide Times", "arguments": {"harbour": "Porthmadog", "days": 2}},
                      {"name": "moon_phase", "arguments": {"date": "2031-05-04"}}], None),
        ("observation", TOOLACE["conversations"][2]["value"], None),
        ("reasoner", P, "summarizer"),
        ("summarizer", "High tide is at 06:12 and 18:40; the moon will be waxing gibbous.", None),
    ]
    assert traj.meta == {"source": "toolace", "needs_completion": ["reasoner"], "placeholder_turns": [1, 4],
                         "dropped_messages": 2}
    tide = traj.tools[0]
    assert tide.parameters["type"] == "object"  # ToolACE's "dict" is JSON schema's "object"
    assert tide.parameters["properties"]["days"]["type"] == "integer"
    assert tide.required == ["harbour"]


def test_toolace_two_rounds_literals_and_plain_answers():
    record = {
        "system": "", "tools": TOOLACE_TOOLS,
        "conversations": [
            {"from": "user", "value": "Tides for Aberdyfi, then the moon on the day of the next spring tide."},
            {"from": "assistant", "value": "[Tide Times(harbour='Aberdyfi', days=-1)]"},
            {"from": "tool", "value": '{"spring_tide": "2031-06-01"}'},
            {"from": "assistant", "value": '[moon_phase(date="2031-06-01", extra={"a": [1, 2.5, None, true]})]'},
            {"from": "tool", "value": '{"phase": "new"}'},
            {"from": "assistant", "value": "[Note (see below)] The next spring tide is on 1 June, at new moon."},
        ],
    }
    traj = from_toolace(record)
    assert_valid(traj)
    assert [r for r, _, _ in turns(traj)] == [
        "user", "reasoner", "executor", "observation", "reasoner", "executor", "observation", "reasoner", "summarizer"]
    assert traj.turns[2].calls[0].arguments == {"harbour": "Aberdyfi", "days": -1}
    assert traj.turns[5].calls[0].arguments == {"date": "2031-06-01", "extra": {"a": [1, 2.5, None, True]}}
    assert traj.turns[-1].content.startswith("[Note (see below)]")  # prose in brackets is not a call

    clarify = from_toolace({"system": TOOLACE["system"], "conversations": [
        {"from": "user", "value": "When is high tide?"},
        {"from": "assistant", "value": "Which harbour do you mean?"}]})
    assert turns(clarify)[1:] == [("reasoner", P, "summarizer"), ("summarizer", "Which harbour do you mean?", None)]


@pytest.mark.parametrize("code", [
    "[__import__('os').system('touch PWNED')]",
    "[Tide Times(harbour=__import__('os').system('touch PWNED'))]",
    "[Tide Times(harbour=open('PWNED', 'w').write('x'))]",
    "[moon_phase(date=(lambda: __import__('os').system('touch PWNED'))())]",
    "[moon_phase(date=[x for x in ().__class__.__base__.__subclasses__()])]",
    "[moon_phase(date=f\"{__import__('os').system('touch PWNED')}\")]",
    "[moon_phase(**{'date': 'x'})]",
    "[moon_phase('2031-01-01')]",
])
def test_toolace_call_parser_rejects_code_without_running_it(code, tmp_path, monkeypatch):
    ran = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "system", lambda *a: ran.append(a))
    with pytest.raises(ValueError):
        parse_pythonic_calls(code)
    record = copy.deepcopy(TOOLACE)
    record["conversations"][1]["value"] = code
    with pytest.raises(TrajectoryError) as info:
        from_toolace(record, record_id=8)
    assert (info.value.record, info.value.field) == (8, "conversations[1].value")
    assert ran == [] and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("change, field", [
    ({"conversations": []}, "conversations"),
    ({"conversations": [{"from": "robot", "value": "hi"}]}, "conversations[0].from"),
    ({"conversations": [{"from": "user", "value": 3}]}, "conversations[0].value"),
    ({"conversations": [{"from": "assistant", "value": "hi"}]}, "conversations"),
    ({"conversations": [{"from": "user", "value": "hi"}, {"from": "tool", "value": "{}"}]}, "conversations[1].value"),
    ({"tools": "not json"}, "tools"),
])
def test_toolace_errors_name_record_and_field(change, field):
    with pytest.raises(TrajectoryError) as info:
        from_toolace({**TOOLACE, **change}, record_id=4)
    assert (info.value.record, info.value.field) == (4, field)
