"""testing_mor_linear_decode: the CUDA decode kernels' per-token bodies (csrc/kernels/decode.h), run
on the CPU in loops, against the reference.
"""

from __future__ import annotations

import pytest
import torch

from op_utils import (
    NEEDS_COMPILED,
    DTYPES,
    MOR_NAMES,
    ROLE_PATTERNS,
    SPECS,
    compare_backends,
    decode_fn,
    lead_id,
    mor_inputs,
    opcheck_inputs,
)

pytestmark = NEEDS_COMPILED

ops = torch.ops.mor_ext


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
