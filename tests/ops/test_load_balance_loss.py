"""The load-balance loss (docs/spec.md §4): mor_ext::load_balance_loss_layers, one layer and many,
against the reference and an oracle; gradients, gradcheck and opcheck.
"""

from __future__ import annotations

import re

import pytest
import torch

from mor_ext import functional as F
from mor_ext.ops import _flags

from op_utils import (
    NEEDS_COMPILED,
    D_IN,
    D_OUT,
    LOOSE,
    OPCHECK_SPECS,
    ROLE_PATTERNS,
    SPECS,
    backend,
    compare_backends,
    grad,
    make_params,
    make_role_ids,
    opcheck_inputs,
    separated_route_inputs,
)

pytestmark = NEEDS_COMPILED

ops = torch.ops.mor_ext


def balance_fn(spec):
    def fn(router_probs, lora_index, role_ids):
        return (F.load_balance_loss(router_probs, lora_index, role_ids, spec),)

    return fn


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("pattern", ROLE_PATTERNS)
@pytest.mark.parametrize("spec_name", SPECS)
def test_load_balance_loss(spec_name, pattern, dtype):
    spec = SPECS[spec_name]
    lead = (3, 21)
    p = make_params(spec, lead, D_IN, D_OUT, seed=31)
    roles = make_role_ids(pattern, lead, spec.num_roles, seed=31)
    with backend("compiled"):
        routing = F.route(p.x, p.router_weight, p.shared_gate_weight, roles, spec)
    inputs = dict(router_probs=routing.router_probs, lora_index=routing.lora_index, role_ids=roles)
    comp, _, _ = compare_backends(balance_fn(spec), inputs, ["router_probs"], dtype, ["aux"])
    assert comp.outputs[0].dtype == torch.float32 and comp.outputs[0].shape == ()


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
@pytest.mark.parametrize("pattern", ["random", "spans", "missing_role"])
@pytest.mark.parametrize("spec_name", ["moragent", "mixed", "routed_only"])
def test_load_balance_loss_layers_is_the_mean_of_per_layer_losses(spec_name, pattern, backend_name):
    """One op for many layers (a patched model's aux loss) = the per-layer op, value and gradients."""
    spec = SPECS[spec_name]
    lead = (3, 17)
    roles = make_role_ids(pattern, lead, spec.num_roles, seed=31)
    probs, index = [], []
    for layer in range(4):
        p = make_params(spec, lead, D_IN, D_OUT, seed=31 + layer)
        with backend("reference"):
            routing = F.route(p.x, p.router_weight, p.shared_gate_weight, roles, spec)
        probs.append(routing.router_probs.detach())
        index.append(routing.lora_index)
    leaves = [t.clone().requires_grad_() for t in probs]
    def grads_of(loss, wrt):  # a spec/pattern with no role that has >= 2 experts and tokens: constant 0
        if not loss.requires_grad:
            return [None] * len(wrt)
        return torch.autograd.grad(loss, wrt, allow_unused=True)

    with backend(backend_name):
        got = F.load_balance_loss_layers(leaves, index, roles, spec)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads_of(got, leaves), leaves)]
    ref_leaves = [t.double().requires_grad_() for t in probs]
    with backend("reference"):
        want = torch.stack([F.load_balance_loss(p, i, roles, spec) for p, i in zip(ref_leaves, index)]).mean()
    want_grads = grads_of(want, ref_leaves)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-6, atol=1e-7)
    for g, w, t in zip(grads, want_grads, ref_leaves):
        torch.testing.assert_close(g.double(), torch.zeros_like(t) if w is None else w.double(), rtol=1e-6, atol=1e-8)
    with backend(backend_name):
        total = F.load_balance_loss_layers(probs, index, roles, spec, reduction="sum")
    torch.testing.assert_close(total, got.detach() * len(probs))


def test_load_balance_loss_layers_opcheck_and_bad_input():
    spec, p, roles, flags, gated, index, weight, probs = opcheck_inputs("moragent")
    torch.library.opcheck(ops.load_balance_loss_layers.default, ([grad(probs), grad(probs * 0.5)], [index, index],
                                                                 roles, *flags[:3]))
    torch.library.opcheck(ops.load_balance_loss_layers_backward.default,
                          (torch.tensor(1.5), [probs, probs], [index, index], roles, *flags[:3]))
    with pytest.raises(ValueError, match="at least one layer"):
        F.load_balance_loss_layers([], [], roles, spec)
    with pytest.raises(ValueError, match=r"lora_index\[1\] must have shape"):
        F.load_balance_loss_layers([probs, probs], [index, index[:, :1]], roles, spec)
    with pytest.raises(ValueError, match="reduction"):
        F.load_balance_loss_layers([probs], [index], roles, spec, reduction="max")
    with pytest.raises(ValueError, match="one lora_index per router_probs"):
        ops.load_balance_loss_layers([probs, probs], [index], roles, *flags[:3])


def test_load_balance_loss_gradient_is_dispatch_fraction():
    """f carries no gradient, P does: d aux / d p[t, i] = E_rho * f_i / |T_rho| for t in role rho."""
    spec = SPECS["moragent"]
    p = make_params(spec, (50,), D_IN, D_OUT, seed=32)
    roles = make_role_ids("missing_role", (50,), spec.num_roles, seed=32)
    for name in ("reference", "compiled"):
        with backend(name):
            r = F.route(p.x, p.router_weight, p.shared_gate_weight, roles, spec)
            probs = r.router_probs.detach().requires_grad_()
            (grad,) = torch.autograd.grad(F.load_balance_loss(probs, r.lora_index, roles, spec), probs)
        for rho, role in enumerate(spec.roles):
            mask, lo = roles == rho, spec.router_offsets[rho]
            cols = slice(lo, lo + role.num_experts)
            if not mask.any():
                assert grad[:, cols].eq(0).all()
                continue
            picked = torch.stack([(r.lora_index[mask] == l).any(1) for l in spec.routed_loras(rho)], 1)
            f = picked.float().mean(0)  # [E_rho]
            expected = (role.num_experts * f / mask.sum()).expand(int(mask.sum()), -1)  # [|T_rho|, E_rho]
            torch.testing.assert_close(grad[mask][:, cols], expected)
        assert grad[roles < 0].eq(0).all()


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
@pytest.mark.parametrize("spec_name", ["moragent", "mixed"])
def test_gradcheck_load_balance_loss(spec_name, backend_name):
    spec = SPECS[spec_name]
    p, roles = separated_route_inputs(spec, 12, 5, seed=43)
    with backend("reference"):
        r = F.route(p.x, p.router_weight, p.shared_gate_weight, roles, spec)
    probs = r.router_probs.double().requires_grad_()
    with backend(backend_name):
        assert torch.autograd.gradcheck(lambda q: F.load_balance_loss(q, r.lora_index, roles, spec), (probs,), **LOOSE)


@pytest.mark.parametrize("spec_name", OPCHECK_SPECS)
def test_opcheck_load_balance_loss_one_layer(spec_name):
    """One layer: what mor_ext.ops.load_balance_loss calls."""
    spec, p, roles, flags, gated, index, weight, probs = opcheck_inputs(spec_name)
    torch.library.opcheck(ops.load_balance_loss_layers.default, ([grad(probs)], [index], roles, *flags))
    torch.library.opcheck(ops.load_balance_loss_layers_backward.default,
                          (torch.tensor(1.5), [probs], [index], roles, *flags))


# ---- the CPU op's own loops (csrc/cpu/load_balance_loss.cpp) against the device-generic ATen kernels
# (what CUDA runs; MOR_EXT_BENCH_LOSSES=aten sends the CPU there) and the fp64 reference.

def arbitrary_slots(spec, n, k, seed):
    """lora_index [n, K] with every kind of slot: the role's own shared and routed LoRAs, another
    role's, empty (-1), and the same LoRA in two slots of a token."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(-1, spec.num_loras, (n, k), generator=gen)
    if k >= 2:
        index[:, 1] = index[:, 0]  # duplicates: each slot counts
    return index


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64, torch.int16])
@pytest.mark.parametrize("pattern", ["random", "spans", "missing_role", "no_role"])
@pytest.mark.parametrize("spec_name", ["moragent", "mixed", "routed_only", "decoupled"])
def test_load_balance_cpu_loops_match_the_aten_kernels(spec_name, pattern, index_dtype, monkeypatch):
    monkeypatch.setenv("MOR_EXT_POISON", "1")  # every gradient element must be written
    spec = SPECS[spec_name]
    n, k = 45, spec.k_max + 1
    roles = make_role_ids(pattern, (n,), spec.num_roles, seed=50, span=7)
    gen = torch.Generator().manual_seed(51)
    probs = [torch.rand(n, spec.num_experts_total, generator=gen) for _ in range(5)]
    probs[1] = probs[1].to(torch.bfloat16)  # read as fp32
    probs[2] = torch.rand(spec.num_experts_total, n, generator=gen).T  # strided
    index = [arbitrary_slots(spec, n, k, seed=52 + layer).to(index_dtype) for layer in range(5)]
    flags, g = _flags(spec), torch.tensor(0.3)
    results = {}
    for mode in ("", "aten"):
        monkeypatch.setenv("MOR_EXT_BENCH_LOSSES", mode)
        results[mode] = [ops.load_balance_loss_layers(probs, index, roles, *flags),
                         *ops.load_balance_loss_layers_backward(g, probs, index, roles, *flags)]
    for got, want in zip(results[""], results["aten"]):
        assert got.dtype == want.dtype == torch.float32 and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    with backend("reference"):
        ref = sum(F.load_balance_loss(p.double(), i.long(), roles, spec) for p, i in zip(probs, index))
    torch.testing.assert_close(results[""][0].double(), ref.double(), rtol=1e-6, atol=1e-7)
    if spec_name == "mixed" and pattern == "random" and index_dtype == torch.int32:  # opcheck is slow: once
        monkeypatch.setenv("MOR_EXT_BENCH_LOSSES", "")
        torch.library.opcheck(ops.load_balance_loss_layers.default,
                              ([grad(p.float()) for p in probs], index, roles, *flags))


def test_load_balance_cpu_names_bad_slots_in_any_layer():
    spec = SPECS["moragent"]
    roles = make_role_ids("random", (9,), spec.num_roles, seed=53)
    probs, index = torch.rand(9, spec.num_experts_total), arbitrary_slots(spec, 9, 4, seed=54)
    bad = index.clone()
    bad[4, 3] = -2
    for op in (ops.load_balance_loss_layers, lambda *a: ops.load_balance_loss_layers_backward(torch.tensor(1.0), *a)):
        with pytest.raises(ValueError, match=re.escape("lora_index[4, 3] = -2")):
            op([probs, probs], [index, bad], roles, *_flags(spec))
