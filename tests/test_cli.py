"""The ``mor-ext data`` subcommands (``mor-ext train`` is tested in tests/train/test_trainer.py)."""

from __future__ import annotations

import json

import pytest

# validate checks the file against BFCL, which needs the BFCL data.
pytestmark = pytest.mark.bfcl


def test_cli_data_generate_and_validate(tmp_path, capsys):
    from mor_ext.cli import main

    out = tmp_path / "gen.jsonl"
    assert main(["data", "generate", "--n", "3", "--out", str(out), "--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 3
    assert main(["data", "validate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] == 3
    out.write_text(out.read_text() + "{not json}\n")
    assert main(["data", "validate", str(out)]) == 1
    assert json.loads(capsys.readouterr().out)["bad"] == 1


def test_cli_data_generate_split_mix_and_pattern_report(tmp_path, capsys):
    from mor_ext.cli import main
    from mor_ext.tools.families import specs

    out = tmp_path / "held.jsonl"
    assert main(["data", "generate", "--n", "20", "--out", str(out), "--split", "heldout", "--mix",
                 "parallel_same=1,refusal_near_miss=1", "--forms", "respectively", "--tokenizer", "none"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)["patterns"]
    assert report["kinds"]["parallel_same"]["count"] == 10 and report["kinds"]["refusal_near_miss"]["count"] == 10
    assert report["same_tool_surface_forms"] == {"respectively": {"count": 10, "share": 1.0}}
    assert "calls per turn" in captured.err
    names = {json.loads(line)["tools"][0]["name"] for line in out.read_text().splitlines()}
    assert names <= {s.name for s in specs("heldout")}
    assert main(["data", "validate", str(out), "--tokenizer", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["patterns"]["executor_turns"] == 10


def test_cli_data_generate_list_requests(tmp_path, capsys):
    from mor_ext.cli import main

    out = tmp_path / "listed.jsonl"
    assert main(["data", "generate", "--n", "6", "--out", str(out), "--seed", "2", "--tokenizer", "none",
                 "--mix", "single=1,parallel_same=1", "--list-requests"]) == 0
    capsys.readouterr()
    plans = [next(t["content"] for t in json.loads(line)["turns"] if t["role"] == "reasoner")
             for line in out.read_text().splitlines()]
    assert len(plans) == 6 and all(p.startswith("Asked: 1) ") for p in plans)
    assert any("; 2) " in p.split(". ")[0] for p in plans)  # a several-request listing
