"""The two loss ops of a patched model, alone: orthogonal_loss_layers and load_balance_loss_layers,
forward and backward, over every adapted layer of a preset's model (one op call each, as
``patching.py`` makes them), and the op counts of whole training steps.

The layers' shapes come from ``bench_model.py``'s presets (7 projections per decoder layer, MoRAgent
spec, rank 16); weights and routings are random. Each op's time is the median over calls of the
calling thread's CPU time (``time.thread_time``) and of the wall clock: on a machine shared with
other jobs the thread time is the steadier of the two (it does not count time the thread waits for
a core), but it only counts the calling thread, so compare it at ``--threads 1``.

``python benchmarks/bench_losses.py [--preset tiny|smollm2] [--threads N] [--calls N]``
prints a markdown table; ``--profile-steps N`` also profiles N MoR training steps of the preset
(torch profiler, roles in 6-token spans) and prints the ops per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter

import torch

import mor_ext
from mor_ext import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_model  # noqa: E402


def projection_shapes(preset: str) -> list[tuple[int, int]]:
    """(d_in, d_out) of the 7 adapted projections of every decoder layer of a preset's Llama."""
    c = bench_model.PRESETS[preset].config
    d, inter = c["hidden_size"], c["intermediate_size"]
    kv = d // c["num_attention_heads"] * c["num_key_value_heads"]
    per_layer = [(d, d), (d, kv), (d, kv), (d, d), (d, inter), (d, inter), (inter, d)]
    return per_layer * c["num_hidden_layers"]


def loss_inputs(preset: str, seed: int = 0):
    """Per layer lora_A [L, r, d_in] and lora_B [L, d_out, r] (leaves), and one call's routings."""
    spec = mor_ext.MoRSpec.moragent(16)
    g = torch.Generator().manual_seed(seed)
    shapes = projection_shapes(preset)
    lora_A = [(torch.randn(spec.num_loras, spec.rank, d_in, generator=g) * d_in**-0.5).requires_grad_()
              for d_in, _ in shapes]
    lora_B = [(torch.randn(spec.num_loras, d_out, spec.rank, generator=g) * 0.01).requires_grad_()
              for _, d_out in shapes]
    preset_ = bench_model.PRESETS[preset]
    n = preset_.batch * preset_.seq
    roles = bench_model.short_span_roles(n)
    probs, index = [], []
    with torch.no_grad():
        for d_in, _ in shapes:
            x = torch.randn(n, d_in, generator=g)
            routing = F.route(x, torch.randn(spec.num_experts_total, d_in, generator=g) * d_in**-0.5,
                              torch.randn(spec.num_roles, d_in, generator=g) * d_in**-0.5, roles, spec)
            probs.append(routing.router_probs.clone().requires_grad_())
            index.append(routing.lora_index)
    return spec, lora_A, lora_B, roles, probs, index


def median_times(fn, calls: int, warmup: int = 3) -> tuple[float, float]:
    """(thread CPU ms, wall ms) of ``fn()``, medians over ``calls``."""
    for _ in range(warmup):
        fn()
    cpu, wall = [], []
    for _ in range(calls):
        t0, w0 = time.thread_time(), time.perf_counter()
        fn()
        cpu.append((time.thread_time() - t0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return statistics.median(cpu), statistics.median(wall)


def op_count(fn) -> int:
    """Operator events the profiler records in one ``fn()`` (the op itself included)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages())


def loss_rows(preset: str, calls: int) -> list[tuple[str, float, float, int]]:
    """(case, thread ms, wall ms, ops) for each loss op, forward and backward."""
    spec, lora_A, lora_B, roles, probs, index = loss_inputs(preset)
    flags = mor_ext.ops._flags(spec)
    lib = torch.ops.mor_ext
    g = torch.tensor(0.7)
    _, products = lib.orthogonal_loss_layers(lora_A, lora_B, *flags)
    cases = {
        "orthogonal_loss_layers": lambda: lib.orthogonal_loss_layers(lora_A, lora_B, *flags),
        "orthogonal_loss_layers_backward": lambda: lib.orthogonal_loss_layers_backward(g, products, lora_A, lora_B,
                                                                                         *flags),
        "orthogonal, forward + autograd backward": lambda: torch.autograd.grad(
            F.orthogonal_loss_layers(lora_A, lora_B, spec, reduction="sum"), lora_A + lora_B),
        "load_balance_loss_layers": lambda: lib.load_balance_loss_layers(probs, index, roles, *flags[:3]),
        "load_balance_loss_layers_backward": lambda: lib.load_balance_loss_layers_backward(g, probs, index, roles,
                                                                                             *flags[:3]),
        "load balance, forward + autograd backward": lambda: torch.autograd.grad(
            F.load_balance_loss_layers(probs, index, roles, spec, reduction="sum"), probs),
    }
    rows = []
    for name, fn in cases.items():
        cpu, wall = median_times(fn, calls)
        rows.append((name, cpu, wall, op_count(fn)))
    return rows


def profile_steps(preset: str, steps: int) -> None:
    """Profile ``steps`` MoR training steps (forward with labels, backward, fused AdamW) of the preset,
    roles in 6-token spans; print the ops per step and the loss ops' CPU time per step."""
    import transformers
    from torch.profiler import ProfilerActivity, profile

    p = bench_model.PRESETS[preset]
    config = transformers.LlamaConfig(max_position_embeddings=max(4096, p.seq), **p.config)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).requires_grad_(False)
    model.config.use_cache = False
    mor_ext.patch(model)
    ids = torch.randint(0, config.vocab_size, (p.batch, p.seq))
    roles = bench_model.short_span_roles(p.seq).repeat(p.batch, 1)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4, fused=True)

    def step():
        model(input_ids=ids, labels=ids, role_ids=roles).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    counts = Counter({e.key: e.count for e in events})
    print(f"\n{steps} MoR steps ({preset}, short spans): {sum(counts.values()) / steps:.0f} op events per step; "
          "most frequent, per step:")
    for key, count in counts.most_common(15):
        print(f"  {count / steps:8.1f}  {key}")
    print("loss ops, per step (CPU time including their children, as the profiler measures it):")
    for e in events:
        if "loss_layers" in e.key:
            print(f"  {e.key}: {e.count / steps:.0f} calls, {e.cpu_time_total / steps / 1e3:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--profile-steps", type=int, default=0, help="also profile this many training steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(mor_ext.describe_backend(), file=sys.stderr)
    layers = len(projection_shapes(args.preset))
    print(f"\n| {bench_model.cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.preset}: {layers} layers | thread CPU ms | wall ms | ops |\n|---|---:|---:|---:|")
    for name, cpu, wall, ops in loss_rows(args.preset, args.calls):
        print(f"| {name} | {cpu:.3f} | {wall:.3f} | {ops} |")
    if args.profile_steps:
        profile_steps(args.preset, args.profile_steps)


if __name__ == "__main__":
    main()
