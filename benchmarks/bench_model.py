"""A training step of a whole model: MoR on all 7 projections vs a plain rank-16 LoRA (peft) vs no adapter.

Random weights built from a config (no download); forward, backward and an AdamW step; roles in
spans as in agent trajectories. Presets:

* ``tiny``: 4 layers of width 64, 1 x 64 tokens: compute is negligible, so the step time is the
  per-step host overhead of each adapter (Python, autograd, op dispatch).
* ``smollm2``: the SmolLM2-135M shape (30 layers, d=576), 1 x 512 tokens, fp32: the CPU case.
* ``llama1b``: the Llama-3.2-1B shape (16 layers, d=2048), 4 x 2048 tokens, bf16: the GPU case
  (``bench_gpu.py --only model`` runs it).

``python benchmarks/bench_model.py [--preset tiny|smollm2|llama1b] [--device cpu|cuda]`` prints a
markdown table.
"""

from __future__ import annotations

import argparse
import gc
import os
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


def timed_ms(fn, device: str, warmup: int, repeat: int) -> float:
    """Median milliseconds of ``fn()``; CUDA events on a GPU, the wall clock on a CPU."""
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def compare_train_steps(preset_name: str, device: str, profile: bool = False) -> dict[str, tuple[float, float, int]]:
    """``{"none" | "lora" | "mor": (ms per step, peak GiB (CUDA) or 0, trainable parameters)}``."""
    import peft
    import transformers

    preset = PRESETS[preset_name]
    config = transformers.LlamaConfig(max_position_embeddings=max(4096, preset.seq), **preset.config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (preset.batch, preset.seq), generator=g).to(device)
    spans = layer_cases.role_ids_for(layer_cases.Shape(tokens=preset.seq), 3, g)
    roles = spans.repeat(preset.batch, 1).to(device)

    def build():
        torch.manual_seed(0)
        old = torch.get_default_dtype()
        torch.set_default_dtype(preset.dtype)
        try:
            with torch.device(device):
                model = transformers.LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(old)
        model.config.use_cache = False
        return model.requires_grad_(False)

    def measure(name, model, kwargs):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, fused=True) if params else None  # transformers' default optimizer

        def step():
            out = model(input_ids=ids, labels=ids, **kwargs)
            out.loss.backward()
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)

        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        ms = timed_ms(step, device, warmup=3, repeat=preset.repeat)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
        print(f"  {name}: {ms:.1f} ms/step ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        return ms, peak, sum(p.numel() for p in params)

    def release():
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    results = {}
    model = build()
    model.enable_input_require_grads()  # backward runs through every layer, as with an adapter
    results["none"] = measure("no adapter", model, {})
    del model
    release()

    model = build()
    lora = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS)
    model = peft.get_peft_model(model, lora, autocast_adapter_dtype=False)  # adapters in the model's dtype, like MoR's
    results["lora"] = measure("plain LoRA r=16 (peft)", model, {})
    del model
    release()

    model = build()
    mor_ext.patch(model)
    results["mor"] = measure("MoR (mor_ext)", model, {"role_ids": roles})
    if profile:  # where a MoR step's time goes, by op (stderr)
        from torch.profiler import ProfilerActivity, profile as torch_profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            out = model(input_ids=ids, labels=ids, role_ids=roles)
            out.loss.backward()
            if device == "cuda":
                torch.cuda.synchronize()
        keys = ("self_cuda_time_total", "cpu_time_total") if device == "cuda" else ("self_cpu_time_total",)
        for key in keys:
            print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60), file=sys.stderr)
    del model
    release()
    return results


def result_rows(preset_name: str, results) -> list[tuple[str, str, str]]:
    preset = PRESETS[preset_name]
    tag = f"{preset_name} shape, {preset.batch}x{preset.seq} tokens, {str(preset.dtype).removeprefix('torch.')}, train step"
    rows = []
    for key, label in (("none", "no adapter"), ("lora", "plain LoRA r=16 (peft)"), ("mor", "MoR (mor_ext)")):
        ms, peak, n = results[key]
        note = (f"peak {peak:.1f} GiB, " if peak else "") + f"{n / 1e6:.2f}M trainable"
        if key == "mor":
            note += f"; {ms / results['lora'][0]:.2f}x the LoRA step (target <= 1.15x)"
        rows.append((f"{tag}: {label}", f"{ms:.1f} ms", note))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", action="store_true", help="print the profiler's table of a MoR step (stderr)")
    args = parser.parse_args()
    print(mor_ext.describe_backend(), file=sys.stderr)
    rows = result_rows(args.preset, compare_train_steps(args.preset, args.device, args.profile))
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n| {where}, torch {torch.__version__} | value | note |\n|---|---:|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
