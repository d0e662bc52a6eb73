"""mor_ext::mor_linear (the whole adapted layer in one op) against the reference: role patterns,
dtypes, the run and gather paths, gradcheck, opcheck, poisoned outputs and torch.compile.
"""

from __future__ import annotations

import pytest
import torch

from mor_ext import functional as F

from op_utils import (
    NEEDS_COMPILED,
    D_IN,
    D_OUT,
    DTYPES,
    FAST,
    LEADS,
    LOW_PRECISION,
    MOR_NAMES,
    OPCHECK_SPECS,
    ROLE_PATTERNS,
    SPECS,
    backend,
    compare_backends,
    compile_inputs,
    compiled_forward_backward,
    grad,
    lead_id,
    make_params,
    mor_inputs,
    mor_linear_fn,
    opcheck_inputs,
    planned_grouped_path,
    run_mor_linear,
    separated_route_inputs,
)

pytestmark = NEEDS_COMPILED

ops = torch.ops.mor_ext


@pytest.mark.parametrize("lead", LEADS, ids=lead_id)
@pytest.mark.parametrize("pattern", ROLE_PATTERNS)
@pytest.mark.parametrize("spec_name", SPECS)
def test_mor_linear_fp32(spec_name, pattern, lead):
    spec = SPECS[spec_name]
    inputs, diff = mor_inputs(spec, lead, pattern, torch.float32, seed=21, bias=len(lead) != 2)
    compare_backends(mor_linear_fn(spec, scaling=0.5), inputs, diff, torch.float32, MOR_NAMES)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("pattern", ["random", "spans"])
@pytest.mark.parametrize("spec_name", SPECS)
def test_mor_linear_low_precision(spec_name, pattern, dtype):
    spec = SPECS[spec_name]
    inputs, diff = mor_inputs(spec, (4, 16), pattern, dtype, seed=22)
    compare_backends(mor_linear_fn(spec), inputs, diff, dtype, MOR_NAMES)


# csrc/cpu/grouped_lora.cpp batches tokens by their first LoRA: contiguous runs when the mean run is
# at least kMinMeanRun = 32 tokens (agent trajectories: a role per span), else a gather by block.
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "spec_name,pattern,lead,path",
    [
        ("moragent", "spans", (512,), "run"),
        ("moragent", "random", (512,), "gather"),
        ("moragent_nogate", "spans", (2, 256), "run"),
        ("mixed", "random", (2, 256), "gather"),
        ("mixed", "spans", (512,), None),  # unshared roles start at their first *routed* pick
    ],
)
def test_mor_linear_run_and_gather_paths(spec_name, pattern, lead, path, dtype):
    spec = SPECS[spec_name]
    inputs, diff = mor_inputs(spec, lead, pattern, dtype, seed=23, span=100)
    comp, _, _ = compare_backends(mor_linear_fn(spec), inputs, diff, dtype, MOR_NAMES)
    if path is not None:
        assert planned_grouped_path(comp.outputs[1]) == path


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
def test_gradcheck_mor_linear(backend_name):
    spec = SPECS["moragent"]
    p, roles = separated_route_inputs(spec, 6, 5, seed=42)
    tensors = [t.requires_grad_() for t in (p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight,
                                            p.shared_gate_weight)]

    def fn(x, w, b, a, bb, rw, sg):
        return F.mor_linear(x, w, b, a, bb, rw, sg, roles, spec, 0.5)

    with backend(backend_name):
        assert torch.autograd.gradcheck(fn, tensors, **FAST)


# 160 tokens: the by-role AVX-512 GEMMs where the CPU has them (fp32, >= 128 tokens).
@pytest.mark.parametrize("n", [9, 160])
@pytest.mark.parametrize("spec_name", OPCHECK_SPECS)
@pytest.mark.parametrize("with_bias", [False, True])
def test_opcheck_mor_linear(spec_name, with_bias, n):
    spec, p, roles, flags, gated, index, weight, probs = opcheck_inputs(spec_name, n=n)
    bias = p.bias if with_bias else None
    args = (p.x, p.weight, bias, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles, *flags, gated, 0.5)
    torch.library.opcheck(ops.mor_linear.default, args)
    # As for route: the aot_dispatch harness cannot sum the int32 lora_index output with floats.
    grads = tuple(grad(a) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    torch.library.opcheck(ops.mor_linear.default, grads,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    y, index, weight, probs, shrink, shared_gate_logit = ops.mor_linear(*args)
    gen = torch.Generator().manual_seed(53)
    torch.library.opcheck(ops.mor_linear_backward.default, (
        torch.randn(y.shape, generator=gen), torch.randn(weight.shape, generator=gen),
        torch.randn(probs.shape, generator=gen), p.x, p.weight, p.lora_A, p.lora_B, p.router_weight,
        p.shared_gate_weight, roles, index, weight, probs, shrink, shared_gate_logit, *flags, gated, 0.5))


def test_mor_linear_op_matches_route_plus_grouped_lora():
    """The fused layer op equals its composition from the route and grouped_lora ops, outputs and
    every gradient (incl. gradients that reach lora_weight and router_probs from outside)."""
    spec, p, roles, flags, gated, _, _, _ = opcheck_inputs("moragent", n=300)
    gen = torch.Generator().manual_seed(54)
    leaves = [grad(t) for t in (p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight)]

    def fused(x, w, b, a, bb, rw, sg):
        y, index, weight, probs, _, _ = ops.mor_linear(x, w, b, a, bb, rw, sg, roles, *flags, gated, 0.5)
        return y, index, weight, probs

    def composed(x, w, b, a, bb, rw, sg):
        index, weight, probs = ops.route(x, rw, sg, roles, *flags, gated)
        y, _ = ops.grouped_lora(x, a, bb, index, weight, 0.5, w, b)
        return y, index, weight, probs

    results = []
    for fn in (fused, composed):
        y, index, weight, probs = fn(*leaves)
        loss = (y * torch.randn(y.shape, generator=gen.manual_seed(55))).sum() + weight.square().sum() \
            + (probs * torch.randn(probs.shape, generator=gen.manual_seed(56))).sum()
        results.append([y, index, weight, probs, *torch.autograd.grad(loss, leaves)])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(
    "spec_name,pattern,lead",
    [("moragent", "spans", (80,)), ("moragent", "random", (80,)), ("mixed", "random", (3, 17)),
     ("mixed", "no_role", (9,)), ("decoupled", "spans", (2, 40)), ("routed_only", "random", (33,)),
     # 64+ fp32 tokens take the AVX-512 by-role path, whose gradients are written role by role:
     # roles without tokens, and gate rows of roles without a gated shared LoRA, must be zeroed.
     ("mixed", "missing_role", (96,)), ("moragent", "one_role", (70,)), ("routed_only", "missing_role", (64,)),
     ("moragent", "no_role", (64,))],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_poisoned_outputs_are_all_written(spec_name, pattern, lead, dtype, monkeypatch):
    spec = SPECS[spec_name]
    inputs, _ = mor_inputs(spec, lead, pattern, dtype, seed=60, span=40)
    monkeypatch.setenv("MOR_EXT_POISON", "0")
    clean = compiled_forward_backward(spec, inputs)
    monkeypatch.setenv("MOR_EXT_POISON", "1")
    poisoned = compiled_forward_backward(spec, inputs)
    for i, (a, b) in enumerate(zip(clean, poisoned)):
        assert not b.isnan().any() if b.is_floating_point() else not (b == -7).any(), f"result {i}"
        assert torch.equal(a, b), f"result {i} depends on the poison"


def test_poisoned_shrink_is_zeroed_for_tokens_without_lora(monkeypatch):
    """Tokens in no batch never reach a GEMM: their saved shrink rows must still be written."""
    monkeypatch.setenv("MOR_EXT_POISON", "1")
    spec = SPECS["moragent"]
    p = make_params(spec, (4,), D_IN, D_OUT, seed=61)
    index = torch.full((4, 2), -1, dtype=torch.int32)  # no LoRA at all: shrink rows are zero-filled
    _, shrink = ops.grouped_lora(p.x, p.lora_A, p.lora_B, index, torch.ones(4, 2), 1.0, None, None)
    assert shrink.eq(0).all()


@pytest.mark.parametrize("fullgraph", [False, True])
def test_torch_compile_mor_linear(fullgraph):
    """Forward and backward of the compiled ops under AOTAutograd match eager (aot_eager: no codegen)."""
    spec, inputs = compile_inputs()

    def layer(x, w, b, a, bb, rw, sg, roles):
        return F.mor_linear(x, w, b, a, bb, rw, sg, roles, spec, return_routing=True)

    torch._dynamo.reset()
    with backend("compiled"):
        eager = run_mor_linear(layer, spec, inputs)
        compiled = run_mor_linear(torch.compile(layer, backend="aot_eager", fullgraph=fullgraph), spec, inputs)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b)
