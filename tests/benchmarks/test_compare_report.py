"""benchmarks/compare_methods.py report: the BFCL table it prints from a results directory."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compare_methods():
    spec = importlib.util.spec_from_file_location("compare_methods", ROOT / "benchmarks" / "compare_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(run: Path, category: str, valid: list[bool], *, id_suffix: str = "") -> None:
    """A run's BFCL files as ``mor-ext eval bfcl`` writes them: verdicts one line a question, and the
    score file whose first line is the category's score."""
    run.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"{category}_{i}{id_suffix}", "valid": v} for i, v in enumerate(valid)]
    # Out of order on purpose: "the first N" means BFCL's question numbers, not the file's line order.
    rows = rows[::-1]
    (run / f"BFCL_v4_{category}_verdicts.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    score = {"accuracy": sum(valid) / len(valid), "correct_count": sum(valid), "total_count": len(valid)}
    (run / f"BFCL_v4_{category}_score.json").write_text(json.dumps(score) + "\n")


def _row(output: str, run: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(f"| {run} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_scores_each_run_on_its_first_questions_only(compare_methods, tmp_path, capsys):
    """--first N counts only questions 0..N-1 of each category (by BFCL's id, live ids included), takes
    categories from the run's ``-more`` directory too, and leaves out runs that answered fewer than N."""
    results = tmp_path / "bfcl"
    # simple_python: 12 answered, correct at 0, 1 and 11: the first 10 hold 2 correct (the last 10 lines only 1), all 12 hold 3.
    _write_run(results / "long", "simple_python", [i in (0, 1, 11) for i in range(12)])
    _write_run(results / "long-more", "live_simple", [i < 7 for i in range(15)], id_suffix="-4-0")
    _write_run(results / "short", "simple_python", [True] * 5)

    compare_methods.main(["report", "--out", str(tmp_path / "none"), "--results", str(results), "--first", "10"])
    out = capsys.readouterr().out
    header = _row(out, "run")
    long = dict(zip(header, _row(out, "long")))
    assert long["simple_python"] == "20.0 (2/10)"
    assert long["live_simple"] == "70.0 (7/10)"
    assert long["mode"] == "agent"
    assert "| short |" not in out

    compare_methods.main(["report", "--out", str(tmp_path / "none"), "--results", str(results)])
    out = capsys.readouterr().out
    assert dict(zip(header, _row(out, "long")))["simple_python"] == "25.0 (3/12)"
    assert dict(zip(header, _row(out, "short")))["simple_python"] == "100.0 (5/5)"


def test_report_rejects_a_first_below_one(compare_methods, tmp_path):
    with pytest.raises(SystemExit):
        compare_methods.main(["report", "--out", str(tmp_path), "--first", "0"])
