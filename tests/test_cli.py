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
