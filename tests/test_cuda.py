"""CUDA kernels against the reference, on a GPU. Every test here skips cleanly without one.

The per-token bodies these kernels run (kernels/routing.h) are the CPU kernels' bodies too, so
tests/test_ops.py checks them on every CI run; what only a GPU can check is here: launch
configuration, memory access, and agreement with the reference on device.
"""

import pytest
import torch

import mor_ext
from mor_ext import MoRSpec, RoleSpec, functional as F, reference
from mor_ext.ops import _flags, uses_compiled

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine (CUDA tests need one)"),
]

SPECS = {
    "moragent": MoRSpec.moragent(16),
    "mixed": MoRSpec(roles=(RoleSpec("a", 4, 2, True), RoleSpec("b", 0, 0, True), RoleSpec("c", 3, 3, False),
                            RoleSpec("d", 5, 0, True)), rank=8),
    "nogate": MoRSpec.moragent(8, shared_gate="none"),
}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def inputs(spec, n, d_in, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(n, d_in, device="cuda", generator=g).to(dtype)
    rw = (torch.randn(spec.num_experts_total, d_in, device="cuda", generator=g) * d_in**-0.5).to(dtype)
    sg = (torch.randn(spec.num_roles, d_in, device="cuda", generator=g) * d_in**-0.5).to(dtype)
    roles = torch.randint(-1, spec.num_roles, (n,), device="cuda", generator=g)
    return x, rw, sg, roles


def test_cuda_route_kernel_is_registered():
    assert uses_compiled(torch.zeros(1, device="cuda"), "route"), mor_ext.describe_backend()


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 37, 4099])
def test_route_matches_reference(spec_name, dtype, n):
    spec = SPECS[spec_name]
    x, rw, sg, roles = inputs(spec, n, 96, dtype)
    leaves = [t.clone().requires_grad_() for t in (x, rw, sg)]
    got = F.route(*leaves, roles, spec)
    want = reference.route(*(t.detach().clone().requires_grad_() for t in (x, rw, sg)), roles, spec)
    torch.testing.assert_close(got.lora_index, want[0])
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
    torch.testing.assert_close(got.lora_weight, want[1], **tol)
    torch.testing.assert_close(got.router_probs, want[2], atol=1e-5, rtol=1e-5)
    # Gradients through both outputs.
    gw = torch.randn(got.lora_weight.shape, device="cuda").to(dtype)
    gp = torch.randn(got.router_probs.shape, device="cuda")
    grads = torch.autograd.grad((got.lora_weight * gw).sum() + (got.router_probs * gp).sum(), leaves)
    ref_leaves = [t.detach().clone().requires_grad_() for t in (x, rw, sg)]
    ref = reference.route(*ref_leaves, roles, spec)
    ref_grads = torch.autograd.grad((ref[1] * gw).sum() + (ref[2] * gp).sum(), ref_leaves)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.float(), b.float(), **({"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32
                                                           else {"atol": 5e-2, "rtol": 5e-2}))


def test_route_outputs_are_fully_written():
    """Poison the caching allocator with NaN; every element the kernel returns must be written."""
    spec = SPECS["moragent"]
    junk = torch.full((64 << 20,), float("nan"), device="cuda")
    del junk
    x, rw, sg, roles = inputs(spec, 3000, 64, torch.float32)
    out = F.route(x, rw, sg, roles, spec)
    assert not out.lora_weight.isnan().any() and not out.router_probs.isnan().any()
    assert (out.lora_index >= -1).all()


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_opcheck_cuda_route(spec_name):
    spec = SPECS[spec_name]
    x, rw, sg, roles = inputs(spec, 33, 40, torch.float32)
    flags = _flags(spec)
    gated = spec.shared_gate == "sigmoid"
    torch.library.opcheck(torch.ops.mor_ext.route.default, (x, rw, sg, roles, *flags, gated))
    index, weight, probs = torch.ops.mor_ext.route(x, rw, sg, roles, *flags, gated)
    torch.library.opcheck(torch.ops.mor_ext.route_backward.default, (
        torch.randn_like(weight), torch.randn_like(probs), x, rw, sg, roles, index, probs, *flags, gated))


def test_cuda_matches_cpu_kernel_exactly_on_fp32_logits():
    """Same bodies on both devices: identical slots; gates and probabilities to fp32 rounding."""
    spec = SPECS["moragent"]
    x, rw, sg, roles = inputs(spec, 2000, 128, torch.float32)
    gpu = F.route(x, rw, sg, roles, spec)
    cpu = F.route(x.cpu(), rw.cpu(), sg.cpu(), roles.cpu(), spec)
    torch.testing.assert_close(gpu.lora_index.cpu(), cpu.lora_index)
    torch.testing.assert_close(gpu.lora_weight.cpu(), cpu.lora_weight, atol=1e-5, rtol=1e-5)


def _layers(spec, shapes, dtype, seed=1):
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = [(torch.randn(spec.num_loras, spec.rank, d_in, device="cuda", generator=g) * d_in**-0.5).to(dtype)
         for d_in, _ in shapes]
    b = [(torch.randn(spec.num_loras, d_out, spec.rank, device="cuda", generator=g) * 0.3).to(dtype)
         for _, d_out in shapes]
    return a, b


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_orthogonal_products_kernel_matches_cpu_bodies(dtype):
    spec = SPECS["moragent"]
    a, b = _layers(spec, [(2048, 512), (33, 97), (8192, 2048)], dtype)
    got = torch.ops.mor_ext.orthogonal_products(a, b, *_flags(spec))
    want = torch.ops.mor_ext.orthogonal_products([t.cpu() for t in a], [t.cpu() for t in b], *_flags(spec))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_orthogonal_loss_layers_matches_reference(spec_name):
    spec = SPECS[spec_name]
    a, b = _layers(spec, [(256, 256), (256, 64), (96, 256)], torch.float32)
    leaves = [t.clone().requires_grad_() for t in a + b]
    got = F.orthogonal_loss_layers(leaves[:3], leaves[3:], spec)
    grads = torch.autograd.grad(got, leaves)
    ref_leaves = [t.detach().double().requires_grad_() for t in a + b]
    want = torch.stack([reference.orthogonal_loss(x, y, spec) for x, y in zip(ref_leaves[:3], ref_leaves[3:])]).mean()
    ref_grads = torch.autograd.grad(want, ref_leaves)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
    for g_, w in zip(grads, ref_grads):
        torch.testing.assert_close(g_.double(), w, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_load_balance_loss_matches_reference(spec_name):
    spec = SPECS[spec_name]
    x, rw, sg, roles = inputs(spec, 999, 64, torch.float32)
    routing = F.route(x, rw, sg, roles, spec)
    probs = routing.router_probs.clone().requires_grad_()
    got = F.load_balance_loss(probs, routing.lora_index, roles, spec)
    (g,) = torch.autograd.grad(got, probs)
    ref_probs = routing.router_probs.detach().double().requires_grad_()
    want = reference.load_balance_loss(ref_probs, routing.lora_index, roles, spec)
    (rg,) = torch.autograd.grad(want, ref_probs)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g.double(), rg, rtol=1e-5, atol=1e-7)
