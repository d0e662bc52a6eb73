"""Hierarchical tool selection (docs/spec.md §7): categories derived or given, every prompt capped
at ``max_tools`` tools, the selector choosing a category and then a tool."""

from __future__ import annotations

import pytest
import torch

import mor_ext.agent.hierarchy as hierarchy
from agent_helpers import SYSTEM
from mor_ext.agent import Agent, AgentConfig
from mor_ext.agent.hierarchy import Category, build_hierarchy, category_key, choose_tools
from mor_ext.eval.first_calls import FirstCallTask, Selection, run_first_calls
from mor_ext.tools import Tool
from mor_ext.tools.families import all_specs
from test_agentflux_scheme import model, tokenizer  # noqa: F401 (fixtures)

EMPTY = {"type": "object", "properties": {}}
# Short schema-only tools in a few name families: cheap prompts for the tiny model.
SMALL = [Tool(f"{prefix}_{i}", "", EMPTY) for prefix in ("add", "get", "set", "convert", "list", "find") for i in range(10)]


def _levels(nodes):
    yield nodes
    for node in nodes:
        if isinstance(node, Category):
            yield from _levels(list(node.children))


@pytest.mark.parametrize("max_tools", [2, 5, 8, 30])
def test_every_level_is_capped_and_holds_every_tool_once(max_tools):
    tools = [s.tool for s in all_specs()]  # over a thousand tools
    top = build_hierarchy(tools, max_tools)
    assert all(len(level) <= max_tools for level in _levels(top))
    leaves = [t for node in top for t in (node.tools() if isinstance(node, Category) else [node])]
    assert sorted(t.name for t in leaves) == sorted(t.name for t in tools)


def test_categories_are_derived_from_names_or_given():
    assert [category_key(n) for n in ("convert_celsius_kelvin", "pystd.math.sqrt", "getWeather", "x")] == [
        "convert", "pystd", "get", "x"]
    tools = [Tool(n, "", EMPTY) for n in ("get_a", "get_b", "get_c", "set_a", "set_b", "lone")]
    top = build_hierarchy(tools, 3)
    assert [n.name for n in top] == ["get_tools", "set_tools", "lone"]
    given = build_hierarchy(tools, 4, {"get_a": "alpha", "set_a": "alpha"})
    alpha = next(n for n in given if n.name == "alpha_tools")
    assert [t.name for t in alpha.tools()] == ["get_a", "set_a"]
    assert build_hierarchy(tools, 6) == tools  # they fit: no hierarchy
    with pytest.raises(ValueError, match="max_tools"):
        build_hierarchy(tools, 1)


def test_the_selector_picks_a_category_then_a_tool_and_no_prompt_exceeds_the_cap(model, tokenizer, monkeypatch):
    seen = []

    class Recording(hierarchy.Episode):
        def __init__(self, encoder, tools, *args, **kwargs):
            seen.append(len(tools))
            super().__init__(encoder, tools, *args, **kwargs)

    monkeypatch.setattr(hierarchy, "Episode", Recording)
    tools = SMALL
    agent = Agent(model, tokenizer, tools, system=SYSTEM, config=AgentConfig(max_turn_tokens=24))
    chosen = choose_tools(model, agent.encoder, ["What is 2 + 3?", "Convert 3 km to miles."], [tools, tools], 4,
                          system=SYSTEM, max_turn_tokens=24)
    assert seen and max(seen) <= 4
    assert len(seen) >= 2 * 3  # 60 tools under a cap of 4 need at least three levels
    for offered in chosen:
        assert offered is None or (1 <= len(offered) <= 4 and {t.name for t in offered} <= {t.name for t in tools})


def test_first_calls_with_hierarchical_selection(model, tokenizer):
    tools = {t.name: t for t in SMALL[:40]}
    tasks = [FirstCallTask("What is 2 + 3?", tools, SYSTEM, id=str(i)) for i in range(3)]
    episodes = run_first_calls(model, tokenizer, tasks, max_new_tokens=24,
                               selection=Selection(constrain_names=True, max_tools=6))
    for episode in episodes:
        assert len(episode.trajectory.tools) <= 6
        turn = next((t for t in episode.trajectory.turns if t.role == "executor"), None)
        if turn is not None and turn.calls:
            assert turn.calls[0].name in {t.name for t in episode.trajectory.tools}


def test_agent_offers_each_query_a_capped_category(model, tokenizer):
    tools = SMALL[:30]
    agent = Agent(model, tokenizer, tools, system=SYSTEM, config=AgentConfig(max_turn_tokens=16, max_steps=1),
                  max_tools=5)
    offered = agent.offered_tools(["What is 2 + 3?"])
    assert len(offered) == 1 and len(offered[0]) <= 5
    result = agent.run("What is 2 + 3?")
    assert len(result.trajectory.tools) <= 5
