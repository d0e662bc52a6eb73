"""Scoring BFCL answers as BFCL does, and its aggregates.

One answer (:func:`score_answer`) follows BFCL's ``eval_runner`` entry by entry: the result text is
decoded with BFCL's ``default_decode_ast_prompting`` (in the category's language), must be in
function-calling form, and goes to BFCL's ``ast_checker`` with the possible answers; relevance and
irrelevance decode as Python, and an answer "holds a call" when it decodes to a non-empty call list
(BFCL's ``is_empty_output``): relevance is right iff it does, irrelevance iff it does not. BFCL's runner
itself cannot be imported without its heavy dependencies, so these few lines of its control flow are
restated here; the decoding and checking are BFCL's own functions.

Aggregates (:func:`aggregates`), as BFCL's leaderboard defines them:

* ``simple``: unweighted mean of simple_python, simple_java, simple_javascript;
* ``non_live``: unweighted mean of simple, multiple, parallel, parallel_multiple;
* ``live``: mean over the items of live_simple, live_multiple, live_parallel, live_parallel_multiple;
* ``relevance``: live_relevance; ``irrelevance``: unweighted mean of irrelevance and live_irrelevance.

An aggregate with a category missing from the run has accuracy None (BFCL shows "N/A") and names
the missing ones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .data import IRRELEVANCE, RELEVANCE, Question
from .shim import MODEL_NAME, bfcl

__all__ = ["Verdict", "CategoryScore", "Aggregate", "score_answer", "category_score", "aggregates", "AGGREGATES"]


@dataclass(frozen=True)
class Verdict:
    """The checker's verdict on one answer; ``error`` / ``error_type`` as BFCL writes them."""

    id: str
    valid: bool
    error: tuple[str, ...] = ()
    error_type: str | None = None
    decoded: Any = None  # the decoded calls (None where decoding failed)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "valid": self.valid, "error": list(self.error), "error_type": self.error_type,
                "decoded": _jsonable(self.decoded)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)


@dataclass(frozen=True)
class CategoryScore:
    category: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "accuracy": self.accuracy, "correct_count": self.correct,
                "total_count": self.total}


@dataclass(frozen=True)
class Aggregate:
    name: str
    accuracy: float | None  # None: a component category was not run
    total: int  # questions behind it
    missing: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "accuracy": self.accuracy, "total_count": self.total, "missing": list(self.missing)}


def _decode(text: str, language: str) -> Any:
    b = bfcl()
    return b.decode_ast(text, getattr(b.ReturnFormat, language.upper()), False)


def score_answer(question: Question, result: str) -> Verdict:
    """BFCL's verdict on ``result`` (an answer in BFCL's result text) to ``question``."""
    b = bfcl()
    category = question.category
    if category in RELEVANCE + IRRELEVANCE:
        try:
            decoded = _decode(result, "python")
            has_call = not b.is_empty_output(decoded)
            error = ""
        except Exception as exc:  # BFCL: any decoding failure means "no call"
            decoded, has_call, error = None, False, str(exc)
        if category in IRRELEVANCE:
            if has_call:
                return Verdict(question.id, False, ("Valid syntax. Successfully decode AST when it should not.",),
                               "irrelevance_error:decoder_success", decoded)
            return Verdict(question.id, True, decoded=decoded)
        if not has_call:
            return Verdict(question.id, False, (f"Invalid syntax. Failed to decode AST when it should have. {error}",),
                           "relevance_error:decoder_failed", decoded)
        return Verdict(question.id, True, decoded=decoded)

    try:
        decoded = _decode(result, question.language)
    except Exception as exc:
        return Verdict(question.id, False, (f"Invalid syntax. Failed to decode AST. {exc}",), "ast_decoder:decoder_failed")
    if not b.is_function_calling_format_output(decoded):
        return Verdict(question.id, False, ("Did not output in the specified format.",),
                       "ast_decoder:decoder_wrong_output_format", decoded)
    try:
        checked = b.ast_checker(copy.deepcopy(list(question.check_functions)), decoded,
                                copy.deepcopy(list(question.answer)), getattr(b.Language, question.language.upper()),
                                category, MODEL_NAME)
    except Exception as exc:  # BFCL's runner would stop here; one odd answer must not end a long run
        return Verdict(question.id, False, (f"The checker raised {type(exc).__name__}: {exc}",),
                       "checker_exception", decoded)
    if checked["valid"]:
        return Verdict(question.id, True, decoded=decoded)
    return Verdict(question.id, False, tuple(checked["error"]), checked["error_type"], decoded)


# name -> (components, weighting): "unweighted" = mean of the components' accuracies, "items" = over items
AGGREGATES: dict[str, tuple[tuple[str, ...], str]] = {
    "simple": (("simple_python", "simple_java", "simple_javascript"), "unweighted"),
    "non_live": (("simple", "multiple", "parallel", "parallel_multiple"), "unweighted"),
    "live": (("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"), "items"),
    "relevance": (("live_relevance",), "items"),
    "irrelevance": (("irrelevance", "live_irrelevance"), "unweighted"),
}


def aggregates(scores: Mapping[str, CategoryScore]) -> dict[str, Aggregate]:
    """BFCL's summary scores from per-category scores (see the module docstring)."""
    out: dict[str, Aggregate] = {}
    for name, (components, weighting) in AGGREGATES.items():
        parts: list[tuple[float | None, int]] = []
        missing: list[str] = []
        for component in components:
            if component in out and component != name:  # an aggregate of aggregates (non_live holds simple)
                part = out[component]
                missing += part.missing
                parts.append((part.accuracy, part.total))
            elif component in scores:
                parts.append((scores[component].accuracy, scores[component].total))
            else:
                missing.append(component)
                parts.append((None, 0))
        total = sum(n for _, n in parts)
        if missing:
            accuracy = None
        elif weighting == "items":
            accuracy = sum(a * n for a, n in parts) / total if total else None
        else:
            accuracy = sum(a for a, _ in parts) / len(parts)
        out[name] = Aggregate(name, accuracy, total, tuple(missing))
    return out


def category_score(category: str, verdicts: Sequence[Verdict]) -> CategoryScore:
    return CategoryScore(category, sum(v.valid for v in verdicts), len(verdicts))
