"""GPU benchmarks of the CUDA ops, printed as one markdown table (run by benchmarks/gpu_check.sh).

Times are medians of CUDA-event-timed repeats after warm-up, on random inputs. Ceilings measured in
the same run: device-to-device copy bandwidth (bytes read + written) and a large bf16 GEMM.
"""

from __future__ import annotations

import statistics
import sys

import torch

import mor_ext
from mor_ext import functional as MF

ROWS: list[tuple[str, str, str]] = []


def timed(fn, warmup: int = 5, repeat: int = 30) -> float:
    """Median milliseconds of ``fn()``, CUDA events around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


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
    ms = timed(lambda: MF.route(x, rw, sg, roles, spec))
    floor_bytes = x.numel() * 2 + t * (spec.k_max * 6 + spec.num_experts_total * 4)
    gbs = floor_bytes / ms / 1e6
    row("route fwd, T=8192 d=4096 bf16", f"{ms * 1e3:.0f} us",
        f"{gbs:.0f} GB/s = {100 * gbs / copy_gbs:.0f}% of copy (target >= 50%)")
    mor_ext.set_backend("reference")
    ms_ref = timed(lambda: MF.route(x, rw, sg, roles, spec))
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
    ms = min(ms, ms_layers)

    def dense_fwd_bwd():  # forms B_i B_j^T (d_out x d_out): what the spec calls a performance bug
        total = 0
        for a, b in params:
            for rho in range(spec.num_roles):
                r = spec.routed_loras(rho)
                for i in r:
                    for j in r:
                        if i < j:
                            total = total + (a[i] @ a[j].T).square().sum() + (b[i] @ b[j].T).square().sum()
        torch.autograd.grad(total / len(params), flat)

    ms_dense = timed(dense_fwd_bwd, warmup=1, repeat=3)
    row("orth loss, forming d x d products", f"{ms_dense:.1f} ms", f"{ms_dense / ms:.0f}x slower (target >= 100x)")


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    print(mor_ext.describe_backend(), file=sys.stderr)
    copy_gbs = ceilings()
    gating(copy_gbs)
    orthogonal()
    name = torch.cuda.get_device_name()
    print(f"\n| {name}, torch {torch.__version__} | value | note |\n|---|---:|---|")
    for r in ROWS:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
