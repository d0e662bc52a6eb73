"""One function per op: the compiled op where it has a kernel for the tensors' device, else the
pure-PyTorch reference (:mod:`mor_ext.ops.reference`).

Every function takes flattened, validated inputs (see :mod:`mor_ext.functional`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..spec import MoRSpec
from . import reference
from .backend import uses_compiled


def _flags(spec: MoRSpec) -> tuple[list[int], list[int], list[int]]:
    """The spec as the ops' three flat per-role lists: num_experts, top_k, has_shared."""
    num_experts, top_k, shared, _ = spec.op_args()
    return num_experts, top_k, [int(s) for s in shared]


def route(x, router_weight, shared_gate_weight, role_ids, spec: MoRSpec):
    """``(lora_index, lora_weight, router_probs)`` of every token."""
    if uses_compiled(x, "route"):
        return tuple(
            torch.ops.mor_ext.route(
                x, router_weight, shared_gate_weight, role_ids, *_flags(spec), spec.shared_gate == "sigmoid"
            )
        )
    return reference.route(x, router_weight, shared_gate_weight, role_ids, spec)


def lora_linear(x, lora_A, lora_B, lora_index, lora_weight, scaling: float, weight=None, bias=None):
    """``(F.linear(x, weight, bias) if weight is given) + grouped LoRA delta``, fused where compiled."""
    if uses_compiled(x, "grouped_lora"):
        return torch.ops.mor_ext.grouped_lora(x, lora_A, lora_B, lora_index, lora_weight, float(scaling), weight, bias)[0]
    delta = reference.grouped_lora(x, lora_A, lora_B, lora_index, lora_weight, scaling)
    return delta if weight is None else F.linear(x, weight, bias) + delta


def mor_linear(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec: MoRSpec,
               scaling: float):
    """The whole adapted layer; returns ``(y, lora_index, lora_weight, router_probs)``."""
    if uses_compiled(x, "mor_linear"):
        return mor_linear_kernel(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids,
                                 kernel_args(spec, scaling))
    y, (index, gate, probs) = reference.mor_linear(
        x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec, scaling
    )
    return y, index, gate, probs


def kernel_args(spec: MoRSpec, scaling: float) -> tuple:
    """The trailing arguments of the compiled ``mor_linear`` op for a spec and scaling (cache them)."""
    return (*_flags(spec), spec.shared_gate == "sigmoid", float(scaling))


def mor_linear_op():
    """The compiled ``mor_linear`` overload itself (``torch.ops.mor_ext.mor_linear.default``), for the
    inference path of MoRLinear that calls it directly, 210 times a SmolLM2 token: the overload packet
    resolves the overload on every call. Only with the compiled library loaded."""
    return torch.ops.mor_ext.mor_linear.default


def mor_linear_kernel(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, args: tuple):
    """The compiled op alone, for callers that checked ``uses_compiled`` and hold ``kernel_args``
    (MoRLinear: it runs on every projection, so each skipped Python step counts)."""
    y, index, gate, probs, _, _ = torch.ops.mor_ext.mor_linear.default(
        x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, *args
    )
    return y, index, gate, probs


def load_balance_loss(router_probs, lora_index, role_ids, spec: MoRSpec):
    """The load-balance loss of one layer: the layers op with a list of one."""
    return load_balance_loss_layers([router_probs], [lora_index], role_ids, spec)


def load_balance_loss_layers(router_probs: list, lora_index: list, role_ids, spec: MoRSpec):
    """Sum over layers that share one call's tokens (``role_ids [N]``): one op for all of them."""
    if uses_compiled(router_probs[0], "load_balance_loss_layers"):
        return torch.ops.mor_ext.load_balance_loss_layers(list(router_probs), list(lora_index), role_ids,
                                                          *_flags(spec))
    return torch.stack([reference.load_balance_loss(p, i, role_ids, spec) for p, i in zip(router_probs, lora_index)]).sum()


# The largest rank of the CUDA orthogonal-loss kernels (kMaxRank in csrc/kernels/products.h: their
# register tiles and per-thread accumulators are sized by it). Larger ranks take the reference path
# on CUDA; the CPU ops (their own loops) take any rank.
ORTHOGONAL_CUDA_MAX_RANK = 32


def _orthogonal_compiled(lora_A: torch.Tensor, op: str) -> bool:
    if lora_A.device.type == "cuda" and lora_A.dim() == 3 and lora_A.shape[1] > ORTHOGONAL_CUDA_MAX_RANK:
        return False
    return uses_compiled(lora_A, op)


def orthogonal_loss(lora_A, lora_B, spec: MoRSpec):
    """The orthogonal loss of one layer: the layers op with a list of one (which takes contiguous
    adapters; a contiguous tensor is its own ``.contiguous()``)."""
    return orthogonal_loss_layers([lora_A.contiguous()], [lora_B.contiguous()], spec)


def orthogonal_loss_layers(lora_As: list, lora_Bs: list, spec: MoRSpec):
    """Sum over layers of the orthogonal loss; one call (on CUDA, one launch for all products)."""
    if _orthogonal_compiled(lora_As[0], "orthogonal_loss_layers"):
        loss, _products = torch.ops.mor_ext.orthogonal_loss_layers(list(lora_As), list(lora_Bs), *_flags(spec))
        return loss
    return torch.stack([reference.orthogonal_loss(a, b, spec) for a, b in zip(lora_As, lora_Bs)]).sum()
