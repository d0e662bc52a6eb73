"""Batched episodes with per-row roles give the same trajectories as one-at-a-time runs (fp64)."""

from __future__ import annotations

import pytest
import torch

from agent_helpers import Script, build_model, build_tokenizer, make_agent
from mor_ext.agent import ANSWERED

ADD = '{"name": "add", "arguments": {"a": %d, "b": %d}}'


def texts_for(i: int) -> list[str]:
    """Episode i: i % 3 tool rounds (so rows finish at different times), then an answer."""
    rounds = i % 3
    texts = []
    for r in range(rounds):
        texts += [f"Step {r}.\nNext: executor", ADD % (i, r)]
    return texts + ["Done.\nNext: summarizer", f"It is {i}."]


QUERIES = [f"What is {i} + {i}?" for i in range(6)]
SCRIPTS = {i: texts_for(i) for i in range(len(QUERIES))}


def free(episode, turn):  # the model writes a few greedy tokens of its own first: logits decide
    return (int(episode.id) + turn) % 4


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model(len(tokenizer), torch.float64, seed=1)


@pytest.fixture(scope="module")
def singles(tokenizer, model):
    agent = make_agent(tokenizer, model, Script(tokenizer, SCRIPTS, free))
    return [agent.run(q, id=str(i)) for i, q in enumerate(QUERIES)]


@pytest.mark.parametrize("batch_size, refill_limit", [(6, None), (3, None), (2, 0)])
def test_batched_equals_one_at_a_time(tokenizer, model, singles, batch_size, refill_limit):
    agent = make_agent(tokenizer, model, Script(tokenizer, SCRIPTS, free))
    calls: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["role_ids"].clone()), with_kwargs=True)
    try:
        batch = agent.run_batch(QUERIES, batch_size=batch_size, ids=[str(i) for i in range(len(QUERIES))],
                                refill_limit=refill_limit)
    finally:
        handle.remove()
    assert [e.status for e in batch.episodes] == [ANSWERED] * len(QUERIES)
    for single, batched in zip(singles, batch.episodes):
        assert batched.input_ids == single.input_ids
        assert batched.role_ids == single.role_ids
        assert batched.trajectory.to_dict() == single.trajectory.to_dict()
    # rows really were at different points: some forward call mixed roles across rows
    mixed = any(len({int(r[row, 0]) for row in range(r.shape[0])} - {-1}) > 1 for r in calls if r.shape[0] > 1)
    assert mixed
    assert batch.tokens_fed == sum(e.tokens_fed for e in batch.episodes)
    assert batch.episodes_per_minute > 0 and batch.tokens_per_second > 0 and "episodes/min" in batch.summary()
    assert batch.forward_calls < sum(e.generated_tokens for e in batch.episodes)
