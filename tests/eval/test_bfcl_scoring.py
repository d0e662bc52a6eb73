"""Answers scored by BFCL's own decoder and checker, and BFCL's aggregates."""

from __future__ import annotations

import pytest

from mor_ext.data.trajectory import ToolCall
from mor_ext.eval.bfcl import (AST_LIVE, AST_NON_LIVE, IRRELEVANCE, RELEVANCE, CategoryScore, aggregates, calls_text,
                               load_category, resolve_categories, score_answer)
from mor_ext.eval.bfcl.shim import bfcl


def _first_option(value):
    """One answer from BFCL's possible answers: the first option of each parameter, optional ones ("")
    left out, nested objects likewise."""
    if isinstance(value, dict):
        return {k: _first_option(o[0] if isinstance(o, list) else o) for k, o in value.items()
                if not (isinstance(o, list) and (not o or o[0] == ""))}
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        return [_first_option(x) for x in value]
    return value


def correct_calls(question) -> list[ToolCall]:
    return [ToolCall(name, _first_option(params)) for item in question.answer for name, params in item.items()]


@pytest.mark.bfcl
def test_our_categories_are_bfcls_single_turn_categories():
    mapping = bfcl().categories
    assert set(AST_NON_LIVE) | {"irrelevance"} == set(mapping.NON_LIVE_CATEGORY)
    assert set(AST_LIVE) | set(RELEVANCE) | {"live_irrelevance"} == set(mapping.LIVE_CATEGORY)
    assert set(IRRELEVANCE) == {"irrelevance", "live_irrelevance"}


@pytest.mark.bfcl
def test_collections_expand_and_unsupported_categories_are_refused():
    assert resolve_categories(["non_live"]) == list(bfcl().categories.NON_LIVE_CATEGORY)
    assert resolve_categories(["simple_python", "python", "simple_python"])[:2] == ["simple_python", "irrelevance"]
    with pytest.raises(ValueError, match="single-turn categories only"):
        resolve_categories(["multi_turn_base"])
    with pytest.raises(ValueError, match="holds"):
        resolve_categories(["all"])
    with pytest.raises(ValueError, match="limit must be at least 1"):
        load_category("simple_python", limit=0)


@pytest.mark.bfcl
@pytest.mark.parametrize("category", ["simple_python", "simple_javascript", "multiple", "parallel", "parallel_multiple",
                                      "live_simple", "live_parallel"])
def test_known_correct_answers_score_one_and_wrong_ones_zero(category):
    questions = load_category(category, limit=12)
    assert len(questions) == 12 and all(q.category == category and q.answer for q in questions)
    for q in questions:
        calls = correct_calls(q)
        verdict = score_answer(q, calls_text(calls, q.language))
        assert verdict.valid, (q.id, verdict)
        # the same answer with the first call's function renamed: BFCL's checker rejects it
        wrong = [ToolCall(calls[0].name + "_x", calls[0].arguments), *calls[1:]]
        verdict = score_answer(q, calls_text(wrong, q.language))
        assert not verdict.valid and verdict.error and verdict.error_type


@pytest.mark.bfcl
def test_a_wrong_value_and_a_prose_answer_are_scored_as_bfcl_does():
    q = load_category("simple_python", limit=1)[0]  # calculate_triangle_area(base=10, height=5)
    call = correct_calls(q)[0]
    verdict = score_answer(q, calls_text([ToolCall(call.name, {**call.arguments, "base": 11})]))
    assert not verdict.valid and verdict.error_type == "value_error:others" and "base" in verdict.error[0]
    prose = score_answer(q, "The area is 25 square units.")
    assert not prose.valid and prose.error_type == "ast_decoder:decoder_failed"
    # BFCL's decoder strips code fences and adds missing brackets
    fenced = score_answer(q, "```\n" + calls_text([call])[1:-1] + "\n```")
    assert fenced.valid


@pytest.mark.bfcl
def test_irrelevance_is_right_without_a_call_and_relevance_with_one():
    irrelevant = load_category("irrelevance", limit=1)[0]
    assert irrelevant.answer is None
    name = irrelevant.functions[0]["name"]
    assert score_answer(irrelevant, "[]").valid
    assert score_answer(irrelevant, "I cannot answer this with the given functions.").valid
    called = score_answer(irrelevant, f"[{name}(x=1)]")
    assert not called.valid and called.error_type == "irrelevance_error:decoder_success"
    relevant = load_category("live_relevance", limit=1)[0]
    assert score_answer(relevant, f"[{relevant.functions[0]['name']}(prompt='x')]").valid
    missed = score_answer(relevant, "[]")
    assert not missed.valid and missed.error_type == "relevance_error:decoder_failed"


def _scores(**accuracies: tuple[int, int]) -> dict[str, CategoryScore]:
    return {c: CategoryScore(c, correct, total) for c, (correct, total) in accuracies.items()}


def test_aggregates_are_bfcls():
    scores = _scores(simple_python=(300, 400), simple_java=(50, 100), simple_javascript=(10, 50), multiple=(100, 200),
                     parallel=(20, 200), parallel_multiple=(0, 200), irrelevance=(240, 240),
                     live_simple=(100, 258), live_multiple=(200, 1053), live_parallel=(8, 16),
                     live_parallel_multiple=(0, 24), live_irrelevance=(442, 884), live_relevance=(4, 16))
    agg = aggregates(scores)
    simple = (0.75 + 0.5 + 0.2) / 3  # unweighted over the three languages
    assert agg["simple"].accuracy == pytest.approx(simple) and agg["simple"].total == 550
    assert agg["non_live"].accuracy == pytest.approx((simple + 0.5 + 0.1 + 0.0) / 4)
    assert agg["live"].accuracy == pytest.approx((100 + 200 + 8 + 0) / (258 + 1053 + 16 + 24))  # item-weighted
    assert agg["relevance"].accuracy == pytest.approx(0.25)
    assert agg["irrelevance"].accuracy == pytest.approx((1.0 + 0.5) / 2)  # unweighted, not 682 / 1124
    assert not any(a.missing for a in agg.values())


def test_an_aggregate_with_a_missing_category_is_not_a_number():
    agg = aggregates(_scores(simple_python=(10, 40), multiple=(5, 40), parallel=(0, 40), parallel_multiple=(0, 40),
                             irrelevance=(40, 40)))
    assert agg["simple"].accuracy is None and agg["simple"].missing == ("simple_java", "simple_javascript")
    assert agg["non_live"].accuracy is None and agg["non_live"].missing == ("simple_java", "simple_javascript")
    assert agg["irrelevance"].accuracy is None and agg["irrelevance"].missing == ("live_irrelevance",)
    assert agg["live"].missing == ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
