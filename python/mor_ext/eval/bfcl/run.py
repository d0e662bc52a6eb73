""":func:`evaluate`: answer BFCL categories, score them with BFCL's checker, write BFCL's files.

Files written to ``out`` (JSON lines in question order, except ``summary.json``):

    BFCL_v4_<category>_result.json    {"id": ..., "result": "[func(a=1)]"}: BFCL's result-file shape,
                                      re-scorable with BFCL's own tools
    BFCL_v4_<category>_score.json     BFCL's score-file shape: {"accuracy", "correct_count",
                                      "total_count"}, then one line per wrong answer with its errors
    BFCL_v4_<category>_verdicts.json  every question: the checker's verdict, error messages, the decoded
                                      calls, what the model wrote (agent mode: status, reasoner text)
    summary.json                      per-category scores, BFCL's aggregates, settings, throughput
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...agent.batch import TokenChooser
from ..first_calls import Selection
from .data import AST_LIVE, AST_NON_LIVE, IRRELEVANCE, RELEVANCE, load_category, resolve_categories
from .generation import Answer, answer_as_agent, answer_with_prompt
from .scoring import Aggregate, CategoryScore, Verdict, aggregates, category_score, score_answer

__all__ = ["MODES", "BFCLResult", "evaluate", "result_file_name"]

MODES = ("agent", "prompt")
VERSION_PREFIX = "BFCL_v4"  # BFCL's file prefix (bfcl_eval.constants.category_mapping.VERSION_PREFIX)


def result_file_name(category: str, kind: str = "result") -> str:
    """BFCL's file name of a category's ``result`` or ``score`` file (and our ``verdicts``)."""
    return f"{VERSION_PREFIX}_{category}_{kind}.json"


@dataclass
class BFCLResult:
    """Per-category scores, BFCL's aggregates, the per-question verdicts and the run's throughput."""

    mode: str
    scores: dict[str, CategoryScore]
    aggregates: dict[str, Aggregate]
    verdicts: dict[str, list[Verdict]]
    seconds: float
    out: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def questions(self) -> int:
        return sum(s.total for s in self.scores.values())

    @property
    def questions_per_minute(self) -> float:
        return 60.0 * self.questions / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "settings": self.settings,
                "scores": {c: s.to_dict() for c, s in self.scores.items()},
                "aggregates": {n: a.to_dict() for n, a in self.aggregates.items()},
                "questions": self.questions, "seconds": round(self.seconds, 2),
                "questions_per_minute": round(self.questions_per_minute, 2)}

    def table(self) -> str:
        """The scores as text: AST categories and irrelevance side by side (a model that never calls
        scores 100% on irrelevance alone), then the aggregates."""
        def pct(value: float | None) -> str:
            return "N/A" if value is None else f"{100 * value:5.1f}%"

        lines = [f"BFCL ({self.mode} mode): {self.questions} questions in {self.seconds:.0f} s, "
                 f"{self.questions_per_minute:.1f} questions/min"]
        order = [c for c in AST_NON_LIVE + AST_LIVE + RELEVANCE + IRRELEVANCE if c in self.scores]
        width = max([len(c) for c in order] + [22])
        for category in order:
            s = self.scores[category]
            lines.append(f"  {category:<{width}} {pct(s.accuracy)}  ({s.correct}/{s.total})")
        names = {"simple": "simple (non-live)", "non_live": "non-live AST", "live": "live AST",
                 "relevance": "relevance", "irrelevance": "irrelevance"}
        for name, agg in self.aggregates.items():
            if agg.total == 0:
                continue  # nothing of it was run
            note = f"  (missing: {', '.join(agg.missing)})" if agg.missing else ""
            lines.append(f"  {names[name]:<{width}} {pct(agg.accuracy)}{note}")
        if "irrelevance" in self.aggregates and not any(c in self.scores for c in AST_NON_LIVE + AST_LIVE):
            lines.append("  note: irrelevance alone proves nothing (a model that never calls scores 100%); "
                         "run AST categories beside it")
        return "\n".join(lines)


def _write_lines(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def _write_category(out: Path, category: str, answers: Sequence[Answer], verdicts: Sequence[Verdict],
                    score: CategoryScore) -> None:
    _write_lines(out / result_file_name(category), [{"id": a.id, "result": a.result} for a in answers])
    failures = [{"id": v.id, "test_category": category, "valid": False, "error": list(v.error),
                 "error_type": v.error_type, "model_result_raw": a.result, "model_result_decoded": v.to_dict()["decoded"]}
                for a, v in zip(answers, verdicts) if not v.valid]
    header = {"accuracy": score.accuracy, "correct_count": score.correct, "total_count": score.total}
    _write_lines(out / result_file_name(category, "score"), [header, *failures])
    _write_lines(out / result_file_name(category, "verdicts"),
                 [{**v.to_dict(), "result": a.result, "raw": a.raw, "status": a.status, **a.extra}
                  for a, v in zip(answers, verdicts)])


class _Progress:
    """tqdm over all questions (a plain line per update without tqdm), with questions/minute."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.start, self.enabled = total, 0, time.perf_counter(), enabled
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, unit="q", desc="BFCL", dynamic_ncols=True)
            except ImportError:
                pass

    def category(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_description(f"BFCL {name}")

    def __call__(self, n: int) -> None:
        self.done += n
        rate = 60.0 * self.done / max(time.perf_counter() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rate:.1f} q/min", refresh=False)
            self.bar.update(n)
        elif self.enabled:
            print(f"BFCL {self.done}/{self.total} questions, {rate:.1f} q/min", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def evaluate(model: torch.nn.Module, tokenizer, categories: Sequence[str] = ("non_live",), *, mode: str = "agent",
             limit: int | None = None, out: str | Path | None = None, batch_size: int = 8,
             max_new_tokens: int = 256, system: str | None = None, progress: bool = True,
             meta: Mapping[str, Any] | None = None,
             on_category: Callable[[str, CategoryScore], None] | None = None,
             choose: TokenChooser | None = None, selection: Selection | None = None) -> BFCLResult:
    """Answer and score BFCL ``categories`` (names or BFCL collections such as ``non_live``).

    ``mode``: ``agent`` (the model as the project's agent; a MoR, plain-LoRA or base model) or
    ``prompt`` (BFCL's prompt-mode system prompt, for untuned models); see
    :mod:`mor_ext.eval.bfcl.generation`. ``limit``: the first N questions of each category. ``out``:
    a directory for BFCL's result and score files, the verdicts and ``summary.json`` (nothing is
    written without it). ``system``: agent mode's system prompt (the one the model was trained with;
    BFCL's own system messages are appended to it). Decoding is greedy; ``max_new_tokens`` bounds each
    generation (agent mode: each role turn). ``meta`` is recorded with the settings (model, adapter,
    method); ``on_category(category, score)`` is called as each category is scored. ``choose``: agent
    mode's token chooser instead of greedy decoding (tests script the model's text). ``selection``:
    agent mode's tool selection (constrained names, majority vote, hierarchical; ``docs/spec.md`` §7).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be at least 1, got {batch_size}, {max_new_tokens}")
    names = resolve_categories(categories)
    loaded = {c: load_category(c, limit) for c in names}
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    bar = _Progress(sum(len(q) for q in loaded.values()), progress)
    scores: dict[str, CategoryScore] = {}
    all_verdicts: dict[str, list[Verdict]] = {}
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        for category, questions in loaded.items():
            bar.category(category)
            if mode == "agent":
                answers = answer_as_agent(model, tokenizer, questions, system=system, batch_size=batch_size,
                                          max_new_tokens=max_new_tokens, progress=bar, choose=choose,
                                          selection=selection)
            else:
                answers = answer_with_prompt(model, tokenizer, questions, batch_size=batch_size,
                                             max_new_tokens=max_new_tokens, progress=bar)
            verdicts = [score_answer(q, a.result) for q, a in zip(questions, answers)]
            scores[category] = category_score(category, verdicts)
            all_verdicts[category] = verdicts
            if out_dir is not None:
                _write_category(out_dir, category, answers, verdicts, scores[category])
            if on_category is not None:
                on_category(category, scores[category])
    finally:
        bar.close()
        model.train(was_training)
    settings = {"categories": names, "limit": limit, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                "system": system, "decoding": "greedy",
                "selection": (selection or Selection()).to_dict() if mode == "agent" else None, **(meta or {})}
    result = BFCLResult(mode, scores, aggregates(scores), all_verdicts, time.perf_counter() - start, out_dir, settings)
    if out_dir is not None:
        (out_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return result
