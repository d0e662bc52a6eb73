"""AgentFlux's majority vote on the episode's own KV cache (docs/spec.md §7): the samples continue
copies of the episode's cache row, so no token of the prompt or the trajectory runs again; the
winner is the majority's name; batched episodes vote as single ones do (fp64 tiny model)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from agent_helpers import SYSTEM
from mor_ext.agent import Agent, AgentConfig
from mor_ext.agent.episode import CALLED
from mor_ext.agent.selection import MajorityVote, first_name
from test_agentflux_decoding import OFFERED
from test_agentflux_scheme import model, tokenizer  # noqa: F401 (fixtures)

QUERIES = ["What is 2 + 3?", "Sleep for a second.", "What is 4 + 5?"]


class TokenCounter:
    """Counts the real (unpadded) tokens of every forward call of ``model``."""

    def __init__(self, model) -> None:
        self.tokens, self.calls = 0, 0
        self._handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        width = kwargs["input_ids"].shape[1]
        self.tokens += int(kwargs["attention_mask"][:, -width:].sum())
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


def _executor_name(result) -> str | None:
    turn = next((t for t in result.trajectory.turns if t.role == "executor"), None)
    return None if turn is None else first_name(turn.content)


def _teacher_forced_logits(model, result) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([result.input_ids]), role_ids=torch.tensor([result.role_ids])).logits[0]


@pytest.mark.parametrize("texts,winner", [
    (['{"name": "sleepy"', '[{"name": "add"', '{"name": "sleepy"', '{"name": "add_numbers"', '{"name": "sleepy"'],
     0),
    (['[{"name": "add"', '{"name": "sleepy"', '{"name": "sleepy"', '{"name": "add"', "x"], 0),  # a tie: first sampled
    (['x', '{"name": "explode_all"', '{"name": "add"', '{"name": "explode_all"', '{"name": "add"'], 1),
])
def test_the_vote_decodes_on_the_episodes_cache_and_keeps_the_majority(model, tokenizer, monkeypatch, texts, winner):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    ids = [i if first_name(t) else i + [end] for i, t in zip(ids, texts)]  # a sample without a call ends its turn
    # the samples' draws are scripted (sample k writes texts[k]); the vote's bookkeeping is not
    monkeypatch.setattr(MajorityVote, "_choose", lambda self, k, scores: ids[k][len(self.samples[k])])
    config = AgentConfig(first_call_only=True, max_turn_tokens=16, vote=5)
    seen: list[tuple[int, torch.Tensor]] = []  # (position predicted, logits) of each token the episode chose

    def greedy(logits, episode):
        seen.append((len(episode.input_ids), logits.clone()))
        return int(torch.argmax(logits))

    agent = Agent(model, tokenizer, OFFERED, system=SYSTEM, config=config, choose=greedy)
    counter = TokenCounter(model)
    try:
        batch = agent.run_batch(QUERIES[:1], batch_size=1)
    finally:
        counter.close()
    result = batch.episodes[0]
    assert result.status == CALLED
    names = result.trajectory.meta["votes"][0]
    assert names == [first_name(t) or "" for t in texts]
    assert _executor_name(result) == names[winner]
    executor = next(t for t in result.trajectory.turns if t.role == "executor").content
    assert executor.startswith(texts[winner])
    # Tokens through the model: the episode's own (each once: all but the runtime's tail after its
    # last generated token) plus the losing samples' (all but their last token, never fed).
    last_generated = max(i for i, g in enumerate(result.generated) if g)
    assert result.tokens_fed == last_generated
    losers = sum(len(i) - 1 for k, i in enumerate(ids) if k != winner)
    assert result.vote_tokens == losers
    assert counter.tokens == batch.tokens_fed == result.tokens_fed + losers
    # The episode went on from the winner's own cache row: the logits of every token it chose after
    # the vote are what a fresh forward over the whole episode gives there.
    start = next(p for p in range(len(result.input_ids)) if result.input_ids[p:p + len(ids[winner])] == ids[winner])
    fresh = _teacher_forced_logits(model, result)
    after = [(p, logits) for p, logits in seen if p > start]
    assert after, "the executor turn went on after the name"
    for p, logits in after:
        torch.testing.assert_close(logits, fresh[p - 1], rtol=1e-9, atol=1e-9)


def test_batched_episodes_vote_as_single_ones(model, tokenizer):
    config = AgentConfig(first_call_only=True, max_turn_tokens=20, vote=5, vote_temperature=2.0, seed=11,
                         constrain_names=True)
    agent = Agent(model, tokenizer, OFFERED, system=SYSTEM, config=config)
    counter = TokenCounter(model)
    try:
        batched = agent.run_batch(QUERIES, batch_size=3)
    finally:
        counter.close()
    single = agent.run_batch(QUERIES, batch_size=1).episodes  # one at a time, each seeded as in the batch
    for b, s in zip(batched.episodes, single):
        assert b.input_ids == s.input_ids and b.role_ids == s.role_ids
        assert b.trajectory.meta["votes"] == s.trajectory.meta["votes"]
        assert (b.tokens_fed, b.vote_tokens) == (s.tokens_fed, s.vote_tokens)
    assert counter.tokens == batched.tokens_fed == sum(e.tokens_fed + e.vote_tokens for e in batched.episodes)
    for e in batched.episodes:
        names = e.trajectory.meta["votes"][0]
        assert len(names) == 5 and all(n in OFFERED for n in names)
        counts = Counter(names)
        top = max(counts.values())
        assert _executor_name(e) == next(n for n in names if counts[n] == top)  # majority, ties: first sampled
    assert len({tuple(e.trajectory.meta["votes"][0]) for e in batched.episodes}) > 1  # the samples differ
