"""The agent on the real SmolLM2-135M-Instruct with the demo's adapter (trained here as ``mor-ext
demo`` trains it): one episode, checked against a teacher-forced re-run, and a batch."""

from __future__ import annotations

import pytest
import torch

import mor_ext
from mor_ext import demo
from mor_ext.agent import Agent, AgentConfig
from mor_ext.data.tokenize import RoleTokenizer, collate
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
    encoder = RoleTokenizer(tokenizer, config.spec, config.context_role)
    batch = collate([encoder.encode(ex) for ex in demo.EXAMPLES], tokenizer.pad_token_id)
    demo.train_steps(model, batch, steps=12, lr=2e-3, log=lambda _: None)
    return model.eval(), tokenizer


def test_demo_query_episode(trained):
    model, tokenizer = trained
    agent = Agent(model, tokenizer, demo.DEMO_TOOLS, system=demo.SYSTEM_PROMPT, config=AgentConfig(max_turn_tokens=48))
    result = agent.run(demo.DEMO_QUERY)
    # the demo's adapter memorises its examples: the full protocol with a real tool call
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


def test_batch_of_demo_queries(trained):
    model, tokenizer = trained
    agent = Agent(model, tokenizer, demo.DEMO_TOOLS, system=demo.SYSTEM_PROMPT, config=AgentConfig(max_turn_tokens=48))
    queries = [demo.DEMO_QUERY, "What is 20 percent of 50?", "Convert 10 degrees Celsius to Fahrenheit."]
    batch = agent.run_batch(queries, batch_size=3)
    assert len(batch.episodes) == 3 and batch.tokens_per_second > 0
    print(batch.summary())
    # batched greedy decoding gives the single run's episode (fp32: compared where it matters, the text)
    single = agent.run(demo.DEMO_QUERY)
    assert batch.episodes[0].trajectory.to_dict() == single.trajectory.to_dict()
    assert all(e.status == "answered" and e.steps == 1 for e in batch.episodes)
