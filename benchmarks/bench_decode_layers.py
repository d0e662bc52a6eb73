"""mor_linear at decode sizes over SmolLM2-135M's 210 adapted projections, in CPU time of one thread.

Generation runs each of the 210 layers once per step, so no layer's adapter (70M fp32 parameters,
282 MB) is in cache when it runs; a benchmark that repeats one layer measures a cache-resident
adapter instead. This one builds the 30 blocks' 7 projections at SmolLM2's shapes (random weights,
MoRAgent rank 16, B not zero) and times passes over all of them ("a step"): the frozen ``F.linear``
alone, the op with role -1 (its fixed cost: dispatch, checks, outputs), the op with a role, and
the whole ``MoRLinear`` module (with the model call's inference plan, as generation runs it, and on
its general path), at T tokens per call, interleaved pass by pass.

CPU time of the calling thread (``time.thread_time``) with one torch thread by default, so that other
jobs on the machine barely move the numbers; ``--threads 2`` shows what a second thread adds (its CPU
time is not counted, so compare those numbers by wall clock on a quiet machine: ``--wall``).
``--env NAME=VALUE`` adds a case that runs with an environment variable set (read per call by the
op, e.g. ``MOR_EXT_BENCH_DECODE_MAX=0`` for the generic path), for A/B runs in one process.

    .venv/bin/python benchmarks/bench_decode_layers.py [--tokens 1 8] [--passes 30] [--env MOR_EXT_BENCH_DECODE_MAX=0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

import mor_ext
from mor_ext.layers import MoRLinear, RoleContext
from mor_ext.ops import kernel_args, mor_linear_op

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_model  # noqa: E402

HIDDEN, INTER, KV, BLOCKS = 576, 1536, 192, 30
SHAPES = [(HIDDEN, HIDDEN), (HIDDEN, KV), (HIDDEN, KV), (HIDDEN, HIDDEN), (HIDDEN, INTER), (HIDDEN, INTER),
          (INTER, HIDDEN)]  # q, k, v, o, gate, up, down: (d_in, d_out)


def build_layers(spec: mor_ext.MoRSpec, seed: int = 0) -> list[MoRLinear]:
    torch.manual_seed(seed)
    context = RoleContext(spec)
    layers = []
    for _ in range(BLOCKS):
        for d_in, d_out in SHAPES:
            layer = MoRLinear(torch.nn.Linear(d_in, d_out, bias=False), spec, scaling=2.0,
                                      role_context=context)
            with torch.no_grad():
                layer.lora_B.normal_(0, 0.02)
            layers.append(layer.eval())
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--passes", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--role", type=int, default=0, help="role id of every token in the role cases")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra op case with this environment variable set (repeatable)")
    parser.add_argument("--wall", action="store_true", help="wall clock instead of the thread's CPU time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.wall else time.thread_time
    spec = mor_ext.MoRSpec.moragent(16)
    layers = build_layers(spec)
    op, kargs = mor_linear_op(), kernel_args(spec, 2.0)  # the overload MoRLinear calls
    print(mor_ext.describe_backend())
    print(f"CPU: {bench_model.cpu_name()}; torch {torch.__version__}, {args.threads} thread(s); "
          f"{'wall clock' if args.wall else 'CPU time of the calling thread'}; {len(layers)} layers, "
          f"median of {args.passes} passes (one pass = one decode step's adapted projections)")
    envs = [tuple(e.split("=", 1)) for e in args.env]
    for tokens in args.tokens:
        xs = {d: torch.randn(tokens, d) for d in (HIDDEN, INTER)}
        none = torch.full((tokens,), -1, dtype=torch.long)
        role = torch.full((tokens,), args.role, dtype=torch.long)

        def call(layer, roles):
            return op(xs[layer.in_features], layer.weight, None, layer.lora_A, layer.lora_B, layer.router_weight,
                      layer.shared_gate_weight, roles, *kargs)

        cases = {
            "F.linear": lambda l: torch.nn.functional.linear(xs[l.in_features], l.weight),
            "op, role -1": lambda l: call(l, none),
            f"op, role {args.role}": lambda l: call(l, role),
            # As in a model call: the roles come from the layers' shared context (patching installs them),
            # with the call's inference plan (the fast path) or without it (the general path).
            f"MoRLinear, role {args.role}, general path": ("general", None),
            f"MoRLinear, role {args.role}": lambda l: l(xs[l.in_features]),
        }
        for name, value in envs:
            cases[f"op, role {args.role}, {name}={value}"] = (name, value)
        times: dict[str, list[float]] = {name: [] for name in cases}
        context = layers[0].role_context
        with torch.no_grad():
            saved_call = context.begin_call(role, collect_stats=False)  # under no_grad: with its inference plan
            plan = context.inference
            assert plan is not None, "a no_grad call with a role should get an inference plan"
            for p in range(args.passes + 1):  # the first pass warms up
                for name, case in cases.items():
                    saved = None
                    if isinstance(case, tuple) and case[0] == "general":
                        context.inference = None
                        fn = lambda l: l(xs[l.in_features])  # noqa: E731
                    elif isinstance(case, tuple):
                        saved = os.environ.get(case[0])
                        os.environ[case[0]] = case[1]
                        fn = lambda l: call(l, role)  # noqa: E731
                    else:
                        fn = case
                    start = clock()
                    for layer in layers:
                        fn(layer)
                    elapsed = clock() - start
                    context.inference = plan
                    if isinstance(case, tuple) and case[0] != "general":
                        if saved is None:
                            del os.environ[case[0]]
                        else:
                            os.environ[case[0]] = saved
                    if p:
                        times[name].append(elapsed)
            context.end_call(saved_call)
        base = statistics.median(times["F.linear"])
        print(f"\nT={tokens} tokens per call")
        print("| case | ms per pass | us per layer | over F.linear, us per layer |")
        print("|---|---:|---:|---:|")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"| {name} | {1e3 * med:.2f} | {1e6 * med / len(layers):.1f} | "
                  f"{1e6 * (med - base) / len(layers):+.1f} |")


if __name__ == "__main__":
    main()
