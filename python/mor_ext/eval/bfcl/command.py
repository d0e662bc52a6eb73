"""``mor-ext eval bfcl``: score a base, plain-LoRA or MoR-tuned model on BFCL's single-turn categories.

    mor-ext eval bfcl [--model M] [--adapter DIR] [--method mor|lora|base] --categories C ... [--limit N]
                      [--out DIR] [--mode agent|prompt] [--batch-size B] [--max-new-tokens N] [--system TEXT]
                      [--constrain-names] [--constrain-args [--calls-from-plan]] [--vote N] [--max-tools N [--tool-categories JSON]]

``--method`` (default: ``mor`` with ``--adapter``, else ``base``): ``mor`` loads a MoR adapter
(:func:`mor_ext.load_adapter`), ``lora`` a PEFT LoRA directory (``mor-ext train --method lora``), merged
into the weights, ``base`` none. Prints the per-category scores and BFCL's aggregates, and writes BFCL's
files to ``--out`` (see :mod:`mor_ext.eval.bfcl.run`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from ...agent.flags import add_selection_arguments
from ..first_calls import Selection, selection_from_args
from ..loading import METHODS, load_for_method

__all__ = ["add_arguments", "run_command"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="'smollm2' (default), a local .gguf file or HF model directory")
    parser.add_argument("--adapter", default=None, help="the adapter directory of a mor-ext train run")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="mor (a MoR adapter), lora (a PEFT LoRA) or base (no adapter); default: mor with "
                             "--adapter, base without")
    parser.add_argument("--categories", nargs="+", required=True, metavar="CATEGORY",
                        help="BFCL single-turn categories (simple_python, multiple, ..., irrelevance, live_simple, ...) "
                             "or collections (non_live, live, single_turn, python, non_python)")
    parser.add_argument("--limit", type=int, default=None, help="the first N questions of each category")
    parser.add_argument("--out", default=None, help="directory for BFCL's result and score files, verdicts, summary")
    parser.add_argument("--mode", choices=("agent", "prompt"), default="agent",
                        help="agent: the model as the project's agent (tuned models); prompt: BFCL's prompt-mode "
                             "system prompt (untuned models). Default agent")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="per generation (agent mode: per role turn)")
    parser.add_argument("--system", default=None, help="agent mode's system prompt (default: none, as the synthetic "
                                                       "training data has)")
    add_selection_arguments(parser, "tool selection (agent mode; docs/spec.md §7). The role scheme (MoRAgent, "
                                    "AgentFlux) is the adapter's own")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")


def run_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from .run import evaluate

    out = out if out is not None else sys.stdout  # looked up per call: it may be replaced after import
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    selection = selection_from_args(args)
    if selection != Selection() and args.mode != "agent":
        raise ValueError("--constrain-names, --constrain-args, --calls-from-plan, --vote and --max-tools apply to --mode agent")
    model, tokenizer, method = load_for_method(args.model, args.adapter, args.method)
    scheme = getattr(getattr(model, "mor_config", None), "scheme", None)
    result = evaluate(model, tokenizer, args.categories, mode=args.mode, limit=args.limit, out=args.out,
                      batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, system=args.system,
                      progress=args.progress, selection=selection,
                      meta={"model": args.model or "smollm2", "adapter": args.adapter, "method": method,
                            "scheme": scheme.name if scheme is not None else "moragent" if method == "mor" else None})
    out.write((json.dumps(result.to_dict(), indent=2) if args.json else result.table()) + "\n")
    return 0
