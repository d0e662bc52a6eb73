"""GPU benchmarks of the CUDA ops, printed as one markdown table (run by benchmarks/gpu_check.sh).

Times are medians of CUDA-event-timed repeats after warm-up, on random inputs. Ceilings measured in
the same run: device-to-device copy bandwidth (bytes read + written) and a large bf16 GEMM.
Sections: gating, orthogonal loss, one adapted layer (training and decode, time and memory), the
host overhead of a tiny model's train step (bench_model.py --preset tiny) and a
training step of a Llama-3.2-1B-shaped model. ``--only NAME[,NAME]`` runs some sections.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import torch

import mor_ext
from mor_ext import functional as MF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_model  # noqa: E402
import layer_cases  # noqa: E402

ROWS: list[tuple[str, str, str]] = []


def timed(fn, warmup: int = 5, repeat: int = 30) -> float:
    """Median milliseconds of ``fn()``, CUDA events around each call."""
    return bench_model.timed_ms(fn, "cuda", warmup, repeat)


def graph_timed(fn, repeat: int = 30) -> float:
    """Median milliseconds of one replay of ``fn()`` captured as a CUDA graph: the GPU time alone."""
    fn()  # warm-up outside the capture (workspaces, lazy init)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return timed(graph.replay, repeat=repeat)


def profile_tables(fn, rows: int = 15) -> None:
    """The torch profiler's tables of one ``fn()`` by GPU and by host time, on stderr."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    for key in ("self_cuda_time_total", "cpu_time_total"):
        print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60), file=sys.stderr)


def row(name: str, value: str, note: str = "") -> None:
    ROWS.append((name, value, note))
    print(f"{name}: {value} {note}", file=sys.stderr, flush=True)


def ceilings() -> float:
    src = torch.randn(256 << 20, device="cuda")  # 1 GiB
    ms = timed(lambda: src.clone(), repeat=10)
    copy_gbs = 2 * src.numel() * 4 / ms / 1e6
    row("device copy bandwidth", f"{copy_gbs:.0f} GB/s", "(read + write)")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = timed(lambda: a @ a, repeat=10)
    row("bf16 GEMM 8192^3", f"{2 * 8192**3 / ms / 1e9:.0f} TFLOP/s")
    del src, a
    return copy_gbs


def gating(copy_gbs: float) -> None:
    spec = mor_ext.MoRSpec.moragent(16)
    t, d = 8192, 4096
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(t, d, device="cuda", generator=g).bfloat16()
    rw = (torch.randn(spec.num_experts_total, d, device="cuda", generator=g) * d**-0.5).bfloat16()
    sg = (torch.randn(spec.num_roles, d, device="cuda", generator=g) * d**-0.5).bfloat16()
    roles = torch.randint(-1, 3, (t,), device="cuda", generator=g)
    floor_bytes = x.numel() * 2 + t * (spec.k_max * 6 + spec.num_experts_total * 4)

    def route():
        MF.route(x, rw, sg, roles, spec)

    def route_ids_checked():  # as a patched model's layers call it: role ids checked once per model call
        with MF.ids_checked():
            MF.route(x, rw, sg, roles, spec)

    # Three ways: with the functional API's per-call role-id check (a device-to-host sync), with the
    # ids checked once per model call, and as a CUDA graph replay (the GPU time alone).
    ms_checked = timed(route)
    ms = timed(route_ids_checked)
    ms_graph = graph_timed(route_ids_checked)
    for label, value in (("per-call id check", ms_checked), ("ids checked per model call", ms),
                         ("CUDA graph: kernels only", ms_graph)):
        gbs = floor_bytes / value / 1e6
        row(f"route fwd, T=8192 d=4096 bf16, {label}", f"{value * 1e3:.0f} us",
            f"{gbs:.0f} GB/s = {100 * gbs / copy_gbs:.0f}% of copy (target >= 50%)")
    mor_ext.set_backend("reference")
    ms_ref = timed(route_ids_checked)
    mor_ext.set_backend("auto")
    row("route fwd, reference", f"{ms_ref * 1e3:.0f} us", f"CUDA kernel {ms_ref / ms:.1f}x faster")
    leaves = [t_.clone().requires_grad_() for t_ in (x, rw, sg)]

    def fwd_bwd():
        out = MF.route(*leaves, roles, spec)
        torch.autograd.grad(out.lora_weight.float().sum() + out.router_probs.sum(), leaves)

    row("route fwd+bwd, T=8192 d=4096 bf16", f"{timed(fwd_bwd) * 1e3:.0f} us")


def orthogonal() -> None:
    """All 7 projections of a 16-layer Llama-3.2-1B-shaped model (d=2048, kv=512, ff=8192)."""
    spec = mor_ext.MoRSpec.moragent(16)
    shapes = [(2048, 2048), (2048, 512), (2048, 512), (2048, 2048), (2048, 8192), (2048, 8192), (8192, 2048)] * 16
    params = []
    for d_in, d_out in shapes:
        a = (torch.randn(spec.num_loras, 16, d_in, device="cuda") * d_in**-0.5).requires_grad_()
        b = (torch.randn(spec.num_loras, d_out, 16, device="cuda") * 0.01).requires_grad_()
        params.append((a, b))
    flat = [p for pair in params for p in pair]

    def fwd_bwd():
        loss = sum(MF.orthogonal_loss(a, b, spec) for a, b in params) / len(params)
        torch.autograd.grad(loss, flat)

    ms = timed(fwd_bwd, warmup=3, repeat=10)
    row("orth loss fwd+bwd, 112 layers (per-layer op)", f"{ms:.2f} ms", "(target < 1 ms)")

    def layers_fwd_bwd():
        loss = MF.orthogonal_loss_layers([a for a, _ in params], [b for _, b in params], spec)
        torch.autograd.grad(loss, flat)

    ms_layers = timed(layers_fwd_bwd, warmup=3, repeat=10)
    row("orth loss fwd+bwd, 112 layers (one op)", f"{ms_layers:.2f} ms", "(target < 1 ms)")
    if os.environ.get("MOR_BENCH_PROFILE"):  # kernels vs host time of the one-op loss (stderr)
        profile_tables(layers_fwd_bwd)
    ms = min(ms, ms_layers)

    def dense_fwd_bwd():  # forms A_i^T A_j and B_i B_j^T (d x d): what docs/spec.md §4 calls a performance bug
        for a, b in params:  # one layer at a time, or the d x d products of 112 layers fill the GPU
            total = 0
            for rho in range(spec.num_roles):
                r = spec.routed_loras(rho)
                for i in r:
                    for j in r:
                        if i < j:
                            total = total + (a[i].T @ a[j]).square().sum() + (b[i] @ b[j].T).square().sum()
            if isinstance(total, torch.Tensor):
                torch.autograd.grad(total / len(params), (a, b))

    ms_dense = timed(dense_fwd_bwd, warmup=1, repeat=3)
    row("orth loss, forming d x d products", f"{ms_dense:.1f} ms", f"{ms_dense / ms:.0f}x slower (target >= 100x)")


LAYER_SHAPE = layer_cases.Shape(tokens=8192, d_in=4096, d_out=4096, rank=16, dtype=torch.bfloat16)


def layer_training() -> None:
    """One adapted layer, forward + backward, T=8192, d_in=d_out=4096, r=16, MoRAgent, bf16, spans."""
    inp = layer_cases.make_inputs(LAYER_SHAPE, device="cuda")
    cases = {"base": "base F.linear (frozen)", "lora": "plain LoRA r=16", "official": "official all-experts",
             "reference": "mor_ext reference", "mor": "mor_ext C++"}
    ms = {}
    for key, name in cases.items():
        step = layer_cases.CASES[name](inp)

        def run():
            layer_cases.zero_grads(inp)
            step()

        ms[key] = timed(run, warmup=3, repeat=15)
    if os.environ.get("MOR_BENCH_PROFILE"):  # the MoR layer's kernels and host time (stderr)
        step = layer_cases.CASES["mor_ext C++"](inp)

        def run():
            layer_cases.zero_grads(inp)
            step()

        profile_tables(run, rows=20)
    tag = "T=8192 d=4096 bf16 fwd+bwd"
    row(f"layer {tag}: frozen base", f"{ms['base'] * 1e3:.0f} us")
    row(f"layer {tag}: plain LoRA r=16", f"{ms['lora'] * 1e3:.0f} us", f"{ms['lora'] / ms['base']:.2f}x base")
    row(f"layer {tag}: MoR (CUDA)", f"{ms['mor'] * 1e3:.0f} us",
        f"{ms['mor'] / ms['base']:.2f}x base (target <= 1.25x)")
    row(f"layer {tag}: MoR reference path", f"{ms['reference'] * 1e3:.0f} us",
        f"CUDA {ms['reference'] / ms['mor']:.1f}x faster (target >= 2x)")
    row(f"layer {tag}: official all-experts", f"{ms['official'] * 1e3:.0f} us",
        f"CUDA {ms['official'] / ms['mor']:.1f}x faster (target >= 5x)")


def peak_extra_bytes(step) -> int:
    """Peak memory above what is allocated before ``step()`` (grads freed first)."""
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def layer_memory() -> None:
    inp = layer_cases.make_inputs(LAYER_SHAPE, device="cuda")
    k_max = inp.spec.k_max
    extra = {}
    for key, build in {"base": layer_cases.CASES["base F.linear (frozen)"],
                       "lora": layer_cases.plain_lora(k_max * LAYER_SHAPE.rank),
                       "mor": layer_cases.CASES["mor_ext C++"]}.items():
        step = build(inp)
        step()  # warm-up: cuBLAS workspaces and the like are not the layer's
        layer_cases.zero_grads(inp)

        def run():
            layer_cases.zero_grads(inp)
            step()

        extra[key] = peak_extra_bytes(run)
    mib = 2**20
    row("layer peak memory, frozen base fwd+bwd", f"{extra['base'] / mib:.0f} MiB", "(y, grad_x, workspaces)")
    row(f"layer peak memory, plain LoRA r={k_max * LAYER_SHAPE.rank} (K_max*r)", f"{extra['lora'] / mib:.0f} MiB",
        f"{(extra['lora'] - extra['base']) / mib:.0f} MiB above base")
    row("layer peak memory, MoR", f"{extra['mor'] / mib:.0f} MiB",
        f"{(extra['mor'] - extra['base']) / mib:.0f} MiB above base; total {extra['mor'] / extra['lora']:.2f}x the "
        f"LoRA's (target <= 1.2x)")


def decode() -> None:
    """Inference of one layer at decode sizes: eager launches (what plain generate() pays) and one
    CUDA graph replay (what a graph-captured decoder pays: the kernels alone)."""
    spec = mor_ext.MoRSpec.moragent(16)
    d = 4096
    g = torch.Generator(device="cuda").manual_seed(0)
    w = (torch.randn(d, d, device="cuda", generator=g) * d**-0.5).bfloat16()
    a = (torch.randn(spec.num_loras, 16, d, device="cuda", generator=g) * d**-0.5).bfloat16()
    b = (torch.randn(spec.num_loras, d, 16, device="cuda", generator=g) * 0.01).bfloat16()
    rw = (torch.randn(spec.num_experts_total, d, device="cuda", generator=g) * d**-0.5).bfloat16()
    sg = (torch.randn(spec.num_roles, d, device="cuda", generator=g) * d**-0.5).bfloat16()
    calls = 50
    for t in (1, 8, 64):
        x = torch.randn(t, d, device="cuda", generator=g).bfloat16()
        roles = torch.full((t,), 1, device="cuda", dtype=torch.long)

        def base():
            for _ in range(calls):
                torch.nn.functional.linear(x, w)

        def mor():
            with MF.ids_checked():
                for _ in range(calls):
                    MF.mor_linear(x, w, None, a, b, rw, sg, roles, spec)

        with torch.no_grad():
            eager = {name: timed(fn, repeat=10) / calls for name, fn in (("base", base), ("mor", mor))}
            row(f"decode T={t} d=4096 bf16: MoR layer, eager", f"{eager['mor'] * 1e3:.1f} us",
                f"base {eager['base'] * 1e3:.1f} us: {eager['mor'] / eager['base']:.2f}x (launch-bound)")
            graphed = {name: graph_timed(fn, repeat=10) / calls for name, fn in (("base", base), ("mor", mor))}
        row(f"decode T={t} d=4096 bf16: MoR layer, CUDA graph", f"{graphed['mor'] * 1e3:.1f} us",
            f"base {graphed['base'] * 1e3:.1f} us: {graphed['mor'] / graphed['base']:.2f}x (target <= 1.5x)")
    # Where the decode kernels stop paying: mor_linear switches to them at <= 64 tokens
    # (csrc/cuda/decode.cuh: kDecodeMaxTokens); both paths as CUDA graphs on either side.
    flags = mor_ext.ops._flags(spec)
    for t in (32, 64, 128, 256):
        # mor_linear at max(t, 65) tokens runs the GEMM path (65 for 32 and 64: near enough in cost)
        sizes = {"decode": t, "layer": max(t, 65)}
        ms = {}
        for name, op in (("decode", torch.ops.mor_ext.testing_mor_linear_decode), ("layer", torch.ops.mor_ext.mor_linear)):
            n = sizes[name]
            x = torch.randn(n, d, device="cuda", generator=g).bfloat16()
            roles = torch.randint(0, 3, (n,), device="cuda", generator=g)
            args = (x, w, None, a, b, rw, sg, roles, *flags, True, 1.0)

            def run(op=op, args=args):
                for _ in range(calls):
                    op(*args)

            with torch.no_grad():
                ms[name] = graph_timed(run, repeat=10) / calls
        row(f"decode kernels at T={t} (CUDA graph)", f"{ms['decode'] * 1e3:.1f} us",
            f"GEMM path at T={max(t, 65)}: {ms['layer'] * 1e3:.1f} us (mor_linear switches at <= 64)")


def model_step() -> None:
    """A training step of a Llama-3.2-1B-shaped model (bench_model.py's llama1b preset): MoR vs a
    plain rank-16 LoRA (peft) vs no adapter."""
    results = bench_model.compare_train_steps("llama1b", "cuda", profile=bool(os.environ.get("MOR_BENCH_PROFILE")))
    for r in bench_model.result_rows("llama1b", results):
        row(*r)


def host_overhead() -> None:
    """The tiny preset of bench_model.py on the GPU: a step's host time per adapter, no real compute."""
    for r in bench_model.result_rows("tiny", bench_model.compare_train_steps("tiny", "cuda")):
        row(*r)


SECTIONS = {"gating": None, "orthogonal": orthogonal, "layer": layer_training, "memory": layer_memory,
            "decode": decode, "host": host_overhead, "model": model_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated sections: " + ", ".join(SECTIONS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    print(mor_ext.describe_backend(), file=sys.stderr)
    copy_gbs = ceilings()
    for name in chosen:
        t0 = time.perf_counter()
        try:
            gating(copy_gbs) if name == "gating" else SECTIONS[name]()
        except Exception as exc:  # one failing section must not lose the others' numbers
            row(f"section {name}", "FAILED", f"{type(exc).__name__}: {exc}"[:200])
        print(f"[{name}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
        gc.collect()
        torch.cuda.empty_cache()
    name = torch.cuda.get_device_name()
    print(f"\n| {name}, torch {torch.__version__} | value | note |\n|---|---:|---|")
    for r in ROWS:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
