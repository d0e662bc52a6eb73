"""Eager against compiled training steps of the same adapters, in one process (issue 18, item 2).

``bench_model.py --compile`` compares methods under ``torch.compile``; whether compiling makes a
method's own step faster needs its eager and compiled steps timed on the same machine state, which
separate processes cannot give on a shared machine. Here the peft LoRA and the MoR model of
``bench_model.py``'s preset are each built twice (eager, and through ``torch.compile``, inductor,
``dynamic=True``), and the four steps alternate round by round::

    python benchmarks/bench_compile.py [--preset tiny] [--spans long|short] [--rounds 40] [--clock wall|thread]

``--clock thread`` times each step in this thread's CPU time (``time.thread_time``), which a busy
machine's preemption does not inflate (it still sees shared caches); the default is the wall clock.
Prints a markdown table with the CPU model: per step the median and interquartile range of rounds,
and each method's compiled / eager ratio (median of per-round ratios).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

import mor_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_model  # noqa: E402
import layer_cases  # noqa: E402


def build_steps(preset_name: str, spans: str) -> dict[tuple[str, bool], callable]:
    """``{(method, compiled): step}``: forward with labels, backward, fused AdamW, as bench_model.py."""
    import peft
    import transformers

    preset = bench_model.PRESETS[preset_name]
    config = transformers.LlamaConfig(max_position_embeddings=max(4096, preset.seq), **preset.config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (preset.batch, preset.seq), generator=g)
    if spans == "short":
        roles = bench_model.short_span_roles(preset.seq)
    else:
        roles = layer_cases.role_ids_for(layer_cases.Shape(tokens=preset.seq), 3, g)
    roles = roles.reshape(1, -1).repeat(preset.batch, 1)
    steps = {}
    for method in ("lora", "mor"):
        for compiled in (False, True):
            torch.manual_seed(0)
            old = torch.get_default_dtype()
            torch.set_default_dtype(preset.dtype)
            try:
                model = transformers.LlamaForCausalLM(config)
            finally:
                torch.set_default_dtype(old)
            model.config.use_cache = False
            model.requires_grad_(False)
            if method == "lora":
                lora = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=bench_model.TARGETS)
                model, kwargs = peft.get_peft_model(model, lora, autocast_adapter_dtype=False), {}
            else:
                mor_ext.patch(model, mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(16)))
                kwargs = {"role_ids": roles}
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
            forward = torch.compile(model, dynamic=True) if compiled else model

            def step(forward=forward, kwargs=kwargs, opt=opt):
                out = forward(input_ids=ids, labels=ids, **kwargs)
                out.loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

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
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    steps = build_steps(args.preset, args.spans)
    times = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            t0 = clock()
            step()
            times[key].append((clock() - t0) * 1e3)
    where = f"{bench_model.cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"\n| {args.preset} preset, {args.spans} role spans, {args.clock} clock, {args.rounds} rounds "
          f"({where}) | eager | compiled | compiled / eager |\n|---|---:|---:|---:|")
    for method, label in (("lora", "peft LoRA r=16"), ("mor", "MoR (mor_ext)")):
        cells = []
        for compiled in (False, True):
            t = times[(method, compiled)]
            q1, _, q3 = statistics.quantiles(t)
            cells.append(f"{statistics.median(t):.2f} ms ({q1:.2f}-{q3:.2f})")
        ratio = statistics.median(c / e for c, e in zip(times[(method, True)], times[(method, False)]))
        print(f"| {label} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
