"""CUDA kernels against the reference, on a GPU. Every test here skips cleanly without one.

The per-token bodies these kernels run (kernels/routing.h) are the CPU kernels' bodies too, so
the CPU tests in tests/ops/ check them on every CI run; what only a GPU can check is here: launch
configuration, memory access, and agreement with the reference on device.
"""

import pytest
import torch

import mor_ext
from mor_ext import MoRSpec, RoleSpec, functional as F
from mor_ext.ops import ORTHOGONAL_CUDA_MAX_RANK, _flags, reference, uses_compiled

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


# d_in=96 takes the fused kernel (d_in a multiple of 16 bytes' worth of elements, <= 16 logit rows),
# d_in=97 the GEMM + routing kernel path (csrc/cuda/route.cu).
@pytest.mark.parametrize("d_in", [96, 97])
@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 37, 4099])
def test_route_matches_reference(spec_name, dtype, n, d_in):
    spec = SPECS[spec_name]
    x, rw, sg, roles = inputs(spec, n, d_in, dtype)
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
    ref_grads = torch.autograd.grad((ref[1] * gw).sum() + (ref[2] * gp).sum(), ref_leaves, allow_unused=True)
    ref_grads = [torch.zeros_like(t) if g is None else g for g, t in zip(ref_grads, ref_leaves)]
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
    got = torch.ops.mor_ext.testing_orthogonal_products(a, b, *_flags(spec))
    want = torch.ops.mor_ext.testing_orthogonal_products([t.cpu() for t in a], [t.cpu() for t in b], *_flags(spec))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rank", [1, 2, 3, 4, 6, 8, 12, 16, 17, 24, 30, 31, 32])
def test_orthogonal_products_kernel_every_micro_tile(rank):
    """Every micro-tile size and thread layout of the products kernel (M = 4, 2, 1; up to 961 threads
    for odd ranks above 16), inner sizes ending mid-tile and on a tile edge."""
    spec = MoRSpec(roles=(RoleSpec("a", 3, 1, True),), rank=rank)
    a, b = _layers(spec, [(300, 129), (256, 7)], torch.bfloat16, seed=rank)
    got = torch.ops.mor_ext.testing_orthogonal_products(a, b, *_flags(spec))
    want = torch.ops.mor_ext.testing_orthogonal_products([t.cpu() for t in a], [t.cpu() for t in b], *_flags(spec))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rank", [5, 7, 10, 14, 18, 22])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_orthogonal_products_kernel_groups_and_dtypes(rank, dtype):
    """Thread layouts whose 16-byte-load phases straddle thread groups (M = 1 with 5-10 groups, M = 2
    with 2-10 groups), in the dtypes the micro-tile test does not run."""
    spec = MoRSpec(roles=(RoleSpec("a", 3, 1, True),), rank=rank)
    a, b = _layers(spec, [(300, 129), (128, 7)], dtype, seed=rank)
    got = torch.ops.mor_ext.testing_orthogonal_products(a, b, *_flags(spec))
    want = torch.ops.mor_ext.testing_orthogonal_products([t.cpu() for t in a], [t.cpu() for t in b], *_flags(spec))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)


# 4, 8, 16, 32: the compile-time-rank instantiations of the gradient kernel; 3 and 12: the run-time one.
@pytest.mark.parametrize("rank", [3, 4, 8, 12, 16, 32])
def test_cuda_orthogonal_grads_every_instantiation(rank):
    spec = MoRSpec.moragent(rank=rank)
    a, b = _layers(spec, [(200, 130), (64, 300)], torch.float32, seed=rank)
    g = torch.tensor(0.7, device="cuda")
    _, products = torch.ops.mor_ext.orthogonal_loss_layers(a, b, *_flags(spec))
    got_a, got_b = torch.ops.mor_ext.orthogonal_loss_layers_backward(g, products, a, b, *_flags(spec))
    a_cpu, b_cpu = [t.cpu() for t in a], [t.cpu() for t in b]
    _, products_cpu = torch.ops.mor_ext.orthogonal_loss_layers(a_cpu, b_cpu, *_flags(spec))
    want_a, want_b = torch.ops.mor_ext.orthogonal_loss_layers_backward(g.cpu(), products_cpu, a_cpu, b_cpu,
                                                                       *_flags(spec))
    for got, want in zip(got_a + got_b, want_a + want_b):
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4 * scale)


def test_cuda_orthogonal_loss_above_the_kernels_rank_takes_the_reference():
    """Ranks above the kernels' limit: the ops refuse them with a message, mor_ext.ops (and so
    training) takes the reference path, with the same loss and gradients."""
    spec = MoRSpec.moragent(rank=ORTHOGONAL_CUDA_MAX_RANK + 16)
    a, b = _layers(spec, [(96, 80), (64, 40)], torch.float32)
    with pytest.raises(ValueError, match="rank 48 is not supported"):
        torch.ops.mor_ext.orthogonal_loss_layers(a, b, *_flags(spec))
    leaves = [t.clone().requires_grad_() for t in a + b]
    got = F.orthogonal_loss_layers(leaves[:2], leaves[2:], spec)
    grads = torch.autograd.grad(got, leaves)
    ref = [t.detach().cpu().double().requires_grad_() for t in a + b]
    want = torch.stack([reference.orthogonal_loss(x, y, spec) for x, y in zip(ref[:2], ref[2:])]).mean()
    torch.testing.assert_close(got.cpu().double(), want, rtol=1e-4, atol=1e-6)
    for g_, w in zip(grads, torch.autograd.grad(want, ref)):
        torch.testing.assert_close(g_.cpu().double(), w, rtol=1e-3, atol=1e-6)


def test_cuda_ops_reject_tensors_from_another_device():
    """A CPU tensor among a CUDA call's saved tensors is an error, not a host pointer in a kernel."""
    spec, p, roles, flags, gated, _, _, _ = op_utils.opcheck_inputs("moragent", n=80)
    x, w, a, b, rw, sg = [t.cuda() for t in (p.x, p.weight, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight)]
    roles = roles.cuda()
    y, index, weight, probs, shrink, shared = torch.ops.mor_ext.mor_linear(x, w, None, a, b, rw, sg, roles, *flags,
                                                                           gated, 1.0)
    gy, gw, gp = torch.randn_like(y), torch.zeros_like(weight), torch.zeros_like(probs)
    with pytest.raises(ValueError, match="router_probs is on cpu"):
        torch.ops.mor_ext.mor_linear_backward(gy, gw, gp, x, w, a, b, rw, sg, roles, index, weight, probs.cpu(),
                                              shrink, shared, *flags, gated, 1.0)
    with pytest.raises(ValueError, match="lora_index is on cpu"):
        torch.ops.mor_ext.route_backward(gw, gp, x, rw, sg, roles, index.cpu(), probs, *flags, gated)


def test_cuda_decode_too_large_for_shared_memory_takes_the_gemm_path():
    """A spec whose decode kernel would need > 48 KB of shared memory per token: mor_linear takes the
    GEMM path even for 4 tokens (and matches the CPU), testing_mor_linear_decode says why it cannot run."""
    spec = MoRSpec(roles=(RoleSpec("wide", num_experts=60, top_k=2, shared=True),), rank=200)
    p = make_params(spec, (4,), 32, 16, seed=5, dtype=torch.float32)
    roles = torch.zeros(4, dtype=torch.long)
    args = (p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles)
    want = torch.ops.mor_ext.mor_linear(*args, *_flags(spec), True, 0.5)
    got = torch.ops.mor_ext.mor_linear(*[t.cuda() for t in args], *_flags(spec), True, 0.5)
    for g_, w_ in zip(got, want):
        torch.testing.assert_close(g_.cpu(), w_, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="shared memory"):
        torch.ops.mor_ext.testing_mor_linear_decode(*[t.cuda() for t in args], *_flags(spec), True, 0.5)


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
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=1e-5)
    for g_, w in zip(grads, ref_grads):
        torch.testing.assert_close(g_.double(), w.double(), rtol=1e-3, atol=1e-5)


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
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g.double(), rg.double(), rtol=1e-5, atol=1e-7)


# =========================================================================================== grouped LoRA, mor_linear
# The same cases as the CPU kernels' tests (tests/ops/), on the GPU: compiled CUDA kernels
# against the reference run on the same device in the same dtype and the fp64 reference on CPU
# (flash-attention's 2x error rule, tests/ops/op_utils.py), outputs and every gradient.
import op_utils  # noqa: E402
from op_utils import Run, compare_runs, make_params, run_with_grads  # noqa: E402


def _cuda(inputs: dict) -> dict:
    return {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


def _cpu(run: Run) -> Run:
    return Run([o.cpu() for o in run.outputs], {k: v.cpu() for k, v in run.grads.items()})


def compare_on_cuda(fn, inputs, diff, dtype, names) -> Run:
    truth = run_with_grads(fn, inputs, diff, "reference", torch.float64)
    ref = _cpu(run_with_grads(fn, _cuda(inputs), diff, "reference", dtype))
    comp = _cpu(run_with_grads(fn, _cuda(inputs), diff, "compiled", dtype))
    compare_runs(comp, ref, truth, dtype, names)
    return comp


@pytest.mark.parametrize("op", ["grouped_lora", "mor_linear", "testing_mor_linear_decode", "load_balance_loss_layers",
                                "orthogonal_loss_layers"])
def test_cuda_kernels_are_registered(op):
    if op in mor_ext.ops.OP_NAMES:
        assert uses_compiled(torch.zeros(1, device="cuda"), op), mor_ext.describe_backend()
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"mor_ext::{op}", "CUDA")


GROUPED_SHAPES = {"t1": ((1,), 33, 17), "small": ((5, 9), 33, 17), "wide": ((3001,), 256, 384)}


@pytest.mark.parametrize("dtype,index_dtype", [(torch.float32, torch.int32), (torch.float32, torch.int64),
                                               (torch.bfloat16, torch.int32), (torch.float16, torch.int64)], ids=str)
@pytest.mark.parametrize("shape", list(GROUPED_SHAPES))
@pytest.mark.parametrize("case", op_utils.SLOT_CASES)
def test_cuda_grouped_lora(case, shape, dtype, index_dtype):
    spec = op_utils.SPECS["moragent"]
    lead, d_in, d_out = GROUPED_SHAPES[shape]
    p = make_params(spec, lead, d_in, d_out, seed=11, dtype=dtype)
    n = p.x[..., 0].numel()
    index, weight = op_utils.make_slots(case, n, spec.num_loras, seed=11, dtype=dtype)
    inputs = dict(x=p.x, lora_A=p.lora_A, lora_B=p.lora_B, lora_index=index.to(index_dtype).view(*lead, -1),
                  lora_weight=weight.view(*lead, -1))
    compare_on_cuda(op_utils.grouped_fn(0.75), inputs, op_utils.GROUPED_DIFF, dtype, ["delta"])


@pytest.mark.parametrize("with_weight,with_bias", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_fused_lora_linear(dtype, with_weight, with_bias):
    spec = op_utils.SPECS["mixed"]
    p = make_params(spec, (40,), 33, 17, seed=13, dtype=dtype)
    index, weight = op_utils.make_slots("gaps", 40, spec.num_loras, seed=13, dtype=dtype)
    index = index.cuda()

    def fn(x, lora_A, lora_B, lora_weight, weight=None, bias=None):
        return (mor_ext.ops.lora_linear(x, lora_A, lora_B, index.to(x.device), lora_weight, 1.5, weight, bias),)

    inputs = dict(x=p.x, lora_A=p.lora_A, lora_B=p.lora_B, lora_weight=weight)
    diff = list(op_utils.GROUPED_DIFF)
    if with_weight:
        inputs["weight"], diff = p.weight, diff + ["weight"]
    if with_bias:
        inputs["bias"], diff = p.bias, diff + ["bias"]
    compare_on_cuda(fn, inputs, diff, dtype, ["out"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pattern", op_utils.ROLE_PATTERNS)
@pytest.mark.parametrize("spec_name", ["moragent", "moragent_nogate", "mixed", "routed_only", "decoupled"])
def test_cuda_mor_linear(spec_name, pattern, dtype):
    spec = op_utils.SPECS[spec_name]
    inputs, diff = op_utils.mor_inputs(spec, (4, 16), pattern, dtype, seed=22)
    compare_on_cuda(op_utils.mor_linear_fn(spec, scaling=0.5), inputs, diff, dtype, op_utils.MOR_NAMES)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead,d_in,d_out", [((1,), 256, 384), ((2, 1500), 256, 384), ((4099,), 96, 4)])
def test_cuda_mor_linear_shapes(lead, d_in, d_out, dtype):
    """Decode (T=1), agent-style role spans at training size, and a ragged odd shape."""
    spec = op_utils.SPECS["moragent"]
    p = make_params(spec, lead, d_in, d_out, seed=24, dtype=dtype)
    inputs = dict(x=p.x, weight=p.weight, bias=p.bias, lora_A=p.lora_A, lora_B=p.lora_B,
                  router_weight=p.router_weight, shared_gate_weight=p.shared_gate_weight,
                  role_ids=op_utils.make_role_ids("spans", lead, spec.num_roles, 24, span=300))
    compare_on_cuda(op_utils.mor_linear_fn(spec), inputs, list(op_utils.MOR_DIFF), dtype, op_utils.MOR_NAMES)


# mor_linear takes the decode kernels (csrc/cuda/decode.cu) for at most 64 tokens: the tests above
# with (4, 16), (1,) and (3, 17) tokens run them; (80,), (2, 1500) and (4099,) run the GEMM path.
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 8, 64, 65, 300])
@pytest.mark.parametrize("spec_name", ["moragent", "mixed", "decoupled"])
def test_cuda_decode_kernels(spec_name, n, dtype):
    """The decode op on CUDA against the reference (index exact, floats by the 2x rule), at sizes on
    both sides of mor_linear's switch; on CPU the same op runs the kernels' bodies (tests/ops/test_decode.py)."""
    spec = op_utils.SPECS[spec_name]
    inputs, _ = op_utils.mor_inputs(spec, (n,), "random", dtype, seed=27)
    compare_on_cuda(op_utils.decode_fn(spec), inputs, [], dtype, op_utils.MOR_NAMES)


def test_cuda_decode_path_and_gemm_path_agree():
    """At 64 tokens (decode kernels) and 65 (GEMM path) mor_linear gives the same per-token results."""
    spec, p, roles, flags, gated, _, _, _ = op_utils.opcheck_inputs("moragent", n=65)
    args = [t.cuda() for t in (p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight)]
    full = torch.ops.mor_ext.mor_linear(*args, roles.cuda(), *flags, gated, 0.5)
    head = torch.ops.mor_ext.mor_linear(args[0][:64], *args[1:], roles[:64].cuda(), *flags, gated, 0.5)
    for a, b in zip(full, head):
        if a.is_floating_point():
            torch.testing.assert_close(a[:64], b, rtol=1e-5, atol=1e-5)
        else:
            assert torch.equal(a[:64], b)


@pytest.mark.parametrize("spec_name,pattern,lead", [("moragent", "spans", (80,)), ("mixed", "random", (3, 17)),
                                                    ("mixed", "no_role", (9,)), ("decoupled", "spans", (2, 40))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_poisoned_outputs_are_all_written(spec_name, pattern, lead, dtype, monkeypatch):
    """MOR_EXT_POISON=1 fills every fresh output with NaN / -7 before the kernels run."""
    spec = op_utils.SPECS[spec_name]
    inputs, _ = op_utils.mor_inputs(spec, lead, pattern, dtype, seed=60, span=40)
    inputs = _cuda(inputs)
    monkeypatch.setenv("MOR_EXT_POISON", "0")
    clean = op_utils.compiled_forward_backward(spec, inputs)
    monkeypatch.setenv("MOR_EXT_POISON", "1")
    poisoned = op_utils.compiled_forward_backward(spec, inputs)
    for i, (a, b) in enumerate(zip(clean, poisoned)):
        assert not b.isnan().any() if b.is_floating_point() else not (b == -7).any(), f"result {i}"
        assert torch.equal(a, b), f"result {i} depends on the poison"


def _opcheck_inputs(spec_name):
    spec, p, roles, flags, gated, index, weight, probs = op_utils.opcheck_inputs(spec_name)
    p = op_utils.Params(**{k: getattr(p, k).cuda() for k in vars(p)})
    return spec, p, roles.cuda(), flags, gated, index.cuda(), weight.cuda(), probs.cuda()


@pytest.mark.parametrize("spec_name", op_utils.OPCHECK_SPECS)
def test_cuda_opcheck_grouped_lora_and_mor_linear(spec_name):
    grad = op_utils.grad
    ops = torch.ops.mor_ext
    spec, p, roles, flags, gated, index, weight, probs = _opcheck_inputs(spec_name)
    torch.library.opcheck(ops.grouped_lora.default,
                          (grad(p.x), grad(p.lora_A), grad(p.lora_B), index, grad(weight), 0.5, p.weight, p.bias))
    _, shrink = ops.grouped_lora(p.x, p.lora_A, p.lora_B, index, weight, 0.5, None, None)
    grad_out = torch.randn(p.x.shape[0], p.weight.shape[0], device="cuda")
    torch.library.opcheck(ops.grouped_lora_backward.default,
                          (grad_out, p.x, p.lora_A, p.lora_B, index, weight, shrink, 0.5, p.weight))
    args = (p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles, *flags, gated, 0.5)
    torch.library.opcheck(ops.mor_linear.default, args)
    y, index, weight, probs, shrink, shared_gate_logit = ops.mor_linear(*args)
    torch.library.opcheck(ops.mor_linear_backward.default, (
        torch.randn_like(y), torch.randn_like(weight), torch.randn_like(probs), p.x, p.weight, p.lora_A, p.lora_B,
        p.router_weight, p.shared_gate_weight, roles, index, weight, probs, shrink, shared_gate_logit, *flags, gated,
        0.5))


def test_cuda_mor_linear_op_matches_cpu_kernel():
    """Same spec, same fp32 inputs: the CUDA and CPU fused ops agree on routing, output and gradients."""
    spec, p, roles, flags, gated, _, _, _ = op_utils.opcheck_inputs("moragent", n=300)
    grad = op_utils.grad
    results = []
    for device in ("cpu", "cuda"):
        leaves = [grad(t.to(device)) for t in (p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight,
                                               p.shared_gate_weight)]
        y, index, weight, probs, _, _ = torch.ops.mor_ext.mor_linear(*leaves, roles.to(device), *flags, gated, 0.5)
        gen = torch.Generator().manual_seed(55)
        loss = (y * torch.randn(y.shape, generator=gen).to(device)).sum() + weight.square().sum() \
            + (probs * torch.randn(probs.shape, generator=gen).to(device)).sum()
        results.append([t.cpu() for t in (y, index, weight, probs, *torch.autograd.grad(loss, leaves))])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_cuda_torch_compile_mor_linear():
    spec, inputs = op_utils.compile_inputs()
    inputs = _cuda(inputs)

    def layer(*args):
        return F.mor_linear(*args, spec, return_routing=True)

    torch._dynamo.reset()
    eager = op_utils.run_mor_linear(layer, spec, inputs)
    compiled = op_utils.run_mor_linear(torch.compile(layer, backend="aot_eager", fullgraph=True), spec, inputs)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_cuda_patched_model_trains_like_cpu(tiny_model_factory):
    """A patched tiny Llama: loss (CE + aux + orth) and every adapter gradient match between devices."""
    results = []
    for device in ("cpu", "cuda"):
        model = tiny_model_factory("llama", seed=3)
        mor_ext.patch(model)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        for _, param in named:
            torch.nn.init.normal_(param, std=0.05)  # B starts at zero: give every path a gradient
        model.to(device)
        gen = torch.Generator().manual_seed(4)
        ids = torch.randint(3, 120, (2, 24), generator=gen).to(device)
        roles = torch.tensor([0] * 8 + [1] * 8 + [2] * 8).repeat(2, 1).to(device)
        out = model(input_ids=ids, role_ids=roles, labels=ids)
        grads = torch.autograd.grad(out.loss, [p for _, p in named])
        results.append((out.loss.item(), {n: g.cpu() for (n, _), g in zip(named, grads)}))
    (loss_cpu, g_cpu), (loss_gpu, g_gpu) = results
    assert abs(loss_cpu - loss_gpu) < 1e-4 * max(1.0, abs(loss_cpu))
    for name in g_cpu:
        torch.testing.assert_close(g_gpu[name], g_cpu[name], rtol=2e-3, atol=2e-4, msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec_name", list(SPECS))
def test_cuda_orthogonal_grads_match_cpu(spec_name, dtype):
    """The one-launch gradient kernel against the CPU's ATen backward, every layer and LoRA (zeros too)."""
    spec = SPECS[spec_name]
    a, b = _layers(spec, [(256, 256), (96, 1000), (2048, 64)], dtype)
    g = torch.tensor(0.7, device="cuda")
    a_cpu, b_cpu = [t.cpu() for t in a], [t.cpu() for t in b]
    _, products = torch.ops.mor_ext.orthogonal_loss_layers(a, b, *_flags(spec))
    _, products_cpu = torch.ops.mor_ext.orthogonal_loss_layers(a_cpu, b_cpu, *_flags(spec))
    got_a, got_b = torch.ops.mor_ext.orthogonal_loss_layers_backward(g, products, a, b, *_flags(spec))
    want_a, want_b = torch.ops.mor_ext.orthogonal_loss_layers_backward(g.cpu(), products_cpu, a_cpu, b_cpu,
                                                                       *_flags(spec))
    for got, want in zip(got_a + got_b, want_a + want_b):
        assert got.dtype == want.dtype
        # Sums over d_in / d_out in another order: absolute error relative to the gradient's scale.
        scale = max(1.0, want.abs().max().item())
        tol = {"rtol": 1e-4, "atol": 1e-4 * scale} if dtype == torch.float32 else {"rtol": 3e-2, "atol": 2e-3 * scale}
        torch.testing.assert_close(got.cpu().float(), want.float(), **tol)


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_cuda_orthogonal_loss_per_layer_and_opcheck(spec_name):
    spec = SPECS[spec_name]
    (a,), (b,) = _layers(spec, [(300, 130)], torch.float32)
    leaves = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    got = F.orthogonal_loss(*leaves, spec)
    grads = torch.autograd.grad(got, leaves)
    ref = [t.detach().double().requires_grad_() for t in (a, b)]
    want = reference.orthogonal_loss(*ref, spec)
    ref_grads = torch.autograd.grad(want, ref, allow_unused=True)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=1e-5)
    for g_, w, t in zip(grads, ref_grads, ref):
        torch.testing.assert_close(g_.double(), torch.zeros_like(t) if w is None else w.double(), rtol=1e-3, atol=1e-5)
    flags = _flags(spec)
    torch.library.opcheck(torch.ops.mor_ext.orthogonal_loss_layers.default, ([leaves[0]], [leaves[1]], *flags))
    _, products = torch.ops.mor_ext.orthogonal_loss_layers([a], [b], *flags)
    torch.library.opcheck(torch.ops.mor_ext.orthogonal_loss_layers_backward.default,
                          (torch.tensor(0.7, device="cuda"), products, [a], [b], *flags))


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_cuda_load_balance_loss_layers_matches_cpu(spec_name):
    spec = SPECS[spec_name]
    x, rw, sg, roles = inputs(spec, 3000, 64, torch.float32)
    probs, index = [], []
    for layer in range(3):
        routing = F.route(x * (1 + layer), rw, sg, roles, spec)
        probs.append(routing.router_probs.detach().requires_grad_())
        index.append(routing.lora_index)
    got = F.load_balance_loss_layers(probs, index, roles, spec)
    cpu_probs = [p.detach().cpu().requires_grad_() for p in probs]
    want = F.load_balance_loss_layers(cpu_probs, [i.cpu() for i in index], roles.cpu(), spec)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-6)
    if want.requires_grad:
        for g, w in zip(torch.autograd.grad(got, probs), torch.autograd.grad(want, cpu_probs)):
            torch.testing.assert_close(g.cpu(), w, rtol=1e-5, atol=1e-7)
