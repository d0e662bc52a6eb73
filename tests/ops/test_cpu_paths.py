"""The CPU kernel's paths of mor_linear: the AVX-512 by-role GEMMs and decode path, the switch
between them and the generic path (ATEN_CPU_CAPABILITY), and results across thread counts.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from mor_ext import functional as F, MoRSpec, RoleSpec
from mor_ext.ops import _flags, cpu_path_counts

from op_utils import (
    NEEDS_COMPILED,
    AVX512_CPU,
    AVX512_PATHS,
    MOR_DIFF,
    MOR_NAMES,
    ROLE_PATTERNS,
    SPECS,
    compare_backends,
    grouped_fn,
    lead_id,
    make_params,
    make_role_ids,
    mor_inputs,
    mor_linear_fn,
)

pytestmark = NEEDS_COMPILED


ROLE_GEMM_SPECS = {
    **SPECS,
    "moragent_r16": MoRSpec.moragent(rank=16),
    # The by-role GEMMs skip, per tile of tokens, the LoRAs none of its tokens selected (a bit per
    # LoRA): many LoRAs a role, a rank that does not divide the 8-row tiles of the weight gradients,
    # top-1 of 2, and a role of 65 LoRAs (more than the mask's 64 bits: no skipping there).
    "many_experts": MoRSpec(
        roles=(RoleSpec("wide", num_experts=12, top_k=3, shared=True),
               RoleSpec("pair", num_experts=2, top_k=1, shared=False),
               RoleSpec("widest", num_experts=64, top_k=5, shared=True)),
        rank=3,
    ),
}


@pytest.mark.parametrize("dims", [(33, 17), (130, 100), (97, 49)], ids=lambda d: f"{d[0]}to{d[1]}")
@pytest.mark.parametrize("lead,pattern", [((128,), "spans"), ((3, 50), "random"), ((300,), "one_role"),
                                          ((203,), "missing_role"), ((129,), "no_role"),
                                          # >= 128 tokens a role: the GEMMs skip unselected LoRAs
                                          ((700,), "spans"), ((3, 210), "random")], ids=str)
@pytest.mark.parametrize("spec_name", ["moragent", "mixed", "moragent_r16", "many_experts"])
def test_mor_linear_by_role_gemms(spec_name, lead, pattern, dims, monkeypatch):
    monkeypatch.setenv("MOR_EXT_POISON", "1")  # every output element must be written
    spec = ROLE_GEMM_SPECS[spec_name]
    d_in, d_out = dims
    p = make_params(spec, lead, d_in, d_out, seed=29, dtype=torch.float32)
    inputs = dict(x=p.x, weight=p.weight, bias=p.bias, lora_A=p.lora_A, lora_B=p.lora_B,
                  router_weight=p.router_weight, shared_gate_weight=p.shared_gate_weight,
                  role_ids=make_role_ids(pattern, lead, spec.num_roles, seed=29, span=37))
    compare_backends(mor_linear_fn(spec, scaling=0.5), inputs, list(MOR_DIFF), torch.float32, MOR_NAMES)


# fp32 calls of <= 8 tokens take the AVX-512 decode path where the CPU has it (csrc/cpu/decode_avx512.cpp).
@pytest.mark.parametrize("lead", [(2,), (4,), (2, 2), (5,), (2, 4), (9,)], ids=lead_id)
@pytest.mark.parametrize("pattern", ROLE_PATTERNS)
@pytest.mark.parametrize("spec_name", SPECS)
def test_mor_linear_decode_sizes(spec_name, pattern, lead):
    spec = SPECS[spec_name]
    inputs, diff = mor_inputs(spec, lead, pattern, torch.float32, seed=28, span=1)
    compare_backends(mor_linear_fn(spec, scaling=0.5), inputs, diff, torch.float32, MOR_NAMES)


@pytest.mark.skipif(not AVX512_CPU, reason="the AVX-512 paths need a CPU with AVX-512F")
@pytest.mark.parametrize("tokens,avx512_path", [(3, "avx512_decode"), (8, "avx512_decode"), (20, "generic"),
                                                (64, "avx512_role_gemms"), (300, "avx512_role_gemms")])
def test_avx512_path_switch_gives_the_same_results(tokens, avx512_path):
    """ATEN_CPU_CAPABILITY=avx2 turns the AVX-512 paths (decode, by-role GEMMs) off, as it keeps
    torch below AVX-512: the path counters show which path ran, and both paths give the same
    routing and, to fp32 rounding, the same output. (Whether the bits differ depends on the CPU.)"""
    code = textwrap.dedent(f"""
        import torch, mor_ext
        from mor_ext.ops import _flags, cpu_path_counts
        spec = mor_ext.MoRSpec.moragent(16)
        g = torch.Generator().manual_seed(3)
        x, w = torch.randn({tokens}, 300, generator=g), torch.randn(24, 300, generator=g)
        a, b = torch.randn(14, 16, 300, generator=g), torch.randn(14, 24, 16, generator=g)
        rw, sg = torch.randn(11, 300, generator=g), torch.randn(3, 300, generator=g)
        roles = torch.arange({tokens}) % 4 - 1
        before = cpu_path_counts()
        out = torch.ops.mor_ext.mor_linear(x, w, None, a, b, rw, sg, roles, *_flags(spec), True, 0.5)
        after = cpu_path_counts()
        torch.save([[t for t in out[:4]], {{k: after[k] - before[k] for k in after}}], "out.pt")
    """)
    results, ran = [], []
    for cap in ("avx512", "avx2"):
        tmp_dir = Path(tempfile.mkdtemp())
        env = {**os.environ, "ATEN_CPU_CAPABILITY": cap}
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_dir)
        out, counts = torch.load(tmp_dir / "out.pt")
        results.append(out)
        ran.append(counts)
    assert ran[0] == {**dict.fromkeys(ran[0], 0), avx512_path: 1}, ran[0]
    assert ran[1] == {**dict.fromkeys(ran[1], 0), "generic": 1}, ran[1]
    for got, want in zip(*results):
        if got.is_floating_point():  # fp32 rounding of sums of 300 terms, relative to the largest value
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * max(1.0, want.abs().max().item()))
        else:
            assert torch.equal(got, want)


# The CPU kernels spread batches over threads (token_batches.h: plan_work), cutting long ones into
# chunks; results must not depend on the thread count beyond rounding.
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("pattern", ["one_role", "spans", "random"])
@pytest.mark.parametrize("op", ["mor_linear", "grouped_lora"])
def test_cpu_kernels_agree_across_thread_counts(op, pattern, threads):
    spec = SPECS["moragent"]
    inputs, diff = mor_inputs(spec, (1100,), pattern, torch.float32, seed=24, span=150)
    if op == "grouped_lora":
        index, weight, *_ = F.route(inputs["x"], inputs["router_weight"], inputs["shared_gate_weight"],
                                    inputs["role_ids"], spec)
        inputs = dict(x=inputs["x"], lora_A=inputs["lora_A"], lora_B=inputs["lora_B"], lora_index=index,
                      lora_weight=weight.detach())
        fn, names, diff = grouped_fn(0.5), ["delta"], ["x", "lora_A", "lora_B", "lora_weight"]
    else:
        fn, names = mor_linear_fn(spec, scaling=0.5), MOR_NAMES
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        compare_backends(fn, inputs, diff, torch.float32, names)
    finally:
        torch.set_num_threads(before)


def _decode_call(spec, p, roles, scaling=0.5):
    return torch.ops.mor_ext.mor_linear(p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight,
                                        p.shared_gate_weight, roles, *_flags(spec), spec.shared_gate == "sigmoid",
                                        scaling)


# The decode path routes first, then reads each selected LoRA's A rows and B columns once for all the
# call's tokens of a role: its sizes cut the 32- and 16-float chunks of the dot products and the
# 16-output blocks of the expand, with tokens of one role, of several, and of none.
@pytest.mark.skipif(not AVX512_PATHS, reason="the AVX-512 decode path needs a CPU with AVX-512F")
@pytest.mark.parametrize("dims", [(1, 1), (16, 33), (47, 16), (64, 100), (100, 47)], ids=lambda d: f"{d[0]}to{d[1]}")
@pytest.mark.parametrize("roles", [[0], [2], [1] * 8, [0, 2, 0, 1, -1, 2, 2, 0], [-1, -1, 1], [2, 0, 1]], ids=str)
@pytest.mark.parametrize("spec_name", ["moragent_r16", "mixed", "decoupled"])
def test_decode_path_routes_first_for_every_token(spec_name, roles, dims, monkeypatch):
    monkeypatch.setenv("MOR_EXT_POISON", "1")  # every output element must be written
    spec = ROLE_GEMM_SPECS[spec_name]
    roles = torch.tensor([r if r < spec.num_roles else -1 for r in roles])  # the spec's roles, or none
    p = make_params(spec, (len(roles),), *dims, seed=31, dtype=torch.float32)
    inputs = dict(x=p.x, weight=p.weight, bias=p.bias, lora_A=p.lora_A, lora_B=p.lora_B,
                  router_weight=p.router_weight, shared_gate_weight=p.shared_gate_weight, role_ids=roles)
    before = cpu_path_counts()
    compare_backends(mor_linear_fn(spec, scaling=0.5), inputs, list(MOR_DIFF), torch.float32, MOR_NAMES)
    after = cpu_path_counts()
    assert after["avx512_decode"] > before["avx512_decode"]


@pytest.mark.skipif(not AVX512_PATHS, reason="the AVX-512 decode path needs a CPU with AVX-512F")
def test_decode_path_token_results_do_not_depend_on_the_batch():
    """A token's outputs are the same bits alone and among 7 others (same or other roles): each pair
    of a row and a token is summed in one order, whatever is computed beside it (batched greedy
    decoding must not flip a choice that one-at-a-time decoding makes)."""
    spec = MoRSpec.moragent(rank=16)
    p = make_params(spec, (8,), 100, 70, seed=32, dtype=torch.float32)
    p.weight.zero_()  # the frozen GEMM (MKL's GEMV vs GEMM) may round differently; y = bias + the LoRA delta
    roles = torch.tensor([0, 0, 2, 1, 0, -1, 2, 0])
    with torch.no_grad():
        batch = _decode_call(spec, p, roles)
        for t in range(8):
            alone = _decode_call(spec, dataclasses.replace(p, x=p.x[t:t + 1]), roles[t:t + 1])
            for got, want in zip(alone, batch):
                assert torch.equal(got[0], want[t]), t


@pytest.mark.skipif(not AVX512_PATHS, reason="the AVX-512 decode path needs a CPU with AVX-512F")
@pytest.mark.parametrize("tokens", [1, 8])
def test_decode_path_threads_split_the_work_without_changing_bits(tokens, monkeypatch):
    """Large enough layers spread the selected LoRAs' shrink and the expand over the threads (each
    output computed by one thread, whole); MOR_EXT_BENCH_DECODE_THREADS=1 keeps them on one. Both
    give the same bits, and match the reference."""
    spec = MoRSpec.moragent(rank=16)
    p = make_params(spec, (tokens,), 1600, 1200, seed=33, dtype=torch.float32)  # >= 96 KB per phase
    p.weight.zero_()  # only the decode path's own work is compared bit for bit
    roles = torch.tensor([1, 0, 1, 2, 1, 1, 0, 1][:tokens])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            monkeypatch.setenv("MOR_EXT_BENCH_DECODE_THREADS", "1")
            one = _decode_call(spec, p, roles)
            monkeypatch.delenv("MOR_EXT_BENCH_DECODE_THREADS")
            two = _decode_call(spec, p, roles)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    y_ref, (index, weight, _) = F.mor_linear(p.x.double(), p.weight.double(), p.bias.double(), p.lora_A.double(),
                                             p.lora_B.double(), p.router_weight.double(),
                                             p.shared_gate_weight.double(), roles, spec, 0.5, return_routing=True)
    assert torch.equal(two[1].long(), index.long())
    torch.testing.assert_close(two[0].double(), y_ref, rtol=0, atol=1e-4 * y_ref.abs().max().item())
