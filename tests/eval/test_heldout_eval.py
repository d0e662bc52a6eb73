"""mor_ext.eval.heldout: the agent on held-out-tool episodes, scored against their reference calls
(tiny random model, scripted outputs; nothing is executed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))  # the agent tests' tiny model and tokenizer
from agent_helpers import ScriptById, build_model, build_tokenizer  # noqa: E402

from mor_ext.data.synthetic import generate  # noqa: E402
from mor_ext.data.trajectory import ToolCall  # noqa: E402
from mor_ext.eval.heldout import compare_calls, evaluate_heldout, expected_calls  # noqa: E402

pytestmark = pytest.mark.bfcl  # the generator checks its output against BFCL


def test_compare_calls():
    a, b = ToolCall("f", {"x": 3, "y": "s"}), ToolCall("f", {"x": 4, "y": "s"})
    assert compare_calls([a, b], [b, ToolCall("f", {"x": 3.0, "y": "s"})]) == {"exact": True, "tools": True, "decision": True}
    assert compare_calls([a], [b]) == {"exact": False, "tools": True, "decision": True}
    assert compare_calls([a, a], [a]) == {"exact": False, "tools": False, "decision": True}
    assert compare_calls([], []) == {"exact": True, "tools": True, "decision": True}
    assert compare_calls([a], []) == {"exact": False, "tools": False, "decision": False}
    assert compare_calls([ToolCall("f", {"x": True})], [ToolCall("f", {"x": 1})])["exact"] is False


def _calls_json(calls) -> str:
    items = [{"name": c.name, "arguments": c.arguments} for c in calls]
    return json.dumps(items[0] if len(items) == 1 else items)


def test_scores_by_kind_against_the_reference(tmp_path):
    tok = build_tokenizer()
    model = build_model(len(tok), torch.float64)
    model.config.max_position_embeddings = 16384
    trajectories = generate(24, seed=3, split="heldout")
    calling = [t for t in trajectories if expected_calls(t)]
    refusing = [t for t in trajectories if not expected_calls(t)]
    right, wrong, refused, called_anyway = calling[0], calling[1], refusing[0], refusing[1]
    wrong_calls = [ToolCall(c.name, {k: "nonsense" for k in c.arguments}) for c in expected_calls(wrong)]
    script = {
        right.id: ["A tool fits.\nNext: executor", _calls_json(expected_calls(right))],
        wrong.id: ["A tool fits.\nNext: executor", _calls_json(wrong_calls)],
        refused.id: ["No tool fits.\nNext: summarizer"],
        called_anyway.id: ["Try it.\nNext: executor", _calls_json([ToolCall(right.tools[0].name, {})])],
    }
    chosen = [right, wrong, refused, called_anyway]
    result = evaluate_heldout(model, tok, chosen, batch_size=3, max_new_tokens=400, out=tmp_path,
                              choose=ScriptById(tok, script))
    verdicts = {v["id"]: v for v in result.verdicts}
    assert verdicts[right.id]["exact"] and verdicts[right.id]["tools"] and verdicts[right.id]["decision"]
    assert not verdicts[wrong.id]["exact"] and verdicts[wrong.id]["tools"] and verdicts[wrong.id]["decision"]
    assert verdicts[refused.id]["exact"] and verdicts[refused.id]["status"] == "no_call"
    assert not verdicts[called_anyway.id]["decision"] and not verdicts[called_anyway.id]["exact"]
    assert (result.overall.n, result.overall.exact, result.overall.tools, result.overall.decision) == (4, 2, 3, 3)
    assert sum(s.n for s in result.by_kind.values()) == 4
    assert json.loads((tmp_path / "heldout_score.json").read_text())["overall"]["exact"] == pytest.approx(0.5)
    assert len((tmp_path / "heldout_verdicts.jsonl").read_text().splitlines()) == 4
    assert "| all | 4 | 50.0 | 75.0 | 75.0 |" in result.table()


def test_the_selection_flags_reach_the_episodes(tmp_path):
    """``eval heldout`` takes ``eval bfcl``'s decoding flags (chosen here, not on BFCL): under
    ``--constrain-args`` a random model's every executor turn holds calls of the offered tools; without
    it the same model writes text that does not parse. ``--calls-from-plan`` needs ``--constrain-args``."""
    pytest.importorskip("llguidance")
    import argparse

    from mor_ext.agent.flags import add_selection_arguments
    from mor_ext.eval.first_calls import Selection, selection_from_args

    tok = build_tokenizer()
    model = build_model(len(tok), torch.float64)
    model.config.max_position_embeddings = 16384
    trajectories = generate(6, seed=4, split="heldout", mix={"single": 1})
    got = {}
    for selection in (None, Selection(constrain_args=True)):
        result = evaluate_heldout(model, tok, trajectories, batch_size=6, max_new_tokens=24, selection=selection)
        called = [v for v in result.verdicts if v["status"] == "called"]
        assert called
        got[selection is not None] = [bool(v["got"]) for v in called]
    assert all(got[True]) and not any(got[False])

    parser = argparse.ArgumentParser()
    add_selection_arguments(parser, "selection")
    assert selection_from_args(parser.parse_args(["--constrain-args", "--calls-from-plan"])) == \
        Selection(constrain_args=True, calls_from_plan=True)
    assert selection_from_args(parser.parse_args(["--constrain-args", "--distinct-calls"])) == \
        Selection(constrain_args=True, distinct_calls=True)
    for flag in ("--calls-from-plan", "--distinct-calls"):
        with pytest.raises(ValueError, match="needs --constrain-args"):
            selection_from_args(parser.parse_args([flag]))
