"""mor_ext::grouped_lora (the grouped LoRA delta, fused with the frozen layer where given) against
the reference: slot cases, dtypes, strides, gradcheck and opcheck.
"""

from __future__ import annotations

import math

import pytest
import torch

import mor_ext
from mor_ext import functional as F

from op_utils import (
    NEEDS_COMPILED,
    D_IN,
    D_OUT,
    DTYPES,
    GROUPED_DIFF,
    SLOT_CASES,
    SPECS,
    backend,
    compare_backends,
    grad,
    grouped_fn,
    make_params,
    make_slots,
    opcheck_inputs,
    planned_grouped_path,
)

pytestmark = NEEDS_COMPILED

ops = torch.ops.mor_ext


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
