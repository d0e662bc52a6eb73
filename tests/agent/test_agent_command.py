"""``mor-ext agent`` on a tiny local model directory and adapter (no downloads)."""

from __future__ import annotations

import io
import json

import pytest

from agent_helpers import build_model, build_tokenizer
from mor_ext import save_adapter, unpatch
from mor_ext.agent.command import load_tools, run_command
from mor_ext.cli import build_parser


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("agent-cli")
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer))
    save_adapter(model, root / "adapter")
    unpatch(model)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root


def run(argv):
    out = io.StringIO()
    assert run_command(build_parser().parse_args(["agent", *argv]), out) == 0
    return out.getvalue()


def test_one_query_prints_the_roles_and_writes_the_trajectory(model_dirs):
    path = model_dirs / "out.jsonl"
    text = run(["--model", str(model_dirs / "model"), "--adapter", str(model_dirs / "adapter"),
                "--tools", "agent_helpers:TOOLS", "--max-tokens", "700", "--max-turn-tokens", "12",
                "--json", str(path), "What is 2 + 3?"])
    assert "[reasoner] " in text and "answer (" in text and "\033[" not in text  # no colour off a terminal
    record = json.loads(path.read_text())
    assert record["turns"][0] == {"role": "user", "content": "What is 2 + 3?"}
    assert [t["name"] for t in record["tools"]] == ["add", "explode", "sleepy"]
    assert record["meta"]["status"] in ("token_limit", "step_limit", "answered")


def test_several_queries_run_as_a_batch(model_dirs):
    text = run(["--model", str(model_dirs / "model"), "--tools", "agent_helpers:add", "--max-tokens", "600",
                "--max-turn-tokens", "8", "--json", "-", "one?", "two?"])
    assert "episodes/min" in text and text.count("answer (") == 2
    assert text.count('"turns"') == 2


def test_load_tools_checks_what_it_imports():
    assert [t.name for t in load_tools("agent_helpers:TOOLS")] == ["add", "explode", "sleepy"]
    with pytest.raises(ValueError, match="module:attr"):
        load_tools("agent_helpers")
    with pytest.raises(ValueError, match="not a Tool"):
        load_tools("agent_helpers:SYSTEM")


def test_selection_flags_are_the_shared_ones_and_checked_before_loading():
    """``mor-ext agent`` takes the tool-selection flags of ``eval bfcl`` / ``eval heldout`` (one
    definition), with its own ``--seed`` and ``--max-repeated-calls``; flags that do not go together
    fail before any model is loaded (the model path here does not exist)."""
    args = build_parser().parse_args(["agent", "--constrain-args", "--distinct-calls", "--calls-from-plan",
                                      "--vote", "3", "--vote-temperature", "0.5", "--max-repeated-calls", "4",
                                      "--seed", "7", "q"])
    assert (args.distinct_calls, args.calls_from_plan, args.vote_temperature, args.max_repeated_calls, args.seed) == \
        (True, True, 0.5, 4, 7)
    for flags in (["--distinct-calls"], ["--calls-from-plan"], ["--vote", "-1"]):
        with pytest.raises(ValueError, match="needs --constrain-args|--vote must be"):
            run_command(build_parser().parse_args(["agent", "--model", "/nonexistent/model", *flags, "q"]), io.StringIO())
