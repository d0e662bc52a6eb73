"""The synthetic trajectory generator: determinism, kind mix, validity, and answers that state executed results.

The BFCL decontamination check is skipped here (``skip_decontamination_for_generator_tests``) so
that these tests do not need bfcl-eval; tests/test_decontamination.py runs the generator with it.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mor_ext.data import synthetic
from mor_ext.data.synthetic import DEFAULT_MIX, KINDS, generate, result_text, single_tool_tasks
from mor_ext.data.trajectory import parse_trajectory
from mor_ext.tools import execute
from mor_ext.tools.catalogue import CATALOGUE


def gen(n: int, **kwargs):
    return generate(n, skip_decontamination_for_generator_tests=True, **kwargs)


@pytest.fixture(scope="module")
def batch():
    return gen(400, seed=11)


def executor_turns(traj):
    return [t for t in traj.turns if t.role == "executor"]


def observations(traj):
    return [json.loads(t.content) for t in traj.turns if t.role == "observation"]


def test_deterministic_for_a_seed():
    a = [t.to_dict() for t in gen(60, seed=3)]
    b = [t.to_dict() for t in gen(60, seed=3)]
    c = [t.to_dict() for t in gen(60, seed=4)]
    assert a == b
    assert a != c
    assert gen(0) == []


def test_default_mix_counts_are_exact():
    counts = Counter(t.meta["kind"] for t in gen(100, seed=0))
    assert counts == {k: round(100 * w) for k, w in DEFAULT_MIX.items()}


def test_custom_mix():
    assert {t.meta["kind"] for t in gen(30, seed=1, mix={"parallel": 1})} == {"parallel"}
    counts = Counter(t.meta["kind"] for t in gen(40, seed=1, mix={"single": 3, "no_tool": 1, "multi_step": 0}))
    assert counts == {"single": 30, "no_tool": 10}
    with pytest.raises(ValueError, match="unknown kind"):
        gen(5, mix={"chat": 1})
    with pytest.raises(ValueError, match=">= 0"):
        gen(5, mix={"single": -1})
    with pytest.raises(ValueError, match="all be zero"):
        gen(5, mix={"single": 0})


def test_every_trajectory_is_valid_and_labelled(batch):
    ids = set()
    for t in batch:
        again = parse_trajectory(t.to_dict())
        assert again.to_dict() == t.to_dict()
        assert t.meta == {"source": "synthetic", "kind": t.meta["kind"]} and t.meta["kind"] in KINDS
        ids.add(t.id)
        json.loads(t.to_json())
    assert len(ids) == len(batch)


def test_structure_per_kind(batch):
    seen = Counter()
    for t in batch:
        kind = t.meta["kind"]
        seen[kind] += 1
        ex = executor_turns(t)
        if kind == "single":
            assert [len(e.calls) for e in ex] == [1]
        elif kind == "multi_step":
            assert [len(e.calls) for e in ex] == [1, 1]
            first = observations(t)[0]["result"]
            assert first in ex[1].calls[0].arguments.values(), "the second call must use the first result"
        elif kind == "parallel":
            assert len(ex) == 1 and len(ex[0].calls) in (2, 3)
            assert len(set(json.dumps(c.to_dict(), sort_keys=True) for c in ex[0].calls)) == len(ex[0].calls)
            assert isinstance(json.loads(t.turns[3].content), list)
        else:
            assert ex == [] and [x.role for x in t.turns] == ["user", "reasoner", "summarizer"]
            assert t.turns[1].next == "summarizer"
    assert set(seen) == set(KINDS)


def test_observations_are_real_executions_and_answers_state_them(batch):
    for t in batch:
        for i, turn in enumerate(t.turns):
            if turn.role != "executor":
                continue
            obs = json.loads(t.turns[i + 1].content)
            obs = obs if isinstance(obs, list) else [obs]
            assert len(obs) == len(turn.calls)
            for call, o in zip(turn.calls, obs):
                assert o == execute(CATALOGUE, call.name, call.arguments).observation(), (t.id, call)  # rerunning gives the same observation
                assert "result" in o, (t.id, o)
        answer = t.turns[-1].content
        ex = executor_turns(t)
        if not ex:
            continue
        last_obs = json.loads(t.turns[t.turns.index(ex[-1]) + 1].content)
        last_obs = last_obs if isinstance(last_obs, list) else [last_obs]
        for call, o in zip(ex[-1].calls, last_obs):
            assert result_text(call.name, o["result"]) in answer, (t.id, answer, o)


def test_yes_no_answers_are_unambiguous():
    for name, yes, no in [("primality_check_integer", True, False), ("leap_year_check", True, False),
                          ("palindrome_phrase_check", True, False)]:
        assert result_text(name, yes) not in result_text(name, no)


def test_candidate_tools_hold_needed_tools_plus_distractors(batch):
    for t in batch:
        offered = [tool.name for tool in t.tools]
        assert len(set(offered)) == len(offered)
        assert all(CATALOGUE[n] == tool for n, tool in zip(offered, t.tools))
        needed = {c.name for e in executor_turns(t) for c in e.calls}
        assert needed <= set(offered), t.id
        assert 2 <= len(offered) - len(needed) <= 5, (t.id, offered, needed)
    # the needed tool is not always in the same position
    positions = {[x.name for x in t.tools].index(executor_turns(t)[0].calls[0].name)
                 for t in batch if t.meta["kind"] == "single"}
    assert len(positions) > 3


def test_every_tool_has_a_template_and_is_used():
    assert sorted(single_tool_tasks()) == sorted(CATALOGUE)
    used = {c.name for t in gen(1200, seed=5, mix={"single": 1}) for e in executor_turns(t) for c in e.calls}
    assert used == set(CATALOGUE)


def test_queries_and_thoughts_vary(batch):
    queries = [t.query for t in batch]
    assert len(set(queries)) > 0.9 * len(queries)
    singles = [t for t in batch if t.meta["kind"] == "single"]
    openings = Counter(t.turns[1].content.split(" ")[0] for t in singles)
    assert len(openings) >= 4
    assert all(t.turns[1].content.strip() and t.turns[-1].content.strip() for t in batch)


def test_generate_runs_the_decontamination_check(monkeypatch):
    calls = []
    monkeypatch.setattr(synthetic.generator, "assert_clean", lambda trajs, **kw: calls.append((len(trajs), kw)))
    generate(7, seed=0)
    assert len(calls) == 1 and calls[0][0] == 7
    assert {t.name for t in calls[0][1]["tools"]} == set(CATALOGUE)  # the whole library is checked too
    generate(7, seed=0, skip_decontamination_for_generator_tests=True)
    assert len(calls) == 1


def test_output_for_a_seed_is_pinned():
    """The digest of generate(200, seed=3) as the generator wrote it before the tool layer and the
    task tables moved (mor_ext.tools, data/synthetic/): a change here changes everyone's training data,
    so it must be deliberate (and this digest updated with a note on what changed)."""
    import hashlib

    text = "".join(t.to_json() + "\n" for t in generate(200, seed=3, skip_decontamination_for_generator_tests=True))
    assert hashlib.sha256(text.encode()).hexdigest() == "ac43493b12959bb0d5d6ee875ce13d3621172a1151416805706e346470ab81ea"
