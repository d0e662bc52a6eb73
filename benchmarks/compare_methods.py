"""A fair MoR-vs-LoRA comparison, stage by stage, with every command and raw output kept.

    python benchmarks/compare_methods.py sweep  --data runs/cmp/train.jsonl --out runs/cmp
    python benchmarks/compare_methods.py final  --data runs/cmp/train.jsonl --out runs/cmp --minutes 20
    python benchmarks/compare_methods.py ablate --data runs/cmp/train.jsonl --out runs/cmp --steps 24 \
        --before-data runs/cmp/train_before.jsonl
    python benchmarks/compare_methods.py evaluate --out runs/cmp --heldout runs/cmp/heldout.jsonl \
        --results results/bfcl --limit 20
    python benchmarks/compare_methods.py report --out runs/cmp
    python benchmarks/compare_methods.py report --out runs/cmp --results results/bfcl --first 10

A method added later (AgentFlux's scheme: ``--methods agentflux``) runs the same stages; ``sweep`` and
``final`` add its rows to the files the earlier stages wrote.

Fairness, as the project's rules ask for it:

* **Each method its own learning rate**, chosen by a sweep of short runs (at least 4 values spanning
  30x per method) on a held-out split of our own synthetic data (``--eval-fraction`` of the training
  file, the same split for every run because the seed is the same), on eval CE per supervised token
  (``eval_ce``: without MoR's aux and orth terms). Never on BFCL.
* **The same data, seed, batches and budget**: the final runs train side by side, one core each
  (``OMP_NUM_THREADS=1``), for the same wall time (``--max-minutes``), so both see the same machine.
* **Everything published**: each run's command line is written beside its output directory
  (``command.txt``), with the trainer's ``training_log.json``; ``sweep.json`` / ``final.json`` hold
  the numbers the report is made of.

Evaluation of the final adapters (BFCL, held-out tools) is ``mor-ext eval``'s job; ``report`` prints
what the stages above measured.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

# Per-method grids (each spans 33x): MoR's gated mix of rank-16 LoRAs moves its output less per Adam
# step than one LoRA of the same parameter budget, so its useful range sits higher.
GRIDS = {"mor": [3e-4, 1e-3, 3e-3, 1e-2], "lora": [3e-5, 1e-4, 3e-4, 1e-3],
         "agentflux": [1e-4, 3e-4, 1e-3, 3e-3]}
# How each method trains. AgentFlux (docs/spec.md §7) is one plain LoRA per role (selector, arguments,
# summarizer) under MoR's engine; rank 77 gives it the plain LoRA's budget (3 x 77 = 231 ranks, the
# rank that matches MoR's trainable parameters), so all three methods train as many parameters.
METHOD_ARGS = {"mor": ["--method", "mor"], "lora": ["--method", "lora"],
               "agentflux": ["--method", "mor", "--scheme", "agentflux", "--rank", "77"]}
# The method ``mor-ext eval`` loads a run's adapter with (the scheme comes from the adapter's config).
EVAL_METHOD = {"mor": "mor", "lora": "lora", "agentflux": "mor"}
MOR_EXT = [sys.executable, "-m", "mor_ext.cli"]


def _train_command(args: argparse.Namespace, method: str, lr: float, out: Path, *, steps: int | None,
                   minutes: float | None, data: Path | None = None) -> list[str]:
    """``data``: another training file than ``--data`` (same settings otherwise)."""
    cmd = MOR_EXT + ["train", "--model", args.model, "--data", str(data or args.data), "--out", str(out),
                     *METHOD_ARGS[method], "--lr", f"{lr:g}", "--batch-size", str(args.batch_size),
                     "--max-length", str(args.max_length), "--eval-fraction", str(args.eval_fraction),
                     "--seed", str(args.seed), "--logging-steps", "1", "--lr-scheduler", "constant",
                     "--no-progress"]
    cmd += ["--max-steps", str(steps if steps is not None else 100000)]
    if minutes is not None:
        cmd += ["--max-minutes", f"{minutes:g}"]
    if args.packing:  # several trajectories per row: no padding (about 1.6x the trajectories a minute)
        cmd += ["--packing"]
    if args.save_steps:  # checkpoints on the way: the same run at a smaller budget, for the ablations
        cmd += ["--save-steps", str(args.save_steps), "--save-total-limit", "10"]
    return cmd


def _run_pair(jobs: list[tuple[list[str], Path]], at_once: int = 2) -> None:
    """Run the jobs two (``at_once``) at a time, one core each; a failed run stops the stage with its
    log's tail."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending = list(jobs)
    while pending:
        batch, pending = pending[:at_once], pending[at_once:]
        running = []
        for cmd, out in batch:
            out.mkdir(parents=True, exist_ok=True)
            (out / "command.txt").write_text("OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " + shlex.join(cmd) + "\n")
            log = open(out / "stdout.log", "w")
            print(f"[{time.strftime('%H:%M:%S')}] start {out.name}", flush=True)
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), out, log))
        for proc, out, log in running:
            code = proc.wait()
            log.close()
            print(f"[{time.strftime('%H:%M:%S')}] done  {out.name} (exit {code})", flush=True)
            if code != 0:
                tail = (out / "stdout.log").read_text()[-3000:]
                raise SystemExit(f"{out.name} failed with exit code {code}:\n{tail}")


def _summary(run: Path) -> dict:
    log = json.loads((run / "training_log.json").read_text())
    history = log["log_history"]
    evals = [h for h in history if "eval_ce" in h]
    ce = [h.get("ce", h.get("loss")) for h in history if "loss" in h and "eval_loss" not in h and "train_runtime" not in h]
    runtime = next((h["train_runtime"] for h in history if "train_runtime" in h), None)
    return {"run": run.name, "method": log["config"]["method"], "lr": log["config"]["lr"],
            "steps": log["global_step"], "train_seconds": runtime,
            "train_ce_first": ce[0] if ce else None, "train_ce_last": ce[-1] if ce else None,
            "eval_ce": evals[-1]["eval_ce"] if evals else None,
            "trainable": log["parameter_counts"].get("trainable")}


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


def sweep(args: argparse.Namespace) -> None:
    jobs = [(_train_command(args, m, lr, args.out / "sweep" / f"{m}-lr{lr:g}", steps=args.sweep_steps, minutes=None),
             args.out / "sweep" / f"{m}-lr{lr:g}") for m in args.methods for lr in GRIDS[m]]
    _run_pair([(c, o) for c, o in jobs if not (o / "training_log.json").is_file()], args.jobs)
    rows = [_summary(out) for _, out in jobs]
    earlier = _read_json(args.out / "sweep.json", {"rows": [], "best": {}})
    best = {m: b for m, b in earlier["best"].items() if m not in args.methods}
    rows = [r for r in earlier["rows"] if r["run"] not in {x["run"] for x in rows}] + rows
    for m in args.methods:
        mine = [r for r in rows if r["run"].startswith(f"{m}-lr")]
        pick = min(mine, key=lambda r: r["eval_ce"])
        edge = pick["lr"] in (min(GRIDS[m]), max(GRIDS[m]))
        best[m] = {"lr": pick["lr"], "eval_ce": pick["eval_ce"], "at_grid_edge": edge}
    (args.out / "sweep.json").write_text(json.dumps({"rows": rows, "best": best}, indent=2) + "\n")
    _print_rows(rows)
    for m, b in best.items():
        warn = "  (at the edge of the grid: widen it)" if b["at_grid_edge"] else ""
        print(f"best {m}: lr {b['lr']:g}, eval CE {b['eval_ce']:.4f}{warn}")


def _latest_checkpoint(run: Path) -> Path:
    found = sorted(run.glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1]))
    if not found:
        raise SystemExit(f"--resume-from: {run} has no checkpoint-N directory (train it with --save-steps)")
    return found[-1]


def _final_adapter(run: Path) -> Path:
    if not (run / "adapter_model.safetensors").is_file():
        raise SystemExit(f"--init-from: {run} holds no final adapter (adapter_model.safetensors)")
    return run


def final(args: argparse.Namespace) -> None:
    best = json.loads((args.out / "sweep.json").read_text())["best"]
    budget = {"steps": args.final_steps, "minutes": None} if args.final_steps else {"steps": None, "minutes": args.minutes}
    jobs = []
    for m in args.methods:
        cmd = _train_command(args, m, best[m]["lr"], args.out / "final" / m, **budget)
        if args.resume_from is not None:  # a second stage: weights, optimiser and step of the last checkpoint
            cmd += ["--resume", str(_latest_checkpoint(args.resume_from / "final" / m))]
        elif args.init_from is not None:  # a later stage of a run saved without checkpoints: weights only
            cmd += ["--init-adapter", str(_final_adapter(args.init_from / "final" / m))]
        jobs.append((cmd, args.out / "final" / m))
    _run_pair(jobs)  # both at once: the same wall time on the same (shared) machine
    rows = [_summary(out) for _, out in jobs]
    rows = [r for r in _read_json(args.out / "final.json", []) if r["run"] not in args.methods] + rows
    (args.out / "final.json").write_text(json.dumps(rows, indent=2) + "\n")
    _print_rows(rows)


# The paper's ablations (MoRAgent §5): each is MoR at MoR's chosen learning rate with one thing
# removed; "before-data" is MoR on another training file (the data issue's before/after).
ABLATIONS = {"no-aux": ["--no-aux"], "no-orth": ["--no-orth"], "one-role": ["--one-role"]}


def ablate(args: argparse.Namespace) -> None:
    """Ablations at a fixed step budget (``--steps``): compare them with the final MoR run's checkpoint
    at the same step (``final/mor/checkpoint-N``, which ``final --save-steps`` keeps)."""
    lr = json.loads((args.out / "sweep.json").read_text())["best"]["mor"]["lr"]
    jobs = []
    for name, extra in ABLATIONS.items():
        out = args.out / "ablations" / name
        jobs.append((_train_command(args, "mor", lr, out, steps=args.steps, minutes=None) + extra, out))
    if args.before_data is not None:
        out = args.out / "ablations" / "before-data"
        jobs.append((_train_command(args, "mor", lr, out, steps=args.steps, minutes=None, data=args.before_data), out))
    _run_pair([(c, o) for c, o in jobs if not (o / "training_log.json").is_file()])
    rows = [_summary(out) for _, out in jobs]
    (args.out / "ablations.json").write_text(json.dumps(rows, indent=2) + "\n")
    _print_rows(rows)


# BFCL's categories for the comparison: non-live AST (simple = python, java, javascript), the
# irrelevance pair, and live simple / multiple (mor_ext.eval.bfcl.scoring aggregates them as BFCL does).
EVAL_CATEGORIES = ["simple_python", "simple_java", "simple_javascript", "multiple", "parallel",
                   "parallel_multiple", "irrelevance", "live_simple", "live_multiple", "live_irrelevance"]


def _adapters(args: argparse.Namespace) -> list[tuple[str, str, Path | None]]:
    """(run name, method, adapter directory) of every finished run, the base model first."""
    found: list[tuple[str, str, Path | None]] = [("base", "base", None)]
    for m in GRIDS:
        run = args.out / "final" / m
        if (run / "training_log.json").is_file():
            found.append((m, EVAL_METHOD[m], run))
    # The ablations' reference: the final MoR run at their step budget (itself when it ended there).
    final_mor = args.out / "final" / "mor"
    run = final_mor / f"checkpoint-{args.steps}" / "adapter"
    ended_there = (final_mor / "training_log.json").is_file() and _summary(final_mor)["steps"] == args.steps
    if run.is_dir() and not ended_there:
        found.append((f"mor-{args.steps}steps", "mor", run))
    for name in [*ABLATIONS, "before-data"]:
        run = args.out / "ablations" / name
        if (run / "training_log.json").is_file():
            found.append((name, "mor", run))
    return found


def evaluate(args: argparse.Namespace) -> None:
    """BFCL (agent mode for tuned models, BFCL's prompt mode for the base) and the held-out tools for
    every run, two at a time; each run's files land in ``--results/<run>/``."""
    jobs = []
    for name, method, adapter in _adapters(args):
        if args.only and name not in args.only:
            continue
        out = args.results / (f"{name}-{args.tag}" if args.tag else name)
        done = out / "heldout" / "heldout_score.json" if args.heldout is not None else out / "summary.json"
        if done.is_file():
            continue
        model = ["--adapter", str(adapter), "--method", method] if adapter else ["--method", "base"]
        bfcl = MOR_EXT + ["eval", "bfcl", *model, "--categories", *args.categories, "--limit", str(args.limit),
                          "--batch-size", str(args.batch_size_eval), "--out", str(out), "--no-progress"]
        if adapter is None:  # untuned: BFCL's own prompt mode, the fair way to ask a chat model
            bfcl += ["--mode", "prompt", "--max-new-tokens", "128"]
        bfcl += shlex.split(args.eval_flags)  # last, so that they override the defaults above
        steps = [bfcl]
        if args.heldout is not None:
            steps.append(MOR_EXT + ["eval", "heldout", "--data", str(args.heldout), *model, "--limit",
                                    str(args.heldout_limit), "--batch-size", str(args.batch_size_eval),
                                    "--out", str(out / "heldout")])
        # One shell line per run, so the pair runner keeps two runs (not two steps) going at once.
        jobs.append((["bash", "-c", " && ".join(shlex.join(c) for c in steps)], out))
    _run_pair(jobs, args.jobs)


def _print_rows(rows: list[dict]) -> None:
    print("| run | lr | steps | train s | train CE first -> last | eval CE |")
    print("|---|---:|---:|---:|---|---:|")
    for r in rows:
        secs = f"{r['train_seconds']:.0f}" if r["train_seconds"] is not None else "-"
        print(f"| {r['run']} | {r['lr']:g} | {r['steps']} | {secs} | {r['train_ce_first']:.3f} -> "
              f"{r['train_ce_last']:.3f} | {r['eval_ce']:.4f} |")


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


# Where a run could not afford every category: the unweighted mean of these four AST categories (*),
# a stand-in for BFCL's non-live AST (which also averages java and javascript into "simple").
SMALL_AST = ("simple_python", "multiple", "parallel", "parallel_multiple")


# ``evaluate --tag more``: more categories of a run under the same decoding; the report joins them.
MORE = "more"


def _question_index(question_id: str) -> int:
    """BFCL's ids end in the question's position in its category: ``simple_python_12`` -> 12, and
    ``live_simple_12-3-0`` -> 12 (live ids add the source's conversation and turn)."""
    return int(question_id.rsplit("_", 1)[1].split("-")[0])


def _category_files(run: Path, kind: str) -> list[tuple[str, Path]]:
    """(category, path) of a run's ``BFCL_v4_<category>_<kind>.json`` files (``mor-ext eval bfcl``'s names)."""
    prefix, suffix = "BFCL_v4_", f"_{kind}.json"
    return [(path.name[len(prefix):-len(suffix)], path) for path in sorted(run.glob(f"{prefix}*{suffix}"))]


def _first_scores(run: Path, first: int) -> dict[str, dict]:
    """Each category's score over its first ``first`` questions only, from the run's per-question
    verdicts: runs evaluated with different ``--limit`` compared on the questions they all answered.
    A category with fewer verdicts than ``first`` is left out (it would not be the same questions)."""
    scores = {}
    for category, path in _category_files(run, "verdicts"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        chosen = [r for r in rows if _question_index(r["id"]) < first]
        if len(chosen) < first:
            continue
        correct = sum(bool(r["valid"]) for r in chosen)
        scores[category] = {"correct_count": correct, "total_count": first, "accuracy": correct / first}
    return scores


def _recorded_scores(run: Path) -> dict[str, dict]:
    """The scores a run wrote: its ``summary.json``, else the first line of each BFCL score file (some
    committed runs keep only BFCL's files)."""
    if (run / "summary.json").is_file():
        return dict(json.loads((run / "summary.json").read_text())["scores"])
    scores = {}
    for category, path in _category_files(run, "score"):
        with path.open() as f:
            scores[category] = json.loads(f.readline())
    return scores


def _mode(run: Path) -> str:
    """agent or prompt (``mor-ext eval bfcl --mode``), from the run's summary or its recorded command."""
    if (run / "summary.json").is_file():
        return json.loads((run / "summary.json").read_text())["mode"]
    command = run / "command.txt"
    return "prompt" if command.is_file() and "--mode prompt" in command.read_text() else "agent"


def _bfcl_rows(results: Path, first: int | None = None) -> None:
    """One row per evaluated run: BFCL's categories (correct/total), its aggregates, the held-out tools.
    ``first``: score every run on the first N questions of each category only (``_first_scores``)."""
    from mor_ext.eval.bfcl.scoring import CategoryScore, aggregates

    runs = sorted({p.parent for p in results.glob("*/BFCL_v4_*_score.json")} |
                  {p.parent for p in results.glob("*/summary.json")})
    runs = [run for run in runs if not run.name.endswith(f"-{MORE}")]
    if not runs:
        return
    print("| run | mode | " + " | ".join(EVAL_CATEGORIES) + " | non-live AST | live AST | irrelevance "
          "| AST mean of the 4 * | held-out exact / tools / decision |")
    print("|---|---|" + "---:|" * (len(EVAL_CATEGORIES) + 5))
    read = _recorded_scores if first is None else (lambda r: _first_scores(r, first))
    for run in runs:
        more = run.parent / f"{run.name}-{MORE}"  # the same run and decoding on more categories (--tag more)
        scores = {**read(more), **read(run)}
        if not scores:
            continue  # evaluated on fewer questions than --first asks for
        aggs = {name: a.to_dict() for name, a in aggregates(
            {c: CategoryScore(c, s["correct_count"], s["total_count"]) for c, s in scores.items()}).items()}
        cells = [f"{_pct(scores[c]['accuracy'])} ({scores[c]['correct_count']}/{scores[c]['total_count']})" if c in scores
                 else "-" for c in EVAL_CATEGORIES]
        cells += [_pct(aggs.get(a, {}).get("accuracy")) for a in ("non_live", "live", "irrelevance")]
        four = [scores[c]["accuracy"] for c in SMALL_AST if c in scores]
        cells.append(_pct(sum(four) / len(four)) if len(four) == len(SMALL_AST) else "-")
        held = run / "heldout" / "heldout_score.json"
        if held.is_file():
            o = json.loads(held.read_text())["overall"]
            cells.append(f"{_pct(o['exact'])} / {_pct(o['tools'])} / {_pct(o['decision'])} (n={o['n']})")
        else:
            cells.append("-")
        print(f"| {run.name} | {_mode(run)} | " + " | ".join(cells) + " |")


def _role_rows(results: Path) -> None:
    """Where each run's AST answers go wrong, per role, from the per-question verdicts: the reasoner's
    decision (no call where one was due; a plan that lists BFCL's number of requests) and the
    executor's calls (parsed; the right count; the right count but rejected by the checker)."""
    from mor_ext.data.synthetic.episodes import count_listed_requests
    from mor_ext.eval.bfcl.data import load_category

    runs = sorted(p.parent for p in results.glob("*/summary.json")
                  if json.loads(p.read_text()).get("mode") == "agent")  # prompt mode has no roles
    ast = [c for c in EVAL_CATEGORIES if "irrelevance" not in c]
    expected: dict[str, dict[str, int]] = {}
    print("| run | category | correct | reasoner: no call | reasoner: called | reasoner: lists the right number of "
          "requests | executor: parsed | right number of calls | right number, rejected | most common opening of "
          "the reasoner's turn |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for run in runs:
        for c in ast:
            path = run / f"BFCL_v4_{c}_verdicts.json"
            if not path.is_file():
                continue
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if c not in expected:
                expected[c] = {q.id: len(q.answer) for q in load_category(c)}
            called = [r for r in rows if r.get("status") == "called"]
            parsed = [r for r in called if r.get("decoded") is not None]
            right = [r for r in parsed if len(r["decoded"]) == expected[c].get(r["id"])]
            listed = [count_listed_requests(r.get("reasoner") or "") for r in rows]
            lists = "-" if all(n is None for n in listed) else str(
                sum(n == expected[c].get(r["id"]) for n, r in zip(listed, rows)))
            openings = collections.Counter(" ".join((r.get("reasoner") or "").split()[:3]) for r in rows)
            opening, n = openings.most_common(1)[0] if openings else ("", 0)
            print(f"| {run.name} | {c} | {sum(r['valid'] for r in rows)}/{len(rows)} | {len(rows) - len(called)} | "
                  f"{len(called)} | {lists} | {len(parsed)} | {len(right)} | {sum(not r['valid'] for r in right)} | "
                  f"\"{opening}\" ({n}) |")


def report(args: argparse.Namespace) -> None:
    for name in ("sweep.json", "final.json", "ablations.json"):
        path = args.out / name
        if path.is_file():
            print(f"## {name}")
            data = json.loads(path.read_text())
            _print_rows(data["rows"] if isinstance(data, dict) else data)
    if args.results.is_dir():
        within = "" if args.first is None else f", the first {args.first} questions of each category"
        print(f"## BFCL and held-out tools ({args.results}{within})")
        _bfcl_rows(args.results, args.first)
        print(f"## Per role: where the AST answers go wrong ({args.results})")
        _role_rows(args.results)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["sweep", "final", "ablate", "evaluate", "report"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, help="training trajectories (JSONL); its --eval-fraction is the held-out split")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--methods", nargs="+", default=["mor", "lora"], choices=sorted(GRIDS))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=768)
    ap.add_argument("--packing", action="store_true",
                    help="train on packed rows (mor-ext train --packing): ~1.6x the trajectories a minute of padded "
                         "batches of 4 (benchmarks/bench_train_batches.py); not what the runs before 2026-12-06 used")
    ap.add_argument("--eval-fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep-steps", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=20.0, help="final runs: training wall time each")
    ap.add_argument("--steps", type=int, default=24, help="ablate: the step budget of each ablation")
    ap.add_argument("--before-data", type=Path, help="ablate: also train MoR on this file (data before/after)")
    ap.add_argument("--results", type=Path, default=Path("results/bfcl"), help="evaluate: where each run's files go")
    ap.add_argument("--heldout", type=Path, help="evaluate: held-out-tool trajectories (data generate --split heldout)")
    ap.add_argument("--heldout-limit", type=int, default=64)
    ap.add_argument("--limit", type=int, default=20, help="evaluate: the first N questions of each BFCL category")
    ap.add_argument("--first", type=int,
                    help="report: score BFCL on the first N questions of each category only, from the per-question "
                         "verdicts (to compare runs evaluated with different --limit; held-out tools as recorded)")
    ap.add_argument("--only", nargs="+", help="evaluate: only these runs")
    ap.add_argument("--categories", nargs="+", default=EVAL_CATEGORIES, help="evaluate: BFCL categories")
    ap.add_argument("--batch-size-eval", type=int, default=8, help="evaluate: episodes decoded at once")
    ap.add_argument("--jobs", type=int, default=2, help="evaluate (and sweep): runs at once (memory: ~1.5 GB an evaluation, ~8 GB a SmolLM2 training)")
    ap.add_argument("--final-steps", type=int, default=0,
                    help="final runs: a step budget instead of --minutes (a method added later, at the step "
                         "count the others reached)")
    ap.add_argument("--eval-flags", default="",
                    help="evaluate: more `mor-ext eval bfcl` options, one string, e.g. --eval-flags='--constrain-names --max-tools 3'")
    ap.add_argument("--tag", default="", help="evaluate: results go to <run>-<tag> (runs with --eval-flags)")
    ap.add_argument("--resume-from", type=Path,
                    help="final runs: continue each method from its latest checkpoint under DIR/final/<method> "
                         "(an earlier final stage's --out; --data may be another file), for --minutes more")
    ap.add_argument("--init-from", type=Path,
                    help="final runs: start each method from its final adapter under DIR/final/<method> (weights "
                         "only: a fresh optimiser, step 0; for a stage saved without checkpoints)")
    ap.add_argument("--save-steps", type=int, default=0,
                    help="final runs: also keep a checkpoint every N steps (a smaller budget of the same run)")
    ap.add_argument("--grid", action="append", default=[], metavar="METHOD=LR,LR,...",
                    help="replace a method's sweep grid (e.g. to widen it when the best is at an edge)")
    args = ap.parse_args(argv)
    for item in args.grid:
        method, _, values = item.partition("=")
        if method not in GRIDS or not values:
            ap.error(f"--grid wants METHOD=LR,LR,... with METHOD in {sorted(GRIDS)}, got {item!r}")
        GRIDS[method] = [float(v) for v in values.split(",")]
    if args.resume_from is not None and args.init_from is not None:
        ap.error("--resume-from and --init-from exclude each other (a checkpoint, or a final adapter)")
    if args.first is not None and args.first < 1:
        ap.error(f"--first wants a positive number of questions, got {args.first}")
    if args.stage in ("sweep", "final", "ablate") and args.data is None:
        ap.error(f"{args.stage} needs --data")
    {"sweep": sweep, "final": final, "ablate": ablate, "evaluate": evaluate, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
