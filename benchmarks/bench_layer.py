"""Forward+backward time and peak memory of one MoR-adapted linear layer, five ways.

    python benchmarks/bench_layer.py                      # T=2048, d_in=d_out=2048, r=16, fp32
    python benchmarks/bench_layer.py --layout random      # roles drawn per token (gather path)
    python benchmarks/bench_layer.py --tokens 512 --d 1024 --dtype bfloat16

Each case runs in its own subprocess so that its peak memory (resident-set growth over the
inputs, read from getrusage) is its own. Times are medians over --repeat steps after --warmup.
The same cases run under pytest-benchmark: ``pytest benchmarks/``.
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
from layer_cases import CASES, Shape, make_inputs, zero_grads  # noqa: E402

TARGETS = "targets: C++ <= 1.15x base; C++ >= 3x faster than official all-experts"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_case(name: str, shape: Shape, warmup: int, repeat: int) -> dict:
    torch.manual_seed(0)
    inputs = make_inputs(shape)
    step = CASES[name](inputs)
    zero_grads(inputs)
    base_rss = _rss_mib()
    times = []
    for i in range(warmup + repeat):
        zero_grads(inputs)
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"case": name, "ms": statistics.median(times) * 1e3, "peak_extra_mib": max(0.0, peak_rss - base_rss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--d", type=int, default=2048, help="d_in = d_out")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--layout", default="spans", choices=["spans", "random"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--case", help="run one case in this process and print JSON (used internally)")
    args = ap.parse_args()
    shape = Shape(args.tokens, args.d, args.d, args.rank, getattr(torch, args.dtype), args.layout)

    if args.case:
        print(json.dumps(run_case(args.case, shape, args.warmup, args.repeat)))
        return

    import mor_ext

    print(mor_ext.describe_backend())
    print(f"T={shape.tokens} d_in=d_out={shape.d_in} r={shape.rank} {args.dtype} roles={shape.role_layout} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    results = []
    for name in CASES:
        cmd = [sys.executable, __file__, "--case", name, "--tokens", str(args.tokens), "--d", str(args.d),
               "--rank", str(args.rank), "--dtype", args.dtype, "--layout", args.layout,
               "--warmup", str(args.warmup), "--repeat", str(args.repeat)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(out))
        print(f"  ran {name}", file=sys.stderr, flush=True)
    base = results[0]["ms"]
    official = next(r["ms"] for r in results if r["case"] == "official all-experts")
    print(f"\n| case | fwd+bwd ms | x base | peak extra MiB |\n|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['case']} | {r['ms']:.1f} | {r['ms'] / base:.2f} | {r['peak_extra_mib']:.0f} |")
    cpp = next(r["ms"] for r in results if r["case"] == "mor_ext C++")
    print(f"\nC++ path: {cpp / base:.2f}x the frozen base layer, {official / cpp:.1f}x faster than official all-experts")
    print(TARGETS)


if __name__ == "__main__":
    main()
