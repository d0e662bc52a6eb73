"""BFCL decontamination: the tool library and generated data are clean; planted overlaps are caught.

Tests that need the BFCL data skip unless bfcl-eval is installed (``pip install --no-deps bfcl-eval``).
"""

from __future__ import annotations

import json
import sys

import pytest

from mor_ext.data import decontamination, synthetic
from mor_ext.data.decontamination import (
    NGRAM_N,
    BfclNotInstalledError,
    ContaminationError,
    assert_clean,
    bfcl_data_dir,
    check,
    load_bfcl_index,
    normalize_function_name,
    normalize_words,
)
from mor_ext.data.synthetic import generate
from mor_ext.data.trajectory import Tool, Trajectory, Turn
from mor_ext.tools.catalogue import CATALOGUE

def trajectory(query: str, tool_name: str = "country_capital_city", tid: str = "planted") -> Trajectory:
    tool = Tool(tool_name, "A tool.", {"type": "object", "properties": {}, "required": []})
    turns = (Turn("user", query), Turn("reasoner", "No tool needed.", "summarizer"), Turn("summarizer", "Done."))
    return Trajectory((tool,), turns, id=tid)


def first_bfcl_question(min_words: int, max_words: int = 10_000) -> str:
    """A real BFCL question (read here only to plant it; training code never reads BFCL)."""
    path = bfcl_data_dir() / "BFCL_v4_simple_python.json"
    for line in path.read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["question"][0][0]["content"]
        if min_words <= len(normalize_words(text)) <= max_words:
            return text
    raise AssertionError("no BFCL question of that length")


@pytest.fixture(scope="module")
def index():
    return load_bfcl_index()


def test_normalisation():
    assert normalize_function_name("math.Circle_Area") == "circlearea"
    assert normalize_function_name("GeometryPresentation.createPresentation") == "createpresentation"
    assert normalize_function_name("convert-currency") == "convertcurrency"
    assert normalize_words("What's the AREA, of a circle?!") == ("what", "s", "the", "area", "of", "a", "circle")
    assert NGRAM_N == 8


def test_missing_bfcl_says_how_to_install(monkeypatch):
    monkeypatch.setattr(decontamination.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BfclNotInstalledError, match="pip install --no-deps bfcl-eval"):
        bfcl_data_dir()
    with pytest.raises(BfclNotInstalledError, match="--no-deps"):
        load_bfcl_index()


@pytest.mark.bfcl
def test_index_reads_bfcl_without_importing_it(index):
    assert len(index.names) > 1000 and len(index.questions) > 1000 and index.files > 10
    assert "calculatetrianglearea" in index.names
    assert "bfcl_eval" not in sys.modules  # the data files are read; the package is never imported
    assert load_bfcl_index() is index  # cached


@pytest.mark.bfcl
def test_tool_library_is_clean(index):
    report = check([], index, tools=list(CATALOGUE.values()))
    assert report.clean, report.summary()
    assert report.tool_names == len(CATALOGUE)


@pytest.mark.bfcl
def test_generated_data_is_clean(index):
    data = generate(500, seed=0)  # runs assert_clean itself
    report = check(data, index)
    assert report.clean, report.summary()
    assert report.trajectories == 500


@pytest.mark.bfcl
@pytest.mark.parametrize("name", ["calculate_triangle_area", "math.calculate_triangle_area", "Calculate-Triangle-Area",
                                  "mytools.calculate_triangle_area", "math_factorial", "factorial"])
def test_planted_tool_name_is_detected(index, name):
    report = check([trajectory("Hello there.", tool_name=name)], index)
    assert not report.clean and report.name_hits[0].name == name
    assert report.name_hits[0].where == "planted"


@pytest.mark.bfcl
def test_planted_call_name_and_library_name_are_detected(index):
    from mor_ext.data.trajectory import ToolCall
    traj = trajectory("Hello there.")
    turns = (traj.turns[0], Turn("reasoner", "Call it.", "executor"), Turn("executor", calls=(ToolCall("math.factorial", {}),)),
             Turn("observation", "{}"), Turn("reasoner", "Done.", "summarizer"), Turn("summarizer", "Done."))
    report = check([Trajectory(traj.tools, turns, id="t")], index, tools=["spotify.play"])
    assert {h.name for h in report.name_hits} == {"math.factorial", "spotify.play"}


@pytest.mark.bfcl
def test_planted_query_copied_from_bfcl_is_detected(index):
    question = first_bfcl_question(min_words=NGRAM_N + 2)
    planted = "Hey, quick one: " + question.upper().replace(".", "!!") + " Thanks."
    report = check([trajectory("What's the capital of Peru?", tid="ok"), trajectory(planted, tid="copied")], index)
    assert [h.where for h in report.query_hits] == ["copied"]
    assert report.query_hits[0].ngram in " ".join(normalize_words(question))


@pytest.mark.bfcl
def test_planted_short_question_is_detected_by_exact_match(index):
    short = "What is my first name?"  # a question of BFCL's memory category
    assert len(normalize_words(short)) < NGRAM_N
    report = check([trajectory(short)], index)
    assert [h.ngram for h in report.query_hits] == ["what is my first name"]
    assert check([trajectory("What is my first name, please, if you recall?")], index).clean


@pytest.mark.bfcl
def test_assert_clean_lists_offenders(index):
    question = first_bfcl_question(min_words=NGRAM_N)
    bad = [trajectory(question, tool_name="calculate_triangle_area", tid="bad-1")]
    with pytest.raises(ContaminationError) as info:
        assert_clean(bad, index)
    message = str(info.value)
    assert "calculate_triangle_area" in message and "bad-1" in message and "query" in message
    assert len(info.value.report.name_hits) == 1 and len(info.value.report.query_hits) == 1
    assert assert_clean([trajectory("Which city is the capital of Peru?")], index).clean


@pytest.mark.bfcl
def test_generator_refuses_contaminated_data(monkeypatch):
    question = first_bfcl_question(min_words=NGRAM_N)
    planted = (((question.replace("{", "{{").replace("}", "}}"),), "a copied question", False, ("An answer.",)),)
    monkeypatch.setattr(synthetic.generator, "NO_TOOL", planted)
    with pytest.raises(ContaminationError, match="shares"):
        generate(5, seed=0, mix={"no_tool": 1})
    assert len(generate(5, seed=0, mix={"no_tool": 1}, skip_decontamination_for_generator_tests=True)) == 5
