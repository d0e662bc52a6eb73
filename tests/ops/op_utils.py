"""Helpers of the op tests: a catalogue of specs, seeded inputs, backend switching, the
flash-attention error rule, and an independent per-token fp64 oracle of the math in docs/spec.md §3-§4.

The oracle is written from ``docs/spec.md`` §3 and §4 with plain loops, on
purpose unlike the vectorised reference, so that a misreading shared by the reference and the
kernels still shows up.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest
import torch

import mor_ext
from mor_ext import MoRSpec, RoleSpec
from mor_ext import functional as F
from mor_ext.ops import _flags

# ------------------------------------------------------------------------------------------ specs
SPECS: dict[str, MoRSpec] = {
    # The paper's 5-5-4 / 4-4-3 layout at a small rank.
    "moragent": MoRSpec.moragent(rank=4),
    # Paper Eq. 7: the shared LoRA always on at weight 1.
    "moragent_nogate": MoRSpec.moragent(rank=4, shared_gate="none"),
    # Every corner of a role at once: E=0 (shared only), no shared LoRA, K=0 with E>0, K=E, E=1.
    "mixed": MoRSpec(
        roles=(
            RoleSpec("plain", num_experts=0, top_k=0, shared=True),
            RoleSpec("unshared", num_experts=3, top_k=2, shared=False),
            RoleSpec("k0", num_experts=2, top_k=0, shared=True),
            RoleSpec("k_eq_e", num_experts=3, top_k=3, shared=True),
            RoleSpec("single_expert", num_experts=1, top_k=1, shared=True),
        ),
        rank=3,
    ),
    "single_role": MoRSpec(roles=(RoleSpec("only", num_experts=5, top_k=2, shared=True),), rank=4),
    # No role has a shared LoRA: shared_gate_weight is never read.
    "routed_only": MoRSpec(
        roles=(RoleSpec("a", num_experts=4, top_k=1, shared=False),
               RoleSpec("b", num_experts=2, top_k=2, shared=False)),
        rank=2,
    ),
    # AgentFlux-style: one plain LoRA per role, E_total = 0, gate "none".
    "decoupled": MoRSpec.decoupled(rank=4),
}

DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Every seed is fixed; MOR_EXT_TEST_SEED=<n> shifts them all, to re-run the suite on other inputs.
SEED_OFFSET = int(os.environ.get("MOR_EXT_TEST_SEED", "0"))

# Allowed slack on top of the 2x rule, relative to max(1, max |truth|) of the compared tensor: about
# one unit in the last place for bf16 (2^-7) and fp16 (2^-10), a few for fp32. The tensors here are
# small, so their max error is a noisy statistic: two kernels of equal mean accuracy can differ by
# one rounding of the largest element (measured over 20 seeds: mean errors within 15%, single
# max-error ratios up to ~3 at ~1 ulp).
ATOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 2**-10, torch.bfloat16: 2**-7}
# The same for the mean error, a steadier statistic: 1/16 ulp in low precision (so that a 1% bias in
# bf16 is caught), and as for the max in fp32, where the max rule is already tight.
MEAN_ATOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 2**-14, torch.bfloat16: 2**-11}


# ------------------------------------------------------------------------------------------ inputs
ROLE_PATTERNS = ("random", "spans", "one_role", "no_role", "missing_role")


def make_role_ids(pattern: str, lead: Sequence[int], num_roles: int, seed: int, span: int = 100) -> torch.Tensor:
    """Role ids of shape ``lead`` (int64) following ``pattern``.

    * ``random``: uniform in -1 .. R-1 per token (short runs: the grouped kernel's gather path);
    * ``spans``: runs of ``span`` tokens cycling through R-1 .. 0 and -1 (long runs: the run path);
    * ``one_role``: every token has role R-1; ``no_role``: every token -1;
    * ``missing_role``: random, but role 0 never appears.
    """
    gen = torch.Generator().manual_seed(seed + SEED_OFFSET)
    n = math.prod(lead)
    if pattern == "random":
        flat = torch.randint(-1, num_roles, (n,), generator=gen)
    elif pattern == "spans":
        cycle = list(range(num_roles - 1, -1, -1)) + [-1]
        flat = torch.tensor([cycle[(t // span) % len(cycle)] for t in range(n)], dtype=torch.long)
    elif pattern == "one_role":
        flat = torch.full((n,), num_roles - 1, dtype=torch.long)
    elif pattern == "no_role":
        flat = torch.full((n,), -1, dtype=torch.long)
    elif pattern == "missing_role":
        flat = torch.randint(0, num_roles, (n,), generator=gen)
        flat[flat == 0] = -1
    else:
        raise ValueError(pattern)
    return flat.view(*lead)


@dataclass
class Params:
    """All tensors of one adapted layer, in the canonical layout."""

    x: torch.Tensor  # [*lead, d_in]
    weight: torch.Tensor  # [d_out, d_in]
    bias: torch.Tensor  # [d_out]
    lora_A: torch.Tensor  # [L, r, d_in]
    lora_B: torch.Tensor  # [L, d_out, r]
    router_weight: torch.Tensor  # [E_total, d_in]
    shared_gate_weight: torch.Tensor  # [R, d_in]

    def to(self, dtype: torch.dtype) -> "Params":
        return Params(**{f.name: getattr(self, f.name).detach().to(dtype) for f in fields(self)})


def _nonzero(t: torch.Tensor) -> torch.Tensor:
    # Random values bounded away from zero, so no gradient path is silently dead.
    return t + 0.1 * torch.sign(t).masked_fill(t == 0, 1.0)


def make_params(spec: MoRSpec, lead: Sequence[int], d_in: int, d_out: int, seed: int,
                dtype: torch.dtype = torch.float32) -> Params:
    """Random inputs created in ``dtype`` (so the fp64 truth runs on exactly the same values)."""
    gen = torch.Generator().manual_seed(seed + SEED_OFFSET)

    def randn(*shape, scale=1.0):
        return (_nonzero(torch.randn(*shape, generator=gen, dtype=torch.float64)) * scale).to(dtype)

    L, r, E, R = spec.num_loras, spec.rank, spec.num_experts_total, spec.num_roles
    return Params(
        x=randn(*lead, d_in),
        weight=randn(d_out, d_in, scale=d_in**-0.5),
        bias=randn(d_out, scale=0.1),
        lora_A=randn(L, r, d_in, scale=d_in**-0.5),
        lora_B=randn(L, d_out, r, scale=r**-0.5),  # nonzero B: A gets gradients
        router_weight=randn(E, d_in, scale=d_in**-0.5),
        shared_gate_weight=randn(R, d_in, scale=d_in**-0.5),
    )


def cotangent(like: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed random output gradient, exactly representable in every tested dtype (fp64 result)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(like.shape, generator=gen, dtype=torch.float64).to(torch.bfloat16).double().to(like.device)


# ------------------------------------------------------------------------------------------ backends
@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    old = mor_ext.ops.get_backend()
    mor_ext.set_backend(name)
    try:
        yield
    finally:
        mor_ext.set_backend(old)


@dataclass
class Run:
    outputs: list[torch.Tensor]
    grads: dict[str, torch.Tensor]


def run_with_grads(fn: Callable[..., Sequence[torch.Tensor]], inputs: dict[str, object], diff: Sequence[str],
                   backend_name: str, dtype: torch.dtype, seed: int = 1234) -> Run:
    """Runs ``fn(**inputs)`` with float tensors cast to ``dtype`` on one backend, then backpropagates
    ``sum_i <out_i, cotangent_i>`` over the floating outputs into the inputs named in ``diff``.
    Unused inputs get zero gradients (the reference leaves them ``None``, the kernels return zeros)."""
    leaves: dict[str, object] = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value.detach().to(dtype).requires_grad_(name in diff)
        leaves[name] = value
    with backend(backend_name):
        outputs = list(fn(**leaves))
        loss = sum(
            (out.double() * cotangent(out, seed + i)).sum()
            for i, out in enumerate(outputs)
            if out.is_floating_point() and out.requires_grad
        )
        wrt = [leaves[name] for name in diff]
        if isinstance(loss, torch.Tensor):
            got = torch.autograd.grad(loss, wrt, allow_unused=True)
        else:  # nothing differentiable came out (e.g. all tokens have role -1 and no LoRA)
            got = [None] * len(wrt)
    grads = {name: (torch.zeros_like(w) if g is None else g) for name, g, w in zip(diff, got, wrt)}
    return Run([o.detach() for o in outputs], {k: v.detach() for k, v in grads.items()})


def assert_close_to_truth(name: str, got: torch.Tensor, ref: torch.Tensor, truth: torch.Tensor,
                          dtype: torch.dtype) -> None:
    """flash-attention's rule: ``max|got - truth| <= 2 max|ref - truth| + atol``, where ``ref`` is the
    reference run in the same precision as ``got`` and ``truth`` is the reference in fp64."""
    assert got.shape == truth.shape, f"{name}: shape {list(got.shape)} != {list(truth.shape)}"
    assert got.dtype == ref.dtype, f"{name}: dtype {got.dtype} != reference {ref.dtype}"
    assert not got.isnan().any(), f"{name}: NaN in the compiled result"
    got64, ref64, truth64 = got.double(), ref.double(), truth.double()
    if truth64.numel() == 0:
        return
    scale = max(1.0, truth64.abs().max().item())
    err = (got64 - truth64).abs().max().item()
    ref_err = (ref64 - truth64).abs().max().item()
    atol = ATOL[dtype] * scale
    assert err <= 2 * ref_err + atol, (
        f"{name} ({dtype}): compiled max error {err:.3e} > 2 * reference max error {ref_err:.3e} + atol {atol:.1e}"
    )
    # The mean error catches a small systematic bias (a 1% scale error in bf16) that hides under
    # one-ulp noise in the max.
    mean_err = (got64 - truth64).abs().mean().item()
    ref_mean_err = (ref64 - truth64).abs().mean().item()
    mean_atol = MEAN_ATOL[dtype] * scale
    assert mean_err <= 2 * ref_mean_err + mean_atol, (
        f"{name} ({dtype}): compiled mean error {mean_err:.3e} > 2 * reference mean error {ref_mean_err:.3e} "
        f"+ {mean_atol:.1e}"
    )


def compare_runs(compiled: Run, ref: Run, truth: Run, dtype: torch.dtype, names: Sequence[str]) -> None:
    """Integer outputs must match the same-precision reference exactly; floats follow the 2x rule."""
    assert len(compiled.outputs) == len(names)
    for name, got, want, true in zip(names, compiled.outputs, ref.outputs, truth.outputs):
        if not got.is_floating_point():
            assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
            assert torch.equal(got, want), f"{name} differs from the reference:\n{got}\n{want}"
        else:
            assert_close_to_truth(name, got, want, true, dtype)
    for name in truth.grads:
        assert_close_to_truth(f"grad of {name}", compiled.grads[name], ref.grads[name], truth.grads[name], dtype)


def planned_grouped_path(lora_index: torch.Tensor) -> str:
    """Which batching csrc/cpu/grouped_lora.cpp plans for ``lora_index [N, K]``: "run" (contiguous
    runs of tokens with the same first LoRA) or "gather"; mirrors ``plan_batches`` / kMinMeanRun=32."""
    index = lora_index.reshape(-1, lora_index.shape[-1])
    lo = [min((v for v in row if v >= 0), default=-1) for row in index.tolist()]
    runs, active, prev_t, prev_lo = 0, 0, None, None
    for t, l in enumerate(lo):
        if l < 0:
            continue
        active += 1
        if not (prev_t == t - 1 and prev_lo == l):
            runs += 1
        prev_t, prev_lo = t, l
    return "run" if runs == 0 or active >= 32 * runs else "gather"


# ------------------------------------------------------------------------------------------ fp64 oracle
def oracle_route(x: torch.Tensor, router_weight: torch.Tensor, shared_gate_weight: torch.Tensor,
                 role_ids: torch.Tensor, spec: MoRSpec):
    """docs/spec.md §3, one token at a time, in fp64. ``x [N, d_in]``, ``role_ids [N]``."""
    x, rw, sg = x.double(), router_weight.double(), shared_gate_weight.double()
    n = x.shape[0]
    index = torch.full((n, spec.k_max), -1, dtype=torch.int32)
    weight = torch.zeros(n, spec.k_max, dtype=torch.float64)
    probs = torch.zeros(n, spec.num_experts_total, dtype=torch.float64)
    for t in range(n):
        rho = int(role_ids[t])
        if rho < 0:
            continue
        role, slots = spec.roles[rho], []
        if role.shared:
            gate = 1.0 if spec.shared_gate == "none" else torch.sigmoid(sg[rho] @ x[t]).item()
            slots.append((spec.shared_lora(rho), gate))
        if role.num_experts:
            lo = spec.router_offsets[rho]
            z = (rw[lo : lo + role.num_experts] @ x[t]).tolist()
            m = max(z)
            e = [math.exp(v - m) for v in z]
            p = [v / sum(e) for v in e]
            probs[t, lo : lo + role.num_experts] = torch.tensor(p, dtype=torch.float64)
            chosen = sorted(range(role.num_experts), key=lambda i: (-z[i], i))[: role.top_k]
            mass = sum(p[i] for i in chosen)
            slots += [(spec.routed_loras(rho)[i], p[i] / mass) for i in chosen]
        for k, (lora, w) in enumerate(slots):
            index[t, k], weight[t, k] = lora, w
    return index, weight, probs


def oracle_grouped_lora(x, lora_A, lora_B, lora_index, lora_weight, scaling=1.0) -> torch.Tensor:
    x, A, B, w = x.double(), lora_A.double(), lora_B.double(), lora_weight.double()
    out = torch.zeros(x.shape[0], B.shape[1], dtype=torch.float64)
    for t, k in itertools.product(range(x.shape[0]), range(lora_index.shape[1])):
        lora = int(lora_index[t, k])
        if lora >= 0:
            out[t] += scaling * w[t, k] * (B[lora] @ (A[lora] @ x[t]))
    return out


def oracle_load_balance(router_probs, lora_index, role_ids, spec: MoRSpec) -> float:
    total = 0.0
    for rho, role in enumerate(spec.roles):
        tokens = [t for t in range(role_ids.shape[0]) if int(role_ids[t]) == rho]
        if not tokens or role.num_experts < 2:
            continue
        routed = list(spec.routed_loras(rho))
        lo = spec.router_offsets[rho]
        for i in range(role.num_experts):
            f = sum(1 for t in tokens if routed[i] in lora_index[t].tolist()) / len(tokens)
            p = sum(float(router_probs[t, lo + i]) for t in tokens) / len(tokens)
            total += role.num_experts * f * p
    return total


def oracle_orthogonal(lora_A, lora_B, spec: MoRSpec) -> float:
    A, B = lora_A.double(), lora_B.double()
    total = 0.0
    for rho in range(spec.num_roles):
        for i, j in itertools.combinations(spec.routed_loras(rho), 2):
            # The literal formula of docs/spec.md §4, d_out x d_out matrix included (fine in a test).
            total += (A[i] @ A[j].T).square().sum().item() + (B[i] @ B[j].T).square().sum().item()
    return total


# ------------------------------------------------------------------------------------------ shared op-test helpers
# The CPU op tests compare the compiled kernels with the reference: without the library, nothing to compare.
NEEDS_COMPILED = pytest.mark.skipif(
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


ROUTE_NAMES = ("lora_index", "lora_weight", "router_probs")


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


# fp32 calls of >= 128 tokens on an AVX-512 CPU take the by-role path: per role, one GEMM per kind
# over all of its tokens, addressed by row pointers (csrc/cpu/gemm_avx512.cpp: 8 x 48 register
# tiles, 48-column panels with a masked last vector). The sizes cut every tile and panel edge:
# d 17 (one partial vector), 49 and 100 (a panel and a tail), 130 (three panels); token counts per
# role that are not multiples of 8; rank 16 gives the paper's 85-column shrink.
AVX512_CPU = sys.platform == "linux" and "avx512f" in Path("/proc/cpuinfo").read_text()
# What mor_ext's AVX-512 paths see: ATEN_CPU_CAPABILITY=default|avx2 turns them off, as it does torch's
# (CI runs the op tests once more that way, for the CPUs without AVX-512).
AVX512_PATHS = AVX512_CPU and os.environ.get("ATEN_CPU_CAPABILITY", "").lower() not in ("default", "avx2")


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


BACKENDS = ["reference", "compiled"]
