"""glaive-function-calling-v2 records -> trajectories.

Every sample is hand-written (invented tools and queries) in the shape of its source format.
"""

from __future__ import annotations

import pytest

from mor_ext.data import TrajectoryError
from mor_ext.data.converters import from_glaive

from converter_samples import P, turns, assert_valid, GLAIVE_SYSTEM, GLAIVE


def test_glaive_first_episode_turn_by_turn():
    traj = from_glaive(GLAIVE, record_id=7)
    assert_valid(traj)
    assert traj.id == "glaive-7" and traj.system is None
    assert [t.name for t in traj.tools] == ["convert_units", "lookup_bird"]
    assert traj.tools[0].required == ["value", "from_unit", "to_unit"]
    assert turns(traj) == [
        ("user", "How many kilometres is 12 miles?", None),
        ("reasoner", P, "executor"),
        ("executor", [{"name": "convert_units",
                       "arguments": {"value": 12, "from_unit": "mile", "to_unit": "km", "note": "it's exact"}}], None),
        ("observation", '{"result": 19.31}', None),
        ("reasoner", P, "summarizer"),
        ("summarizer", "12 miles is about 19.31 kilometres.", None),
    ]
    assert traj.meta == {"source": "glaive", "needs_completion": ["reasoner"], "placeholder_turns": [1, 4],
                         "dropped_messages": 2}


def test_glaive_object_arguments_thought_and_newline_separators():
    record = {
        "system": GLAIVE_SYSTEM,
        "chat": (
            "USER: Tell me about the kestrel.\n\n\n"
            "ASSISTANT: I will look the bird up. <functioncall> "
            '{"name": "lookup_bird", "arguments": {"species": "kestrel"}} <|endoftext|>\n\n\n'
            'FUNCTION RESPONSE: {"wingspan_cm": 75}\n\n\n'
            "ASSISTANT: Kestrels have a wingspan of about 75 cm. <|endoftext|>\n"
        ),
    }
    traj = from_glaive(record)
    assert_valid(traj)
    assert traj.id is None
    assert turns(traj) == [
        ("user", "Tell me about the kestrel.", None),
        ("reasoner", "I will look the bird up.", "executor"),
        ("executor", [{"name": "lookup_bird", "arguments": {"species": "kestrel"}}], None),
        ("observation", '{"wingspan_cm": 75}', None),
        ("reasoner", P, "summarizer"),
        ("summarizer", "Kestrels have a wingspan of about 75 cm.", None),
    ]


def test_glaive_without_functions_missing_response_and_unlisted_tool():
    plain = from_glaive({"system": "SYSTEM: You are a helpful assistant, with no access to external functions.",
                         "chat": "USER: Say hi. ASSISTANT: Hi! <|endoftext|>"})
    assert_valid(plain)
    assert plain.tools == ()
    assert turns(plain) == [("user", "Say hi.", None), ("reasoner", P, "summarizer"), ("summarizer", "Hi!", None)]

    # A call with no FUNCTION RESPONSE gets a placeholder observation; an unlisted tool is declared.
    traj = from_glaive({"system": GLAIVE_SYSTEM, "chat": (
        "USER: Ring the bell. ASSISTANT: <functioncall> {\"name\": \"ring_bell\", \"arguments\": '{}'} "
        "<|endoftext|> ASSISTANT: Done. <|endoftext|>")})
    assert_valid(traj)
    assert [r for r, _, _ in turns(traj)] == ["user", "reasoner", "executor", "observation", "reasoner", "summarizer"]
    assert traj.turns[3].content == P
    assert traj.tools[-1].to_dict() == {"name": "ring_bell", "description": "",
                                        "parameters": {"type": "object", "properties": {}}}
    assert traj.meta["added_tools"] == ["ring_bell"]
    assert traj.meta["needs_observation"] is True
    assert traj.meta["placeholder_turns"] == [1, 3, 4]


@pytest.mark.parametrize("record, field, match", [
    ({"system": "", "chat": "ASSISTANT: hello"}, "chat", "USER"),
    ({"system": "", "chat": "USER: hi"}, "chat", "no ASSISTANT"),
    ({"system": "", "chat": "USER: hi FUNCTION RESPONSE: {} ASSISTANT: ok"}, "chat", "no tool call"),
    ({"system": "", "chat": "USER: hi ASSISTANT: <functioncall> {name: f} <|endoftext|>"}, "chat", "function call"),
    ({"system": "", "chat": "USER: hi ASSISTANT: <functioncall> {\"name\": \"f\", \"arguments\": '[1]'}"},
     "chat.arguments", "object"),
    ({"system": ""}, "chat", "string"),
    ({"system": 3, "chat": "USER: hi ASSISTANT: ok"}, "system", "string"),
])
def test_glaive_errors_name_record_and_field(record, field, match):
    with pytest.raises(TrajectoryError, match=match) as info:
        from_glaive(record, record_id=12)
    assert (info.value.record, info.value.field) == (12, field)
