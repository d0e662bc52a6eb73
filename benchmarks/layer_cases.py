"""One adapted linear layer, five ways: the cases of bench_layer.py and test_bench_layer.py, as data.

Each case builds its inputs once (``setup``) and returns a closure that runs forward + backward,
with ``x`` requiring grad as it does inside a network (so even the frozen base layer computes
``grad_x``). Roles are laid out in contiguous spans, as in agent trajectories (reasoner, executor,
reasoner, ..., summarizer), unless ``role_layout="random"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

import mor_ext
from mor_ext import functional as MF


@dataclass(frozen=True)
class Shape:
    tokens: int = 2048
    d_in: int = 2048
    d_out: int = 2048
    rank: int = 16
    dtype: torch.dtype = torch.float32
    role_layout: str = "spans"  # or "random"


def role_ids_for(shape: Shape, num_roles: int, generator: torch.Generator) -> torch.Tensor:
    t = shape.tokens
    if shape.role_layout == "random":
        return torch.randint(0, num_roles, (t,), generator=generator)
    # Spans of 64..256 tokens alternating reasoner/executor, ending with the summarizer.
    ids = torch.empty(t, dtype=torch.long)
    pos, turn = 0, 0
    while pos < t:
        length = int(torch.randint(64, 257, (1,), generator=generator))
        role = 2 if pos + length >= t else turn % 2
        ids[pos : pos + length] = role
        pos, turn = pos + length, turn + 1
    return ids


@dataclass
class LayerInputs:
    x: torch.Tensor
    weight: torch.Tensor
    role_ids: torch.Tensor
    grad_out: torch.Tensor
    spec: mor_ext.MoRSpec
    lora_A: torch.Tensor
    lora_B: torch.Tensor
    router_weight: torch.Tensor
    shared_gate_weight: torch.Tensor


def make_inputs(shape: Shape, seed: int = 0, device: str = "cpu") -> LayerInputs:
    g = torch.Generator().manual_seed(seed)
    spec = mor_ext.MoRSpec.moragent(shape.rank)

    def rand(*size, scale=1.0, grad=False):
        t = (torch.randn(*size, generator=g) * scale).to(device=device, dtype=shape.dtype)
        return t.requires_grad_(grad)

    return LayerInputs(
        x=rand(shape.tokens, shape.d_in, grad=True),
        weight=rand(shape.d_out, shape.d_in, scale=shape.d_in**-0.5),
        role_ids=role_ids_for(shape, spec.num_roles, g).to(device),
        grad_out=rand(shape.tokens, shape.d_out),
        spec=spec,
        lora_A=rand(spec.num_loras, shape.rank, shape.d_in, scale=shape.d_in**-0.5, grad=True),
        lora_B=rand(spec.num_loras, shape.d_out, shape.rank, scale=0.01, grad=True),
        router_weight=rand(spec.num_experts_total, shape.d_in, scale=shape.d_in**-0.5, grad=True),
        shared_gate_weight=rand(spec.num_roles, shape.d_in, scale=shape.d_in**-0.5, grad=True),
    )


def _base(inp: LayerInputs) -> Callable[[], None]:
    def step():
        F.linear(inp.x, inp.weight).backward(inp.grad_out)
    return step


def plain_lora(rank: int) -> Callable[[LayerInputs], Callable[[], None]]:
    """A plain LoRA of any rank (e.g. K_max * r, for the memory comparison)."""
    def build(inp: LayerInputs) -> Callable[[], None]:
        g = torch.Generator().manual_seed(1)
        d_out, d_in = inp.weight.shape
        a = (torch.randn(rank, d_in, generator=g) * d_in**-0.5).to(inp.x).requires_grad_()
        b = (torch.randn(d_out, rank, generator=g) * 0.01).to(inp.x).requires_grad_()

        def step():
            a.grad = b.grad = None
            (F.linear(inp.x, inp.weight) + F.linear(F.linear(inp.x, a), b)).backward(inp.grad_out)
        return step
    return build


def _plain_lora(inp: LayerInputs) -> Callable[[], None]:
    a = inp.lora_A[0].detach().clone().requires_grad_()  # [r, d_in]
    b = inp.lora_B[0].detach().clone().requires_grad_()  # [d_out, r]

    def step():
        a.grad = b.grad = None
        (F.linear(inp.x, inp.weight) + F.linear(F.linear(inp.x, a), b)).backward(inp.grad_out)
    return step


def official_all_experts(x, weight, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec):
    """The official MoRAgent layer's formulation: every LoRA of every role for every token,
    ``[T, L, d_out]`` materialised, then masked by role and gate (canonical layout, same math)."""
    t = x.shape[0]
    out = torch.einsum("td,lrd->tlr", x, lora_A)  # [T, L, r]
    out = torch.einsum("tlr,lor->tlo", out, lora_B)  # [T, L, d_out]: the 14x tensor
    gates = []
    for rho, role in enumerate(spec.roles):
        lo, hi = spec.router_offsets[rho], spec.router_offsets[rho + 1]
        p = torch.softmax(F.linear(x, router_weight[lo:hi]), dim=-1, dtype=torch.float32)
        top_v, top_i = torch.topk(p, role.top_k, dim=-1)
        routed = torch.zeros_like(p).scatter(-1, top_i, top_v)
        routed = (routed / routed.sum(-1, keepdim=True)).to(x.dtype)
        shared = torch.sigmoid(F.linear(x, shared_gate_weight[rho : rho + 1]))
        mask = (role_ids == rho).to(x.dtype)[:, None]
        gates.append(torch.cat([shared, routed], dim=-1) * mask)
    gate = torch.cat(gates, dim=-1)  # [T, L]
    return F.linear(x, weight) + torch.einsum("tlo,tl->to", out, gate)


def _official(inp: LayerInputs) -> Callable[[], None]:
    def step():
        official_all_experts(inp.x, inp.weight, inp.lora_A, inp.lora_B, inp.router_weight,
                             inp.shared_gate_weight, inp.role_ids, inp.spec).backward(inp.grad_out)
    return step


def _mor(backend: str) -> Callable[[LayerInputs], Callable[[], None]]:
    def build(inp: LayerInputs) -> Callable[[], None]:
        def step():
            mor_ext.set_backend(backend)
            try:
                y = MF.mor_linear(inp.x, inp.weight, None, inp.lora_A, inp.lora_B, inp.router_weight,
                                  inp.shared_gate_weight, inp.role_ids, inp.spec)
                y.backward(inp.grad_out)
            finally:
                mor_ext.set_backend("auto")
        return step
    return build


def gemm_floor(inp: LayerInputs) -> Callable[[], None]:
    """MKL's per-span GEMM sequence alone, as the C++ path issues it in bf16, below 128 tokens or
    without AVX-512 (fp32 on AVX-512 runs its own GEMMs, one per role and kind; see
    benchmarks/README.md). Per span of a role: the shrink with the role's rows padded to 96, the
    expand, and the backward's four thin GEMMs, around the frozen layer's two; no routing, copies or
    checks: the floor of that algorithm on this machine. Not a case: a reference point
    (bench_layer.py --floor)."""
    x, w, gy = inp.x.detach(), inp.weight, inp.grad_out
    roles = inp.role_ids
    change = torch.nonzero(roles[1:] != roles[:-1]).flatten() + 1
    bounds = [0, *change.tolist(), roles.numel()]
    spans = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if int(roles[a]) >= 0]
    g = torch.Generator().manual_seed(2)
    lora_width, width = 5 * inp.spec.rank, 5 * inp.spec.rank + 5
    rows = torch.randn(96, x.shape[1], generator=g).to(x) * 0.02  # A rows + router + gate, padded
    b_cols = torch.randn(w.shape[0], lora_width, generator=g).to(x) * 0.02
    gated = torch.randn(x.shape[0], lora_width, generator=g).to(x)
    grad_ext = torch.randn(x.shape[0], width, generator=g).to(x)

    def step():
        y = x @ w.t()
        for a, b in spans:
            torch.mm(x[a:b], rows.t())
            y[a:b].addmm_(gated[a:b], b_cols.t())
        grad_x = gy @ w
        grad_rows, grad_b = torch.zeros(width, x.shape[1]).to(x), torch.zeros(w.shape[0], lora_width).to(x)
        for a, b in spans:
            torch.mm(gy[a:b], b_cols)
            grad_b.addmm_(gy[a:b].t(), gated[a:b])
            grad_rows.addmm_(grad_ext[a:b].t(), x[a:b])
            grad_x[a:b].addmm_(grad_ext[a:b], rows[:width])
    return step


CASES: dict[str, Callable[[LayerInputs], Callable[[], None]]] = {
    "base F.linear (frozen)": _base,
    "plain LoRA r=16": _plain_lora,
    "official all-experts": _official,
    "mor_ext reference": _mor("reference"),
    "mor_ext C++": _mor("compiled"),
}


def zero_grads(inp: LayerInputs) -> None:
    for t in (inp.x, inp.lora_A, inp.lora_B, inp.router_weight, inp.shared_gate_weight):
        t.grad = None
