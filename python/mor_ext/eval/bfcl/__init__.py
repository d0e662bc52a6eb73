"""BFCL (the Berkeley Function Calling Leaderboard) for tuned and untuned models: ``mor-ext eval bfcl``.

    shim.py        imports BFCL's own checker, decoders and loaders without its heavy dependencies
    data.py        BFCL's single-turn categories and questions (``bfcl-eval``'s data files)
    calls.py       the agent's calls -> BFCL's Python-call text; BFCL functions -> schema-only tools
    generation.py  answering: as the project's agent (``agent``) or with BFCL's prompt (``prompt``)
    scoring.py     one answer through BFCL's decoder and ``ast_checker``; BFCL's aggregates
    run.py         :func:`evaluate`: categories -> answers -> verdicts -> BFCL's files, :class:`BFCLResult`
    command.py     ``mor-ext eval bfcl``

Scoring is BFCL's own ``ast_checker`` on answers decoded by BFCL's own decoder, so the result files
can be re-scored with BFCL's tools. BFCL is for evaluation only: nothing here builds training data.
Layering: as :mod:`mor_ext.eval`.

    from mor_ext.eval.bfcl import evaluate
    result = evaluate(model, tokenizer, ["simple_python", "irrelevance"], mode="agent", limit=40, out="runs/bfcl")
    print(result.table()); result.aggregates["non_live"].accuracy
"""

from .calls import call_text, calls_text, schema_tools
from .data import AST_LIVE, AST_NON_LIVE, IRRELEVANCE, RELEVANCE, SINGLE_TURN, Question, load_category, resolve_categories
from .run import MODES, BFCLResult, evaluate
from .scoring import Aggregate, CategoryScore, Verdict, aggregates, score_answer

__all__ = [
    "evaluate", "BFCLResult", "MODES", "CategoryScore", "Aggregate", "Verdict", "aggregates", "score_answer",
    "Question", "load_category", "resolve_categories", "AST_NON_LIVE", "AST_LIVE", "RELEVANCE", "IRRELEVANCE",
    "SINGLE_TURN", "call_text", "calls_text", "schema_tools",
]
