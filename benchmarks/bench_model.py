"""A training step of a whole model: MoR on all 7 projections vs a plain rank-16 LoRA (peft) vs no adapter.

Random weights built from a config (no download); forward, backward and an AdamW step; roles in
spans as in agent trajectories. Presets:

* ``tiny``: 4 layers of width 64, 1 x 64 tokens: compute is negligible, so the step time is the
  per-step host overhead of each adapter (Python, autograd, op dispatch).
* ``smollm2``: the SmolLM2-135M shape (30 layers, d=576), 1 x 512 tokens, fp32: the CPU case.
* ``llama1b``: the Llama-3.2-1B shape (16 layers, d=2048), 4 x 2048 tokens, bf16: the GPU case
  (``bench_gpu.py --only model`` runs it).

``python benchmarks/bench_model.py [--preset tiny|smollm2|llama1b] [--device cpu|cuda] [--spans long|short]
[--compile] [--mor-rank R] [--lora-rank R]`` prints a markdown table (medians of interleaved rounds, and
the CPU model).

The ranks split a step's cost into host work and arithmetic: at the tiny preset's width (64) a
MoRAgent token runs 5 rank-16 LoRAs per projection (its role's shared LoRA and all 4 routed ones, by
role) where the plain LoRA runs one, so the adapters' arithmetic is not negligible there.
``--mor-rank 1`` leaves MoR's host work (the same ops, calls and tensors) with almost no
arithmetic; ``--lora-rank 80`` gives the plain LoRA MoR's per-token adapter width.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch

import mor_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import layer_cases  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Preset:
    config: dict
    batch: int
    seq: int
    dtype: torch.dtype
    repeat: int


PRESETS = {
    "tiny": Preset(dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2), 1, 64, torch.float32, 30),
    "smollm2": Preset(dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                           num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True), 1, 512,
                      torch.float32, 5),
    "llama1b": Preset(dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                           num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
                           rope_theta=500000.0), 4, 2048, torch.bfloat16, 8),
}


def once_ms(fn, device: str) -> float:
    """Milliseconds of one ``fn()``; CUDA events on a GPU, the wall clock on a CPU."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def timed_ms(fn, device: str, warmup: int, repeat: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeat`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return statistics.median(once_ms(fn, device) for _ in range(repeat))


def short_span_roles(seq: int, span: int = 6) -> torch.Tensor:
    """Roles in spans of ``span`` tokens (reasoner, executor, summarizer, ...): the short turns of
    agent data (a tool call, an observation, "Next: executor")."""
    return torch.arange(seq) // span % 3


def step_inputs(preset_name: str, spans: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, role_ids)`` of a preset's step, both ``[batch, seq]``, seeded."""
    preset = PRESETS[preset_name]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, preset.config["vocab_size"], (preset.batch, preset.seq), generator=g).to(device)
    if spans == "short":
        spans_ids = short_span_roles(preset.seq)
    else:
        spans_ids = layer_cases.role_ids_for(layer_cases.Shape(tokens=preset.seq), 3, g)
    return ids, spans_ids.repeat(preset.batch, 1).to(device)


def build_model(preset_name: str, key: str, device: str, roles: torch.Tensor, mor_rank: int = 16,
                lora_rank: int = 16) -> tuple[torch.nn.Module, dict]:
    """A preset's model with random weights, frozen, with ``key``'s adapter ("none", "lora": peft's
    LoRA, "mor"); returns it with its extra forward kwargs (MoR's ``role_ids``)."""
    import peft
    import transformers

    preset = PRESETS[preset_name]
    config = transformers.LlamaConfig(max_position_embeddings=max(4096, preset.seq), **preset.config)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(preset.dtype)
    try:
        with torch.device(device):
            model = transformers.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    model.config.use_cache = False
    model.requires_grad_(False)
    if key == "none":
        model.enable_input_require_grads()  # backward runs through every layer, as with an adapter
        return model, {}
    if key == "lora":
        lora = peft.LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules=TARGETS)
        return peft.get_peft_model(model, lora, autocast_adapter_dtype=False), {}  # adapters in the model's dtype
    mor_ext.patch(model, mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(mor_rank)))
    return model, {"role_ids": roles}


def train_step(model: torch.nn.Module, kwargs: dict, ids: torch.Tensor, compile: bool = False,
               dynamic: bool | None = None):
    """``(step, trainable parameters)``: ``step()`` is forward with labels, backward and a fused AdamW
    step (transformers' default optimizer); ``compile``: the forward through ``torch.compile``
    (inductor; backward compiled by AOTAutograd), the optimiser eager."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True) if params else None
    forward = torch.compile(model, dynamic=dynamic) if compile else model

    def step():
        out = forward(input_ids=ids, labels=ids, **kwargs)
        out.loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in params)


def compare_train_steps(preset_name: str, device: str, profile: bool = False, spans: str = "long",
                        compile: bool = False, rounds: int | None = None, mor_rank: int = 16,
                        lora_rank: int = 16) -> dict[str, tuple[float, float, int]]:
    """``{"none" | "lora" | "mor": (ms per step, peak GiB (CUDA) or 0, trainable parameters)}``.

    The three models are built side by side and their steps alternate, round by round, so that a
    noisy machine slows all alike; each value is the median over rounds, and ``ratios`` (added under
    the key "ratios") holds the per-round MoR / LoRA ratios. ``compile``: each model's forward
    through ``torch.compile`` (inductor; backward compiled by AOTAutograd), the optimiser eager."""
    preset = PRESETS[preset_name]
    ids, roles = step_inputs(preset_name, spans, device)

    models, steps, peaks, sizes = {}, {}, {}, {}
    for key in ("none", "lora", "mor"):
        base_bytes = torch.cuda.memory_allocated() if device == "cuda" else 0
        model, kwargs = build_model(preset_name, key, device, roles, mor_rank, lora_rank)
        models[key] = model
        steps[key], sizes[key] = train_step(model, kwargs, ids, compile)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(3):  # warm-up (and, compiled, the compile)
            steps[key]()
        if device == "cuda":
            torch.cuda.synchronize()
        peaks[key] = (torch.cuda.max_memory_allocated() - base_bytes) / 2**30 if device == "cuda" else 0.0
        print(f"  {key}: warm-up {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    times: dict[str, list[float]] = {key: [] for key in steps}
    for _ in range(rounds or preset.repeat):
        for key, step in steps.items():
            times[key].append(once_ms(step, device))
    results = {key: (statistics.median(t), peaks[key], sizes[key]) for key, t in times.items()}
    results["ratios"] = [m / l for m, l in zip(times["mor"], times["lora"])]
    for key, label in (("none", "no adapter"), ("lora", "plain LoRA r=16 (peft)"), ("mor", "MoR (mor_ext)")):
        print(f"  {label}: {results[key][0]:.1f} ms/step", file=sys.stderr, flush=True)
    if profile:  # where a MoR step's time goes, by op (stderr)
        from torch.profiler import ProfilerActivity, profile as torch_profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            steps["mor"]()
            if device == "cuda":
                torch.cuda.synchronize()
        keys = ("self_cuda_time_total", "cpu_time_total") if device == "cuda" else ("self_cpu_time_total",)
        for key in keys:
            print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60), file=sys.stderr)
    del models, steps
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return results


def steady_allocator() -> str:
    """Fix glibc malloc's thresholds for this process and say so (the benchmark tables print it).

    By default glibc returns large freed blocks to the kernel and adapts its mmap threshold to the
    sizes it has seen, so a step's time depends on what ran before it in the same process: with three
    SmolLM2-sized models alternating, peft's LoRA step paid page faults that it does not pay alone
    (3565-3712 ms against 2619-2777 ms alone), which flattered MoR's ratio. Here freed memory is kept
    and reused (blocks mmapped only above 1 GiB, the heap trimmed only above 2 GiB free, grown 256 MiB
    at a time), as in a long training run, so interleaved models each cost what they cost alone.
    Where the C library is not glibc this does nothing and says so."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = (libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1)
              and libc.mallopt(m_top_pad, 1 << 28))
    except (OSError, AttributeError):
        return "allocator as is"
    return "glibc malloc keeping freed memory" if ok else "allocator as is (mallopt refused)"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo where there is one), which CPU numbers depend on."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def result_rows(preset_name: str, results, spans: str = "long", compile: bool = False, mor_rank: int = 16,
                lora_rank: int = 16) -> list[tuple[str, str, str]]:
    preset = PRESETS[preset_name]
    tag = (f"{preset_name} shape, {preset.batch}x{preset.seq} tokens, {str(preset.dtype).removeprefix('torch.')}, "
           f"{'short' if spans == 'short' else 'long'} role spans, {'compiled' if compile else 'eager'} train step")
    rows = []
    for key, label in (("none", "no adapter"), ("lora", f"plain LoRA r={lora_rank} (peft)"),
                       ("mor", "MoR (mor_ext)" if mor_rank == 16 else f"MoR rank {mor_rank} (mor_ext)")):
        ms, peak, n = results[key]
        note = (f"peak {peak:.1f} GiB, " if peak else "") + f"{n / 1e6:.2f}M trainable"
        if key == "mor":
            ratios = results.get("ratios") or [ms / results["lora"][0]]
            note += (f"; {statistics.median(ratios):.2f}x the LoRA step (median of {len(ratios)} interleaved "
                     f"rounds, {min(ratios):.2f}-{max(ratios):.2f})")
        rows.append((f"{tag}: {label}", f"{ms:.1f} ms", note))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--spans", choices=["long", "short"], default="long",
                        help="roles in spans of 64-256 tokens, or of 6 tokens (short agent turns)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (inductor)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timed rounds (default: per preset)")
    parser.add_argument("--profile", action="store_true", help="print the profiler's table of a MoR step (stderr)")
    parser.add_argument("--mor-rank", type=int, default=16, help="rank of each MoR LoRA (1: MoR's host work alone)")
    parser.add_argument("--lora-rank", type=int, default=16, help="rank of the plain LoRA (80: MoR's per-token width)")
    args = parser.parse_args()
    allocator = steady_allocator()
    print(mor_ext.describe_backend(), file=sys.stderr)
    results = compare_train_steps(args.preset, args.device, args.profile, args.spans, args.compile, args.rounds,
                                  args.mor_rank, args.lora_rank)
    rows = result_rows(args.preset, results, args.spans, args.compile, args.mor_rank, args.lora_rank)
    where = torch.cuda.get_device_name() if args.device == "cuda" else \
        f"{cpu_name()}, {torch.get_num_threads()} threads, {allocator}"
    print(f"\n| {where}, torch {torch.__version__} | value | note |\n|---|---:|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
