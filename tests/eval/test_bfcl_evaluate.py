"""``evaluate`` on a tiny random model: agent mode with scripted text (the calls are the answer, nothing
ever runs), prompt mode (BFCL's prompt, batched as unbatched), the files in BFCL's shapes, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))  # the agent tests' tiny model and tokenizer
from agent_helpers import CHATML_TEMPLATE, ScriptById, build_model, build_tokenizer  # noqa: E402

from mor_ext.eval.bfcl import evaluate, load_category  # noqa: E402
from mor_ext.eval.bfcl.generation import agent_query, answer_with_prompt, prompt_messages  # noqa: E402

pytestmark = pytest.mark.bfcl

GENERATION_PROMPT = "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_tokenizer()
    tok.chat_template = CHATML_TEMPLATE + GENERATION_PROMPT
    return tok


@pytest.fixture(scope="module")
def model(tokenizer):
    model = build_model(len(tokenizer), torch.float64)
    model.config.max_position_embeddings = 16384  # BFCL's prompts in a 600-token vocabulary are long
    return model


def _call(name: str, **arguments) -> str:
    return json.dumps({"name": name, "arguments": arguments})


SCRIPT = {
    # simple_python_0: calculate_triangle_area(base=10, height=5, unit="units")
    "simple_python_0": ["I can compute the area.\nNext: executor", _call("calculate_triangle_area", base=10, height=5)],
    "simple_python_1": ["Use the factorial.\nNext: executor", _call("math.factorial", number=6)],  # wrong: 5
    "simple_python_2": ["No function fits.\nNext: summarizer"],
    "irrelevance_0": ["No function fits.\nNext: summarizer"],
    "irrelevance_1": ["Call it anyway.\nNext: executor", "not json at all"],
    "irrelevance_2": ["Call it anyway.\nNext: executor", _call("whatever", x=1)],
}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_agent_mode_scores_the_first_executor_turn_and_writes_bfcls_files(tokenizer, model, tmp_path, monkeypatch):
    import mor_ext.agent.episode as episode_module

    def never(*args, **kwargs):
        raise AssertionError("a BFCL function was executed")

    monkeypatch.setattr(episode_module, "execute", never)
    result = evaluate(model, tokenizer, ["simple_python", "irrelevance"], mode="agent", limit=3, out=tmp_path,
                      batch_size=2, choose=ScriptById(tokenizer, SCRIPT), progress=False)
    assert {c: (s.correct, s.total) for c, s in result.scores.items()} == {"simple_python": (1, 3), "irrelevance": (2, 3)}
    assert result.aggregates["non_live"].accuracy is None and result.questions == 6 and result.questions_per_minute > 0

    results = _lines(tmp_path / "BFCL_v4_simple_python_result.json")
    assert results == [{"id": "simple_python_0", "result": "[calculate_triangle_area(base=10, height=5)]"},
                       {"id": "simple_python_1", "result": "[math.factorial(number=6)]"},
                       {"id": "simple_python_2", "result": "[]"}]
    assert [r["result"] for r in _lines(tmp_path / "BFCL_v4_irrelevance_result.json")] == [
        "[]", "not json at all", "[whatever(x=1)]"]

    score = _lines(tmp_path / "BFCL_v4_simple_python_score.json")
    assert score[0] == {"accuracy": 1 / 3, "correct_count": 1, "total_count": 3}
    assert [s["id"] for s in score[1:]] == ["simple_python_1", "simple_python_2"]
    assert score[1]["error_type"] == "value_error:others" and "number" in score[1]["error"][0]

    verdicts = _lines(tmp_path / "BFCL_v4_irrelevance_verdicts.json")
    assert [(v["id"], v["valid"], v["status"]) for v in verdicts] == [
        ("irrelevance_0", True, "no_call"), ("irrelevance_1", True, "called"), ("irrelevance_2", False, "called")]
    assert verdicts[2]["error_type"] == "irrelevance_error:decoder_success" and verdicts[0]["reasoner"] == "No function fits."

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["scores"]["simple_python"]["accuracy"] == pytest.approx(1 / 3)
    assert summary["aggregates"]["irrelevance"]["missing"] == ["live_irrelevance"]
    table = result.table()
    assert "simple_python" in table and "irrelevance" in table and "questions/min" in table


def test_agent_prompt_is_the_trajectory_prompt_with_schema_only_tools(tokenizer):
    q = load_category("live_simple", limit=60)
    with_system = next(x for x in q if x.messages[0]["role"] == "system")
    query, system = agent_query(with_system)
    assert system == with_system.messages[0]["content"] and query == with_system.messages[1]["content"]
    plain = load_category("simple_python", limit=1)[0]
    assert agent_query(plain) == (plain.messages[0]["content"], None)


def test_prompt_mode_uses_bfcls_prompt_and_batches_like_single_rows(tokenizer, model):
    questions = load_category("simple_python", limit=3)
    messages = prompt_messages(questions[0])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith("You are an expert in composing functions.")
    assert "calculate_triangle_area" in messages[0]["content"] and "[func_name1(params_name1=params_value1" in messages[0]["content"]
    done = []
    batched = answer_with_prompt(model, tokenizer, questions, batch_size=3, max_new_tokens=6, progress=done.append)
    single = answer_with_prompt(model, tokenizer, questions, batch_size=1, max_new_tokens=6)
    assert [a.result for a in batched] == [a.result for a in single] and sum(done) == 3
    assert all(a.result == a.raw for a in batched)


def test_prompt_mode_writes_the_generated_text_as_the_result(tokenizer, model, tmp_path):
    result = evaluate(model, tokenizer, ["multiple"], mode="prompt", limit=2, out=tmp_path, max_new_tokens=4,
                      progress=False)
    rows = _lines(tmp_path / "BFCL_v4_multiple_result.json")
    assert [r["id"] for r in rows] == ["multiple_0", "multiple_1"] and all(set(r) == {"id", "result"} for r in rows)
    assert result.scores["multiple"].total == 2


def test_bad_arguments_are_refused(tokenizer, model):
    with pytest.raises(ValueError, match="mode must be one of"):
        evaluate(model, tokenizer, ["simple_python"], mode="chat")
    with pytest.raises(ValueError, match="unsupported BFCL category"):
        evaluate(model, tokenizer, ["simple_cobol"], mode="prompt")


def test_the_cli_runs_evaluate_and_prints_the_table(tokenizer, model, tmp_path, monkeypatch, capsys):
    import mor_ext.models
    from mor_ext.cli import main

    monkeypatch.setattr(mor_ext.models, "load_model", lambda name=None: (model, tokenizer))
    code = main(["eval", "bfcl", "--mode", "prompt", "--categories", "irrelevance", "--limit", "2", "--max-new-tokens",
                 "3", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "irrelevance" in out and "irrelevance alone proves nothing" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["method"] == "base" and summary["settings"]["limit"] == 2
    assert main(["eval", "bfcl", "--method", "lora", "--categories", "irrelevance"]) == 2
    assert "--method lora needs --adapter" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["plain", "one_role"])
def test_agent_mode_runs_plain_models_and_one_role_ablations(tokenizer, kind):
    """A plain model (the base, or a merged LoRA) runs the same prompt without role ids; a one-role
    ablation runs every token under its one role (role ids are range-checked, so a wrong id fails)."""
    import mor_ext
    from mor_ext.train.config import one_role_spec

    model = build_model(len(tokenizer), torch.float64)
    mor_ext.unpatch(model)
    if kind == "one_role":
        mor_ext.patch(model, mor_ext.MoRConfig(spec=one_role_spec(4), context_role="agent"))
    model.config.max_position_embeddings = 16384
    script = {"simple_python_0": SCRIPT["simple_python_0"]}
    result = evaluate(model, tokenizer, ["simple_python"], mode="agent", limit=1, choose=ScriptById(tokenizer, script),
                      progress=False)
    assert result.scores["simple_python"].correct == 1
