"""``AgentConfig(first_call_only=True)``: the episode ends at the first executor turn without running
a call, or at the reasoner's decision for the summarizer (evaluation, e.g. BFCL)."""

from __future__ import annotations

import pytest
import torch

from agent_helpers import SYSTEM, Script, build_model, build_tokenizer
from mor_ext.agent import CALLED, NO_CALL, Agent, AgentConfig
from mor_ext.tools import Tool

CALL = '[{"name": "add", "arguments": {"a": 2, "b": 3}}, {"name": "add", "arguments": {"a": 1, "b": 1}}]'
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model(len(tokenizer), torch.float64)


def _agent(tokenizer, model, script, tools):
    return Agent(model, tokenizer, tools, system=SYSTEM, config=AgentConfig(first_call_only=True), choose=script)


def test_the_first_executor_turn_is_the_answer_and_nothing_runs(tokenizer, model):
    ran = []
    spy = Tool("add", "Add two integers.", SCHEMA, fn=lambda **kw: ran.append(kw))
    script = Script(tokenizer, ["I should add the numbers.\nNext: executor", CALL, "never reached"])
    result = _agent(tokenizer, model, script, [spy]).run("What is 2 + 3?")
    assert result.status == CALLED and result.steps == 1 and ran == []
    assert [t.role for t in result.trajectory.turns] == ["user", "reasoner", "executor"]
    calls = result.trajectory.turns[-1].calls
    assert [(c.name, c.arguments) for c in calls] == [("add", {"a": 2, "b": 3}), ("add", {"a": 1, "b": 1})]
    # the episode ended at the executor's end-of-turn token: only the separator follows, no observation
    last = max(i for i, generated in enumerate(result.generated) if generated)
    assert result.input_ids[last] == script.end_id
    assert tokenizer.decode(result.input_ids[last + 1:]) == "\n"


def test_schema_only_tools_need_no_implementation(tokenizer, model):
    script = Script(tokenizer, ["I should add the numbers.\nNext: executor", CALL])
    result = _agent(tokenizer, model, script, [Tool("add", "Add two integers.", SCHEMA)]).run("What is 2 + 3?")
    assert result.status == CALLED and len(result.trajectory.turns[-1].calls) == 2


def test_a_reasoner_that_goes_to_the_summarizer_answers_no_call(tokenizer, model):
    script = Script(tokenizer, ["No tool fits.\nNext: summarizer", "never reached"])
    result = _agent(tokenizer, model, script, [Tool("add", "Add two integers.", SCHEMA)]).run("Tell me a joke.")
    assert result.status == NO_CALL and result.steps == 0 and result.answer is None
    assert [t.role for t in result.trajectory.turns] == ["user", "reasoner"]
    assert result.trajectory.turns[-1].next == "summarizer"


def test_an_unreadable_call_ends_the_episode_with_no_calls(tokenizer, model):
    script = Script(tokenizer, ["I should add.\nNext: executor", "add two and three"])
    result = _agent(tokenizer, model, script, [Tool("add", "Add two integers.", SCHEMA)]).run("What is 2 + 3?")
    assert result.status == CALLED and result.trajectory.turns[-1].calls == ()
    assert result.trajectory.turns[-1].content == "add two and three"


def test_a_batch_reports_each_episode_as_it_finishes(tokenizer, model):
    from mor_ext.agent import run_episodes

    script = Script(tokenizer, {0: ["I should add.\nNext: executor", CALL], 1: ["No tool fits.\nNext: summarizer"],
                                2: ["Adding.\nNext: executor", '{"name": "add", "arguments": {"a": 1, "b": 2}}']})
    agent = _agent(tokenizer, model, script, [Tool("add", "Add two integers.", SCHEMA)])
    done = []
    batch = run_episodes(model, lambda i: agent.episode("What is 2 + 3?", id=str(i)), 3, batch_size=2, choose=script,
                         pad_id=agent.pad_id, on_done=lambda i, r: done.append((i, r.status)))
    assert sorted(done) == [(0, CALLED), (1, NO_CALL), (2, CALLED)]
    assert done[0] == (1, NO_CALL)  # the shortest episode finished first, before the others were reported
    assert [e.status for e in batch.episodes] == [CALLED, NO_CALL, CALLED]
