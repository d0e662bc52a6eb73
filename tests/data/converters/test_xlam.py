"""xLAM / APIGen records -> trajectories.

Every sample is hand-written (invented tools and queries) in the shape of its source format.
"""

from __future__ import annotations

import json

import pytest

from mor_ext.data import TrajectoryError
from mor_ext.data.converters import from_xlam

from converter_samples import P, turns, assert_valid, XLAM_TOOLS, XLAM


def test_xlam_calls_with_marked_placeholders():
    traj = from_xlam(XLAM, record_id=3)
    assert_valid(traj)
    assert traj.id == "xlam-42"
    assert turns(traj) == [
        ("user", "Roll two dice and find the pet shop nearest to 10115.", None),
        ("reasoner", P, "executor"),
        ("executor", [{"name": "roll_dice", "arguments": {"count": 2}},
                      {"name": "nearest_store", "arguments": {"postcode": "10115", "kinds": ["pets"]}}], None),
        ("observation", P, None),
        ("reasoner", P, "summarizer"),
        ("summarizer", P, None),
    ]
    assert traj.meta == {"source": "xlam", "source_id": 42, "needs_completion": ["reasoner", "summarizer"],
                         "needs_observation": True, "placeholder_turns": [1, 3, 4, 5]}


def test_xlam_flat_parameters_become_json_schema():
    dice, store = from_xlam(XLAM).tools
    assert dice.parameters == {
        "type": "object",
        "properties": {"count": {"type": "integer", "description": "How many dice", "default": 1},
                       "sides": {"type": "integer", "description": "Sides per die"}},
        "required": [],  # a default or "optional" in the type makes a parameter optional
    }
    assert store.required == ["postcode", "kinds", "budget"]
    props = store.parameters["properties"]
    assert props["kinds"] == {"type": "array", "items": {"type": "string"}, "description": "Shop kinds"}
    assert props["open_now"]["type"] == "boolean"
    assert props["budget"] == {"x-source-type": "Decimal", "description": "Unmapped type"}


def test_xlam_lists_string_arguments_and_no_answers():
    record = {"query": "Roll one die.", "tools": XLAM_TOOLS,
              "answers": [{"name": "roll_dice", "arguments": '{"count": 1, "sides": 20}'}]}
    traj = from_xlam(record)
    assert traj.turns[2].calls[0].arguments == {"count": 1, "sides": 20}
    assert traj.id is None and "source_id" not in traj.meta
    refusal = from_xlam({"query": "Book me a flight.", "tools": XLAM_TOOLS, "answers": "[]"}, record_id="r1")
    assert_valid(refusal)
    assert turns(refusal) == [
        ("user", "Book me a flight.", None), ("reasoner", P, "summarizer"), ("summarizer", P, None)]
    assert refusal.meta["needs_completion"] == ["reasoner", "summarizer"]
    assert "needs_observation" not in refusal.meta


@pytest.mark.parametrize("change, field", [
    ({"query": ""}, "query"),
    ({"tools": "[{broken"}, "tools"),
    ({"tools": {"name": "x"}}, "tools"),
    ({"answers": '[{"arguments": {}}]'}, "answers[0].name"),
    ({"answers": '[{"name": "roll_dice", "arguments": "count=2"}]'}, "answers[0].arguments"),
    ({"tools": json.dumps([{"name": "t", "parameters": {"count": "int"}}])}, "tools[0].parameters.count"),
    ({"tools": json.dumps([{"description": "no name"}])}, "tools[0].name"),
])
def test_xlam_errors_name_record_and_field(change, field):
    with pytest.raises(TrajectoryError) as info:
        from_xlam({**XLAM, **change}, record_id=9)
    assert (info.value.record, info.value.field) == (9, field)
