"""``mor-ext demo``: the whole pipeline (data, training, the agent on unseen tools, base vs tuned
evaluation) end to end on a tiny model, its stages' checks and options; and the tests' memorised
examples (tests/memorised_examples.py): real executions, clean of BFCL."""

from __future__ import annotations

import json

import pytest

import memorised_examples
from mor_ext.demo import DemoConfig, make_data, run_demo
from mor_ext.tools import execute
from mor_ext.tools.catalogue import CATALOGUE
from tiny_model_dir import build_tiny_model_dir


def test_memorised_examples_are_catalogue_tools_and_real_executions():
    assert all(CATALOGUE[name] is item for name, item in memorised_examples.TOOLS.items())
    for example in memorised_examples.EXAMPLES:
        call = example.turns[2].calls[0]
        assert example.turns[3].content == execute(CATALOGUE, call.name, call.arguments).observation_text()
        assert call.name in memorised_examples.TOOLS


@pytest.mark.bfcl
def test_memorised_examples_do_not_overlap_bfcl():
    from mor_ext.data.decontamination import assert_clean

    assert assert_clean(memorised_examples.EXAMPLES).clean


@pytest.mark.parametrize("field, value, message", [
    ("train_examples", 0, "train_examples must be at least 1"),
    ("minutes", 0.0, "minutes must be > 0"),
    ("bfcl_limit", -1, "bfcl_limit must be >= 0"),
])
def test_config_is_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        DemoConfig(**{field: value})


@pytest.mark.bfcl
def test_data_stage_keeps_heldout_tools_out_of_training(tmp_path):
    config = DemoConfig(out_dir=str(tmp_path), train_examples=30, agent_queries=2, heldout_episodes=4)
    lines: list[str] = []
    path, heldout = make_data(config, lines.append)
    assert len(path.read_text().splitlines()) == 30 and len(heldout) == 6
    train_tools = {t["name"] for line in path.read_text().splitlines() for t in json.loads(line)["tools"]}
    assert train_tools and not train_tools & {t.name for tr in heldout for t in tr.tools}
    assert any("none of them in training" in line for line in lines)


@pytest.mark.bfcl
def test_demo_end_to_end_on_a_tiny_model(tmp_path):
    """Every stage runs and reports on a tiny random model: the numbers mean nothing here, the
    plumbing does (files, both evaluations for base and tuned, the agent's streamed turns)."""
    from mor_ext.data.synthetic import generate

    model_dir = build_tiny_model_dir(tmp_path / "model", generate(40, seed=0) + generate(10, seed=0, split="heldout"),
                                     max_positions=16384)
    config = DemoConfig(model=str(model_dir), out_dir=str(tmp_path / "demo"), train_examples=8, minutes=0.02,
                        agent_queries=1, heldout_episodes=3, bfcl_limit=1, bfcl_categories=("simple_python",),
                        max_new_tokens=8)
    lines: list[str] = []
    summary = run_demo(config, log=lines.append)
    text = "\n".join(lines)
    for stage in ("1. data", "2. train", "3. evaluate the base", "4. the tuned agent", "5. evaluate the tuned"):
        assert f"=== {stage}" in text
    assert "[reasoner]" in text and "tools offered:" in text
    assert summary["train"]["steps"] >= 1
    for name in ("base", "tuned"):
        assert summary[name]["heldout"]["n"] == 3
        assert set(summary[name]["bfcl"]) == {"simple_python"}
        assert (tmp_path / "demo" / "eval" / name / "heldout_score.json").is_file()
        assert (tmp_path / "demo" / "eval" / name / "bfcl" / "BFCL_v4_simple_python_result.json").is_file()
    assert "| held-out tools: exact calls |" in text and "| BFCL simple_python |" in text
    assert json.loads((tmp_path / "demo" / "demo_summary.json").read_text())["train"]["steps"] == summary["train"]["steps"]
    assert (tmp_path / "demo" / "adapter" / "mor_config.json").is_file()
