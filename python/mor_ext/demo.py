"""`mor-ext demo`: the whole pipeline at small scale, on the embedded SmolLM2-135M-Instruct.

1. **data**: synthetic trajectories over the training tool families (``mor_ext.data.synthetic``,
   checked against BFCL as every training set is), with their pattern mix printed;
2. **train**: MoR (MoRAgent roles) for a few minutes with :func:`mor_ext.train.train`, the same
   trainer as ``mor-ext train``;
3. **evaluate the base model** on held-out-tool episodes (:mod:`mor_ext.eval.heldout`: the agent's
   first calls against the reference) and on a small BFCL sample scored by BFCL's own checker
   (:mod:`mor_ext.eval.bfcl`, in BFCL's prompt mode, made for untuned models);
4. **agent**: the tuned model answers queries whose tools it never saw in training (the held-out
   tool families), role by role on one KV cache, the tools really run;
5. **evaluate the tuned model** the same way (BFCL as the agent), and print a table of it all, also
   written to ``<out>/demo_summary.json``.

Each stage prints its progress; :class:`DemoConfig` scales every stage up. BFCL is for evaluation
only: nothing here trains on it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

Log = Callable[[str], None]

# BFCL categories of the demo's sample: a call, a choice among functions, several calls of one
# function, and a question no function fits (irrelevance is shown beside the AST categories only).
BFCL_SAMPLE = ("simple_python", "multiple", "parallel", "irrelevance")


@dataclass
class DemoConfig:
    """Sizes of every stage (the defaults take about 15 minutes on a 2-core CPU)."""

    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    out_dir: str = "runs/demo"
    train_examples: int = 400
    minutes: float = 5.0  # training wall time
    lr: float = 2e-3
    batch_size: int = 2
    grad_accum: int = 2
    max_length: int = 768
    agent_queries: int = 3
    heldout_episodes: int = 16
    bfcl_limit: int = 3  # questions per BFCL category
    bfcl_categories: Sequence[str] = BFCL_SAMPLE
    max_new_tokens: int = 96  # per generation in the evaluations
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_examples", "batch_size", "grad_accum", "max_length", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("agent_queries", "heldout_episodes", "bfcl_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.minutes > 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")


def _stage(log: Log, number: int, title: str) -> float:
    log(f"\n=== {number}. {title} " + "=" * max(0, 70 - len(title)))
    return time.perf_counter()


def make_data(config: DemoConfig, log: Log) -> tuple[Path, list]:
    """Stage 1: the training file (training tool families) and the held-out episodes (other families)."""
    from .data.jsonl import write_trajectories
    from .data.synthetic import format_report, generate, pattern_report

    train_set = generate(config.train_examples, seed=config.seed, split="train")
    path = Path(config.out_dir) / "data" / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_trajectories(path, train_set)
    log(f"{len(train_set)} training trajectories -> {path} (checked against BFCL: clean)")
    log(format_report(pattern_report(train_set)))
    heldout = generate(config.agent_queries + config.heldout_episodes, seed=config.seed + 1, split="heldout")
    write_trajectories(path.parent / "heldout.jsonl", heldout)
    train_tools = {t.name for tr in train_set for t in tr.tools}
    heldout_tools = {t.name for tr in heldout for t in tr.tools}
    if train_tools & heldout_tools:  # the split guarantees it; a demo that claims it must check it
        raise RuntimeError(f"held-out tools seen in training: {sorted(train_tools & heldout_tools)[:5]}")
    log(f"{len(heldout)} held-out episodes over {len(heldout_tools)} tools, none of them in training")
    return path, heldout


def train_adapter(config: DemoConfig, data: Path, log: Log):
    """Stage 2: MoR training with the project's trainer, for ``config.minutes``."""
    from .train import TrainConfig, train

    result = train(TrainConfig(
        out_dir=str(Path(config.out_dir) / "adapter"), model=config.model, data=str(data), method="mor",
        lr=config.lr, max_minutes=config.minutes, epochs=1.0, batch_size=config.batch_size,
        grad_accum=config.grad_accum, max_length=config.max_length, lr_scheduler="constant",
        logging_steps=1, seed=config.seed))
    ce = [h["ce"] for h in result.log_history if "ce" in h]
    log(f"{result.global_step} steps in {result.seconds:.0f} s; train CE {ce[0]:.3f} -> {ce[-1]:.3f}; "
        f"adapter -> {result.adapter_dir}")
    return result


def _printer(log: Log) -> Callable[[str, str], None]:
    """Streams each role's text as it is decoded, one line per turn."""
    state: dict[str, Any] = {"role": None, "text": ""}

    def flush() -> None:
        if state["role"] is not None:
            log(f"  [{state['role']}] {state['text'].strip()}")

    def stream(role: str, text: str) -> None:
        if role != state["role"]:
            flush()
            state["role"], state["text"] = role, ""
        state["text"] += text

    stream.flush = flush  # type: ignore[attr-defined]
    return stream


def run_agent(model, tokenizer, episodes: Sequence, log: Log) -> list:
    """Stage 3: the tuned agent on queries over held-out tools, the tools really run."""
    from .agent import Agent, AgentConfig

    results = []
    for trajectory in episodes:
        query = next(t.content for t in trajectory.turns if t.role == "user")
        log(f"\nquery: {query}\ntools offered: {', '.join(t.name for t in trajectory.tools)}")
        agent = Agent(model, tokenizer, trajectory.tools, system=trajectory.system,
                      config=AgentConfig(max_steps=3, max_turn_tokens=128))
        stream = _printer(log)
        result = agent.run(query, stream=stream)
        stream.flush()  # type: ignore[attr-defined]
        log(f"  -> {result.status}")
        results.append(result)
    return results


def _evaluate(model, tokenizer, config: DemoConfig, heldout: Sequence, *, bfcl_mode: str, name: str,
              log: Log) -> dict[str, Any]:
    from .eval.bfcl import evaluate
    from .eval.heldout import evaluate_heldout

    out = Path(config.out_dir) / "eval" / name
    scores: dict[str, Any] = {}
    if heldout:
        from tqdm.auto import tqdm

        with tqdm(total=len(heldout), desc=f"{name}: held-out tools", unit="episode") as bar:
            result = evaluate_heldout(model, tokenizer, heldout, batch_size=8, max_new_tokens=config.max_new_tokens,
                                      out=out, progress=bar.update)
        scores["heldout"] = result.to_dict()["overall"]
        log(result.table())
    if config.bfcl_limit:
        bfcl = evaluate(model, tokenizer, list(config.bfcl_categories), mode=bfcl_mode, limit=config.bfcl_limit,
                        out=out / "bfcl", batch_size=8, max_new_tokens=config.max_new_tokens,
                        meta={"model": config.model or "smollm2", "demo": name})
        scores["bfcl"] = {c: s.accuracy for c, s in bfcl.scores.items()}
        log(bfcl.table())
    return scores


def _table(base: dict[str, Any], tuned: dict[str, Any]) -> str:
    rows = ["| measure | base | MoR-tuned |", "|---|---:|---:|"]

    def pct(d: dict, *keys: str) -> str:
        for key in keys:
            d = d.get(key, {}) if isinstance(d, dict) else {}
        return f"{100 * d:.1f}%" if isinstance(d, float) else "-"

    for key, label in (("exact", "held-out tools: exact calls"), ("tools", "held-out tools: right tools"),
                       ("decision", "held-out tools: call or not")):
        rows.append(f"| {label} | {pct(base, 'heldout', key)} | {pct(tuned, 'heldout', key)} |")
    for category in base.get("bfcl", {}) | tuned.get("bfcl", {}):
        rows.append(f"| BFCL {category} | {pct(base, 'bfcl', category)} | {pct(tuned, 'bfcl', category)} |")
    return "\n".join(rows)


def run_demo(config: DemoConfig | None = None, log: Log = print) -> dict[str, Any]:
    """Run the five stages (see the module docstring); returns what ``demo_summary.json`` holds."""
    from . import describe_backend
    from .adapters import load_adapter
    from .models import load_model

    config = config or DemoConfig()
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    log(describe_backend())
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    t = _stage(log, 1, "data: synthetic trajectories over the training tools")
    data, heldout = make_data(config, log)
    agent_episodes, heldout_eval = heldout[:config.agent_queries], heldout[config.agent_queries:]
    log(f"({time.perf_counter() - t:.0f} s)")

    t = _stage(log, 2, f"train: MoR on SmolLM2-135M-Instruct for {config.minutes:g} min")
    trained = train_adapter(config, data, log)
    log(f"({time.perf_counter() - t:.0f} s)")

    t = _stage(log, 3, "evaluate the base model (no adapter)")
    model, tokenizer = load_model(config.model)
    model.eval()
    base = _evaluate(model, tokenizer, config, heldout_eval, bfcl_mode="prompt", name="base", log=log)
    log(f"({time.perf_counter() - t:.0f} s)")

    t = _stage(log, 4, "the tuned agent on tools it never saw in training")
    load_adapter(model, trained.adapter_dir)
    model.eval()
    run_agent(model, tokenizer, agent_episodes, log)
    log(f"({time.perf_counter() - t:.0f} s)")

    t = _stage(log, 5, "evaluate the tuned model")
    tuned = _evaluate(model, tokenizer, config, heldout_eval, bfcl_mode="agent", name="tuned", log=log)
    log(f"({time.perf_counter() - t:.0f} s)")

    table = _table(base, tuned)
    log(f"\n{table}")
    log(f"(held-out tools: {len(heldout_eval)} episodes; BFCL: the first {config.bfcl_limit} questions of each "
        f"category, base in BFCL's prompt mode, tuned as the agent; a sample this small shows the pipeline, not "
        f"a score: use mor-ext eval for that)")
    summary = {"config": dataclasses.asdict(config), "train": {"steps": trained.global_step, "seconds": trained.seconds},
               "base": base, "tuned": tuned, "seconds": time.perf_counter() - start}
    from .files import atomic_write_text

    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    log(f"\ndone in {summary['seconds']:.0f} s; everything is under {out}/")
    return summary
