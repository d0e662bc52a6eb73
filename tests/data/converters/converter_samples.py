"""Hand-written records (invented tools and queries) in the shapes of glaive, xLAM, ToolACE and
ToolBench, and helpers, shared by the converter tests."""

from __future__ import annotations

import json

from mor_ext.data import parse_trajectory
from mor_ext.data.converters import PLACEHOLDER

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


SAMPLES = {"glaive": GLAIVE, "xlam": XLAM, "toolace": TOOLACE,
           "toolbench": toolbench_record(json.dumps({"return_type": "give_answer", "final_answer": "Soup."}))}
ODD_VALUES = [None, 0, 2.5, True, "", "{[(", [], [1, "a"], {}, {"name": 1}, [{"from": "user"}], [None]]
