"""``mor-ext eval bfcl`` on the real SmolLM2-135M-Instruct, a few questions and tokens per mode."""

from __future__ import annotations

import json

import pytest

import mor_ext
from mor_ext.eval.bfcl import evaluate
from mor_ext.models import ModelNotFoundError, load_model

pytestmark = [pytest.mark.integration, pytest.mark.bfcl]


@pytest.fixture(scope="module")
def smollm2():
    try:
        return load_model()
    except ModelNotFoundError as exc:
        pytest.skip(f"default model not installed: {exc}")


def test_prompt_mode(smollm2, tmp_path):
    model, tokenizer = smollm2
    result = evaluate(model, tokenizer, ["simple_python", "irrelevance"], mode="prompt", limit=2, out=tmp_path,
                      batch_size=2, max_new_tokens=24, progress=False)
    assert result.questions == 4 and set(result.scores) == {"simple_python", "irrelevance"}
    rows = [json.loads(line) for line in (tmp_path / "BFCL_v4_simple_python_result.json").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["simple_python_0", "simple_python_1"] and all(r["result"] for r in rows)


def test_agent_mode_on_fresh_adapters(smollm2, tmp_path):
    """Zero adapters: the base model under the MoR protocol. It answers something for every
    question, and whatever it writes is scored; nothing runs."""
    model, tokenizer = smollm2
    mor_ext.patch(model)
    try:
        result = evaluate(model, tokenizer, ["multiple"], mode="agent", limit=2, out=tmp_path, batch_size=2,
                          max_new_tokens=16, progress=False)
    finally:
        mor_ext.unpatch(model)
    verdicts = [json.loads(line) for line in (tmp_path / "BFCL_v4_multiple_verdicts.json").read_text().splitlines()]
    assert len(verdicts) == 2 and all(v["status"] in ("called", "no_call", "token_limit") for v in verdicts)
    assert result.scores["multiple"].total == 2
