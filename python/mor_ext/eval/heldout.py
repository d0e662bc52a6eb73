"""Tool generalisation in the project's own terms: the agent on episodes whose tools it never saw.

``mor-ext data generate --split heldout`` writes trajectories over tool families that no training set
offers or calls (:data:`mor_ext.tools.families.HELDOUT_FAMILIES`). Each one is a question with a
known answer: the calls of its first executor turn, or no call where its first reasoner turn goes to
the summarizer (near-miss tools, a missing argument, chat). :func:`evaluate_heldout` runs the model
as the agent on each trajectory's tools and first user turn (``first_call_only``, as BFCL's agent
mode: nothing is executed) and compares its first calls with the reference:

* **exact**: the same calls as a multiset (names and arguments; numbers compared as numbers, so
  ``3`` equals ``3.0``; call order free, as BFCL's parallel checker has it), or no call where none is
  due;
* **tools**: the same tool names as a multiset (the selection, whatever the arguments);
* **decision**: called where a call is due and did not where none is.

Scores are per episode kind (``meta["kind"]`` of the generator: single, parallel_same,
refusal_near_miss, ...) and over all.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..agent.batch import TokenChooser
from ..data.trajectory import ToolCall, Trajectory
from ..files import atomic_write_text
from ..agent.flags import add_selection_arguments
from .first_calls import FirstCallTask, Selection, first_executor_turn, run_first_calls, selection_from_args

__all__ = ["HeldoutScore", "HeldoutResult", "expected_calls", "evaluate_heldout", "compare_calls"]


def expected_calls(trajectory: Trajectory) -> tuple[ToolCall, ...]:
    """The reference answer: the first executor turn's calls, or ``()`` where the first reasoner
    turn goes to the summarizer."""
    for turn in trajectory.turns:
        if turn.role == "executor":
            return tuple(turn.calls)
        if turn.role == "reasoner" and turn.next == "summarizer":
            return ()
    return ()


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value)


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return _number(value)


def _key(call: ToolCall) -> str:
    return json.dumps([call.name, _canonical(call.arguments)], sort_keys=True, ensure_ascii=False)


def compare_calls(got: Sequence[ToolCall], want: Sequence[ToolCall]) -> dict[str, bool]:
    """``{"exact", "tools", "decision"}`` verdicts of calls ``got`` against the reference ``want``."""
    return {
        "exact": Counter(map(_key, got)) == Counter(map(_key, want)),
        "tools": Counter(c.name for c in got) == Counter(c.name for c in want),
        "decision": bool(got) == bool(want),
    }


@dataclass
class HeldoutScore:
    """Counts of one episode kind (or of all): ``n`` episodes, and how many were right per measure."""

    n: int = 0
    exact: int = 0
    tools: int = 0
    decision: int = 0

    def add(self, verdict: Mapping[str, bool]) -> None:
        self.n += 1
        self.exact += verdict["exact"]
        self.tools += verdict["tools"]
        self.decision += verdict["decision"]

    def to_dict(self) -> dict[str, Any]:
        share = (lambda k: getattr(self, k) / self.n if self.n else 0.0)
        return {"n": self.n, "exact": share("exact"), "tools": share("tools"), "decision": share("decision")}


@dataclass
class HeldoutResult:
    """Scores per kind and over all, and one verdict per episode (``id``, kind, reference, answer)."""

    by_kind: dict[str, HeldoutScore]
    overall: HeldoutScore
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall.to_dict(), "by_kind": {k: s.to_dict() for k, s in self.by_kind.items()},
                "seconds": self.seconds}

    def table(self) -> str:
        rows = ["| kind | n | exact | tools | decision |", "|---|---:|---:|---:|---:|"]
        for name, score in [*sorted(self.by_kind.items()), ("all", self.overall)]:
            d = score.to_dict()
            rows.append(f"| {name} | {d['n']} | {100 * d['exact']:.1f} | {100 * d['tools']:.1f} | {100 * d['decision']:.1f} |")
        return "\n".join(rows)


def evaluate_heldout(model: torch.nn.Module, tokenizer, trajectories: Iterable[Trajectory], *, batch_size: int = 8,
                     max_new_tokens: int = 256, out: str | Path | None = None,
                     progress: Callable[[int], None] | None = None, choose: TokenChooser | None = None,
                     selection: Selection | None = None) -> HeldoutResult:
    """Run the agent on each trajectory's first user turn and tools (nothing executed) and score its
    first calls (see the module docstring). ``out``: write ``heldout_verdicts.jsonl`` and
    ``heldout_score.json`` there. ``choose`` replaces greedy decoding, ``(logits, episode) -> token``
    (tests script the output); ``selection``: constrained decoding, the vote (default: none), as
    ``eval bfcl`` takes them, so that decoding options are chosen here rather than on BFCL."""
    import time

    trajectories = list(trajectories)
    queries = []
    for t in trajectories:
        user = next((turn.content for turn in t.turns if turn.role == "user"), None)
        if user is None:
            raise ValueError(f"trajectory {t.id!r} has no user turn to ask")
        queries.append(user)
    tasks = [FirstCallTask(query, {tool.name: tool for tool in t.tools}, t.system, t.id)
             for t, query in zip(trajectories, queries)]
    start = time.perf_counter()
    episodes = run_first_calls(model, tokenizer, tasks, batch_size=batch_size, max_new_tokens=max_new_tokens,
                               progress=progress, choose=choose, selection=selection)
    by_kind: dict[str, HeldoutScore] = {}
    overall = HeldoutScore()
    verdicts = []
    for t, episode in zip(trajectories, episodes):
        turn = first_executor_turn(episode)
        got = tuple(turn.calls) if turn is not None else ()
        want = expected_calls(t)
        verdict = compare_calls(got, want)
        kind = str(t.meta.get("kind", "unknown"))
        by_kind.setdefault(kind, HeldoutScore()).add(verdict)
        overall.add(verdict)
        verdicts.append({"id": t.id, "kind": kind, **verdict, "status": episode.status,
                         "want": [c.to_dict() for c in want], "got": [c.to_dict() for c in got]})
    result = HeldoutResult(by_kind, overall, verdicts, time.perf_counter() - start)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "heldout_verdicts.jsonl", "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in verdicts))
        atomic_write_text(out / "heldout_score.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    """``mor-ext eval heldout``'s flags."""
    from .loading import METHODS

    parser.add_argument("--data", required=True, help="trajectories to answer (mor-ext data generate --split heldout)")
    parser.add_argument("--model", default=None, help="'smollm2' (default), a local .gguf file or HF model directory")
    parser.add_argument("--adapter", default=None, help="the adapter directory of a mor-ext train run")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="mor, lora or base (default: mor with --adapter, base without)")
    parser.add_argument("--limit", type=int, default=None, help="the first N trajectories")
    parser.add_argument("--out", default=None, help="directory for heldout_verdicts.jsonl and heldout_score.json")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="per role turn")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    add_selection_arguments(parser, "tool selection (docs/spec.md §7), as for eval bfcl")


def run_command(args, out=None) -> int:
    import sys

    from tqdm.auto import tqdm

    from ..data.jsonl import read_trajectories
    from .loading import load_for_method

    out = out or sys.stdout
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    trajectories, _ = read_trajectories(args.data, on_error="raise")
    trajectories = trajectories[: args.limit]
    selection = selection_from_args(args)
    model, tokenizer, _ = load_for_method(args.model, args.adapter, args.method)
    with tqdm(total=len(trajectories), desc="held-out tools", unit="episode") as bar:
        result = evaluate_heldout(model, tokenizer, trajectories, batch_size=args.batch_size,
                                  max_new_tokens=args.max_new_tokens, out=args.out, progress=bar.update,
                                  selection=selection)
    out.write((json.dumps(result.to_dict(), indent=2) if args.json else result.table()) + "\n")
    return 0
