"""BFCL's single-turn categories and their questions, read from the ``bfcl-eval`` package.

Questions are loaded as BFCL loads them (``load_dataset_entry``): the model sees the functions with
BFCL's language hints ("Note that the provided function is in Java 8 SDK syntax.", Java and JavaScript
parameters as strings), the checker gets them without (as BFCL's ``evaluate_task`` does). ``limit``
takes the first N questions of a category in file order, so runs with the same limit see the same
questions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .shim import bfcl

__all__ = ["AST_NON_LIVE", "AST_LIVE", "RELEVANCE", "IRRELEVANCE", "SINGLE_TURN", "Question", "language_of",
           "resolve_categories", "load_category"]

# BFCL's single-turn categories (bfcl_eval.constants.category_mapping; a test compares them).
AST_NON_LIVE = ("simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple")
AST_LIVE = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
RELEVANCE = ("live_relevance",)  # right iff the answer holds at least one call
IRRELEVANCE = ("irrelevance", "live_irrelevance")  # right iff the answer holds no valid call
SINGLE_TURN = AST_NON_LIVE + ("irrelevance",) + AST_LIVE + ("live_irrelevance", "live_relevance")


def language_of(category: str) -> str:
    """The language BFCL decodes and checks a category's answers in."""
    return {"simple_java": "java", "simple_javascript": "javascript"}.get(category, "python")


@dataclass(frozen=True)
class Question:
    """One BFCL question: the first (only) turn's messages, the functions as the model sees them
    (``functions``) and as the checker gets them (``check_functions``), and the possible answers
    (None for relevance and irrelevance)."""

    id: str
    category: str
    messages: tuple[dict[str, str], ...]
    functions: tuple[dict[str, Any], ...]
    check_functions: tuple[dict[str, Any], ...]
    answer: tuple[Any, ...] | None

    @property
    def language(self) -> str:
        return language_of(self.category)


def resolve_categories(names: Iterable[str]) -> list[str]:
    """Category names and BFCL's collection names (``non_live``, ``live``, ``single_turn``, ``python``,
    ``non_python``) -> single-turn categories, in the order given, each once."""
    collections = bfcl().categories.TEST_COLLECTION_MAPPING
    out: list[str] = []
    for name in names:
        expanded = collections.get(name, [name])
        unsupported = [c for c in expanded if c not in SINGLE_TURN]
        if unsupported:
            raise ValueError(f"unsupported BFCL category {name!r}" + (f" (holds {unsupported})" if name in collections else "")
                             + f"; single-turn categories only: {', '.join(SINGLE_TURN)}, or a collection of "
                             "them: non_live, live, single_turn, python, non_python")
        out += [c for c in expanded if c not in out]
    if not out:
        raise ValueError("no BFCL category given")
    return out


def load_category(category: str, limit: int | None = None) -> list[Question]:
    """The first ``limit`` questions of ``category`` (all without a limit)."""
    if category not in SINGLE_TURN:
        raise ValueError(f"unsupported BFCL category {category!r}; expected one of {', '.join(SINGLE_TURN)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    b = bfcl()
    shown = b.load_questions(category)
    plain = {e["id"]: e["function"] for e in b.load_questions(category, include_language_specific_hint=False)}
    answers = None
    if category not in RELEVANCE + IRRELEVANCE:
        answers = {e["id"]: e["ground_truth"] for e in b.load_answers(category)}
    questions = []
    for entry in shown[:limit]:
        qid = entry["id"]
        if answers is not None and qid not in answers:
            raise ValueError(f"BFCL data: question {qid} has no possible answer")
        questions.append(Question(qid, category, tuple(entry["question"][0]), tuple(entry["function"]),
                                  tuple(plain[qid]), tuple(answers[qid]) if answers is not None else None))
    return questions
