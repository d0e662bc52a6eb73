"""The commands item 5 of the AgentFlux issue needs, on a tiny random model: ``mor-ext train --scheme
agentflux`` flags, ``mor-ext eval bfcl`` with the scheme taken from the adapter and the tool-selection
options, ``mor-ext agent`` with them."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))  # the agent tests' tiny model and tokenizer
from agent_helpers import CHATML_TEMPLATE, build_tokenizer  # noqa: E402
from test_agentflux_scheme import agentflux_model  # noqa: E402

import mor_ext  # noqa: E402
from mor_ext.cli import build_parser, main  # noqa: E402
from mor_ext.train import TrainConfig  # noqa: E402

GENERATION_PROMPT = "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("agentflux-cli")
    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHATML_TEMPLATE + GENERATION_PROMPT
    model = agentflux_model(len(tokenizer)).to(torch.float32)
    mor_ext.save_adapter(model, root / "adapter")
    mor_ext.unpatch(model)
    model.config.max_position_embeddings = 16384  # BFCL's prompts in a 600-token vocabulary are long
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root


def test_train_flags_map_onto_the_config():
    args = build_parser().parse_args(["train", "--data", "d.jsonl", "--out", "o", "--scheme", "agentflux",
                                      "--tool-groups", "families", "--loss-roles", "selector", "--train-roles",
                                      "selector", "--role-lr", "selector=2,arguments=0.5", "--init-adapter", "a"])
    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**fields)
    assert (config.scheme, config.tool_groups, config.loss_roles, config.train_roles, config.init_adapter) == (
        "agentflux", "families", ["selector"], ["selector"], "a")
    assert config.role_lr == {"selector": 2.0, "arguments": 0.5}
    with pytest.raises(ValueError, match="method='mor'"):
        TrainConfig(out_dir="o", data="d", scheme="agentflux", method="lora")


@pytest.mark.bfcl
def test_eval_bfcl_takes_the_scheme_from_the_adapter_with_every_selection_option(dirs, tmp_path, capsys):
    out = tmp_path / "bfcl"
    code = main(["eval", "bfcl", "--model", str(dirs / "model"), "--adapter", str(dirs / "adapter"),
                 "--categories", "multiple", "--limit", "2", "--max-new-tokens", "24", "--batch-size", "2",
                 "--constrain-names", "--vote", "3", "--max-tools", "2", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["scheme"] == "agentflux"
    assert summary["settings"]["selection"] == {"constrain_names": True, "constrain_args": False, "calls_from_plan": False,
                                                "distinct_calls": False, "vote": 3, "vote_temperature": 1.0,
                                                "seed": 0, "max_tools": 2, "categories": None}
    from mor_ext.eval.bfcl import load_category

    functions = {q.id: {f["name"] for f in q.functions} for q in load_category("multiple", 2)}
    from mor_ext.schemes import CallScanner

    named = 0
    for line in (out / "BFCL_v4_multiple_verdicts.json").read_text().splitlines():
        verdict = json.loads(line)
        # whatever the random model wrote, every function name in the executor's text is an offered one
        scanner = CallScanner()
        for ch in verdict["raw"]:
            scanner.feed(ch)
        names = scanner.names  # the names written to their closing quote (a turn may be cut mid-name)
        assert set(names) <= functions[verdict["id"]], (names, functions[verdict["id"]])
        named += len(names)
    assert named  # the random model did write calls
    assert main(["eval", "bfcl", "--mode", "prompt", "--categories", "multiple", "--constrain-names"]) == 2
    assert "apply to --mode agent" in capsys.readouterr().err


def test_agent_command_with_selection_options(dirs):
    from mor_ext.agent.command import run_command

    out = io.StringIO()
    args = build_parser().parse_args(["agent", "--model", str(dirs / "model"), "--adapter", str(dirs / "adapter"),
                                      "--constrain-names", "--constrain-args", "--vote", "2", "--max-repeated-calls", "2",
                                      "--max-tools", "2",
                                      "--max-turn-tokens", "12", "--max-steps", "1", "What is 2 + 3?"])
    assert run_command(args, out) == 0
    assert "answer (" in out.getvalue()


@pytest.mark.bfcl
def test_eval_bfcl_with_constrained_arguments_writes_calls_the_schemas_accept(dirs, tmp_path, capsys):
    pytest.importorskip("llguidance")
    import jsonschema

    from mor_ext.agent.parsing import parse_executor_output
    from mor_ext.eval.bfcl import load_category
    from mor_ext.eval.bfcl.calls import schema_tools
    from mor_ext.eval.bfcl.shim import bfcl

    out = tmp_path / "bfcl"
    code = main(["eval", "bfcl", "--model", str(dirs / "model"), "--adapter", str(dirs / "adapter"),
                 "--categories", "multiple", "--limit", "3", "--max-new-tokens", "24", "--batch-size", "3",
                 "--constrain-args", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["selection"]["constrain_args"] is True
    b = bfcl()
    tools = {q.id: schema_tools(q.functions, lambda f: b.convert_to_tool(f, b.GORILLA_TO_OPENAPI, b.ModelStyle.OSSMODEL))
             for q in load_category("multiple", 3)}
    verdicts = [json.loads(line) for line in (out / "BFCL_v4_multiple_verdicts.json").read_text().splitlines()]
    assert len(verdicts) == 3
    checked = 0
    for verdict in verdicts:
        if not verdict["raw"]:  # the random reasoner went to the summarizer: no call to check
            continue
        parsed = parse_executor_output(verdict["raw"])
        assert parsed.ok, verdict["raw"]
        for call in parsed.calls:  # whatever the random model wrote: offered functions, valid arguments
            jsonschema.validate(call.arguments, tools[verdict["id"]][call.name].parameters)
            checked += 1
    assert checked
