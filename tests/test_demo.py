"""The demo's tool side: its tools come from the catalogue, its examples' observations are real
executions, and whatever the executor turn writes becomes an observation."""

from __future__ import annotations

import json

import pytest

from mor_ext import demo
from mor_ext.demo import run_tool
from mor_ext.tools import execute
from mor_ext.tools.catalogue import CATALOGUE


def test_demo_tools_are_catalogue_tools_and_examples_are_executed():
    assert all(CATALOGUE[name] is item for name, item in demo.DEMO_TOOLS.items())
    for example in demo.EXAMPLES:
        call = example.turns[2].calls[0]
        assert example.turns[3].content == execute(CATALOGUE, call.name, call.arguments).observation_text()
        assert call.name in demo.DEMO_TOOLS


def test_demo_tool_failures_become_observations():
    """Whatever the executor writes, run_tool returns a JSON observation the agent can read."""
    assert json.loads(run_tool('{"name": "country_capital_city", "arguments": {"country": "Norway"}}')) == {"result": "Oslo"}
    for text, message in [
        ("not json", "JSONDecodeError"),
        ('{"name": "nope", "arguments": {}}', "unknown tool 'nope'"),
        ('["country_capital_city"]', '"name"'),
        ('{"name": "country_capital_city", "arguments": [1]}', "arguments must be a JSON object"),
        ('{"name": "percentage_of_number", "arguments": {"percent": 1e308, "number": 1e308}}', "not JSON"),  # inf
        ('{"name": "percentage_of_number", "arguments": {"percent": 1}}', "missing required argument 'number'"),
        ('{"name": "country_capital_city", "arguments": {"country": "Atlantis"}}', "must be one of"),
    ]:
        observation = json.loads(run_tool(text))
        assert set(observation) == {"error"} and message in observation["error"], (text, observation)


@pytest.mark.bfcl
def test_demo_training_examples_do_not_overlap_bfcl():
    """The demo trains on its built-in examples: they pass the same BFCL check as every training set
    (their tool names once equalled BFCL functions such as multiply and convert_temperature)."""
    from mor_ext.demo import check_examples_against_bfcl

    assert check_examples_against_bfcl().endswith(": clean")
