"""Eager against compiled training steps of the same adapters, in one process (issue 18, item 2).

``bench_model.py --compile`` compares methods under ``torch.compile``; whether compiling makes a
method's own step faster needs its eager and compiled steps timed on the same machine state, which
separate processes cannot give on a shared machine. Here the peft LoRA and the MoR model of
``bench_model.py``'s preset (and, with ``--methods none,lora,mor``, the model without an adapter) are
each built twice (eager, and through ``torch.compile``, inductor, ``dynamic=True``), and their steps
alternate round by round::

    python benchmarks/bench_compile.py [--preset tiny] [--spans long|short] [--rounds 40] [--clock wall|thread]
                                       [--methods lora,mor]

``--clock thread`` times each step in this thread's CPU time (``time.thread_time``), which a busy
machine's preemption does not inflate (it still sees shared caches); the default is the wall clock.
Prints a markdown table with the CPU model: per step the median and interquartile range of rounds,
each method's compiled / eager ratio, and MoR / LoRA eager and compiled (medians of per-round ratios).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_model  # noqa: E402


LABELS = {"none": "no adapter", "lora": "peft LoRA r=16", "mor": "MoR (mor_ext)"}


def build_steps(preset_name: str, spans: str, methods: list[str]) -> dict[tuple[str, bool], callable]:
    """``{(method, compiled): step}``: bench_model.py's models and steps, each built twice."""
    ids, roles = bench_model.step_inputs(preset_name, spans, "cpu")
    steps = {}
    for method in methods:
        for compiled in (False, True):
            model, kwargs = bench_model.build_model(preset_name, method, "cpu", roles)
            step, _ = bench_model.train_step(model, kwargs, ids, compile=compiled, dynamic=True)
            t0 = time.perf_counter()
            for _ in range(3):  # warm-up (and, compiled, the compile)
                step()
            print(f"  {method} {'compiled' if compiled else 'eager'}: warm-up {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
            steps[(method, compiled)] = step
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--spans", choices=["long", "short"], default="long")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall")
    parser.add_argument("--methods", default="lora,mor", help="comma-separated, of none, lora, mor")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if not methods or any(m not in LABELS for m in methods):
        parser.error(f"--methods takes a comma-separated list of {', '.join(LABELS)}; got {args.methods!r}")
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    allocator = bench_model.steady_allocator()
    steps = build_steps(args.preset, args.spans, methods)
    times = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            t0 = clock()
            step()
            times[key].append((clock() - t0) * 1e3)
    where = f"{bench_model.cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {allocator}"
    print(f"\n| {args.preset} preset, {args.spans} role spans, {args.clock} clock, {args.rounds} rounds "
          f"({where}) | eager | compiled | compiled / eager |\n|---|---:|---:|---:|")
    for method in methods:
        label = LABELS[method]
        cells = []
        for compiled in (False, True):
            t = times[(method, compiled)]
            q1, _, q3 = statistics.quantiles(t)
            cells.append(f"{statistics.median(t):.2f} ms ({q1:.2f}-{q3:.2f})")
        ratio = statistics.median(c / e for c, e in zip(times[(method, True)], times[(method, False)]))
        print(f"| {label} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")
    if "lora" in methods and "mor" in methods:
        for compiled in (False, True):
            per_round = [m / l for m, l in zip(times[("mor", compiled)], times[("lora", compiled)])]
            print(f"| MoR / LoRA, {'compiled' if compiled else 'eager'} | {statistics.median(per_round):.2f}x "
                  f"(rounds {min(per_round):.2f}-{max(per_round):.2f}) | | |")


if __name__ == "__main__":
    main()
