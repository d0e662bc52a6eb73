"""Decoding with tool selection (docs/spec.md §7): constrained names, the majority vote (its cache
sharing: test_shared_cache_vote.py), the repeated-call guard, and a saved AgentFlux adapter that
reloads and decodes identically."""

from __future__ import annotations

import pytest
import torch

import mor_ext
from agent_helpers import SYSTEM, TOOLS, Script, build_model
from mor_ext.agent import Agent, AgentConfig, Episode, run_episodes
from mor_ext.agent.episode import CALLED, REPEATED_CALL
from mor_ext.agent.parsing import parse_executor_output
from mor_ext.agent.selection import NameConstraint
from mor_ext.schemes import CallScanner, RoleScheme
from mor_ext.tools import Tool
from test_agentflux_scheme import model, tokenizer  # noqa: F401 (fixtures)

EMPTY = {"type": "object", "properties": {}}
# names that share prefixes with each other and with the tokenizer's pieces
OFFERED = {n: Tool(n, f"Tool {n}.", EMPTY) for n in ("add", "add_numbers", "explode_all", "sleepy")}


def _first_names(model, tokenizer, constrain: bool, count: int = 12, **config):
    agent = Agent(model, tokenizer, OFFERED, system=SYSTEM, config=AgentConfig(
        first_call_only=True, max_turn_tokens=20, do_sample=True, temperature=1.5, seed=3,
        constrain_names=constrain, **config))
    episodes = agent.run_batch(["What is 2 + 3?"] * count, batch_size=count).episodes
    names = []
    for e in episodes:
        turn = next((t for t in e.trajectory.turns if t.role == "executor"), None)
        if turn is None:
            names.append(None)
            continue
        scanner = CallScanner()
        for ch in turn.content:
            scanner.feed(ch)
        names.append(scanner.names[0] if scanner.names else None)
    return names, episodes


def test_constrained_decoding_never_writes_a_name_outside_the_list(model, tokenizer):
    names, episodes = _first_names(model, tokenizer, constrain=True, count=16)
    assert all(e.status == CALLED for e in episodes)
    assert all(n in OFFERED for n in names), names
    assert len(set(names)) > 1  # sampled at a high temperature, it does not always pick the same tool
    for e in episodes:  # the call reads as a call of that tool
        text = next(t for t in e.trajectory.turns if t.role == "executor").content
        assert text.startswith(('{"name": "', '[{"name": "'))
    # the same random model, unconstrained, writes no tool's name at all: the constraint did the work
    free, _ = _first_names(model, tokenizer, constrain=False, count=16)
    assert not any(n in OFFERED for n in free), free


def test_constraint_allows_exactly_the_continuations(tokenizer):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    constraint = NameConstraint(tokenizer, ["add", "add_numbers"], end)
    texts = {i: tokenizer.decode([i]) for i in range(len(tokenizer))}
    for prefix in ['', '{"name": "', '{"name": "add', '[{"name": "add_n']:
        allowed = constraint.allowed(prefix)
        for i in allowed:
            full = prefix + texts[i]
            assert any(t.startswith(full) or full.startswith(t) for t in
                       ['{"name": "add"', '{"name": "add_numbers"', '[{"name": "add"', '[{"name": "add_numbers"'])
    assert constraint.allowed('{"name": "add", "arguments": {"a') is None  # arguments are free
    assert constraint.allowed('{"name": "add", "arguments": {}}') == [end]
    after = constraint.allowed('[{"name": "add", "arguments": {}}')
    assert after and end not in after  # inside a list: another call or the list's end, not the turn's end
    for i in after:
        assert any(t.startswith(texts[i]) or texts[i].startswith(t) for t in
                   [', {"name": "add"', ', {"name": "add_numbers"', "]"]), texts[i]
    assert constraint.allowed('[{"name": "add", "arguments": {}}]') == [end]


def test_vote_inside_episodes_gives_offered_names(model, tokenizer):
    names, episodes = _first_names(model, tokenizer, constrain=True, count=3, vote=5, stop_after_name=True)
    assert all(n in OFFERED for n in names) and all(e.status == CALLED for e in episodes)
    turn = next(t for t in episodes[0].trajectory.turns if t.role == "executor")
    assert turn.calls and turn.calls[0].name in OFFERED  # the name alone, arguments never generated


def test_the_repeated_call_guard_stops_the_episode(model, tokenizer):
    call = '{"name": "add", "arguments": {"a": 2, "b": 3}}'
    script = Script(tokenizer, ["Again.\nNext: executor", call] * 10)
    agent = Agent(model, tokenizer, TOOLS, system=SYSTEM, config=AgentConfig(max_steps=8, max_repeated_calls=3),
                  choose=script)
    result = agent.run("What is 2 + 3?")
    assert result.status == REPEATED_CALL and result.steps == 3
    assert sum(1 for t in result.trajectory.turns if t.role == "observation") == 2  # the third never ran


def test_a_saved_agentflux_adapter_reloads_and_decodes_identically(model, tokenizer, tmp_path):
    config = AgentConfig(max_turn_tokens=12, max_steps=2)
    before = Agent(model, tokenizer, TOOLS, system=SYSTEM, config=config).run("What is 2 + 3?")
    mor_ext.save_adapter(model, tmp_path / "adapter")
    fresh = build_model(len(tokenizer), torch.float64)
    mor_ext.unpatch(fresh)
    mor_ext.load_adapter(fresh, tmp_path / "adapter")
    assert fresh.mor_config.scheme == RoleScheme.agentflux()
    after = Agent(fresh, tokenizer, TOOLS, system=SYSTEM, config=config).run("What is 2 + 3?")
    assert after.input_ids == before.input_ids and after.role_ids == before.role_ids
    assert len(set(after.role_ids)) >= 2
