"""Forward+backward time and peak memory of one MoR-adapted linear layer, five ways.

    python benchmarks/bench_layer.py                      # T=2048, d_in=d_out=2048, r=16, fp32
    python benchmarks/bench_layer.py --layout random      # roles drawn per token (gather path)
    python benchmarks/bench_layer.py --tokens 512 --d 1024 --dtype bfloat16
    python benchmarks/bench_layer.py --floor              # also: MKL's per-span GEMM sequence alone

Times: all cases run in one process, interleaved round by round (base, LoRA, ..., C++, base, ...),
so that drift in a shared or throttled CPU hits every case alike; each case's time is the median
over --repeat rounds and its ratio to the base layer is the median of the per-round ratios.
Memory: each case runs again in its own subprocess, so that its peak (resident-set growth over
its inputs, from getrusage) is its own. The same cases run under pytest-benchmark:
``pytest benchmarks/``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layer_cases import CASES, Shape, gemm_floor, make_inputs, zero_grads  # noqa: E402

TARGETS = "targets: C++ <= 1.15x base; C++ >= 3x faster than official all-experts"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory(name: str, shape: Shape, warmup: int) -> float:
    """Peak resident-set growth (MiB) of one case's forward+backward, in this (fresh) process."""
    inputs = make_inputs(shape)
    step = CASES[name](inputs)
    zero_grads(inputs)
    base_rss = _rss_mib()
    for _ in range(max(warmup, 1)):
        zero_grads(inputs)
        step()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return max(0.0, peak_rss - base_rss)


def interleaved_times(shape: Shape, warmup: int, repeat: int) -> dict[str, list[float]]:
    inputs = {name: make_inputs(shape) for name in CASES}
    steps = {name: CASES[name](inputs[name]) for name in CASES}
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for i in range(warmup + repeat):
        for name, step in steps.items():
            zero_grads(inputs[name])
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--d", type=int, default=2048, help="d_in = d_out")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--layout", default="spans", choices=["spans", "random"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--floor", action="store_true",
                    help="also time MKL's per-span GEMM sequence alone (layer_cases.gemm_floor) against the base layer")
    ap.add_argument("--case", help="run one case in this process and print JSON (used internally)")
    args = ap.parse_args()
    shape = Shape(args.tokens, args.d, args.d, args.rank, getattr(torch, args.dtype), args.layout)

    if args.case:
        print(json.dumps({"case": args.case, "peak_extra_mib": peak_memory(args.case, shape, args.warmup)}))
        return

    import mor_ext

    print(mor_ext.describe_backend())
    print(f"T={shape.tokens} d_in=d_out={shape.d_in} r={shape.rank} {args.dtype} roles={shape.role_layout} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    memory = {}
    for name in CASES:
        cmd = [sys.executable, __file__, "--case", name, "--tokens", str(args.tokens), "--d", str(args.d),
               "--rank", str(args.rank), "--dtype", args.dtype, "--layout", args.layout, "--warmup", "1"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        memory[name] = json.loads(out)["peak_extra_mib"]
        print(f"  measured memory of {name}", file=sys.stderr, flush=True)
    times = interleaved_times(shape, args.warmup, args.repeat)
    base_name = next(iter(CASES))
    ratio = {name: statistics.median(t / b for t, b in zip(times[name], times[base_name])) for name in CASES}
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"\n| case | fwd+bwd ms (median of {args.repeat}) | x base | peak extra MiB |\n|---|---:|---:|---:|")
    for name in CASES:
        print(f"| {name} | {ms[name]:.1f} | {ratio[name]:.2f} | {memory[name]:.0f} |")
    cpp, official = "mor_ext C++", "official all-experts"
    print(f"\nC++ path: {ratio[cpp]:.2f}x the frozen base layer, "
          f"{statistics.median(o / c for o, c in zip(times[official], times[cpp])):.1f}x faster than official all-experts")
    print(TARGETS)
    if args.floor:
        inputs = make_inputs(shape)
        base, floor = CASES[base_name](inputs), gemm_floor(inputs)
        ratios = []
        for i in range(args.warmup + args.repeat):
            t = []
            for step in (base, floor, base):
                zero_grads(inputs)
                start = time.perf_counter()
                step()
                t.append(time.perf_counter() - start)
            if i >= args.warmup:
                ratios.append(t[1] / ((t[0] + t[2]) / 2))
        print(f"MKL's per-span GEMM sequence alone (no routing, copies or checks): {statistics.median(ratios):.2f}x base")


if __name__ == "__main__":
    main()
