"""The public functional API of Mixture-of-Roles LoRA (stable names; the contract is docs/spec.md §5).

Every function accepts any leading batch shape (``x [..., d_in]``, ``role_ids`` of shape
``x.shape[:-1]``), validates its inputs with errors that say what was expected and where, flattens,
and hands over to :mod:`mor_ext.ops` (compiled kernels, or the pure-PyTorch reference).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import ops
from .checks import check_lora_index, check_lora_index_dtype, check_role_ids, check_role_ids_tensor, ids_checked
from .spec import MoRSpec

__all__ = [
    "Routing", "route", "grouped_lora", "mor_linear", "load_balance_loss", "load_balance_loss_layers",
    "orthogonal_loss", "orthogonal_loss_layers", "ids_checked",
]


class Routing(NamedTuple):
    """Per-token routing: ``lora_index [..., K_max]`` int32 (-1 = empty slot), ``lora_weight
    [..., K_max]`` (shared gate first, then top-k gates in descending probability; x's dtype),
    ``router_probs [..., E_total]`` float32 (zeros outside the token's role)."""

    lora_index: torch.Tensor
    lora_weight: torch.Tensor
    router_probs: torch.Tensor


# ------------------------------------------------------------------------------------------- validation
# The rules on role ids and LoRA indices have one home, mor_ext.checks; `ids_checked` is re-exported
# here as part of the functional API (MF.ids_checked()).
def _check_tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _check_float(t: torch.Tensor, name: str, like: torch.Tensor | None = None, like_name: str = "x") -> None:
    _check_tensor(t, name)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if like is not None:
        if t.device != like.device:
            raise ValueError(f"{name} is on {t.device} but {like_name} is on {like.device}; move them to one device")
        if t.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {like_name} has dtype {like.dtype}; cast them to one dtype")


def _check_shape(t: torch.Tensor, name: str, expected: tuple) -> None:
    if tuple(t.shape) != tuple(expected):
        want = "[" + ", ".join(str(e) for e in expected) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")


def _check_spec(spec: object) -> MoRSpec:
    if not isinstance(spec, MoRSpec):
        raise TypeError(f"spec must be a mor_ext.MoRSpec, got {type(spec).__name__}")
    return spec


def _flat_role_ids(role_ids: torch.Tensor, x: torch.Tensor, spec: MoRSpec) -> torch.Tensor:
    """role_ids as a flat int64 tensor, after checking its type, shape, device and range."""
    check_role_ids_tensor(role_ids)
    if tuple(role_ids.shape) != tuple(x.shape[:-1]):
        raise ValueError(
            f"role_ids must have shape x.shape[:-1] = {list(x.shape[:-1])} (one role per token), "
            f"got {list(role_ids.shape)}"
        )
    if role_ids.device != x.device:
        raise ValueError(f"role_ids is on {role_ids.device} but x is on {x.device}")
    check_role_ids(role_ids, spec)
    return role_ids.reshape(-1).to(torch.long)


def _check_x(x: torch.Tensor) -> None:
    _check_float(x, "x")
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension ([..., d_in])")


def _check_route_args(x, router_weight, shared_gate_weight, spec: MoRSpec) -> None:
    _check_x(x)
    _check_float(router_weight, "router_weight", x)
    _check_float(shared_gate_weight, "shared_gate_weight", x)
    d_in = x.shape[-1]
    _check_shape(router_weight, "router_weight", (spec.num_experts_total, d_in))
    _check_shape(shared_gate_weight, "shared_gate_weight", (spec.num_roles, d_in))


def _check_loras(x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor) -> None:
    _check_float(lora_A, "lora_A", x)
    _check_float(lora_B, "lora_B", x)
    if lora_A.dim() != 3 or lora_A.shape[2] != x.shape[-1]:
        raise ValueError(f"lora_A must have shape [L, r, d_in={x.shape[-1]}], got {list(lora_A.shape)}")
    if lora_B.dim() != 3 or lora_B.shape[0] != lora_A.shape[0] or lora_B.shape[2] != lora_A.shape[1]:
        raise ValueError(
            f"lora_B must have shape [L={lora_A.shape[0]}, d_out, r={lora_A.shape[1]}], got {list(lora_B.shape)}"
        )


def _check_loras_for_spec(lora_A: torch.Tensor, lora_B: torch.Tensor, spec: MoRSpec) -> None:
    if lora_A.dim() != 3 or lora_A.shape[0] != spec.num_loras or lora_A.shape[1] != spec.rank:
        raise ValueError(
            f"lora_A must have shape [L={spec.num_loras}, r={spec.rank}, d_in] for this spec, got {list(lora_A.shape)}"
        )
    if lora_B.dim() != 3 or lora_B.shape[0] != spec.num_loras or lora_B.shape[2] != spec.rank:
        raise ValueError(
            f"lora_B must have shape [L={spec.num_loras}, d_out, r={spec.rank}] for this spec, got {list(lora_B.shape)}"
        )


def _routing_view(index, weight, probs, lead: torch.Size, spec: MoRSpec) -> Routing:
    # Explicit sizes, not -1: a batch of 0 tokens has no size to infer.
    return Routing(
        index.view(*lead, spec.k_max), weight.view(*lead, spec.k_max), probs.view(*lead, spec.num_experts_total)
    )


# ------------------------------------------------------------------------------------------- API
def route(
    x: torch.Tensor,  # [..., d_in]
    router_weight: torch.Tensor,  # [E_total, d_in]
    shared_gate_weight: torch.Tensor,  # [R, d_in]
    role_ids: torch.Tensor,  # [...] in -1 .. R-1
    spec: MoRSpec,
) -> Routing:
    """Per-token top-k routing within the token's role, plus the shared LoRA's sigmoid gate.

    Differentiable: ``lora_weight`` and ``router_probs`` w.r.t. ``x``, ``router_weight`` and
    ``shared_gate_weight``.
    """
    spec = _check_spec(spec)
    _check_route_args(x, router_weight, shared_gate_weight, spec)
    roles = _flat_role_ids(role_ids, x, spec)
    d_in = x.shape[-1]
    index, weight, probs = ops.route(x.reshape(-1, d_in), router_weight, shared_gate_weight, roles, spec)
    lead = x.shape[:-1]
    return _routing_view(index, weight, probs, lead, spec)


def grouped_lora(
    x: torch.Tensor,  # [..., d_in]
    lora_A: torch.Tensor,  # [L, r, d_in]
    lora_B: torch.Tensor,  # [L, d_out, r]
    lora_index: torch.Tensor,  # [..., K] int, -1 = empty slot
    lora_weight: torch.Tensor,  # [..., K]
    scaling: float = 1.0,
) -> torch.Tensor:
    """``delta[t] = scaling * sum_k lora_weight[t,k] * B[idx] @ A[idx] @ x[t]`` -> ``[..., d_out]``.

    Differentiable w.r.t. ``x``, ``lora_A``, ``lora_B`` and ``lora_weight``.
    """
    _check_x(x)
    _check_loras(x, lora_A, lora_B)
    index, weight = _check_slots(x, lora_index, lora_weight, lora_A.shape[0])
    d_in = x.shape[-1]
    out = ops.lora_linear(x.reshape(-1, d_in), lora_A, lora_B, index, weight, float(scaling))
    return out.view(*x.shape[:-1], lora_B.shape[1])


def _check_slots(x: torch.Tensor, lora_index: torch.Tensor, lora_weight: torch.Tensor, num_loras: int):
    check_lora_index_dtype(lora_index)
    _check_float(lora_weight, "lora_weight", x)
    if lora_index.dim() != x.dim() or tuple(lora_index.shape[:-1]) != tuple(x.shape[:-1]):
        raise ValueError(f"lora_index must have shape [*x.shape[:-1], K] = {list(x.shape[:-1])} + [K], "
                         f"got {list(lora_index.shape)}")
    if tuple(lora_weight.shape) != tuple(lora_index.shape):
        raise ValueError(f"lora_weight {list(lora_weight.shape)} must match lora_index {list(lora_index.shape)}")
    if lora_index.device != x.device:
        raise ValueError(f"lora_index is on {lora_index.device} but x is on {x.device}")
    check_lora_index(lora_index, "lora_index", num_loras)
    # Explicit sizes: with K = 0 slots or 0 tokens, -1 has nothing to infer from.
    n, k = lora_index.shape[:-1].numel(), lora_index.shape[-1]
    return lora_index.reshape(n, k), lora_weight.reshape(n, k)


def mor_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    router_weight: torch.Tensor,
    shared_gate_weight: torch.Tensor,
    role_ids: torch.Tensor,
    spec: MoRSpec,
    scaling: float = 1.0,
    *,
    return_routing: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Routing]:
    """``F.linear(x, weight, bias) + grouped_lora(x, ..., route(x, ...))``, the base GEMM and the LoRA
    add fused where the compiled backend runs. With ``return_routing=True`` also returns the
    :class:`Routing` (for the load-balance loss)."""
    spec = _check_spec(spec)
    _check_route_args(x, router_weight, shared_gate_weight, spec)
    roles = _flat_role_ids(role_ids, x, spec)
    _check_loras(x, lora_A, lora_B)
    _check_loras_for_spec(lora_A, lora_B, spec)
    _check_float(weight, "weight", x)
    d_in, d_out = x.shape[-1], lora_B.shape[1]
    _check_shape(weight, "weight", (d_out, d_in))
    if bias is not None:
        _check_float(bias, "bias", x)
        _check_shape(bias, "bias", (d_out,))
    y, index, gate, probs = ops.mor_linear(
        x.reshape(-1, d_in), weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, roles, spec, scaling
    )
    y = y.view(*x.shape[:-1], d_out)
    if not return_routing:
        return y
    lead = x.shape[:-1]
    return y, _routing_view(index, gate, probs, lead, spec)


def load_balance_loss(
    router_probs: torch.Tensor,  # [..., E_total] float32
    lora_index: torch.Tensor,  # [..., K]
    role_ids: torch.Tensor,  # [...]
    spec: MoRSpec,
) -> torch.Tensor:
    """Switch-style load balance of one layer: ``sum_rho E_rho * sum_i f_i * P_i`` (scalar, float32).

    ``f`` (dispatch fractions) carries no gradient; ``P`` (mean probabilities) does.
    """
    spec = _check_spec(spec)
    _check_float(router_probs, "router_probs")
    if router_probs.dim() < 1 or router_probs.shape[-1] != spec.num_experts_total:
        raise ValueError(f"router_probs must have shape [..., E_total={spec.num_experts_total}], got {list(router_probs.shape)}")
    lead = router_probs.shape[:-1]
    roles = _flat_role_ids(role_ids, router_probs, spec)
    check_lora_index_dtype(lora_index)
    if tuple(lora_index.shape[:-1]) != tuple(lead) or lora_index.dim() != router_probs.dim():
        raise ValueError(f"lora_index must have shape {list(lead)} + [K], got {list(lora_index.shape)}")
    if lora_index.device != router_probs.device:
        raise ValueError(f"lora_index is on {lora_index.device} but router_probs is on {router_probs.device}")
    check_lora_index(lora_index, "lora_index", spec.num_loras, "the spec has")
    n = roles.shape[0]
    return ops.load_balance_loss(
        router_probs.reshape(n, spec.num_experts_total).float(), lora_index.reshape(n, lora_index.shape[-1]),
        roles, spec,
    )


def load_balance_loss_layers(
    router_probs: list[torch.Tensor],  # per layer [..., E_total] float32
    lora_index: list[torch.Tensor],  # per layer [..., K]
    role_ids: torch.Tensor,  # [...], shared by every layer (one model call's tokens)
    spec: MoRSpec,
    reduction: str = "mean",
) -> torch.Tensor:
    """:func:`load_balance_loss` of many layers that see the same tokens, in one op (``reduction``
    "mean", the model value of the spec, or "sum"): a patched model's aux loss costs one call per
    forward instead of one per adapted layer."""
    spec = _check_spec(spec)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    router_probs, lora_index = list(router_probs), list(lora_index)
    if not router_probs or len(router_probs) != len(lora_index):
        raise ValueError(f"need one lora_index per router_probs and at least one layer, got {len(router_probs)} "
                         f"and {len(lora_index)}")
    e_total = spec.num_experts_total
    lead = router_probs[0].shape[:-1]
    roles = _flat_role_ids(role_ids, router_probs[0], spec)
    n = roles.shape[0]
    probs_flat, index_flat = [], []
    for i, (p, idx) in enumerate(zip(router_probs, lora_index)):
        _check_float(p, f"router_probs[{i}]")
        if tuple(p.shape) != tuple(lead) + (e_total,):
            raise ValueError(f"router_probs[{i}] must have shape {list(lead)} + [E_total={e_total}], got {list(p.shape)}")
        check_lora_index_dtype(idx, f"lora_index[{i}]")
        if tuple(idx.shape[:-1]) != tuple(lead) or idx.shape[-1] != lora_index[0].shape[-1]:
            raise ValueError(f"lora_index[{i}] must have shape {list(lead)} + [K={lora_index[0].shape[-1]}], "
                             f"got {list(idx.shape)}")
        if p.device != roles.device or idx.device != roles.device:
            raise ValueError(f"layer {i}: router_probs, lora_index and role_ids must share one device")
        check_lora_index(idx, f"lora_index[{i}]", spec.num_loras, "the spec has")
        probs_flat.append(p.reshape(n, e_total).float())
        index_flat.append(idx.reshape(n, idx.shape[-1]))
    total = ops.load_balance_loss_layers(probs_flat, index_flat, roles, spec)
    return total / len(router_probs) if reduction == "mean" else total


def orthogonal_loss(lora_A: torch.Tensor, lora_B: torch.Tensor, spec: MoRSpec) -> torch.Tensor:
    """``sum_rho sum_{i<j routed} ||A_i A_j^T||_F^2 + ||B_i B_j^T||_F^2`` for one layer (scalar, float32),
    computed from r x r products only."""
    spec = _check_spec(spec)
    _check_float(lora_A, "lora_A")
    _check_float(lora_B, "lora_B", lora_A, "lora_A")
    _check_loras_for_spec(lora_A, lora_B, spec)
    return ops.orthogonal_loss(lora_A, lora_B, spec)


def orthogonal_loss_layers(
    lora_As: list[torch.Tensor], lora_Bs: list[torch.Tensor], spec: MoRSpec, reduction: str = "mean"
) -> torch.Tensor:
    """:func:`orthogonal_loss` of many layers at once (``reduction`` "mean", the model value of the
    spec, or "sum"). Layers may differ in ``d_in`` / ``d_out`` but share the spec, dtype and device;
    on CUDA every r x r product of every layer comes from one kernel launch."""
    spec = _check_spec(spec)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    lora_As, lora_Bs = list(lora_As), list(lora_Bs)
    if not lora_As or len(lora_As) != len(lora_Bs):
        raise ValueError(f"need one lora_B per lora_A and at least one layer, got {len(lora_As)} and {len(lora_Bs)}")
    for i, (a, b) in enumerate(zip(lora_As, lora_Bs)):
        _check_float(a, f"lora_As[{i}]", lora_As[0], "lora_As[0]")
        _check_float(b, f"lora_Bs[{i}]", lora_As[0], "lora_As[0]")
        _check_loras_for_spec(a, b, spec)
    total = ops.orthogonal_loss_layers([a.contiguous() for a in lora_As], [b.contiguous() for b in lora_Bs], spec)
    return total / len(lora_As) if reduction == "mean" else total
