"""The backend: which ops run compiled, the op names read from the library (csrc/op_table.h),
fake and autocast kernels of every op.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import mor_ext
from mor_ext.ops import uses_compiled

from op_utils import (
    AVX512_PATHS,
    NEEDS_COMPILED,
    backend,
    grad,
    opcheck_inputs,
)

pytestmark = NEEDS_COMPILED

ops = torch.ops.mor_ext


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
    assert mor_ext.backend_info()["cpu_avx512"] is AVX512_PATHS
    assert ("AVX-512 decode and layer GEMMs" in mor_ext.describe_backend()) is AVX512_PATHS
    code = "import mor_ext; print(mor_ext.backend_info()['cpu_avx512'])"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


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
