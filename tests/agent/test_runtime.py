"""One episode on one KV cache: role ids as in training, only new tokens through the model, every
failure recovered from, limits, streaming, sampling; first_call_only episodes (evaluation)."""

from __future__ import annotations

import json

import pytest
import torch

from agent_helpers import SYSTEM, Script, build_model, build_tokenizer, make_agent
from mor_ext.agent import ANSWERED, CALLED, NO_CALL, STEP_LIMIT, TOKEN_LIMIT, Agent, AgentConfig, run_episodes
from mor_ext.tools import Tool
from mor_ext.data.trajectory import parse_trajectory

ADD = '{"name": "add", "arguments": {"a": 2, "b": 3}}'
HAPPY = ["I should add the numbers.\nNext: executor", ADD, "I have the sum.\nNext: summarizer", "2 + 3 = 5."]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model(len(tokenizer), torch.float64)


class ForwardSpy:
    """Counts the tokens of every forward call and the cache objects it was given."""

    def __init__(self, model):
        self.tokens, self.caches, self.roles = 0, set(), []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.tokens += int(kwargs["attention_mask"][:, -kwargs["input_ids"].shape[1]:].sum())
        self.caches.add(id(kwargs.get("cache", kwargs.get("past_key_values"))))
        self.roles.append(kwargs["role_ids"].clone())

    def close(self):
        self.handle.remove()


def test_scripted_episode_end_to_end(tokenizer, model):
    script = Script(tokenizer, HAPPY)
    agent = make_agent(tokenizer, model, script)
    spy = ForwardSpy(model)
    try:
        result = agent.run("What is 2 + 3?")
    finally:
        spy.close()
    assert result.status == ANSWERED and result.answer == "2 + 3 = 5." and result.steps == 1
    roles = [t.role for t in result.trajectory.turns]
    assert roles == ["user", "reasoner", "executor", "observation", "reasoner", "summarizer"]
    assert result.trajectory.turns[3].content == '{"result": 5}'
    # the trajectory is in the training format, and re-encodes to exactly the tokens the episode ran
    parse_trajectory(json.loads(result.trajectory.to_json()))
    assert result.trainable
    encoded = agent.encoder.encode(result.trajectory)
    n = len(result.input_ids)
    assert encoded.input_ids[:n] == result.input_ids and encoded.role_ids[:n] == result.role_ids
    # every token went through the model once (the last one never needs to), on one cache
    assert spy.tokens == result.tokens_fed == n - 1
    assert len(spy.caches) == 1 and len(spy.roles) == result.generated_tokens


def test_teacher_forcing_reproduces_the_incremental_logits(tokenizer, model):
    script = Script(tokenizer, HAPPY, free=lambda episode, turn: 3 if turn in (0, 2) else 0)
    result = make_agent(tokenizer, model, script).run("What is 2 + 3?")
    assert result.status == ANSWERED
    ids = torch.tensor([result.input_ids[:-1]])
    roles = torch.tensor([result.role_ids[:-1]])
    with torch.no_grad():
        full = model(input_ids=ids, role_ids=roles).logits[0]
    positions = [i - 1 for i, g in enumerate(result.generated) if g]
    assert len(positions) == len(script.logits)
    torch.testing.assert_close(full[positions], torch.stack(script.logits), rtol=1e-9, atol=1e-9)
    # each generated token carries the role of the turn that produced it
    spec = model.mor_config.spec
    turn_of = iter([t for t in result.trajectory.turns if t.role in ("reasoner", "executor", "summarizer")])
    generated_roles = [r for r, g in zip(result.role_ids, result.generated) if g]
    assert set(generated_roles) <= {spec.role_index(r) for r in ("reasoner", "executor", "summarizer")}
    assert next(turn_of).role == "reasoner" and generated_roles[0] == spec.role_index("reasoner")
    assert generated_roles[-1] == spec.role_index("summarizer")


FAILURES = {
    "malformed": "I will call it {oops",
    "unknown": '{"name": "multiply", "arguments": {"a": 2}}',
    "bad_arguments": '{"name": "add", "arguments": {"a": "two", "b": 3}}',
    "exception": '{"name": "explode", "arguments": {"reason": "test"}}',
    "timeout": '{"name": "sleepy", "arguments": {"seconds": 2}}',
}


def test_every_failure_becomes_an_observation_and_the_episode_recovers(tokenizer, model):
    texts = []
    for call in FAILURES.values():
        texts += ["Try.\nNext: executor", call]
    texts += ["Now properly.\nNext: executor", "```json\n" + ADD + "\n```\nDone.", "Got it.\nNext: summarizer", "5."]
    agent = make_agent(tokenizer, model, Script(tokenizer, texts), max_steps=10, tool_timeout=0.3, max_tokens=4096)
    result = agent.run("What is 2 + 3?")
    assert result.status == ANSWERED and result.answer == "5."
    observations = [json.loads(t.content) for t in result.trajectory.turns if t.role == "observation"]
    assert len(observations) == len(FAILURES) + 1
    for kind, obs in zip(FAILURES, observations):
        assert "error" in obs, kind
    assert "could not read a tool call" in observations[0]["error"]
    assert "unknown tool 'multiply'" in observations[1]["error"]
    assert "add:" in observations[2]["error"]
    assert "exploded: test" in observations[3]["error"]
    assert "did not finish" in observations[4]["error"]
    assert observations[-1] == {"result": 5}
    # the unreadable call is kept in meta; the run is not trainable as it stands
    assert result.trajectory.meta["unreadable_calls"] == [{"turn": 2, "text": FAILURES["malformed"]}]
    assert not result.trainable


def test_step_limit_ends_a_runaway_episode(tokenizer, model):
    texts = ["Again.\nNext: executor", ADD] * 10
    result = make_agent(tokenizer, model, Script(tokenizer, texts), max_steps=2).run("loop")
    assert result.status == STEP_LIMIT and result.answer is None and result.steps == 2
    assert result.trajectory.meta["status"] == STEP_LIMIT


def test_token_limit_and_turn_limit_with_the_raw_model(tokenizer, model):
    # no script: a random model never writes a decision, so only the limits can end it
    prompt = len(make_agent(tokenizer, model).episode("What is 2 + 3?").input_ids)
    agent = make_agent(tokenizer, model, max_tokens=prompt + 60, max_turn_tokens=20, max_steps=50)
    result = agent.run("What is 2 + 3?")
    assert result.status in (TOKEN_LIMIT, ANSWERED)
    # the model never runs past the limit (an observation appended last may overshoot it unread)
    assert result.tokens_fed < prompt + 60 <= len(result.input_ids)
    assert result.trajectory.meta["warnings"]


def test_a_prompt_over_the_token_limit_runs_nothing(tokenizer, model):
    result = make_agent(tokenizer, model, max_tokens=50).run("What is 2 + 3?")
    assert result.status == TOKEN_LIMIT and result.tokens_fed == 0 and "prompt alone" in result.trajectory.meta["warnings"][0]


def test_stream_sees_each_role_turn(tokenizer, model):
    seen: list[tuple[str, str]] = []
    result = make_agent(tokenizer, model, Script(tokenizer, HAPPY)).run(
        "What is 2 + 3?", stream=lambda role, text: seen.append((role, text)))
    joined: dict[str, str] = {}
    for role, text in seen:
        joined[role] = joined.get(role, "") + text
    assert joined["summarizer"] == result.answer
    assert joined["observation"] == '{"result": 5}'
    assert "Next: executor" in joined["reasoner"] and ADD in joined["executor"]


def test_sampling_is_reproducible_with_a_seed(tokenizer, model):
    prompt = len(make_agent(tokenizer, model).episode("What is 2 + 3?").input_ids)

    def run(seed):
        agent = make_agent(tokenizer, model, do_sample=True, temperature=1.0, top_k=50, top_p=0.9, seed=seed,
                           max_tokens=prompt + 40, max_turn_tokens=16)
        return agent.run("What is 2 + 3?").input_ids

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_needs_a_patched_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mor_ext.agent import Agent

    plain = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="MoR-patched"):
        Agent(plain, tokenizer)


def test_sandboxed_code_as_a_tool_in_an_episode(tokenizer, model):
    from mor_ext.agent import Agent, AgentConfig, python_tool
    from mor_ext.agent.sandbox import namespaces_available

    if not namespaces_available():
        pytest.skip("unprivileged namespaces are not allowed here")
    script = Script(tokenizer, ["Compute it.\nNext: executor",
                                '{"name": "run_python", "arguments": {"code": "print(sum(range(101)))"}}',
                                "Done.\nNext: summarizer", "5050."])
    agent = Agent(model, tokenizer, [python_tool()], config=AgentConfig(), choose=script)
    result = agent.run("Sum of 0..100?")
    observation = json.loads(result.trajectory.turns[3].content)
    assert observation["result"]["stdout"].strip() == "5050" and result.answer == "5050."


# ------------------------------------------------------------------ first_call_only (evaluation, e.g. BFCL)
FIRST_CALL = '[{"name": "add", "arguments": {"a": 2, "b": 3}}, {"name": "add", "arguments": {"a": 1, "b": 1}}]'
ADD_SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}


def _first_call_agent(tokenizer, model, script, tools):
    return Agent(model, tokenizer, tools, system=SYSTEM, config=AgentConfig(first_call_only=True), choose=script)


def test_the_first_executor_turn_is_the_answer_and_nothing_runs(tokenizer, model):
    ran = []
    spy = Tool("add", "Add two integers.", ADD_SCHEMA, fn=lambda **kw: ran.append(kw))
    script = Script(tokenizer, ["I should add the numbers.\nNext: executor", FIRST_CALL, "never reached"])
    result = _first_call_agent(tokenizer, model, script, [spy]).run("What is 2 + 3?")
    assert result.status == CALLED and result.steps == 1 and ran == []
    assert [t.role for t in result.trajectory.turns] == ["user", "reasoner", "executor"]
    calls = result.trajectory.turns[-1].calls
    assert [(c.name, c.arguments) for c in calls] == [("add", {"a": 2, "b": 3}), ("add", {"a": 1, "b": 1})]
    # the episode ended at the executor's end-of-turn token: only the separator follows, no observation
    last = max(i for i, generated in enumerate(result.generated) if generated)
    assert result.input_ids[last] == script.end_id
    assert tokenizer.decode(result.input_ids[last + 1:]) == "\n"


def test_schema_only_tools_need_no_implementation(tokenizer, model):
    script = Script(tokenizer, ["I should add the numbers.\nNext: executor", FIRST_CALL])
    result = _first_call_agent(tokenizer, model, script, [Tool("add", "Add two integers.", ADD_SCHEMA)]).run(
        "What is 2 + 3?")
    assert result.status == CALLED and len(result.trajectory.turns[-1].calls) == 2


def test_a_reasoner_that_goes_to_the_summarizer_answers_no_call(tokenizer, model):
    script = Script(tokenizer, ["No tool fits.\nNext: summarizer", "never reached"])
    result = _first_call_agent(tokenizer, model, script, [Tool("add", "Add two integers.", ADD_SCHEMA)]).run("Tell me a joke.")
    assert result.status == NO_CALL and result.steps == 0 and result.answer is None
    assert [t.role for t in result.trajectory.turns] == ["user", "reasoner"]
    assert result.trajectory.turns[-1].next == "summarizer"


def test_an_unreadable_call_ends_the_episode_with_no_calls(tokenizer, model):
    script = Script(tokenizer, ["I should add.\nNext: executor", "add two and three"])
    result = _first_call_agent(tokenizer, model, script, [Tool("add", "Add two integers.", ADD_SCHEMA)]).run("What is 2 + 3?")
    assert result.status == CALLED and result.trajectory.turns[-1].calls == ()
    assert result.trajectory.turns[-1].content == "add two and three"


def test_a_batch_reports_each_episode_as_it_finishes(tokenizer, model):
    script = Script(tokenizer, {0: ["I should add.\nNext: executor", FIRST_CALL], 1: ["No tool fits.\nNext: summarizer"],
                                2: ["Adding.\nNext: executor", '{"name": "add", "arguments": {"a": 1, "b": 2}}']})
    agent = _first_call_agent(tokenizer, model, script, [Tool("add", "Add two integers.", ADD_SCHEMA)])
    done = []
    batch = run_episodes(model, lambda i: agent.episode("What is 2 + 3?", id=str(i)), 3, batch_size=2, choose=script,
                         pad_id=agent.pad_id, on_done=lambda i, r: done.append((i, r.status)))
    assert sorted(done) == [(0, CALLED), (1, NO_CALL), (2, CALLED)]
    assert done[0] == (1, NO_CALL)  # the shortest episode finished first, before the others were reported
    assert [e.status for e in batch.episodes] == [CALLED, NO_CALL, CALLED]
