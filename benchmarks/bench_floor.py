"""The least a MoR training step can cost beside a plain LoRA step on this CPU, piece by piece.

A MoRAgent step does work that a peft LoRA r=16 step has not, whatever the implementation: the
adapters' arithmetic (each token runs its role's shared LoRA and top-k routed LoRAs, 3-4 rank-16
LoRAs where the plain LoRA runs one), the orthogonal loss (docs/spec.md §4: pairwise r x r products
of the routed LoRAs, and their gradients) and AdamW over ~14x the parameters. This script measures
the two steps and those pieces alone, counts the extra multiply-adds and prices them at this core's
own large-GEMM rate, and prints the floor they add up to: LoRA's step plus MoR's extra work, its
arithmetic at that rate and no host overhead of its own (AdamW, memory-bound, as measured alone).

    python benchmarks/bench_floor.py                  # tiny preset, roles in long spans
    python benchmarks/bench_floor.py --spans short    # roles in 6-token spans
    python benchmarks/bench_floor.py --preset smollm2 # the SmolLM2-135M shape, 1 x 512 tokens
    python benchmarks/bench_floor.py --preset smollm2 --threads 2   # wall clock, all pieces on 2 threads

One thread by default, CPU time of the thread (``time.thread_time``), so a busy machine disturbs it
less than the wall clock; with ``--threads N > 1`` every piece (the GEMM rate included) runs on N
threads and is timed by the wall clock. Medians of ``--reps`` repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_model  # noqa: E402
import mor_ext  # noqa: E402
from mor_ext.patching import mor_layers  # noqa: E402


def median_ms(fn, n: int, reps: int) -> float:
    """Median over ``reps`` of the milliseconds per call of ``fn``, ``n`` calls each: the calling
    thread's CPU time on one thread, the wall clock on more (the other threads' CPU time would be
    missed)."""
    clock = time.thread_time_ns if torch.get_num_threads() == 1 else time.perf_counter_ns
    fn()
    out = []
    for _ in range(reps):
        t0 = clock()
        for _ in range(n):
            fn()
        out.append((clock() - t0) / n / 1e6)
    return statistics.median(out)


def gemm_rate(reps: int) -> float:
    """Multiply-adds per second of one large fp32 GEMM on torch's threads: their practical peak."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 1024**3 / (median_ms(lambda: a @ b, 4, reps) / 1e3)


def extra_adapter_fmas(model: torch.nn.Module, roles: torch.Tensor) -> int:
    """Multiply-adds of a forward and backward that MoR's adapters need beyond a rank-r LoRA's: per
    token and projection, its role's shared LoRA and top-k routed LoRAs (the method's minimum; the
    CPU op's shrink and dL/d(gated shrink) run all routed LoRAs of the role, and its other GEMMs too
    for roles under 128 tokens) against one LoRA, each ``r (d_in + d_out)`` forward and twice that
    backward (the input's gradient and the weights')."""
    spec = model.mor_config.spec
    per_role = [int(role.shared) + role.top_k - 1 for role in spec.roles]
    loras_beyond_one = sum(per_role[int(r)] for r in roles.reshape(-1))
    width = sum(layer.in_features + layer.out_features for _, layer in mor_layers(model))
    return 3 * loras_beyond_one * spec.rank * width


def orthogonal_fmas(model: torch.nn.Module) -> int:
    """Multiply-adds of the orthogonal loss's forward and backward (the CPU op's algorithm): per layer
    and role with E >= 2 routed LoRAs, the E(E-1)/2 products A_i A_j^T ([r, d_in] x [d_in, r]) and E
    Gram matrices B_i^T B_i forward; E(E-1) [r, r] x [r, d_in] products for dA and E [d_out, r] x
    [r, r] for dB backward."""
    spec, total = model.mor_config.spec, 0
    for _, layer in mor_layers(model):
        d_in, d_out, r = layer.in_features, layer.out_features, spec.rank
        for role in spec.roles:
            e = role.num_experts
            if e >= 2:
                total += (e * (e - 1) // 2 + e * (e - 1)) * d_in * r * r + 2 * e * d_out * r * r
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--spans", choices=["long", "short"], default="long")
    parser.add_argument("--steps", type=int, default=None, help="steps per repetition (tiny 20, smollm2 1)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (tiny 7, smollm2 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (more than 1: wall clock)")
    args = parser.parse_args()
    small = args.preset == "tiny"
    args.steps = args.steps or (20 if small else 1)
    args.reps = args.reps or (7 if small else 3)
    torch.set_num_threads(args.threads)
    allocator = bench_model.steady_allocator()
    ids, roles = bench_model.step_inputs(args.preset, args.spans, "cpu")

    step_ms, adamw_ms, models = {}, {}, {}
    for key in ("lora", "mor"):
        model, kwargs = bench_model.build_model(args.preset, key, "cpu", roles)
        step, _ = bench_model.train_step(model, kwargs, ids)
        step_ms[key] = median_ms(step, args.steps, args.reps)
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = torch.optim.AdamW(params, lr=1e-9, fused=True)  # as train_step's
        adamw_ms[key] = median_ms(opt.step, args.steps, args.reps)
        models[key] = (model, sum(p.numel() for p in params))

    mor, _ = models["mor"]
    layers = [layer for _, layer in mor_layers(mor)]
    lora_As, lora_Bs = [layer.lora_A for layer in layers], [layer.lora_B for layer in layers]

    def orthogonal():
        mor_ext.functional.orthogonal_loss_layers(lora_As, lora_Bs, layers[0].spec).backward()

    orth_ms = median_ms(orthogonal, args.steps, args.reps)
    rate = gemm_rate(args.reps)
    fmas, orth_fmas = extra_adapter_fmas(mor, roles), orthogonal_fmas(mor)
    # The floor prices the arithmetic at the large-GEMM rate (a bound no small GEMM beats) and takes
    # AdamW, which is memory-bound, as measured alone.
    extra = {"AdamW over MoR's parameters beyond the LoRA's (measured alone)": adamw_ms["mor"] - adamw_ms["lora"],
             f"adapters' extra arithmetic ({fmas / 1e6:.1f}M multiply-adds at the GEMM rate)": fmas / rate * 1e3,
             f"orthogonal loss, forward + backward ({orth_fmas / 1e6:.1f}M multiply-adds at the GEMM rate)":
                 orth_fmas / rate * 1e3}
    floor = step_ms["lora"] + sum(extra.values())

    timing = "1 thread, thread CPU time" if args.threads == 1 else f"{args.threads} threads, wall clock"
    print(f"\n| {bench_model.cpu_name()}, {timing}, torch {torch.__version__}, {allocator}, {args.preset} preset, "
          f"{args.spans} role spans | ms |\n|---|---:|")
    print(f"| {args.threads}-thread fp32 GEMM rate (1024^3) | {rate / 1e9:.1f} G multiply-adds/s |")
    print(f"| peft LoRA r=16 step ({models['lora'][1] / 1e6:.2f}M parameters) | {step_ms['lora']:.2f} |")
    for label, ms in extra.items():
        print(f"| + {label} | {ms:.2f} |")
    print(f"| = floor of a MoR step ({models['mor'][1] / 1e6:.2f}M parameters) | {floor:.2f} "
          f"(**{floor / step_ms['lora']:.2f}x** the LoRA step) |")
    print(f"| MoR step measured | {step_ms['mor']:.2f} ({step_ms['mor'] / step_ms['lora']:.2f}x) |")
    print(f"| (the orthogonal loss measured alone, forward + backward) | {orth_ms:.2f} |")


if __name__ == "__main__":
    main()
