"""The ops of mor_ext.functional: compiled C++ CPU kernels against the pure-PyTorch reference.

Every float comparison follows flash-attention's rule (see op_utils.assert_close_to_truth): the
truth is the reference run in fp64 on the same (dtype-rounded) inputs, and the compiled kernel's
error must be at most twice the reference's own error in the same dtype, plus a small atol.
Integer outputs (lora_index) must equal the same-dtype reference exactly.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

import mor_ext
from mor_ext import MoRSpec, RoleSpec
from mor_ext import functional as F
from mor_ext.ops import ORTHOGONAL_CUDA_MAX_RANK, _flags, reference, uses_compiled

from op_utils import (
    DTYPES,
    ROLE_PATTERNS,
    SPECS,
    assert_close_to_truth,
    backend,
    compare_runs,
    make_params,
    make_role_ids,
    oracle_grouped_lora,
    oracle_load_balance,
    oracle_orthogonal,
    oracle_route,
    planned_grouped_path,
    run_with_grads,
)

pytestmark = pytest.mark.skipif(
    not mor_ext.ops.compiled_available(), reason="mor_ext._C is not built: nothing to compare the reference with"
)

ops = torch.ops.mor_ext
D_IN, D_OUT = 33, 17  # odd on purpose: no dimension is a multiple of a vector width
LEADS = [(1,), (37,), (3, 11)]  # T=1, a flat batch, [B, S]
LOW_PRECISION = (torch.bfloat16, torch.float16)


def lead_id(lead) -> str:
    return "x".join(map(str, lead))


def compare_backends(fn, inputs, diff, dtype, names):
    """fp64 reference (truth), same-dtype reference and compiled kernels, forward and backward."""
    truth = run_with_grads(fn, inputs, diff, "reference", torch.float64)
    ref = run_with_grads(fn, inputs, diff, "reference", dtype)
    comp = run_with_grads(fn, inputs, diff, "compiled", dtype)
    compare_runs(comp, ref, truth, dtype, names)
    return comp, ref, truth


@pytest.mark.parametrize("op", mor_ext.ops.OP_NAMES)
def test_compiled_backend_is_in_use(op):
    with backend("auto"):
        assert uses_compiled(torch.zeros(1), op)
    with backend("reference"):
        assert not uses_compiled(torch.zeros(1), op)
    assert op in mor_ext.backend_info()["compiled_kernels"]["cpu"]
    assert "cpu (all ops" in mor_ext.describe_backend()


TENSOR_OPS = [op for op in mor_ext.ops.library_ops() if not op.startswith(("cpu_avx512", "testing_cpu_path_counts"))]


def test_op_names_come_from_the_library():
    """csrc/op_table.h is the one list of ops: Python reads it back from the loaded library."""
    names = mor_ext.ops.library_ops()
    assert set(mor_ext.ops.OP_NAMES) == {"route", "grouped_lora", "mor_linear", "load_balance_loss_layers",
                                         "orthogonal_loss_layers"}
    assert set(mor_ext.ops.OP_NAMES) <= set(names)
    for op in names:  # each backward op beside its forward
        if op.endswith("_backward"):
            assert op[: -len("_backward")] in names, op
    # The test-only ops say so by their name.
    assert {op for op in names if op.startswith(mor_ext.ops.TESTING_PREFIX)} == {
        "testing_cpu_path_counts", "testing_mor_linear_decode", "testing_orthogonal_grads",
        "testing_orthogonal_products"}


@pytest.mark.parametrize("op", TENSOR_OPS)
def test_every_op_has_a_fake_kernel(op):
    """An op of csrc/op_table.h without a fake kernel (mor_ext/ops/fake.py) breaks torch.compile."""
    from torch._library import simple_registry

    assert simple_registry.singleton.find(f"mor_ext::{op}").fake_impl.kernel is not None


def test_backend_info_reports_the_cpu_avx512_paths():
    avx512 = sys.platform == "linux" and "avx512f" in Path("/proc/cpuinfo").read_text()
    assert mor_ext.backend_info()["cpu_avx512"] is avx512
    assert ("AVX-512 decode and layer GEMMs" in mor_ext.describe_backend()) is avx512
    code = "import mor_ext; print(mor_ext.backend_info()['cpu_avx512'])"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# =========================================================================================== routing checks
def check_routing_invariants(routing: F.Routing, role_ids: torch.Tensor, spec: MoRSpec) -> None:
    """Spec section 5: shared LoRA first, then routed in descending probability; unused slots -1 / 0;
    router_probs a softmax over the token's own role and zero elsewhere; top-k gates renormalised."""
    n, k_max, e_total = role_ids.numel(), spec.k_max, spec.num_experts_total
    index = routing.lora_index.reshape(n, k_max)  # [N, K_max]
    weight = routing.lora_weight.reshape(n, k_max).float()  # [N, K_max]
    probs = routing.router_probs.reshape(n, e_total)  # [N, E_total]
    assert routing.lora_index.dtype == torch.int32 and routing.router_probs.dtype == torch.float32
    tol = 1e-5 if routing.lora_weight.dtype == torch.float32 else 2e-2
    for t, rho in enumerate(role_ids.reshape(-1).tolist()):
        if rho < 0:
            assert index[t].eq(-1).all() and weight[t].eq(0).all() and probs[t].eq(0).all(), f"token {t}"
            continue
        role, lo = spec.roles[rho], spec.router_offsets[rho]
        used = role.num_slots
        assert index[t, used:].eq(-1).all() and weight[t, used:].eq(0).all(), f"token {t}: unused slots"
        outside = torch.ones(e_total, dtype=torch.bool)
        outside[lo : lo + role.num_experts] = False
        assert probs[t][outside].eq(0).all(), f"token {t}: probability outside its role"
        slot = 0
        if role.shared:
            assert index[t, 0] == spec.shared_lora(rho), f"token {t}: shared LoRA not in slot 0"
            if spec.shared_gate == "none":
                assert weight[t, 0] == 1.0
            else:
                assert 0 <= weight[t, 0] <= 1
            slot = 1
        if role.num_experts:
            assert probs[t, lo : lo + role.num_experts].sum().item() == pytest.approx(1.0, abs=1e-5)
        routed = index[t, slot:used].tolist()
        assert len(set(routed)) == len(routed) and all(i in spec.routed_loras(rho) for i in routed), f"token {t}"
        columns = [lo + spec.routed_loras(rho).index(i) for i in routed]
        p = probs[t, columns]
        assert (p[:-1] >= p[1:]).all(), f"token {t}: routed slots not in descending probability"
        if routed:
            g = weight[t, slot:used]
            torch.testing.assert_close(g, p / p.sum(), atol=tol, rtol=tol)
            assert g.sum().item() == pytest.approx(1.0, abs=tol)


# =========================================================================================== route
def route_fn(spec):
    def fn(x, router_weight, shared_gate_weight, role_ids):
        return tuple(F.route(x, router_weight, shared_gate_weight, role_ids, spec))

    return fn


ROUTE_NAMES = ("lora_index", "lora_weight", "router_probs")
ROUTE_DIFF = ("x", "router_weight", "shared_gate_weight")


def route_inputs(spec, lead, pattern, dtype, seed=0, span=5):
    p = make_params(spec, lead, D_IN, D_OUT, seed, dtype)
    roles = make_role_ids(pattern, lead, spec.num_roles, seed, span=span)
    return dict(x=p.x, router_weight=p.router_weight, shared_gate_weight=p.shared_gate_weight, role_ids=roles)


@pytest.mark.parametrize("lead", LEADS, ids=lead_id)
@pytest.mark.parametrize("pattern", ROLE_PATTERNS)
@pytest.mark.parametrize("spec_name", SPECS)
def test_route_fp32(spec_name, pattern, lead):
    spec = SPECS[spec_name]
    inputs = route_inputs(spec, lead, pattern, torch.float32)
    comp, _, _ = compare_backends(route_fn(spec), inputs, ROUTE_DIFF, torch.float32, ROUTE_NAMES)
    routing = F.Routing(*comp.outputs)
    assert routing.lora_index.shape == (*lead, spec.k_max)
    assert routing.router_probs.shape == (*lead, spec.num_experts_total)
    check_routing_invariants(routing, inputs["role_ids"], spec)


# Low precision: logits are rounded to bf16/fp16 before the fp32 softmax, so two experts of a token
# can tie. Both backends compute the same rounded logits (one GEMM in x's dtype) and break ties to
# the lower index, so lora_index is still compared exactly; the fp64 truth may order such a pair
# differently, which only widens the reference's error that the 2x rule scales with.
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("pattern", ["random", "spans"])
@pytest.mark.parametrize("spec_name", SPECS)
def test_route_low_precision(spec_name, pattern, dtype):
    spec = SPECS[spec_name]
    inputs = route_inputs(spec, (4, 16), pattern, dtype, seed=1)
    comp, _, _ = compare_backends(route_fn(spec), inputs, ROUTE_DIFF, dtype, ROUTE_NAMES)
    assert comp.outputs[1].dtype == dtype
    check_routing_invariants(F.Routing(*comp.outputs), inputs["role_ids"], spec)


@pytest.mark.parametrize("output", ["lora_weight", "router_probs"])
@pytest.mark.parametrize("spec_name", ["moragent", "mixed"])
def test_route_gradient_through_one_output(spec_name, output):
    """Autograd hands the backward None for an unused output: the op must treat it as zeros."""
    spec = SPECS[spec_name]
    inputs = route_inputs(spec, (29,), "random", torch.float32, seed=2)

    def fn(**kw):
        return (route_fn(spec)(**kw)[ROUTE_NAMES.index(output)],)

    compare_backends(fn, inputs, ROUTE_DIFF, torch.float32, [output])


def test_route_accepts_int32_role_ids_and_a_single_token_vector():
    spec = SPECS["moragent"]
    p = make_params(spec, (), D_IN, D_OUT, seed=3)  # x [d_in]: no leading dims at all
    x3 = p.x.expand(1, 3, D_IN)  # [1, 3, d_in]
    roles32 = torch.tensor([[0, 1, -1]], dtype=torch.int32)
    for name in ("reference", "compiled"):
        with backend(name):
            one = F.route(p.x, p.router_weight, p.shared_gate_weight, torch.tensor(1), spec)
            assert one.lora_index.shape == (spec.k_max,) and one.router_probs.shape == (spec.num_experts_total,)
            r32 = F.route(x3, p.router_weight, p.shared_gate_weight, roles32, spec)
            r64 = F.route(x3, p.router_weight, p.shared_gate_weight, roles32.long(), spec)
        assert all(torch.equal(a, b) for a, b in zip(r32, r64))
        assert torch.equal(r32.lora_index[0, 1], one.lora_index)  # GEMMs of 1 and 3 rows may round differently
        torch.testing.assert_close(r32.lora_weight[0, 1], one.lora_weight)
        torch.testing.assert_close(r32.router_probs[0, 1], one.router_probs)


# =========================================================================================== crafted routing semantics
TIE_SPEC = MoRSpec(roles=(RoleSpec("shared", 0, 0, True), RoleSpec("tied", 5, 3, False)), rank=2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
def test_top_k_ties_break_to_the_lower_index(backend_name, dtype):
    v = torch.linspace(0.5, 1.5, 8)  # [d_in]
    x = v.expand(3, 8).to(dtype)  # [3, d_in]; v . v > 0
    # Router rows of role "tied" (columns 0..4): logits c*|v|^2 with c = 1, 2, 1, 2, -1.
    router_weight = torch.stack([v, 2 * v, v, 2 * v, -v]).to(dtype)  # [5, d_in]
    all_equal = v.expand(5, 8).to(dtype)
    gate = torch.zeros(2, 8, dtype=dtype)
    roles = torch.tensor([1, 1, 0])
    first = TIE_SPEC.routed_loras(1).start
    with backend(backend_name):
        r = F.route(x, router_weight, gate, roles, TIE_SPEC)
        # Experts 1 and 3 tie for the top, 0 and 2 tie next: order 1, 3, 0.
        assert r.lora_index[0].tolist() == [first + 1, first + 3, first + 0]
        p = r.router_probs[0]
        assert p[1] == p[3] and p[0] == p[2]
        torch.testing.assert_close(r.lora_weight[0].float(), torch.stack([p[1], p[3], p[0]]) / (2 * p[1] + p[0]),
                                   atol=1e-2, rtol=1e-2)
        # The shared-only role: one slot, gate sigmoid(0) = 0.5, no router columns.
        assert r.lora_index[2].tolist() == [0, -1, -1] and r.lora_weight[2, 0].item() == 0.5
        assert r.router_probs[2].eq(0).all()
        eq = F.route(x, all_equal, gate, roles, TIE_SPEC)
        assert eq.lora_index[0].tolist() == [first, first + 1, first + 2]
        torch.testing.assert_close(eq.router_probs[0], torch.full((5,), 0.2))
        torch.testing.assert_close(eq.lora_weight[0].float(), torch.full((3,), 1 / 3), atol=1e-2, rtol=0)


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
def test_softmax_is_stable_for_huge_logits(backend_name):
    spec = SPECS["moragent"]
    p = make_params(spec, (8,), D_IN, D_OUT, seed=5)
    x = p.x * 1e4  # logits ~1e4: a softmax without max-subtraction overflows
    roles = torch.tensor([0, 1, 2, 0, 1, 2, -1, 0])
    with backend(backend_name):
        r = F.route(x, p.router_weight, p.shared_gate_weight, roles, spec)
    assert torch.isfinite(r.lora_weight).all() and torch.isfinite(r.router_probs).all()
    check_routing_invariants(r, roles, spec)
    # One expert takes (almost) all the mass; so does the top gate.
    assert r.router_probs.max(dim=1).values[roles >= 0].min() > 0.999


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
def test_softmax_and_sigmoid_values(backend_name):
    """Crafted logits: probs = softmax of the role's logits, the shared gate is sigmoid(w . x)."""
    spec = MoRSpec(roles=(RoleSpec("r", 3, 2, True),), rank=2)
    x = torch.tensor([[1.0, 0.0]])  # [1, 2]: logits are the first column of each row
    router_weight = torch.tensor([[0.5, 9.0], [-1.0, 9.0], [2.0, 9.0]])  # logits 0.5, -1, 2
    gate = torch.tensor([[0.3, 7.0]])  # shared logit 0.3
    with backend(backend_name):
        r = F.route(x, router_weight, gate, torch.tensor([0]), spec)
    expected = torch.softmax(torch.tensor([0.5, -1.0, 2.0]), 0)
    torch.testing.assert_close(r.router_probs[0], expected)
    assert r.lora_index[0].tolist() == [0, 3, 1]
    torch.testing.assert_close(r.lora_weight[0, 0], torch.sigmoid(torch.tensor(0.3)))
    torch.testing.assert_close(r.lora_weight[0, 1:], expected[[2, 0]] / expected[[2, 0]].sum())


@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
def test_backends_agree_with_a_per_token_oracle(spec_name, backend_name):
    """Both backends against a loop-per-token fp64 reading of docs/spec.md §3 (not the vectorised reference)."""
    spec = SPECS[spec_name]
    lead = (11,)
    p = make_params(spec, lead, D_IN, D_OUT, seed=7)
    roles = make_role_ids("random", lead, spec.num_roles, seed=7)
    with backend(backend_name):
        r = F.route(p.x, p.router_weight, p.shared_gate_weight, roles, spec)
        delta = F.grouped_lora(p.x, p.lora_A, p.lora_B, r.lora_index, r.lora_weight, scaling=0.5)
        aux = F.load_balance_loss(r.router_probs, r.lora_index, roles, spec)
        orth = F.orthogonal_loss(p.lora_A, p.lora_B, spec)
    index, weight, probs = oracle_route(p.x, p.router_weight, p.shared_gate_weight, roles, spec)
    assert torch.equal(r.lora_index, index)
    torch.testing.assert_close(r.lora_weight.double(), weight, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(r.router_probs.double(), probs, atol=1e-6, rtol=1e-5)
    want = oracle_grouped_lora(p.x, p.lora_A, p.lora_B, index, weight, scaling=0.5)
    torch.testing.assert_close(delta.double(), want, atol=1e-5, rtol=1e-5)
    assert aux.item() == pytest.approx(oracle_load_balance(probs, index, roles, spec), rel=1e-5, abs=1e-6)
    assert orth.item() == pytest.approx(oracle_orthogonal(p.lora_A, p.lora_B, spec), rel=1e-5, abs=1e-6)


# =========================================================================================== grouped_lora
def make_slots(case: str, n: int, num_loras: int, seed: int, dtype: torch.dtype):
    """lora_index [n, K] / lora_weight [n, K] for grouped_lora, independent of any routing."""
    gen = torch.Generator().manual_seed(seed)
    k = 1 if case == "k1" else 4
    index = torch.randint(0, num_loras, (n, k), generator=gen)
    if case == "duplicates":  # one LoRA in several slots of a token: the weights sum
        index[:, 1] = index[:, 0]
        index[::3, 3] = index[::3, 0]
    elif case == "gaps":  # -1 holes in the middle of a row, and whole empty rows
        index[:, 1] = -1
        index[1::2, 2] = -1
        index[::5] = -1
    elif case == "random_any":
        index = torch.randint(-1, num_loras, (n, k), generator=gen)
    elif case == "all_empty":
        index.fill_(-1)
    elif case == "one_block":  # every token in LoRAs 5..9 with 5 first: one long run (the run path)
        index = torch.randint(6, 10, (n, k), generator=gen)
        index[:, 0] = 5
        index[::4, 2] = -1
    weight = torch.randn(n, k, generator=gen, dtype=torch.float64)  # any sign: not only gates
    return index, weight.to(dtype)


SLOT_CASES = ("random", "duplicates", "gaps", "random_any", "all_empty", "k1", "one_block")


def grouped_fn(scaling):
    def fn(x, lora_A, lora_B, lora_index, lora_weight):
        return (F.grouped_lora(x, lora_A, lora_B, lora_index, lora_weight, scaling=scaling),)

    return fn


GROUPED_DIFF = ("x", "lora_A", "lora_B", "lora_weight")


@pytest.mark.parametrize("dtype,index_dtype", [(torch.float32, torch.int32), (torch.float32, torch.int64),
                                               (torch.bfloat16, torch.int32), (torch.float16, torch.int64)], ids=str)
@pytest.mark.parametrize("case", SLOT_CASES)
def test_grouped_lora(case, dtype, index_dtype):
    spec = SPECS["moragent"]
    lead = (5, 9)
    p = make_params(spec, lead, D_IN, D_OUT, seed=11, dtype=dtype)
    index, weight = make_slots(case, math.prod(lead), spec.num_loras, seed=11, dtype=dtype)
    inputs = dict(x=p.x, lora_A=p.lora_A, lora_B=p.lora_B, lora_index=index.to(index_dtype).view(*lead, -1),
                  lora_weight=weight.view(*lead, -1))
    compare_backends(grouped_fn(0.75), inputs, GROUPED_DIFF, dtype, ["delta"])
    if case in ("random", "one_block"):
        assert planned_grouped_path(index) == {"random": "gather", "one_block": "run"}[case]


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
def test_grouped_lora_ignores_weights_of_empty_slots(backend_name):
    """Slots with index -1 are skipped: whatever their weight holds (even NaN) changes nothing."""
    spec = SPECS["moragent"]
    p = make_params(spec, (12,), D_IN, D_OUT, seed=12)
    index, weight = make_slots("gaps", 12, spec.num_loras, seed=12, dtype=torch.float32)
    garbage = weight.masked_fill(index < 0, float("nan")).requires_grad_()
    clean = weight.masked_fill(index < 0, 0.0).requires_grad_()
    with backend(backend_name):
        a = F.grouped_lora(p.x, p.lora_A, p.lora_B, index, garbage)
        b = F.grouped_lora(p.x, p.lora_A, p.lora_B, index, clean)
        (ga,) = torch.autograd.grad(a.sum(), garbage)
        (gb,) = torch.autograd.grad(b.sum(), clean)
    assert torch.equal(a, b) and not a.isnan().any()
    assert torch.equal(ga, gb) and ga[index < 0].eq(0).all()


@pytest.mark.parametrize("with_weight,with_bias", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_lora_linear(dtype, with_weight, with_bias):
    """ops.lora_linear: the base GEMM (and bias) fused into the grouped LoRA kernel."""
    spec = SPECS["mixed"]
    p = make_params(spec, (40,), D_IN, D_OUT, seed=13, dtype=dtype)
    index, weight = make_slots("gaps", 40, spec.num_loras, seed=13, dtype=dtype)

    def fn(x, lora_A, lora_B, lora_weight, weight=None, bias=None):
        return (mor_ext.ops.lora_linear(x, lora_A, lora_B, index, lora_weight, 1.5, weight, bias),)

    inputs = dict(x=p.x, lora_A=p.lora_A, lora_B=p.lora_B, lora_weight=weight)
    diff = list(GROUPED_DIFF)
    if with_weight:
        inputs["weight"], diff = p.weight, diff + ["weight"]
    if with_bias:
        inputs["bias"], diff = p.bias, diff + ["bias"]
    compare_backends(fn, inputs, diff, dtype, ["out"])


def test_grouped_lora_non_contiguous_inputs():
    """Checkpoint conversion hands over transposed views (lora_A[l] = lora_moe_A[o[l]].T)."""
    spec = SPECS["moragent"]
    p = make_params(spec, (2, 30), D_IN, D_OUT, seed=14)
    index, weight = make_slots("random_any", 60, spec.num_loras, seed=14, dtype=torch.float32)
    lora_A = p.lora_A.transpose(1, 2).contiguous().transpose(1, 2)  # [L, r, d_in], strided
    lora_B = p.lora_B.transpose(1, 2).contiguous().transpose(1, 2)  # [L, d_out, r], strided
    x = p.x.transpose(0, 1).contiguous().transpose(0, 1)  # [2, 30, d_in], strided
    assert not (lora_A.is_contiguous() or lora_B.is_contiguous() or x.is_contiguous())
    inputs = dict(x=x, lora_A=lora_A, lora_B=lora_B, lora_index=index.view(2, 30, -1),
                  lora_weight=weight.view(2, 30, -1))
    # run_with_grads re-creates the leaves with .to(dtype), which keeps these strides.
    compare_backends(grouped_fn(1.0), inputs, GROUPED_DIFF, torch.float32, ["delta"])


# =========================================================================================== mor_linear
def mor_linear_fn(spec, scaling=1.0):
    def fn(x, weight, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, bias=None):
        y, routing = F.mor_linear(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec,
                                  scaling, return_routing=True)
        return (y, *routing)

    return fn


MOR_NAMES = ("y", *ROUTE_NAMES)
MOR_DIFF = ("x", "weight", "bias", "lora_A", "lora_B", "router_weight", "shared_gate_weight")


def mor_inputs(spec, lead, pattern, dtype, seed, span=5, bias=True):
    p = make_params(spec, lead, D_IN, D_OUT, seed, dtype)
    inputs = dict(x=p.x, weight=p.weight, lora_A=p.lora_A, lora_B=p.lora_B, router_weight=p.router_weight,
                  shared_gate_weight=p.shared_gate_weight,
                  role_ids=make_role_ids(pattern, lead, spec.num_roles, seed, span=span))
    if bias:
        inputs["bias"] = p.bias
    return inputs, [d for d in MOR_DIFF if d in inputs]


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


# fp32 calls of >= 128 tokens on an AVX-512 CPU take the by-role path: per role, one GEMM per kind
# over all of its tokens, addressed by row pointers (csrc/cpu/gemm_avx512.cpp: 8 x 48 register
# tiles, 48-column panels with a masked last vector). The sizes cut every tile and panel edge:
# d 17 (one partial vector), 49 and 100 (a panel and a tail), 130 (three panels); token counts per
# role that are not multiples of 8; rank 16 gives the paper's 85-column shrink.
AVX512_CPU = sys.platform == "linux" and "avx512f" in Path("/proc/cpuinfo").read_text()
ROLE_GEMM_SPECS = {**SPECS, "moragent_r16": MoRSpec.moragent(rank=16)}


@pytest.mark.parametrize("dims", [(33, 17), (130, 100), (97, 49)], ids=lambda d: f"{d[0]}to{d[1]}")
@pytest.mark.parametrize("lead,pattern", [((128,), "spans"), ((3, 50), "random"), ((300,), "one_role"),
                                          ((203,), "missing_role"), ((129,), "no_role")], ids=str)
@pytest.mark.parametrize("spec_name", ["moragent", "mixed", "moragent_r16"])
def test_mor_linear_by_role_gemms(spec_name, lead, pattern, dims, monkeypatch):
    monkeypatch.setenv("MOR_EXT_POISON", "1")  # every output element must be written
    spec = ROLE_GEMM_SPECS[spec_name]
    d_in, d_out = dims
    p = make_params(spec, lead, d_in, d_out, seed=29, dtype=torch.float32)
    inputs = dict(x=p.x, weight=p.weight, bias=p.bias, lora_A=p.lora_A, lora_B=p.lora_B,
                  router_weight=p.router_weight, shared_gate_weight=p.shared_gate_weight,
                  role_ids=make_role_ids(pattern, lead, spec.num_roles, seed=29, span=37))
    compare_backends(mor_linear_fn(spec, scaling=0.5), inputs, list(MOR_DIFF), torch.float32, MOR_NAMES)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_cpu_gemm_benchmark_builds_and_runs(tmp_path):
    """benchmarks/bench_cpu_gemms.cpp (the AVX-512 kernels alone, standalone) keeps building against
    csrc/cpu/gemm_avx512.h and runs; on a CPU without AVX-512 it says so and exits 0."""
    root = Path(__file__).resolve().parents[1]
    exe = tmp_path / "bench_cpu_gemms"
    subprocess.run(["g++", "-O2", "-std=c++20", str(root / "benchmarks/bench_cpu_gemms.cpp"),
                    str(root / "csrc/cpu/gemm_avx512.cpp"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    assert ("GFLOP/s" in out) is AVX512_CPU, out


# fp32 calls of <= 4 tokens take the AVX-512 decode path where the CPU has it (csrc/cpu/decode_avx512.cpp).
@pytest.mark.parametrize("lead", [(2,), (4,), (2, 2), (5,)], ids=lead_id)
@pytest.mark.parametrize("pattern", ROLE_PATTERNS)
@pytest.mark.parametrize("spec_name", SPECS)
def test_mor_linear_decode_sizes(spec_name, pattern, lead):
    spec = SPECS[spec_name]
    inputs, diff = mor_inputs(spec, lead, pattern, torch.float32, seed=28, span=1)
    compare_backends(mor_linear_fn(spec, scaling=0.5), inputs, diff, torch.float32, MOR_NAMES)


@pytest.mark.skipif(not AVX512_CPU, reason="the AVX-512 paths need a CPU with AVX-512F")
@pytest.mark.parametrize("tokens", [3, 300], ids=["decode", "by_role"])
def test_avx512_path_switch_gives_the_same_results(tokens):
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
    avx512_path = "avx512_decode" if tokens <= 4 else "avx512_role_gemms"
    assert ran[0] == {**dict.fromkeys(ran[0], 0), avx512_path: 1}, ran[0]
    assert ran[1] == {**dict.fromkeys(ran[1], 0), "generic": 1}, ran[1]
    for got, want in zip(*results):
        if got.is_floating_point():  # fp32 rounding of sums of 300 terms, relative to the largest value
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * max(1.0, want.abs().max().item()))
        else:
            assert torch.equal(got, want)


# testing_mor_linear_decode on CPU runs the CUDA decode kernels' per-token bodies (kernels/decode.h) in loops.
def decode_fn(spec, scaling=0.5):
    reference_fn = mor_linear_fn(spec, scaling)

    def fn(x, weight, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, bias=None):
        if mor_ext.ops.get_backend() != "compiled":
            return reference_fn(x, weight, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, bias)
        y, index, gate, probs, _, _ = torch.ops.mor_ext.testing_mor_linear_decode(
            x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, *_flags(spec),
            spec.shared_gate == "sigmoid", scaling)
        return y, index, gate, probs

    return fn


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead", [(1,), (7,), (37,)], ids=lead_id)
@pytest.mark.parametrize("pattern", ROLE_PATTERNS)
@pytest.mark.parametrize("spec_name", SPECS)
def test_decode_kernel_bodies_on_cpu(spec_name, pattern, lead, dtype, monkeypatch):
    monkeypatch.setenv("MOR_EXT_POISON", "1")  # every output element must be written
    spec = SPECS[spec_name]
    inputs, _ = mor_inputs(spec, lead, pattern, dtype, seed=26, bias=lead != (7,))
    compare_backends(decode_fn(spec), inputs, [], dtype, MOR_NAMES)


def test_decode_op_saves_what_the_backward_needs():
    """The decode path's saved shrink and shared-gate logits equal the GEMM path's, so mor_linear's
    backward works on either."""
    spec, p, roles, flags, gated, _, _, _ = opcheck_inputs("moragent", n=6)
    args = (p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles, *flags, gated, 0.5)
    got = ops.testing_mor_linear_decode(*args)
    want = ops.mor_linear(*args)
    for g, w in zip(got, want):
        if g.is_floating_point():
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
        else:
            assert torch.equal(g, w)
    torch.library.opcheck(ops.testing_mor_linear_decode.default, args, test_utils=("test_schema", "test_faketensor"))


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


# =========================================================================================== losses
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


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec_name", SPECS)
def test_orthogonal_loss(spec_name, dtype):
    spec = SPECS[spec_name]
    p = make_params(spec, (1,), D_IN, D_OUT, seed=33, dtype=dtype)

    def fn(lora_A, lora_B):
        return (F.orthogonal_loss(lora_A, lora_B, spec),)

    comp, _, _ = compare_backends(fn, dict(lora_A=p.lora_A, lora_B=p.lora_B), ["lora_A", "lora_B"], dtype, ["orth"])
    assert comp.outputs[0].dtype == torch.float32
    if all(r.num_experts < 2 for r in spec.roles):
        assert comp.outputs[0].item() == 0.0


def test_orthogonal_loss_is_accurate_near_its_optimum():
    """The loss drives B_i B_j^T to 0: its value and gradient must stay accurate there."""
    spec = MoRSpec(roles=(RoleSpec("pair", 2, 1, False),), rank=4)
    gen = torch.Generator().manual_seed(34)
    lora_A = torch.randn(2, 4, 64, generator=gen) * 0.01  # [L, r, d_in]
    lora_B = torch.randn(2, 256, 4, generator=gen)  # [L, d_out, r]
    lora_B[0, :, 2:] *= 1e-3  # B_0 lives (almost) in rank columns 0-1,
    lora_B[1, :, :2] = 0.0  # B_1 in columns 2-3: B_0 B_1^T is small, each B_i^T B_i is not

    def orth(a, b):  # [2, r, d_in], [2, d_out, r] -> the spec's formula, in the inputs' dtype
        return (a[0] @ a[1].T).square().sum() + (b[0] @ b[1].T).square().sum()

    a64, b64 = lora_A.double().requires_grad_(), lora_B.double().requires_grad_()
    truth = orth(a64, b64)  # an fp64 truth: the reference itself computes losses in fp32
    truth_grads = torch.autograd.grad(truth, (a64, b64))
    results = {}
    for name in ("reference", "compiled"):
        a, b = lora_A.clone().requires_grad_(), lora_B.clone().requires_grad_()
        with backend(name):
            value = F.orthogonal_loss(a, b, spec)
        results[name] = (value, *torch.autograd.grad(value, (a, b)))
    for i, label in enumerate(("orth", "grad of lora_A", "grad of lora_B")):
        true = truth if i == 0 else truth_grads[i - 1]
        assert_close_to_truth(label, results["compiled"][i], results["reference"][i], true, torch.float32)


# =========================================================================================== gradcheck (fp64)
# The spec computes routing in fp32 (softmax_fp32) and returns fp32 losses, so route and the losses
# are only fp32-accurate even for fp64 inputs, in both backends: their gradchecks use a large eps
# (1e-3: finite-difference noise ~ 1e-7 / eps) with matching tolerances, and inputs whose router
# logits are far apart so that no finite-difference step changes the top-k selection.
LOOSE = dict(eps=1e-3, atol=1e-3, rtol=1e-3)
FAST = dict(LOOSE, fast_mode=True)  # random projections of the Jacobian: the reference is slow per call


def separated_route_inputs(spec, n, d_in, seed, min_gap=0.05):
    """fp64 route inputs whose logits within each token's role differ by at least min_gap."""
    for attempt in range(100):
        p = make_params(spec, (n,), d_in, 3, seed=seed + attempt, dtype=torch.float64)
        roles = make_role_ids("random", (n,), spec.num_roles, seed=seed + attempt)
        logits = p.x @ p.router_weight.T  # [n, E_total]
        ok = True
        for t, rho in enumerate(roles.tolist()):
            if rho >= 0 and spec.roles[rho].num_experts > 1:
                lo = spec.router_offsets[rho]
                z = logits[t, lo : lo + spec.roles[rho].num_experts].sort().values
                ok &= bool((z[1:] - z[:-1]).min() > min_gap)
        if ok:
            return p, roles
    raise AssertionError("no well-separated inputs found")


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
@pytest.mark.parametrize("spec_name", ["moragent", "mixed"])
def test_gradcheck_route(spec_name, backend_name):
    spec = SPECS[spec_name]
    p, roles = separated_route_inputs(spec, 6, 5, seed=40)
    inputs = (p.x.requires_grad_(), p.router_weight.requires_grad_(), p.shared_gate_weight.requires_grad_())

    def fn(x, router_weight, shared_gate_weight):
        r = F.route(x, router_weight, shared_gate_weight, roles, spec)
        return r.lora_weight, r.router_probs

    with backend(backend_name):
        assert torch.autograd.gradcheck(fn, inputs, **FAST)


def gradcheck_slots():
    # [5 tokens, 3 slots] over 4 LoRAs: duplicates, a -1 gap in the middle, an empty row.
    index = torch.tensor([[0, 0, -1], [1, -1, 3], [-1, -1, -1], [2, 3, 1], [3, 3, 3]], dtype=torch.int32)
    gen = torch.Generator().manual_seed(41)
    tensors = [torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_()
               for s in [(5, 4), (4, 2, 4), (4, 3, 2), (5, 3)]]  # x, lora_A, lora_B, lora_weight
    return index, tensors


def test_gradcheck_reference_grouped_lora():
    index, tensors = gradcheck_slots()
    with backend("reference"):
        assert torch.autograd.gradcheck(lambda x, a, b, w: F.grouped_lora(x, a, b, index, w, 0.7), tensors)


def test_gradcheck_compiled_grouped_lora():
    # The CPU kernel accepts fp64 but gates and accumulates in fp32 (see the strict test below).
    index, tensors = gradcheck_slots()
    with backend("compiled"):
        assert torch.autograd.gradcheck(lambda x, a, b, w: F.grouped_lora(x, a, b, index, w, 0.7), tensors,
                                        eps=1e-3, atol=1e-4, rtol=1e-3)


def test_gradcheck_compiled_grouped_lora_fp64_precision():
    index, tensors = gradcheck_slots()
    with backend("compiled"):
        assert torch.autograd.gradcheck(lambda x, a, b, w: F.grouped_lora(x, a, b, index, w, 0.7), tensors)


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


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
@pytest.mark.parametrize("spec_name", ["moragent", "mixed"])
def test_gradcheck_orthogonal_loss(spec_name, backend_name):
    spec = SPECS[spec_name]
    gen = torch.Generator().manual_seed(44)
    a = (0.25 * torch.randn(spec.num_loras, spec.rank, 5, generator=gen, dtype=torch.float64)).requires_grad_()
    b = (0.25 * torch.randn(spec.num_loras, 4, spec.rank, generator=gen, dtype=torch.float64)).requires_grad_()
    with backend(backend_name):
        assert torch.autograd.gradcheck(lambda a, b: F.orthogonal_loss(a, b, spec), (a, b), **FAST)


# =========================================================================================== opcheck
def opcheck_inputs(spec_name, seed=50, n=9):
    spec = SPECS[spec_name]
    p = make_params(spec, (n,), D_IN, D_OUT, seed)
    roles = make_role_ids("random", (n,), spec.num_roles, seed)
    flags = _flags(spec)
    gated = spec.shared_gate == "sigmoid"
    with torch.no_grad():
        index, weight, probs = ops.route(p.x, p.router_weight, p.shared_gate_weight, roles, *flags, gated)
    return spec, p, roles, flags, gated, index, weight, probs


OPCHECK_SPECS = ["moragent", "moragent_nogate", "mixed", "decoupled"]


def grad(t):
    return t.detach().clone().requires_grad_()


@pytest.mark.parametrize("spec_name", OPCHECK_SPECS)
def test_opcheck_route(spec_name):
    spec, p, roles, flags, gated, index, weight, probs = opcheck_inputs(spec_name)
    args = (p.x, p.router_weight, p.shared_gate_weight, roles, *flags, gated)
    torch.library.opcheck(ops.route.default, args)
    # With gradients, opcheck's aot_dispatch test sums every output into one accumulator starting
    # from the int32 lora_index and then fails to add floats to it (a limitation of the harness,
    # not of the op); the backward under AOT is covered by test_torch_compile_mor_linear.
    args = (grad(p.x), grad(p.router_weight), grad(p.shared_gate_weight), roles, *flags, gated)
    torch.library.opcheck(ops.route.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    gen = torch.Generator().manual_seed(51)
    torch.library.opcheck(ops.route_backward.default, (
        torch.randn(weight.shape, generator=gen), torch.randn(probs.shape, generator=gen), p.x, p.router_weight,
        p.shared_gate_weight, roles, index, probs, *flags, gated))


@pytest.mark.parametrize("spec_name,with_weight,with_bias",
                         [("moragent", False, False), ("moragent", True, True), ("mixed", True, False)])
def test_opcheck_grouped_lora(spec_name, with_weight, with_bias):
    spec, p, roles, flags, gated, index, weight, probs = opcheck_inputs(spec_name)
    w = grad(p.weight) if with_weight else None
    b = grad(p.bias) if with_bias else None
    args = (grad(p.x), grad(p.lora_A), grad(p.lora_B), index, grad(weight), 0.5, w, b)
    torch.library.opcheck(ops.grouped_lora.default, args)
    if not with_weight:  # and once without autograd
        torch.library.opcheck(ops.grouped_lora.default, tuple(a.detach() if isinstance(a, torch.Tensor) else a
                                                              for a in args))
    _, shrink = ops.grouped_lora(p.x, p.lora_A, p.lora_B, index, weight, 0.5, None, None)
    grad_out = torch.randn(p.x.shape[0], D_OUT, generator=torch.Generator().manual_seed(52))
    torch.library.opcheck(ops.grouped_lora_backward.default, (
        grad_out, p.x, p.lora_A, p.lora_B, index, weight, shrink, 0.5, p.weight if with_weight else None))


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


@pytest.mark.parametrize("spec_name", OPCHECK_SPECS)
def test_opcheck_losses(spec_name):
    spec, p, roles, flags, gated, index, weight, probs = opcheck_inputs(spec_name)
    # One layer: what mor_ext.ops.load_balance_loss / orthogonal_loss call.
    torch.library.opcheck(ops.load_balance_loss_layers.default, ([grad(probs)], [index], roles, *flags))
    torch.library.opcheck(ops.load_balance_loss_layers_backward.default,
                          (torch.tensor(1.5), [probs], [index], roles, *flags))
    torch.library.opcheck(ops.orthogonal_loss_layers.default, ([grad(p.lora_A)], [grad(p.lora_B)], *flags))
    products = ops.orthogonal_loss_layers([p.lora_A], [p.lora_B], *flags)[1]
    torch.library.opcheck(ops.orthogonal_loss_layers_backward.default,
                          (torch.tensor(1.5), products, [p.lora_A], [p.lora_B], *flags))


# =========================================================================================== autocast
def test_every_op_has_an_autocast_kernel():
    """csrc/autocast.cpp lists the ops by name: a new op missing from it would let autocast into its kernels."""
    names = [n for n in torch._C._dispatch_get_registrations_for_dispatch_key("CPU") if n.startswith("mor_ext::")]
    assert len(names) >= len(mor_ext.ops.OP_NAMES)
    for name in names:
        for key in ("AutocastCPU", "AutocastCUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, key), (name, key)


def test_ops_under_autocast_run_in_their_inputs_dtype():
    """Under CPU autocast (bf16) the fp32 ops give exactly their fp32 results, forward and backward:
    autocast must not reach the GEMMs inside the kernels."""
    spec, p, roles, flags, gated, _, _, _ = opcheck_inputs("moragent", n=300)
    leaves = [grad(t) for t in (p.x, p.weight, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight)]

    def run():
        x, w, a, b, rw, sg = leaves
        y, *_ = ops.mor_linear(x, w, None, a, b, rw, sg, roles, *flags, gated, 0.5)
        orth, _ = ops.orthogonal_loss_layers([a, a], [b, b], *flags)
        loss = (y * y).sum() + orth
        return [y, orth, *torch.autograd.grad(loss, [x, a, b, rw, sg])]

    plain = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = run()
    for got, want in zip(cast, plain):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# =========================================================================================== poisoned outputs
def compiled_forward_backward(spec, inputs):
    """Everything the compiled backend computes for one layer: outputs and every gradient."""
    leaves = {k: (grad(v) if v.is_floating_point() else v) for k, v in inputs.items()}
    with backend("compiled"):
        y, routing = F.mor_linear(leaves["x"], leaves["weight"], leaves["bias"], leaves["lora_A"], leaves["lora_B"],
                                  leaves["router_weight"], leaves["shared_gate_weight"], leaves["role_ids"], spec,
                                  return_routing=True)
        aux = F.load_balance_loss(routing.router_probs, routing.lora_index, leaves["role_ids"], spec)
        orth = F.orthogonal_loss(leaves["lora_A"], leaves["lora_B"], spec)
        delta = F.grouped_lora(leaves["x"], leaves["lora_A"], leaves["lora_B"], routing.lora_index,
                               routing.lora_weight)
        loss = (y.double() * y.double().cos()).sum() + aux + orth + delta.double().square().sum() \
            + (routing.router_probs.double() * 3).square().sum()
        names = [k for k, v in leaves.items() if isinstance(v, torch.Tensor) and v.requires_grad]
        grads = torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True)
    return [y, *routing, aux, orth, delta] + [g if g is not None else torch.zeros(()) for g in grads]


@pytest.mark.parametrize(
    "spec_name,pattern,lead",
    [("moragent", "spans", (80,)), ("moragent", "random", (80,)), ("mixed", "random", (3, 17)),
     ("mixed", "no_role", (9,)), ("decoupled", "spans", (2, 40)), ("routed_only", "random", (33,))],
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


# =========================================================================================== torch.compile
def compile_inputs():
    spec = SPECS["moragent"]
    inputs, _ = mor_inputs(spec, (2, 24), "random", torch.float32, seed=70)
    return spec, inputs


def run_mor_linear(fn, spec, inputs):
    leaves = {k: (grad(v) if v.is_floating_point() else v) for k, v in inputs.items()}
    y, routing = fn(leaves["x"], leaves["weight"], leaves["bias"], leaves["lora_A"], leaves["lora_B"],
                    leaves["router_weight"], leaves["shared_gate_weight"], leaves["role_ids"])
    loss = (y * y.detach().sin()).sum() + routing.router_probs.square().sum()
    names = ["x", "lora_A", "lora_B", "router_weight", "shared_gate_weight"]
    return [y, routing.lora_index, *torch.autograd.grad(loss, [leaves[k] for k in names])]


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


def test_torch_compile_orthogonal_loss_layers():
    """The layer-list orthogonal loss (its products saved for the backward) under AOTAutograd."""
    spec = SPECS["moragent"]
    a, b = layer_stack(spec, [(40, 30), (70, 13)])

    def run(fn):
        leaves = [grad(t) for t in a + b]
        loss = fn(leaves[:2], leaves[2:])
        return [loss, *torch.autograd.grad(loss * loss, leaves)]

    def loss_of(lora_As, lora_Bs):
        return F.orthogonal_loss_layers(lora_As, lora_Bs, spec)

    torch._dynamo.reset()
    with backend("compiled"):
        eager, compiled = run(loss_of), run(torch.compile(loss_of, backend="aot_eager", fullgraph=True))
    for x, y in zip(eager, compiled):
        torch.testing.assert_close(x, y)


# =========================================================================================== bad input: functional
def bad_setup():
    spec = SPECS["moragent"]
    p = make_params(spec, (2, 4), D_IN, D_OUT, seed=80)
    roles = make_role_ids("random", (2, 4), spec.num_roles, seed=80)
    with backend("compiled"):
        r = F.route(p.x, p.router_weight, p.shared_gate_weight, roles, spec)
    return spec, p, roles, r


BACKENDS = ["reference", "compiled"]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("value", [5, -2, 3])
def test_route_role_id_out_of_range_names_value_and_position(value, backend_name):
    spec, p, roles, _ = bad_setup()
    roles = roles.clone()
    roles[1, 3] = value
    with backend(backend_name), pytest.raises(ValueError, match=re.escape(f"role_ids[1, 3] = {value}")):
        F.route(p.x, p.router_weight, p.shared_gate_weight, roles, spec)
    with backend(backend_name), pytest.raises(ValueError, match=re.escape(f"role_ids[1, 3] = {value}")):
        F.load_balance_loss(torch.zeros(2, 4, spec.num_experts_total), torch.zeros(2, 4, 4, dtype=torch.int32),
                            roles, spec)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_functional_bad_shapes_raise_value_error(backend_name):
    spec, p, roles, r = bad_setup()
    cases = {
        "role_ids must have shape": lambda: F.route(p.x, p.router_weight, p.shared_gate_weight, roles[:, :3], spec),
        "router_weight must have shape": lambda: F.route(p.x, p.router_weight[:-1], p.shared_gate_weight, roles, spec),
        "shared_gate_weight must have shape": lambda: F.route(p.x, p.router_weight, p.shared_gate_weight[:, :5],
                                                              roles, spec),
        "lora_B must have shape": lambda: F.grouped_lora(p.x, p.lora_A, p.lora_B[:, :, :3], r.lora_index,
                                                         r.lora_weight),
        "lora_A must have shape": lambda: F.grouped_lora(p.x, p.lora_A[:, :, :5], p.lora_B, r.lora_index,
                                                         r.lora_weight),
        "lora_index must have shape": lambda: F.grouped_lora(p.x, p.lora_A, p.lora_B, r.lora_index[0],
                                                             r.lora_weight[0]),
        "must match lora_index": lambda: F.grouped_lora(p.x, p.lora_A, p.lora_B, r.lora_index,
                                                        r.lora_weight[..., :2]),
        "weight must have shape": lambda: F.mor_linear(p.x, p.weight[:, :5], None, p.lora_A, p.lora_B,
                                                       p.router_weight, p.shared_gate_weight, roles, spec),
        "bias must have shape": lambda: F.mor_linear(p.x, p.weight, p.bias[:3], p.lora_A, p.lora_B, p.router_weight,
                                                     p.shared_gate_weight, roles, spec),
        r"lora_A must have shape \[L=14": lambda: F.mor_linear(p.x, p.weight, None, p.lora_A[:13], p.lora_B[:13],
                                                               p.router_weight, p.shared_gate_weight, roles, spec),
        "router_probs must have shape": lambda: F.load_balance_loss(r.router_probs[..., :5], r.lora_index, roles, spec),
        r"lora_A must have shape \[L=14, r=4": lambda: F.orthogonal_loss(p.lora_A[:, :2], p.lora_B[:, :, :2], spec),
    }
    with backend(backend_name):
        for message, call in cases.items():
            with pytest.raises(ValueError, match=message):
                call()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_functional_bad_types_raise_type_error(backend_name):
    spec, p, roles, r = bad_setup()
    bf = p.lora_A.to(torch.bfloat16)
    cases = {
        "lora_A has dtype torch.bfloat16 but x has dtype torch.float32": lambda: F.grouped_lora(
            p.x, bf, p.lora_B, r.lora_index, r.lora_weight),
        "router_weight has dtype": lambda: F.route(p.x, p.router_weight.double(), p.shared_gate_weight, roles, spec),
        "weight has dtype": lambda: F.mor_linear(p.x, p.weight.half(), None, p.lora_A, p.lora_B, p.router_weight,
                                                 p.shared_gate_weight, roles, spec),
        "lora_B has dtype": lambda: F.orthogonal_loss(p.lora_A, p.lora_B.double(), spec),
        "role_ids must be an integer tensor": lambda: F.route(p.x, p.router_weight, p.shared_gate_weight,
                                                              roles.float(), spec),
        "lora_index must be int32 or int64": lambda: F.grouped_lora(p.x, p.lora_A, p.lora_B, r.lora_index.float(),
                                                                    r.lora_weight),
        "x must be a torch.Tensor": lambda: F.route(p.x.tolist(), p.router_weight, p.shared_gate_weight, roles, spec),
        "role_ids must be a torch.Tensor": lambda: F.route(p.x, p.router_weight, p.shared_gate_weight,
                                                           roles.tolist(), spec),
        "lora_index must be a torch.Tensor": lambda: F.grouped_lora(p.x, p.lora_A, p.lora_B, [[0]], r.lora_weight),
        "spec must be a mor_ext.MoRSpec": lambda: F.route(p.x, p.router_weight, p.shared_gate_weight, roles,
                                                          spec.to_dict()),
        "x must be a floating-point tensor": lambda: F.route(roles, p.router_weight, p.shared_gate_weight, roles,
                                                             spec),
        "router_probs must be a floating-point": lambda: F.load_balance_loss(r.lora_index, r.lora_index, roles, spec),
    }
    with backend(backend_name):
        for message, call in cases.items():
            with pytest.raises(TypeError, match=message):
                call()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_functional_device_mismatch(backend_name):
    spec, p, roles, r = bad_setup()
    meta = p.router_weight.to("meta")
    with backend(backend_name):
        with pytest.raises(ValueError, match="router_weight is on meta but x is on cpu"):
            F.route(p.x, meta, p.shared_gate_weight, roles, spec)
        with pytest.raises(ValueError, match="role_ids is on meta but x is on cpu"):
            F.route(p.x, p.router_weight, p.shared_gate_weight, roles.to("meta"), spec)
        with pytest.raises(ValueError, match="lora_index is on meta"):
            F.grouped_lora(p.x, p.lora_A, p.lora_B, r.lora_index.to("meta"), r.lora_weight)
        with pytest.raises(ValueError, match="lora_B is on meta"):
            F.grouped_lora(p.x, p.lora_A, p.lora_B.to("meta"), r.lora_index, r.lora_weight)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("value", [14, -2])
def test_grouped_lora_index_out_of_range(value, backend_name):
    spec, p, roles, r = bad_setup()
    index = r.lora_index.clone()
    index[1, 2, 3] = value
    with backend(backend_name), pytest.raises(ValueError, match=re.escape(f"lora_index[1, 2, 3] = {value}")):
        F.grouped_lora(p.x, p.lora_A, p.lora_B, index, r.lora_weight)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_load_balance_loss_validates_lora_index(backend_name):
    spec, p, roles, r = bad_setup()
    index = r.lora_index.clone()
    index[1, 2, 3] = 99
    with backend(backend_name):
        with pytest.raises(ValueError, match=re.escape("lora_index[1, 2, 3] = 99")):
            F.load_balance_loss(r.router_probs, index, roles, spec)
        with pytest.raises(TypeError, match="lora_index must be int32 or int64"):
            F.load_balance_loss(r.router_probs, r.lora_index.float(), roles, spec)


# =========================================================================================== bad input: the ops
def direct_setup(spec_name="moragent", n=6):
    spec = SPECS[spec_name]
    p = make_params(spec, (n,), D_IN, D_OUT, seed=90)
    roles = make_role_ids("random", (n,), spec.num_roles, seed=90)
    flags = _flags(spec)
    index, weight, probs = ops.route(p.x, p.router_weight, p.shared_gate_weight, roles, *flags, True)
    return spec, p, roles, flags, index, weight, probs


def test_ops_validate_route_inputs():
    spec, p, roles, flags, *_ = direct_setup()
    x, rw, sg = p.x, p.router_weight, p.shared_gate_weight
    bad = roles.clone()
    bad[3] = 5
    with pytest.raises(ValueError, match=re.escape("role_ids[3] = 5")):
        ops.route(x, rw, sg, bad, *flags, True)
    bad[3] = -2
    with pytest.raises(ValueError, match=re.escape("role_ids[3] = -2")):
        ops.route(x, rw, sg, bad, *flags, True)
    with pytest.raises(ValueError, match="role_ids must have shape"):
        ops.route(x, rw, sg, roles[:4], *flags, True)
    with pytest.raises(TypeError, match="role_ids must be int64"):
        ops.route(x, rw, sg, roles.int(), *flags, True)
    with pytest.raises(ValueError, match="router_weight must have shape"):
        ops.route(x, rw[:, :7], sg, roles, *flags, True)
    with pytest.raises(ValueError, match="shared_gate_weight must have shape"):
        ops.route(x, rw, sg[:2], roles, *flags, True)
    with pytest.raises(TypeError, match="router_weight has dtype"):
        ops.route(x, rw.to(torch.bfloat16), sg, roles, *flags, True)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        ops.route(roles.view(-1, 1), rw[:, :1], sg[:, :1], roles, *flags, True)
    with pytest.raises(ValueError, match="x must be 2-D"):
        ops.route(x[None], rw, sg, roles, *flags, True)


def test_ops_validate_spec_lists():
    _, p, roles, _, *_ = direct_setup()
    x, rw, sg = p.x, p.router_weight, p.shared_gate_weight
    with pytest.raises(ValueError, match="top_k=5 > num_experts=4"):
        ops.route(x, rw, sg, roles, [4, 4, 3], [5, 3, 2], [1, 1, 1], True)
    with pytest.raises(ValueError, match="one entry per role"):
        ops.route(x, rw, sg, roles, [4, 4, 3], [3, 3], [1, 1, 1], True)
    with pytest.raises(ValueError, match="has_shared"):
        ops.route(x, rw, sg, roles, [4, 4, 3], [3, 3, 2], [1, 2, 1], True)
    with pytest.raises(ValueError, match="has no LoRA"):
        ops.orthogonal_loss_layers([torch.zeros(1, 2, 3)], [torch.zeros(1, 3, 2)], [0], [0], [0])
    with pytest.raises(ValueError, match="at least one role"):
        ops.orthogonal_loss_layers([torch.zeros(1, 2, 3)], [torch.zeros(1, 3, 2)], [], [], [])


def test_ops_validate_grouped_lora_inputs():
    spec, p, roles, flags, index, weight, _ = direct_setup()
    x, a, b = p.x, p.lora_A, p.lora_B
    with pytest.raises(ValueError, match="lora_B must be"):
        ops.grouped_lora(x, a, b[:, :, :3], index, weight, 1.0, None, None)
    with pytest.raises(ValueError, match="lora_B must be"):
        ops.grouped_lora(x, a, b[:13], index, weight, 1.0, None, None)
    with pytest.raises(ValueError, match="lora_A must be"):
        ops.grouped_lora(x, a[:, :, :4], b, index, weight, 1.0, None, None)
    with pytest.raises(TypeError, match="lora_A has dtype"):
        ops.grouped_lora(x, a.to(torch.bfloat16), b, index, weight, 1.0, None, None)
    with pytest.raises(TypeError, match="lora_index must be int32 or int64"):
        ops.grouped_lora(x, a, b, index.float(), weight, 1.0, None, None)
    bad = index.clone()
    bad[1, 2] = 14
    with pytest.raises(ValueError, match=re.escape("lora_index[1, 2] = 14")):
        ops.grouped_lora(x, a, b, bad, weight, 1.0, None, None)
    with pytest.raises(ValueError, match=re.escape("lora_index[1, 2] = 14")):
        ops.grouped_lora_backward(torch.zeros(6, D_OUT), x, a, b, bad, weight, torch.zeros(6, 4, 4), 1.0, None)
    with pytest.raises(ValueError, match="must match lora_index"):
        ops.grouped_lora(x, a, b, index, weight[:, :2], 1.0, None, None)
    with pytest.raises(ValueError, match="weight must be"):
        ops.grouped_lora(x, a, b, index, weight, 1.0, p.weight[:, :4], None)
    with pytest.raises(ValueError, match="bias must be"):
        ops.grouped_lora(x, a, b, index, weight, 1.0, p.weight, p.bias[:4])
    with pytest.raises(TypeError, match="weight has dtype"):
        ops.grouped_lora(x, a, b, index, weight, 1.0, p.weight.double(), None)
    with pytest.raises(ValueError, match="grad_out must be"):
        ops.grouped_lora_backward(torch.zeros(6, 3), x, a, b, index, weight, torch.zeros(6, 4, 4), 1.0, None)
    with pytest.raises(ValueError, match="shrink must be"):
        ops.grouped_lora_backward(torch.zeros(6, D_OUT), x, a, b, index, weight, torch.zeros(6, 4, 2), 1.0, None)


def test_ops_reject_rank_zero():
    """A rank-0 adapter is an error with a message, not a kernel launch with an empty grid."""
    spec, p, roles, flags, index, weight, _ = direct_setup()
    a0, b0 = p.lora_A[:, :0], p.lora_B[:, :, :0]
    with pytest.raises(ValueError, match="rank r >= 1"):
        ops.grouped_lora(p.x, a0, b0, index, weight, 1.0, None, None)
    with pytest.raises(ValueError, match="rank r >= 1"):
        torch.ops.mor_ext.mor_linear(p.x, p.weight, None, a0, b0, p.router_weight, p.shared_gate_weight, roles,
                                     *flags, True, 1.0)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        torch.ops.mor_ext.testing_orthogonal_products([a0.contiguous()], [b0.contiguous()], *flags[:3])


@pytest.mark.parametrize("n", [6, 200])  # 200: the fp32 by-role GEMM path of the CPU backward
def test_backward_ops_refuse_slots_outside_the_tokens_role(n):
    """mor_linear_backward and route_backward index each token's role block by the forward's slots:
    a slot that names no LoRA of the token's role (-1, another role's, the wrong shared one) is a
    ValueError, not a write outside the block (it corrupted the heap before the check)."""
    spec, p, roles, flags, *_ = direct_setup(n=n)
    args = (p.x, p.weight, None, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles, *flags, True, 1.0)
    y, index, weight, probs, shrink, logit = ops.mor_linear(*args)
    t = int(torch.nonzero(roles == 0)[0])  # a reasoner token: shared LoRA 0, routed LoRAs 1..4
    for slot, value in [(1, -1), (1, 7), (0, 2)]:
        bad = index.clone()
        bad[t, slot] = value
        with pytest.raises(ValueError, match=re.escape(f"lora_index[{t}, {slot}] = {value} is not")):
            ops.mor_linear_backward(torch.randn_like(y), torch.zeros_like(weight), torch.zeros_like(probs), p.x,
                                    p.weight, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles, bad,
                                    weight, probs, shrink, logit, *flags, True, 1.0)
        with pytest.raises(ValueError, match=re.escape(f"lora_index[{t}, {slot}] = {value} is not")):
            ops.route_backward(torch.zeros_like(weight), torch.zeros_like(probs), p.x, p.router_weight,
                               p.shared_gate_weight, roles, bad, probs, *flags, True)
    other_roles = torch.where(roles == 0, torch.ones_like(roles), roles)  # ids that differ from the forward's
    with pytest.raises(ValueError, match="needs the lora_index that its forward returned"):
        ops.mor_linear_backward(torch.randn_like(y), torch.zeros_like(weight), torch.zeros_like(probs), p.x,
                                p.weight, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, other_roles,
                                index, weight, probs, shrink, logit, *flags, True, 1.0)


def test_specs_beyond_the_kernels_tables_are_refused():
    """At most 16 roles and 64 routed LoRAs per role, everywhere: MoRSpec says so, and the ops refuse
    such flags before sizing anything by them (a huge count overflowed a table size and crashed)."""
    from mor_ext.spec import MAX_EXPERTS_PER_ROLE, MAX_ROLES
    with pytest.raises(ValueError, match="at most 16 roles"):
        MoRSpec(roles=tuple(RoleSpec(f"r{i}", 2, 1, True) for i in range(MAX_ROLES + 1)))
    with pytest.raises(ValueError, match="at most 64 per role"):
        MoRSpec(roles=(RoleSpec("a", MAX_EXPERTS_PER_ROLE + 1, 2, True),))
    MoRSpec(roles=tuple(RoleSpec(f"r{i}", MAX_EXPERTS_PER_ROLE, 2, True) for i in range(MAX_ROLES)))
    probs, index, roles = torch.rand(5, 2), torch.zeros(5, 1, dtype=torch.int32), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="the kernels support at most 64"):
        ops.load_balance_loss_layers([probs], [index], roles, [2**63 - 1, 2**63 - 1, 4], [0, 0, 1], [0, 0, 0])
    with pytest.raises(ValueError, match="at most 16 roles"):
        ops.load_balance_loss_layers([probs], [index], roles, [1] * 17, [1] * 17, [0] * 17)


def test_loss_ops_name_bad_index_and_dtypes():
    spec, p, roles, flags, index, weight, probs = direct_setup()
    bad = index.clone()
    bad[2, 1] = spec.num_loras
    with pytest.raises(ValueError, match=re.escape(f"lora_index[2, 1] = {spec.num_loras}")):
        ops.load_balance_loss_layers([probs], [bad], roles, *flags)
    with pytest.raises(ValueError, match=re.escape(f"lora_index[2, 1] = {spec.num_loras}")):
        ops.load_balance_loss_layers_backward(torch.tensor(1.0), [probs], [bad], roles, *flags)
    with pytest.raises(ValueError, match=re.escape(f"lora_index[2, 1] = {spec.num_loras}")):
        ops.load_balance_loss_layers([probs, probs], [index, bad], roles, *flags)
    with pytest.raises(TypeError, match="lora_index must be an integer tensor"):
        ops.load_balance_loss_layers([probs], [index.float()], roles, *flags)
    with pytest.raises(TypeError, match="every tensor needs one dtype, got Float and Double"):
        ops.orthogonal_loss_layers([p.lora_A], [p.lora_B.double()], *flags)
    with pytest.raises(TypeError, match="must be floating-point"):
        ops.testing_orthogonal_products([p.lora_A.long()], [p.lora_B.long()], *flags)
    a, b = p.lora_A, p.lora_B
    shrink = torch.randn(p.x.shape[0], index.shape[1], spec.rank)
    with pytest.raises(ValueError, match="weight must be"):
        ops.grouped_lora_backward(torch.randn(p.x.shape[0], D_OUT), p.x, a, b, index, weight, shrink, 1.0,
                                  p.weight[:, :3])


def test_orthogonal_loss_of_strided_adapters():
    """Non-contiguous lora_A / lora_B (views) give the loss and gradients of contiguous copies."""
    spec = MoRSpec.moragent(rank=4)
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(spec.num_loras, 8, 4, generator=gen).transpose(1, 2).requires_grad_()  # [L, 4, 8], strided
    b = torch.randn(spec.num_loras, 4, 6, generator=gen).transpose(1, 2).requires_grad_()  # [L, 6, 4], strided
    got = F.orthogonal_loss(a, b, spec)
    got_grads = torch.autograd.grad(got, (a, b))
    ref = [t.detach().double().contiguous().requires_grad_() for t in (a, b)]
    want = reference.orthogonal_loss(*ref, spec)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, torch.autograd.grad(want, ref)):
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-6)


def test_ops_validate_loss_inputs():
    spec, p, roles, flags, index, weight, probs = direct_setup()
    with pytest.raises(ValueError, match="router_probs must be"):
        ops.load_balance_loss_layers([probs[:, :5]], [index], roles, *flags)
    with pytest.raises(ValueError, match=re.escape("role_ids[0] = 9")):
        ops.load_balance_loss_layers([probs], [index], torch.full_like(roles, 9), *flags)
    with pytest.raises(ValueError, match="lora_index must be"):
        ops.load_balance_loss_layers([probs], [index[:3]], roles, *flags)
    with pytest.raises(ValueError, match=re.escape("must be [L=14, ...]")):
        ops.orthogonal_loss_layers([p.lora_A[:13]], [p.lora_B[:13]], *flags)
    with pytest.raises(ValueError, match="rank"):
        ops.orthogonal_loss_layers([p.lora_A], [p.lora_B[:, :, :2].contiguous()], *flags)
    with pytest.raises(TypeError, match="needs one dtype"):
        ops.orthogonal_loss_layers([p.lora_A], [p.lora_B.double()], *flags)
    products = ops.orthogonal_loss_layers([p.lora_A], [p.lora_B], *flags)[1]
    with pytest.raises(ValueError, match=re.escape("must be [L=14, ...]")):
        ops.orthogonal_loss_layers_backward(torch.tensor(1.0), products, [p.lora_A[:13]], [p.lora_B[:13]], *flags)


def test_ops_grouped_lora_rejects_int64_index_beyond_int32():
    spec, p, roles, flags, index, weight, _ = direct_setup()
    bad = index.long()
    bad[0, 1] = 2**32 + 1
    with pytest.raises(ValueError, match=re.escape(f"lora_index[0, 1] = {2**32 + 1}")):
        ops.grouped_lora(p.x, p.lora_A, p.lora_B, bad, weight, 1.0, None, None)


# route_backward trusts the shapes and values of lora_index / router_probs: bad ones read out of
# bounds (garbage, or a segmentation fault), so each case runs in a child interpreter.
ROUTE_BACKWARD_CASE = textwrap.dedent("""
    import torch, mor_ext
    from mor_ext import MoRSpec
    from mor_ext.ops import _flags
    ops = torch.ops.mor_ext
    flags = _flags(MoRSpec.moragent(rank=4))
    gen = torch.Generator().manual_seed(0)
    x, rw, sg = (torch.randn(4, 8, generator=gen), torch.randn(11, 8, generator=gen), torch.randn(3, 8, generator=gen))
    roles = torch.tensor([0, 1, 2, 0])
    index, weight, probs = ops.route(x, rw, sg, roles, *flags, True)
    case = {case!r}
    if case == "router_probs [4, 1]": probs = probs[:, :1].contiguous()
    if case == "lora_index [4, 1]": index = index[:, :1].contiguous()
    if case == "lora_index values 10**6": index = torch.full_like(index, 10**6)
    try:
        ops.route_backward(torch.ones(4, 4), torch.ones(4, 11), x, rw, sg, roles, index, probs, *flags, True)
    except ValueError as e:
        print("ValueError:", e)
    else:
        print("no error")
""")


@pytest.mark.parametrize("case", ["router_probs [4, 1]", "lora_index [4, 1]", "lora_index values 10**6"])
def test_ops_route_backward_validates_saved_tensors(case):
    result = subprocess.run([sys.executable, "-c", ROUTE_BACKWARD_CASE.format(case=case)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"crashed with return code {result.returncode}: {result.stderr[-500:]}"
    assert result.stdout.startswith("ValueError:"), result.stdout


# =========================================================================================== degenerate sizes
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("lead", [(0,), (2, 0)], ids=lead_id)
def test_empty_batch(lead, backend_name):
    spec = SPECS["moragent"]
    p = make_params(spec, lead, D_IN, D_OUT, seed=100)
    roles = torch.zeros(lead, dtype=torch.long)
    with backend(backend_name):
        y, r = F.mor_linear(p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles,
                            spec, return_routing=True)
        assert y.shape == (*lead, D_OUT) and r.lora_index.shape == (*lead, spec.k_max)
        aux = F.load_balance_loss(r.router_probs, r.lora_index, roles, spec)
        assert aux.item() == 0.0


def test_role_without_active_lora():
    """A role with no shared LoRA and top_k=0 adds nothing; together with a normal role it is fine."""
    spec = MoRSpec(roles=(RoleSpec("probe", 3, 0, False), RoleSpec("normal", 2, 1, True)), rank=2)
    inputs, diff = mor_inputs(spec, (20,), "random", torch.float32, seed=101)
    comp, _, _ = compare_backends(mor_linear_fn(spec), inputs, diff, torch.float32, MOR_NAMES)
    probe = inputs["role_ids"] == 0
    assert comp.outputs[1][probe].eq(-1).all()


NO_SLOT_SPEC = MoRSpec(roles=(RoleSpec("probe", 3, 0, False),), rank=2)  # valid, but K_max = 0


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_spec_with_no_active_slot_at_all(backend_name):
    spec = NO_SLOT_SPEC
    p = make_params(spec, (5,), 8, 6, seed=102)
    roles = torch.tensor([0, -1, 0, 0, -1])
    with backend(backend_name):
        y, r = F.mor_linear(p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles,
                            spec, return_routing=True)
        aux = F.load_balance_loss(r.router_probs, r.lora_index, roles, spec)
    assert r.lora_index.shape == (5, 0) and r.lora_weight.shape == (5, 0) and r.router_probs.shape == (5, 3)
    torch.testing.assert_close(y, torch.nn.functional.linear(p.x, p.weight, p.bias))
    assert aux.item() == 0.0


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_grouped_lora_with_zero_slots(backend_name):
    p = make_params(NO_SLOT_SPEC, (5,), 8, 6, seed=103)
    with backend(backend_name):
        delta = F.grouped_lora(p.x, p.lora_A, p.lora_B, torch.zeros(5, 0, dtype=torch.int32), torch.zeros(5, 0))
    assert delta.shape == (5, 6) and delta.eq(0).all()


# =========================================================================================== MoRSpec
def test_moragent_sizes():
    spec = MoRSpec.moragent()
    assert spec.rank == 16 and spec.shared_gate == "sigmoid"
    assert spec.role_names == ("reasoner", "executor", "summarizer")
    assert (spec.num_roles, spec.num_loras, spec.num_experts_total, spec.k_max) == (3, 14, 11, 4)
    assert spec.lora_offsets == (0, 5, 10, 14) and spec.router_offsets == (0, 4, 8, 11)
    assert [spec.shared_lora(r) for r in range(3)] == [0, 5, 10]
    assert [list(spec.routed_loras(r)) for r in range(3)] == [[1, 2, 3, 4], [6, 7, 8, 9], [11, 12, 13]]
    assert [r.num_slots for r in spec.roles] == [4, 4, 3]
    assert spec.op_args() == ([4, 4, 3], [3, 3, 2], [True, True, True], True)
    assert _flags(spec) == ([4, 4, 3], [3, 3, 2], [1, 1, 1])


@pytest.mark.parametrize("spec_name", SPECS)
def test_spec_dict_round_trip(spec_name):
    spec = SPECS[spec_name]
    data = json.loads(json.dumps(spec.to_dict()))
    again = MoRSpec.from_dict(data)
    assert again == spec and again.lora_offsets == spec.lora_offsets and again.router_offsets == spec.router_offsets


def test_decoupled_spec():
    spec = MoRSpec.decoupled()
    assert spec.role_names == ("tool_selector", "argument_generator") and spec.shared_gate == "none"
    assert (spec.num_loras, spec.num_experts_total, spec.k_max) == (2, 0, 1)
    assert [spec.shared_lora(r) for r in range(2)] == [0, 1] and not spec.routed_loras(1)


def test_role_index():
    spec = MoRSpec.moragent()
    assert spec.role_index("executor") == 1 and spec.role_index(2) == 2 and spec.role_index(-1) == -1
    with pytest.raises(ValueError, match="unknown role 'critic'"):
        spec.role_index("critic")
    for bad in (3, -2):
        with pytest.raises(ValueError, match="out of range"):
            spec.role_index(bad)
    for bad in (True, 1.0, None):
        with pytest.raises(TypeError, match="a role is a name"):
            spec.role_index(bad)


@pytest.mark.parametrize(
    "make,error,message",
    [
        (lambda: RoleSpec("r", num_experts=2, top_k=3), ValueError, "top_k=3 > num_experts=2"),
        (lambda: RoleSpec("r", num_experts=-1), ValueError, "num_experts must be an int >= 0"),
        (lambda: RoleSpec("r", num_experts=2, top_k=True), ValueError, "top_k must be an int"),
        (lambda: RoleSpec("r", num_experts=2.0), ValueError, "num_experts must be an int"),
        (lambda: RoleSpec("", num_experts=1), ValueError, "name must be a non-empty string"),
        (lambda: RoleSpec("r", shared=False), ValueError, "has no LoRA at all"),
        (lambda: RoleSpec("r", shared=1), ValueError, "shared must be a bool"),
        (lambda: MoRSpec(roles=()), ValueError, "at least one role"),
        (lambda: MoRSpec(roles=(RoleSpec("a"), RoleSpec("a"))), ValueError, "names must be unique"),
        (lambda: MoRSpec(roles=(RoleSpec("a"),), rank=0), ValueError, "rank must be an int >= 1"),
        (lambda: MoRSpec(roles=(RoleSpec("a"),), shared_gate="softmax"), ValueError, "shared_gate must be one of"),
        (lambda: MoRSpec(roles=({"name": "a"},)), TypeError, "must hold RoleSpec objects"),
        (lambda: MoRSpec.from_dict({"rank": 4}), ValueError, "not a valid MoRSpec dict"),
        (lambda: MoRSpec.from_dict({"roles": [{"name": "a", "experts": 2}]}), ValueError, "not a valid MoRSpec dict"),
        (lambda: MoRSpec.from_dict({"roles": [{"name": "a", "num_experts": 1, "top_k": 2}]}), ValueError, "top_k=2"),
    ],
)
def test_spec_validation(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


# =========================================================================================== orthogonal loss over layers
def layer_stack(spec, shapes, dtype=torch.float32, seed=70):
    gen = torch.Generator().manual_seed(seed)
    a = [(torch.randn(spec.num_loras, spec.rank, d_in, generator=gen) * d_in**-0.5).to(dtype) for d_in, _ in shapes]
    b = [(torch.randn(spec.num_loras, d_out, spec.rank, generator=gen) * 0.3).to(dtype) for _, d_out in shapes]
    return a, b


# Inner sizes below, at and across the kernels' 128-wide tiles, none but 256 a multiple of it.
LAYER_SHAPES = [(40, 40), (40, 13), (70, 40), (33, 97), (300, 256), (256, 129)]


def products_by_formula(spec, a_list, b_list):
    """Every r x r product the kernel computes, in its order, from plain matmuls in fp64."""
    out = []
    for a, b in zip(a_list, b_list):
        a, b = a.double(), b.double()
        for rho in range(spec.num_roles):
            routed = list(spec.routed_loras(rho))
            if len(routed) < 2:
                continue
            out += [a[i] @ a[j].T for n, i in enumerate(routed) for j in routed[n + 1:]]
            out += [b[i].T @ b[i] for i in routed]
    return torch.stack(out)


@pytest.mark.parametrize("spec_name", ["moragent", "mixed", "decoupled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_orthogonal_products_kernel_bodies_on_cpu(spec_name, dtype):
    """orthogonal_products on CPU runs the CUDA kernel's per-thread steps (tile loads, accumulation)."""
    spec = SPECS[spec_name]
    a, b = layer_stack(spec, LAYER_SHAPES, dtype)
    got = torch.ops.mor_ext.testing_orthogonal_products(a, b, *_flags(spec))
    if not any(r.num_experts >= 2 for r in spec.roles):
        assert got.shape[0] == 0
        return
    want = products_by_formula(spec, a, b)
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", range(1, 33))
def test_orthogonal_products_kernel_bodies_every_rank(rank):
    """Every rank the products kernel takes (M x M register tiles of 4, 2 or 1, with from 1 to 32
    thread groups per block), over inner sizes that end mid-tile and on a tile edge."""
    spec = MoRSpec(roles=(RoleSpec("a", num_experts=3, top_k=1, shared=True),), rank=rank)
    a, b = layer_stack(spec, [(300, 129), (256, 7)], torch.float32, seed=rank)
    got = torch.ops.mor_ext.testing_orthogonal_products(a, b, *_flags(spec))
    torch.testing.assert_close(got.double(), products_by_formula(spec, a, b), rtol=1e-5, atol=1e-5)


def test_orthogonal_kernels_refuse_ranks_above_their_limit():
    """The kernel ops (products, grads; CUDA and their CPU emulation) take ranks up to
    ORTHOGONAL_CUDA_MAX_RANK and refuse larger ones with a message (the grads body would write past
    its per-thread arrays); the CPU loss and its backward (ATen GEMMs) take any rank."""
    limit = ORTHOGONAL_CUDA_MAX_RANK
    for rank in (limit + 1, limit + 16):
        spec = MoRSpec.moragent(rank=rank)
        a, b = layer_stack(spec, [(40, 24)], torch.float32)
        flags, g = _flags(spec), torch.tensor(0.7)
        with pytest.raises(ValueError, match=f"rank {rank} is not supported"):
            torch.ops.mor_ext.testing_orthogonal_products(a, b, *flags)
        loss, products = torch.ops.mor_ext.orthogonal_loss_layers(a, b, *flags)
        with pytest.raises(ValueError, match=f"rank {rank} is not supported"):
            torch.ops.mor_ext.testing_orthogonal_grads(g, products, a, b, *flags)
        want = reference.orthogonal_loss(a[0].double(), b[0].double(), spec)
        torch.testing.assert_close(loss.double(), want.double(), rtol=1e-5, atol=1e-6)
        torch.ops.mor_ext.orthogonal_loss_layers_backward(g, products, a, b, *flags)
    spec = MoRSpec.moragent(rank=limit)
    a, b = layer_stack(spec, [(40, 24)], torch.float32)
    assert torch.ops.mor_ext.testing_orthogonal_products(a, b, *_flags(spec)).shape[1:] == (limit, limit)


# Ranks 4, 8, 16 and 32 run the compile-time-rank instantiation of the bodies (kernels::with_rank),
# 2 and 3 the run-time one.
@pytest.mark.parametrize("spec_name", ["moragent", "mixed", "decoupled", "single_role", "r8", "r16", "r32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_orthogonal_grads_kernel_bodies_on_cpu(spec_name, dtype):
    """orthogonal_grads on CPU runs the CUDA backward kernel's per-thread steps (term coefficients from
    the products, accumulation, strided stores): it must equal the ATen backward, zeros included."""
    spec = SPECS[spec_name] if spec_name in SPECS else MoRSpec.moragent(rank=int(spec_name[1:]))
    a, b = layer_stack(spec, LAYER_SHAPES, dtype)
    grad_out = torch.tensor(0.7)
    _, products = torch.ops.mor_ext.orthogonal_loss_layers(a, b, *_flags(spec))
    got_a, got_b = torch.ops.mor_ext.testing_orthogonal_grads(grad_out, products, a, b, *_flags(spec))
    want_a, want_b = torch.ops.mor_ext.orthogonal_loss_layers_backward(grad_out, products, a, b, *_flags(spec))
    # fp32 rounding grows with the rank (sums of r products summed in another order than the GEMMs')
    tol = {"rtol": 1e-4, "atol": 1e-6 * spec.rank} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-3}
    for got, want in zip(got_a + got_b, want_a + want_b):
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got.float(), want.float(), **tol)
    torch.library.opcheck(torch.ops.mor_ext.testing_orthogonal_grads.default, (grad_out, products, a, b, *_flags(spec)))


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("spec_name", ["moragent", "mixed"])
def test_orthogonal_loss_layers_matches_per_layer(backend_name, spec_name):
    spec = SPECS[spec_name]
    a, b = layer_stack(spec, LAYER_SHAPES, torch.float64 if backend_name == "reference" else torch.float32)
    leaves, n = [t.clone().requires_grad_() for t in a + b], len(a)
    with backend(backend_name):
        got = F.orthogonal_loss_layers(leaves[:n], leaves[n:], spec)
        got_grads = torch.autograd.grad(got, leaves)
    want_leaves = [t.detach().double().requires_grad_() for t in a + b]
    want = torch.stack([reference.orthogonal_loss(x, y, spec) for x, y in zip(want_leaves[:n], want_leaves[n:])]).mean()
    want_grads = torch.autograd.grad(want, want_leaves)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g.double(), w.double(), rtol=1e-4, atol=1e-6)


def test_opcheck_orthogonal_loss_layers():
    spec = SPECS["moragent"]
    a, b = layer_stack(spec, LAYER_SHAPES[:2])
    flags = _flags(spec)
    torch.library.opcheck(torch.ops.mor_ext.testing_orthogonal_products.default, (a, b, *flags))
    torch.library.opcheck(torch.ops.mor_ext.orthogonal_loss_layers.default,
                          ([grad(t) for t in a], [grad(t) for t in b], *flags))
    _, products = torch.ops.mor_ext.orthogonal_loss_layers(a, b, *flags)
    torch.library.opcheck(torch.ops.mor_ext.orthogonal_loss_layers_backward.default,
                          (torch.tensor(0.7), products, a, b, *flags))


def test_orthogonal_loss_layers_backward_uses_the_forwards_products():
    """The backward builds the gradients from the products it is handed (it does not recompute them):
    they are linear in them, and products of the wrong shape, dtype or layout are refused."""
    spec = SPECS["moragent"]
    a, b = layer_stack(spec, LAYER_SHAPES[:3])
    flags, g = _flags(spec), torch.tensor(0.7)
    _, products = ops.orthogonal_loss_layers(a, b, *flags)
    assert products.shape == (3 * (10 + 10 + 6), spec.rank, spec.rank)  # per role E(E-1)/2 + E, E = 4, 4, 3
    torch.testing.assert_close(products, ops.testing_orthogonal_products(a, b, *flags), rtol=1e-5, atol=1e-6)
    once = ops.orthogonal_loss_layers_backward(g, products, a, b, *flags)
    twice = ops.orthogonal_loss_layers_backward(g, 2 * products, a, b, *flags)
    for x, y in zip(once[0] + once[1], twice[0] + twice[1]):
        torch.testing.assert_close(2 * x, y)
    for bad, what in [(products[1:], "shape"), (products.double(), "dtype"), (products.transpose(1, 2), "layout")]:
        with pytest.raises(ValueError, match="products must be the forward's"):
            ops.orthogonal_loss_layers_backward(g, bad, a, b, *flags)


def test_orthogonal_loss_layers_bad_input():
    spec = SPECS["moragent"]
    a, b = layer_stack(spec, LAYER_SHAPES[:2])
    with pytest.raises(ValueError, match="one lora_B per lora_A"):
        F.orthogonal_loss_layers(a, b[:1], spec)
    with pytest.raises(TypeError, match=r"lora_As\[1\] has dtype"):
        F.orthogonal_loss_layers([a[0], a[1].double()], b, spec)
    with pytest.raises(ValueError, match="reduction"):
        F.orthogonal_loss_layers(a, b, spec, reduction="max")
