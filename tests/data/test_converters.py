"""Converters from glaive, xLAM, ToolACE and ToolBench records into trajectories.

Every sample here is hand-written (invented tools and queries) in the shape of its source format.
"""

from __future__ import annotations

import copy
import json
import os

import pytest

from mor_ext.data import TrajectoryError, parse_trajectory
from mor_ext.data.converters import (
    CONVERTERS,
    PLACEHOLDER,
    convert_file,
    from_glaive,
    from_toolace,
    from_toolbench,
    from_xlam,
    parse_pythonic_calls,
)
from mor_ext.data.jsonl import read_trajectories

P = PLACEHOLDER


def turns(traj) -> list[tuple]:
    """Each turn as (role, content or calls, next): compact enough to compare whole trajectories."""
    out = []
    for t in traj.turns:
        body = [c.to_dict() for c in t.calls] if t.role == "executor" else t.content
        out.append((t.role, body, t.next))
    return out


def assert_valid(traj) -> None:
    """The trajectory survives a round trip through the validator unchanged."""
    assert parse_trajectory(traj.to_dict()) == traj
    json.dumps(traj.to_dict())


# ------------------------------------------------------------------------------------------- glaive
GLAIVE_SYSTEM = (
    "SYSTEM: You are a helpful assistant with access to the following functions. Use them if required -\n"
    "{\n"
    '    "name": "convert_units",\n'
    '    "description": "Convert a quantity between units",\n'
    '    "parameters": {\n'
    '        "type": "object",\n'
    '        "properties": {\n'
    '            "value": {"type": "number", "description": "The quantity"},\n'
    '            "from_unit": {"type": "string"},\n'
    '            "to_unit": {"type": "string"}\n'
    "        },\n"
    '        "required": ["value", "from_unit", "to_unit"]\n'
    "    }\n"
    "}\n"
    '{"name": "lookup_bird", "description": "Facts about a bird species", "parameters": {"type": "object", '
    '"properties": {"species": {"type": "string"}}, "required": ["species"]}}\n'
)

GLAIVE = {
    "system": GLAIVE_SYSTEM,
    "chat": (
        "USER: How many kilometres is 12 miles? "
        "ASSISTANT: <functioncall> {\"name\": \"convert_units\", \"arguments\": "
        "'{\"value\": 12, \"from_unit\": \"mile\", \"to_unit\": \"km\", \"note\": \"it's exact\"}'} <|endoftext|> "
        "FUNCTION RESPONSE: {\"result\": 19.31} "
        "ASSISTANT: 12 miles is about 19.31 kilometres. <|endoftext|> "
        "USER: And what do puffins eat? "
        "ASSISTANT: <functioncall> {\"name\": \"lookup_bird\", \"arguments\": '{\"species\": \"puffin\"}'} "
        "<|endoftext|>"
    ),
}


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


@pytest.mark.parametrize("convert", [from_toolace, from_toolbench])
@pytest.mark.parametrize("speaker", [{"x": 1}, ["user"], None, 3])
def test_sharegpt_style_speaker_that_is_not_a_string(convert, speaker):
    """A non-string "from" is a TrajectoryError naming the field (on_error="skip" skips it), not a
    TypeError that aborts the whole conversion."""
    with pytest.raises(TrajectoryError, match="must be one of") as info:
        convert({"conversations": [{"from": speaker, "value": "hi"}]}, record_id=5)
    assert (info.value.record, info.value.field) == (5, "conversations[0].from")


# --------------------------------------------------------------------------------------------- xLAM
XLAM_TOOLS = [
    {"name": "roll_dice", "description": "Roll some dice.",
     "parameters": {"count": {"type": "int", "description": "How many dice", "default": 1},
                    "sides": {"type": "int, optional", "description": "Sides per die"}}},
    {"name": "nearest_store", "description": "The nearest shop of some kinds.",
     "parameters": {"postcode": {"type": "str", "description": "Postal code"},
                    "kinds": {"type": "List[str]", "description": "Shop kinds"},
                    "open_now": {"type": "Optional[bool]", "description": "Only open shops"},
                    "budget": {"type": "Decimal", "description": "Unmapped type"}}},
]
XLAM = {
    "id": 42,
    "query": "Roll two dice and find the pet shop nearest to 10115.",
    "tools": json.dumps(XLAM_TOOLS),
    "answers": json.dumps([{"name": "roll_dice", "arguments": {"count": 2}},
                           {"name": "nearest_store", "arguments": {"postcode": "10115", "kinds": ["pets"]}}]),
}


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


# ------------------------------------------------------------------------------------------ ToolACE
TOOLACE_TOOLS = [
    {"name": "Tide Times", "description": "High and low tides at a harbour.",
     "parameters": {"type": "dict", "properties": {
         "harbour": {"type": "string", "description": "Harbour name"},
         "days": {"type": "int", "description": "Days ahead"}}, "required": ["harbour"]},
     "required": None},
    {"name": "moon_phase", "description": "The moon's phase on a date.",
     "parameters": {"type": "dict", "properties": {"date": {"type": "string"}}, "required": ["date"]}},
]
TOOLACE = {
    "system": ("You are an expert in composing functions. You are given a question and a set of possible "
               "functions.\nHere is a list of functions in JSON format that you can invoke:\n"
               + json.dumps(TOOLACE_TOOLS)
               + ". \nShould you decide to return the function call(s), put it in the format of "
                 "[func1(params_name=params_value, params_name2=params_value2...), func2(params)]"),
    "conversations": [
        {"from": "user", "value": "When is high tide in Porthmadog, and what is the moon doing on 2031-05-04?"},
        {"from": "assistant", "value": '[Tide Times(harbour="Porthmadog", days=2), moon_phase(date=\'2031-05-04\')]'},
        {"from": "tool", "value": '[{"name": "Tide Times", "results": {"high": ["06:12", "18:40"]}}, '
                                  '{"name": "moon_phase", "results": {"phase": "waxing gibbous"}}]'},
        {"from": "assistant", "value": "High tide is at 06:12 and 18:40; the moon will be waxing gibbous."},
        {"from": "user", "value": "Thanks!"},
        {"from": "assistant", "value": "You're welcome."},
    ],
}


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


# ---------------------------------------------------------------------------------------- ToolBench
TOOLBENCH_APIS = [
    {"name": "search_recipes_for_cookbook", "description": "Search recipes. It's fast.",
     "parameters": {"type": "object", "properties": {"query": {"type": "string", "example_value": "soup"}},
                    "required": ["query"], "optional": []}},
    {"name": "Finish", "description": "Call this function at the end of the task.",
     "parameters": {"type": "object", "properties": {
         "return_type": {"type": "string", "enum": ["give_answer", "give_up_and_restart"]},
         "final_answer": {"type": "string"}}, "required": ["return_type"]}},
]
TOOLBENCH_SYSTEM = ("You are AutoGPT, you can use many tools(functions) to do the following task.\n"
                    "Specifically, you have access to the following APIs: " + repr(TOOLBENCH_APIS))


def toolbench_record(finish: str) -> dict:
    return {
        "id": "Step 3: lentils",
        "conversations": [
            {"from": "system", "value": TOOLBENCH_SYSTEM},
            {"from": "user", "value": "\nFind a quick lentil soup recipe and set a timer for it.\nBegin!\n"},
            {"from": "assistant", "value": "Thought: I should search the cookbook for lentil soup.\n"
                                           "Action: search_recipes_for_cookbook\n"
                                           "Action Input: {\n  \"query\": \"lentil soup\"\n}"},
            {"from": "function",
             "value": '{"error": "", "response": "[{\\"title\\": \\"Red lentil soup\\", \\"minutes\\": 25}]"}'},
            {"from": "assistant", "value": "Thought: It takes 25 minutes; set a timer.\n"
                                           "Action: set_kitchen_timer\nAction Input: {\"minutes\": 25}"},
            {"from": "function", "value": '{"error": "", "response": "timer set"}'},
            {"from": "assistant", "value": "Thought: I have what I need.\nAction: Finish\nAction Input: " + finish},
        ],
    }


def test_toolbench_thoughts_actions_and_finish():
    answer = "Make red lentil soup; the timer is set for 25 minutes."
    finish = json.dumps({"return_type": "give_answer", "final_answer": answer})
    traj = from_toolbench(toolbench_record(finish), record_id=1)
    assert_valid(traj)
    assert traj.id == "toolbench-Step 3: lentils"
    assert turns(traj) == [
        ("user", "Find a quick lentil soup recipe and set a timer for it.", None),  # "Begin!" removed
        ("reasoner", "I should search the cookbook for lentil soup.", "executor"),
        ("executor", [{"name": "search_recipes_for_cookbook", "arguments": {"query": "lentil soup"}}], None),
        ("observation", '{"error": "", "response": "[{\\"title\\": \\"Red lentil soup\\", \\"minutes\\": 25}]"}', None),
        ("reasoner", "It takes 25 minutes; set a timer.", "executor"),
        ("executor", [{"name": "set_kitchen_timer", "arguments": {"minutes": 25}}], None),
        ("observation", '{"error": "", "response": "timer set"}', None),
        ("reasoner", "I have what I need.", "summarizer"),
        ("summarizer", "Make red lentil soup; the timer is set for 25 minutes.", None),
    ]
    # The tools came from a Python repr; Finish is control flow, not a tool; the unlisted one is added.
    assert [t.name for t in traj.tools] == ["search_recipes_for_cookbook", "set_kitchen_timer"]
    assert traj.tools[0].description == "Search recipes. It's fast."
    assert traj.tools[1].parameters == {"type": "object", "properties": {}}
    assert traj.meta == {"source": "toolbench", "source_id": "Step 3: lentils", "added_tools": ["set_kitchen_timer"]}


def test_toolbench_query_field_and_giving_up():
    record = toolbench_record(json.dumps({"return_type": "give_up_and_restart"}))
    record["query"] = "Lentil soup, please."
    traj = from_toolbench(record)
    assert_valid(traj)
    assert traj.query == "Lentil soup, please."
    assert turns(traj)[-2:] == [("reasoner", "I have what I need.", "summarizer"), ("summarizer", P, None)]
    assert traj.meta["finish"] == "give_up_and_restart"
    assert traj.meta["needs_completion"] == ["summarizer"]


def test_toolbench_messages_after_finish_are_dropped_unread():
    finish = json.dumps({"return_type": "give_answer", "final_answer": "Soup."})
    record = toolbench_record(finish)
    record["conversations"] += [{"from": "function", "value": '{"response": "successfully giving the final answer."}'},
                                {"from": "assistant", "value": "not in the Thought/Action format"}]
    traj = from_toolbench(record)
    assert_valid(traj)
    assert traj.turns[-1].content == "Soup." and traj.meta["dropped_messages"] == 2


@pytest.mark.parametrize("index, value, match", [
    (2, "Thought: hmm, no action here.", "Action"),
    (2, "Thought: x\nAction: search_recipes_for_cookbook\nAction Input: {query: soup", "not JSON"),
    (2, "Thought: x\nAction: search_recipes_for_cookbook\nAction Input: [1, 2]", "object"),
    (2, "Thought: x\nAction: search_recipes_for_cookbook", "Action Input"),
    (6, "Thought: x\nAction: Finish\nAction Input: {\"return_type\": \"give_answer\"}", "final_answer"),
])
def test_toolbench_errors_name_record_and_field(index, value, match):
    record = toolbench_record("{}")
    record["conversations"][index]["value"] = value
    with pytest.raises(TrajectoryError, match=match) as info:
        from_toolbench(record, record_id=2)
    assert (info.value.record, info.value.field) == (2, f"conversations[{index}].value")


# --------------------------------------------------------------------------------- all converters
SAMPLES = {"glaive": GLAIVE, "xlam": XLAM, "toolace": TOOLACE,
           "toolbench": toolbench_record(json.dumps({"return_type": "give_answer", "final_answer": "Soup."}))}
ODD_VALUES = [None, 0, 2.5, True, "", "{[(", [], [1, "a"], {}, {"name": 1}, [{"from": "user"}], [None]]


@pytest.mark.parametrize("fmt", sorted(CONVERTERS))
def test_any_malformed_field_gives_a_trajectory_error_or_a_valid_trajectory(fmt):
    sample = SAMPLES[fmt]
    assert_valid(CONVERTERS[fmt](sample))
    with pytest.raises(TrajectoryError) as info:
        CONVERTERS[fmt](["not", "a", "dict"], record_id=0)
    assert info.value.field == "<record>"
    for key in sample:
        for odd in ODD_VALUES:
            try:
                traj = CONVERTERS[fmt]({**sample, key: odd}, record_id=1)
            except TrajectoryError as e:
                assert e.record == 1 and e.field
            else:
                assert_valid(traj)
    # Odd messages inside the conversation too.
    if "conversations" in sample:
        for i in range(len(sample["conversations"])):
            for odd in ODD_VALUES:
                record = copy.deepcopy(sample)
                record["conversations"][i] = odd
                with pytest.raises(TrajectoryError):
                    CONVERTERS[fmt](record, record_id=1)


# -------------------------------------------------------------------------------------------- files
def test_convert_file_skips_and_reports(tmp_path, caplog):
    src = tmp_path / "xlam.jsonl"
    bad = {**XLAM, "answers": "[{"}
    src.write_text("\n".join([json.dumps(XLAM), json.dumps(bad), "not json", "",
                              json.dumps({**XLAM, "id": 43})]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    report = convert_file(src, "xlam", out)
    assert report["records"] == 4 and report["converted"] == 2 and report["bad"] == 2
    assert report["needs_completion"] == 2 and report["needs_observation"] == 2 and report["added_tools"] == 0
    assert report["errors_by_field"] == {"answers": 1, "<json>": 1}
    assert [e["record"] for e in report["errors"]] == [2, 3]  # line numbers
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 2
    trajectories, errors = read_trajectories(out)
    assert errors == [] and [t.id for t in trajectories] == ["xlam-42", "xlam-43"]


def test_convert_file_raise_leaves_output_untouched(tmp_path):
    src = tmp_path / "glaive.jsonl"
    src.write_text(json.dumps(GLAIVE) + "\n" + json.dumps({"system": "", "chat": "nope"}) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(TrajectoryError) as info:
        convert_file(src, "glaive", out, on_error="raise")
    assert (info.value.record, info.value.field) == (2, "chat")
    assert not out.exists()
    out.write_text("old\n")
    with pytest.raises(TrajectoryError):
        convert_file(src, "glaive", out, on_error="raise")
    assert out.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["glaive.jsonl", "out.jsonl"]


def test_convert_file_reads_json_arrays_and_refuses_unknown_formats(tmp_path):
    src = tmp_path / "toolace.json"
    src.write_text(json.dumps([TOOLACE, {"conversations": []}], indent=2), encoding="utf-8")
    report = convert_file(src, "toolace", tmp_path / "out.jsonl")
    assert (report["converted"], report["bad"]) == (1, 1)
    assert report["errors"][0]["record"] == 1  # array index
    assert read_trajectories(tmp_path / "out.jsonl")[0][0].id == "toolace-0"
    with pytest.raises(ValueError, match="unknown format"):
        convert_file(src, "sharegpt", tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="on_error"):
        convert_file(src, "toolace", tmp_path / "x.jsonl", on_error="warn")
