"""The agent on the real SmolLM2-135M-Instruct with an adapter that memorised six trajectories
(tests/memorised_examples.py): one episode, checked against a teacher-forced re-run, and a batch."""

from __future__ import annotations

import pytest
import torch

import mor_ext
import memorised_examples as memorised
from mor_ext.agent import Agent, AgentConfig
from mor_ext.data.trajectory import ROLE_TURNS
from mor_ext.models import ModelNotFoundError, load_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    try:
        model, tokenizer = load_model()
    except ModelNotFoundError as exc:
        pytest.skip(f"default model not installed: {exc}")
    config = mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(16))
    mor_ext.patch(model, config)
    memorised.train_on_examples(model, tokenizer, steps=12, lr=2e-3)
    return model, tokenizer


def test_memorised_query_episode(trained):
    model, tokenizer = trained
    agent = Agent(model, tokenizer, memorised.TOOLS, system=memorised.SYSTEM_PROMPT, config=AgentConfig(max_turn_tokens=48))
    result = agent.run(memorised.QUERY)
    # the adapter memorised its examples: the full protocol with a real tool call
    roles = [t.role for t in result.trajectory.turns]
    assert roles == ["user", "reasoner", "executor", "observation", "reasoner", "summarizer"]
    assert result.trajectory.turns[3].content == '{"result": "Oslo"}' and "Oslo" in result.answer
    # teacher forcing reproduces each generated token's logits, under the role that produced it
    with torch.no_grad():
        full = model(input_ids=torch.tensor([result.input_ids[:-1]]), role_ids=torch.tensor([result.role_ids[:-1]])).logits[0]
    positions = [i - 1 for i, g in enumerate(result.generated) if g]
    chosen = full[positions].argmax(-1).tolist()
    assert chosen == [result.input_ids[p + 1] for p in positions]  # greedy: same choices
    spec = model.mor_config.spec
    assert {r for r, g in zip(result.role_ids, result.generated) if g} <= {spec.role_index(r) for r in ROLE_TURNS}


def test_batch_of_memorised_queries(trained):
    model, tokenizer = trained
    agent = Agent(model, tokenizer, memorised.TOOLS, system=memorised.SYSTEM_PROMPT, config=AgentConfig(max_turn_tokens=48))
    queries = [memorised.QUERY, "What is 20 percent of 50?", "Convert 10 degrees Celsius to Fahrenheit."]
    batch = agent.run_batch(queries, batch_size=3)
    assert len(batch.episodes) == 3 and batch.tokens_per_second > 0
    print(batch.summary())
    # batched greedy decoding gives the single run's episode (fp32: compared where it matters, the text)
    single = agent.run(memorised.QUERY)
    assert batch.episodes[0].trajectory.to_dict() == single.trajectory.to_dict()
    assert all(e.status == "answered" and e.steps == 1 for e in batch.episodes)
