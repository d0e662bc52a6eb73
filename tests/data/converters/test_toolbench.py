"""ToolBench records -> trajectories.

Every sample is hand-written (invented tools and queries) in the shape of its source format.
"""

from __future__ import annotations

import json

import pytest

from mor_ext.data import TrajectoryError
from mor_ext.data.converters import from_toolbench

from converter_samples import P, turns, assert_valid, toolbench_record


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
