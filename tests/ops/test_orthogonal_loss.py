"""The orthogonal loss (docs/spec.md §4): mor_ext::orthogonal_loss_layers, one layer and many, and
the CUDA kernels' per-thread bodies run on the CPU (testing_orthogonal_products / _grads).
"""

from __future__ import annotations

import pytest
import torch

from mor_ext import functional as F, MoRSpec, RoleSpec
from mor_ext.ops import _flags, ORTHOGONAL_CUDA_MAX_RANK, cpu_path_counts, reference

from op_utils import (
    NEEDS_COMPILED,
    AVX512_PATHS,
    BACKENDS,
    D_IN,
    D_OUT,
    DTYPES,
    FAST,
    OPCHECK_SPECS,
    SPECS,
    assert_close_to_truth,
    backend,
    compare_backends,
    grad,
    make_params,
    opcheck_inputs,
)

pytestmark = NEEDS_COMPILED

ops = torch.ops.mor_ext


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

    def orth(a, b):  # [2, r, d_in], [2, d_out, r] -> the formula of docs/spec.md §4, in the inputs' dtype
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


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
@pytest.mark.parametrize("spec_name", ["moragent", "mixed"])
def test_gradcheck_orthogonal_loss(spec_name, backend_name):
    spec = SPECS[spec_name]
    gen = torch.Generator().manual_seed(44)
    a = (0.25 * torch.randn(spec.num_loras, spec.rank, 5, generator=gen, dtype=torch.float64)).requires_grad_()
    b = (0.25 * torch.randn(spec.num_loras, 4, spec.rank, generator=gen, dtype=torch.float64)).requires_grad_()
    with backend(backend_name):
        assert torch.autograd.gradcheck(lambda a, b: F.orthogonal_loss(a, b, spec), (a, b), **FAST)


@pytest.mark.parametrize("spec_name", OPCHECK_SPECS)
def test_opcheck_orthogonal_loss_one_layer(spec_name):
    """One layer: what mor_ext.ops.orthogonal_loss calls."""
    spec, p, roles, flags, gated, index, weight, probs = opcheck_inputs(spec_name)
    torch.library.opcheck(ops.orthogonal_loss_layers.default, ([grad(p.lora_A)], [grad(p.lora_B)], *flags))
    products = ops.orthogonal_loss_layers([p.lora_A], [p.lora_B], *flags)[1]
    torch.library.opcheck(ops.orthogonal_loss_layers_backward.default,
                          (torch.tensor(1.5), products, [p.lora_A], [p.lora_B], *flags))


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
    """testing_orthogonal_products on CPU runs the CUDA kernel's per-thread steps (tile loads, accumulation)."""
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
    its per-thread arrays); the CPU loss and its backward (their own loops) take any rank."""
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
    """testing_orthogonal_grads on CPU runs the CUDA backward kernel's per-thread steps (term coefficients from
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


# ---- the CPU op's own loops (csrc/cpu/orthogonal_loss.cpp): AVX-512 small GEMMs where the CPU has
# them, plain loops otherwise (MOR_EXT_BENCH_LOSSES=generic forces those), layers over threads.

# Ranks below, at and across a 16-float vector (none but 16 and 32 a multiple of it), expert counts
# that differ between roles (0, 1, 2, 3, 5), sizes from 1 up to several 48-column panels.
CPU_LOSS_SPECS = {
    "r5_mixed": MoRSpec(roles=SPECS["mixed"].roles, rank=5),
    "r17_uneven": MoRSpec(roles=(RoleSpec("a", 5, 2, True), RoleSpec("b", 2, 1, False), RoleSpec("c", 3, 1, True)),
                          rank=17),
    "r16_moragent": MoRSpec.moragent(rank=16),
    "r33_pair": MoRSpec(roles=(RoleSpec("a", 3, 1, False), RoleSpec("b", 1, 1, True)), rank=33),
}
CPU_LOSS_SHAPES = [(1, 1), (7, 129), (64, 32), (130, 50), (97, 200)]


def orthogonal_truth(spec, a_list, b_list):
    """The loss (a sum over layers) and its gradients from docs/spec.md §4's formula, in fp64."""
    leaves = [t.detach().double().requires_grad_() for t in a_list + b_list]
    n, total = len(a_list), 0.0
    for a, b in zip(leaves[:n], leaves[n:]):
        for rho in range(spec.num_roles):
            routed = list(spec.routed_loras(rho))
            for x, i in enumerate(routed):
                for j in routed[x + 1:]:
                    total = total + (a[i] @ a[j].T).square().sum() + (b[i] @ b[j].T).square().sum()
    if not torch.is_tensor(total):  # no role with two routed LoRAs
        return torch.zeros((), dtype=torch.float64), [torch.zeros_like(t) for t in leaves]
    return total, list(torch.autograd.grad(total, leaves))


@pytest.mark.parametrize("path", ["avx512", "generic"])
@pytest.mark.parametrize("spec_name", CPU_LOSS_SPECS)
def test_orthogonal_loss_cpu_paths_against_fp64(spec_name, path, monkeypatch):
    """Value and gradients of both CPU paths against the fp64 formula, every output element written
    (poisoned outputs), and the path counters show which path ran."""
    if path == "avx512" and not AVX512_PATHS:
        pytest.skip("no AVX-512 path on this CPU (or ATEN_CPU_CAPABILITY keeps it off)")
    monkeypatch.setenv("MOR_EXT_POISON", "1")
    monkeypatch.setenv("MOR_EXT_BENCH_LOSSES", "generic" if path == "generic" else "")
    spec = CPU_LOSS_SPECS[spec_name]
    a, b = layer_stack(spec, CPU_LOSS_SHAPES, seed=71)
    flags, g = _flags(spec), torch.tensor(0.7)
    before = cpu_path_counts()
    loss, products = ops.orthogonal_loss_layers(a, b, *flags)
    grad_a, grad_b = ops.orthogonal_loss_layers_backward(g, products, a, b, *flags)
    after = cpu_path_counts()
    assert {k: after[k] - before[k] for k in ("avx512_losses", "generic_losses")} == {
        "avx512_losses": 2 if path == "avx512" else 0, "generic_losses": 2 if path == "generic" else 0}
    truth, truth_grads = orthogonal_truth(spec, a, b)
    scale = max(1.0, truth.abs().item())
    torch.testing.assert_close(loss.double(), truth, rtol=2e-6, atol=1e-6 * scale)
    if products.shape[0]:
        torch.testing.assert_close(products.double(), products_by_formula(spec, a, b), rtol=1e-5, atol=1e-5)
    for got, want in zip(grad_a + grad_b, truth_grads):
        assert got.dtype == torch.float32 and not got.isnan().any()
        torch.testing.assert_close(got.double(), 0.7 * want, rtol=1e-4, atol=1e-5 * max(1.0, want.abs().max().item()))
    if spec_name == "r17_uneven":  # opcheck is slow: once per path
        torch.library.opcheck(ops.orthogonal_loss_layers_backward.default, (g, products, a, b, *flags))


def test_orthogonal_loss_cpu_paths_agree_with_each_other(monkeypatch):
    """The AVX-512 and the generic loops compute the same sums in other orders: equal to fp32 rounding."""
    if not AVX512_PATHS:
        pytest.skip("no AVX-512 path on this CPU")
    spec = CPU_LOSS_SPECS["r17_uneven"]
    a, b = layer_stack(spec, CPU_LOSS_SHAPES, seed=72)
    results = []
    for mode in ("", "generic"):
        monkeypatch.setenv("MOR_EXT_BENCH_LOSSES", mode)
        loss, products = ops.orthogonal_loss_layers(a, b, *_flags(spec))
        ga, gb = ops.orthogonal_loss_layers_backward(torch.tensor(1.3), products, a, b, *_flags(spec))
        results.append([loss, products, *ga, *gb])
    for x, y in zip(*results):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6 * max(1.0, y.abs().max().item()))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_orthogonal_loss_cpu_is_the_same_for_any_thread_count(threads):
    """Layers spread over threads once the call is large enough; each layer is one thread's work in a
    fixed order and the loss is summed in layer order, so the bits do not depend on the thread count."""
    spec = MoRSpec.moragent(rank=16)
    a, b = layer_stack(spec, [(512, 384)] * 5 + [(40, 13)], seed=73)  # ~3M multiply-adds a layer: parallel
    flags, g = _flags(spec), torch.tensor(0.9)

    def run():
        loss, products = ops.orthogonal_loss_layers(a, b, *flags)
        return [loss, products, *sum(ops.orthogonal_loss_layers_backward(g, products, a, b, *flags), [])]

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        want = run()
        torch.set_num_threads(threads)
        got = run()
    finally:
        torch.set_num_threads(before)
    for x, y in zip(got, want):
        assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_orthogonal_loss_cpu_other_dtypes(dtype):
    """Adapters in other dtypes are converted to fp32 once per call; gradients come back in their dtype."""
    spec = CPU_LOSS_SPECS["r17_uneven"]
    a, b = layer_stack(spec, CPU_LOSS_SHAPES[1:3], dtype=dtype, seed=74)
    loss, products = ops.orthogonal_loss_layers(a, b, *_flags(spec))
    ga, gb = ops.orthogonal_loss_layers_backward(torch.tensor(0.5, dtype=dtype), products, a, b, *_flags(spec))
    truth, truth_grads = orthogonal_truth(spec, a, b)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), truth, rtol=1e-5, atol=1e-6)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float64 else dict(rtol=2e-2, atol=2e-2)
    for got, want in zip(ga + gb, truth_grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), 0.5 * want, **tol)
