"""The pure-PyTorch truth: every op of ``docs/spec.md`` (§3 and §4), vectorised, written to be read.

These functions take already-validated, flattened inputs (``x [N, d_in]``, ``role_ids [N]`` int64)
and rely on PyTorch's autograd for gradients. The compiled kernels are tested against them, and
they are the fallback wherever no compiled kernel exists for a device.

Top-k selection order (shared by every backend): descending router logit, ties broken by the lower
expert index. Ranking by logit rather than by probability gives the same set as ranking by ``p``
(softmax is monotonic) while staying deterministic where fp32 probabilities round to equal values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..spec import MoRSpec

__all__ = ["route", "grouped_lora", "mor_linear", "load_balance_loss", "orthogonal_loss"]


def _expert_tables(spec: MoRSpec, device: torch.device):
    """Per-role lookup tables: router column range, K, shared flag, first routed LoRA index."""
    def t(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    router_start = t(spec.router_offsets[:-1])
    num_experts = t([r.num_experts for r in spec.roles])
    top_k = t([r.top_k for r in spec.roles])
    shared = t([int(r.shared) for r in spec.roles])
    lora_start = t(spec.lora_offsets[:-1])
    # Routed expert e of role rho lives at lora index lora_start + shared + e.
    return router_start, num_experts, top_k, shared, lora_start


def route(
    x: torch.Tensor,  # [N, d_in]
    router_weight: torch.Tensor,  # [E_total, d_in]
    shared_gate_weight: torch.Tensor,  # [R, d_in]
    role_ids: torch.Tensor,  # [N] int64 in -1 .. R-1
    spec: MoRSpec,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k routing per token within its role. Returns (lora_index [N,K] int32, lora_weight [N,K], probs [N,E_total] f32)."""
    n, device = x.shape[0], x.device
    k_max, e_total = spec.k_max, spec.num_experts_total
    router_start, num_experts, top_k, shared, lora_start = _expert_tables(spec, device)

    active = role_ids >= 0  # [N]
    role = role_ids.clamp(min=0)  # [N]; rows with role -1 are masked out below

    # Router logits for every expert row, then masked to the token's own role.
    logits = F.linear(x, router_weight).float() if e_total > 0 else x.new_zeros(n, 0, dtype=torch.float32)
    col = torch.arange(e_total, device=device)  # [E_total]
    in_role = (col[None, :] >= router_start[role][:, None]) & (
        col[None, :] < (router_start[role] + num_experts[role])[:, None]
    )  # [N, E_total]
    in_role &= active[:, None]
    has_router = in_role.any(dim=1, keepdim=True)  # roles with E=0 have no router rows
    masked = logits.masked_fill(~in_role, float("-inf"))
    probs = torch.softmax(masked.masked_fill(~has_router, 0.0), dim=1)
    probs = probs.masked_fill(~in_role, 0.0)  # [N, E_total] float32

    # Top-k: sort by logit descending; a stable sort keeps the lower index first among ties.
    k_routed_max = max((r.top_k for r in spec.roles), default=0)
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :k_routed_max]  # [N, Kr]
    slot = torch.arange(k_routed_max, device=device)
    slot_used = (slot[None, :] < top_k[role][:, None]) & active[:, None]  # [N, Kr]
    top_p = torch.gather(probs, 1, order) * slot_used  # [N, Kr]
    denom = top_p.sum(dim=1, keepdim=True)
    gates = top_p / torch.where(denom > 0, denom, torch.ones_like(denom))
    routed_index = lora_start[role][:, None] + shared[role][:, None] + (order - router_start[role][:, None])

    # Shared gate: sigmoid(w_rho . x), or constant 1 for shared_gate="none".
    if spec.shared_gate == "sigmoid":
        shared_logits = F.linear(x, shared_gate_weight).float()  # [N, R]
        s = torch.sigmoid(torch.gather(shared_logits, 1, role[:, None]))  # [N, 1]
    else:
        s = torch.ones(n, 1, device=device, dtype=torch.float32)
    has_shared = (shared[role] > 0) & active  # [N]

    # Assemble slots: [shared?] + routed, left-aligned; unused slots are index -1, weight 0.
    cand_index = torch.cat([lora_start[role][:, None], routed_index], dim=1)  # [N, 1+Kr]
    cand_weight = torch.cat([s, gates], dim=1)
    cand_used = torch.cat([has_shared[:, None], slot_used], dim=1)
    # Position of each used candidate among the used ones of its row (the shared slot, if dropped,
    # shifts the routed slots left by one).
    position = torch.cumsum(cand_used.long(), dim=1) - 1
    position = torch.where(cand_used, position, torch.full_like(position, k_max))  # unused -> overflow col
    lora_index = torch.full((n, k_max + 1), -1, dtype=torch.long, device=device)
    lora_index.scatter_(1, position, torch.where(cand_used, cand_index, torch.full_like(cand_index, -1)))
    weight_full = torch.zeros(n, k_max + 1, dtype=torch.float32, device=device)
    weight_full = weight_full.scatter(1, position, cand_weight * cand_used)
    lora_index = lora_index[:, :k_max].to(torch.int32)
    lora_weight = weight_full[:, :k_max].to(x.dtype)
    return lora_index, lora_weight, probs


def grouped_lora(
    x: torch.Tensor,  # [N, d_in]
    lora_A: torch.Tensor,  # [L, r, d_in]
    lora_B: torch.Tensor,  # [L, d_out, r]
    lora_index: torch.Tensor,  # [N, K] int, -1 = empty
    lora_weight: torch.Tensor,  # [N, K]
    scaling: float = 1.0,
) -> torch.Tensor:
    """``delta[t] = scaling * sum_k w[t,k] * B[idx] @ A[idx] @ x[t]`` -> ``[N, d_out]``.

    Shrinks with every LoRA (``[N, L*r]``, cheap), keeps each token's selected ones through a dense
    gate, and expands once; the ``[N, L, d_out]`` tensor of the official code is never formed.
    """
    n = x.shape[0]
    num_loras, rank, d_in = lora_A.shape
    d_out = lora_B.shape[1]
    valid = lora_index >= 0
    index = lora_index.long().clamp(min=0)
    weight = torch.where(valid, lora_weight, torch.zeros_like(lora_weight))  # [N, K]
    gate = torch.zeros(n, num_loras, dtype=lora_weight.dtype, device=x.device)
    gate = gate.scatter_add(1, index, weight)  # [N, L]; a LoRA picked twice sums its weights
    shrink = F.linear(x, lora_A.reshape(num_loras * rank, d_in)).view(n, num_loras, rank)  # [N, L, r]
    gated = (shrink * gate[:, :, None]).reshape(n, num_loras * rank)
    b_flat = lora_B.permute(1, 0, 2).reshape(d_out, num_loras * rank)  # [d_out, L*r]
    return F.linear(gated, b_flat) * scaling


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
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Frozen linear plus the routed LoRA delta; also returns the routing."""
    routing = route(x, router_weight, shared_gate_weight, role_ids, spec)
    y = F.linear(x, weight, bias) + grouped_lora(x, lora_A, lora_B, routing[0], routing[1], scaling)
    return y, routing


def load_balance_loss(
    router_probs: torch.Tensor,  # [N, E_total] float32
    lora_index: torch.Tensor,  # [N, K]
    role_ids: torch.Tensor,  # [N]
    spec: MoRSpec,
) -> torch.Tensor:
    """``sum_rho E_rho * sum_i f_i P_i`` over roles with tokens and at least two experts."""
    device = router_probs.device
    total = router_probs.new_zeros((), dtype=torch.float32)
    # Map each LoRA index to its router column (-1 for shared LoRAs and empty slots).
    column_of_lora = torch.full((spec.num_loras + 1,), -1, dtype=torch.long, device=device)
    for rho in range(spec.num_roles):
        routed = spec.routed_loras(rho)
        column_of_lora[routed.start : routed.stop] = torch.arange(
            spec.router_offsets[rho], spec.router_offsets[rho + 1], device=device
        )
    cols = column_of_lora[lora_index.long()]  # idx -1 reads the extra last entry, which is -1
    # [N, E_total]: 1 where the token dispatched to the expert (column 0 collects the -1s, dropped).
    counts = torch.zeros(router_probs.shape[0], spec.num_experts_total + 1, device=device)
    counts.scatter_add_(1, cols + 1, torch.ones_like(cols, dtype=torch.float32))
    counts = counts[:, 1:]
    for rho, role in enumerate(spec.roles):
        if role.num_experts < 2:
            continue
        mask = role_ids == rho
        n_rho = mask.sum()
        if int(n_rho) == 0:
            continue
        lo, hi = spec.router_offsets[rho], spec.router_offsets[rho + 1]
        f = counts[mask, lo:hi].sum(0) / n_rho  # no gradient: counts are data
        p = router_probs[mask, lo:hi].float().sum(0) / n_rho
        total = total + role.num_experts * (f * p).sum()
    return total


def orthogonal_loss(lora_A: torch.Tensor, lora_B: torch.Tensor, spec: MoRSpec) -> torch.Tensor:
    """``sum_rho sum_{i<j} ||A_i A_j^T||^2 + ||B_i B_j^T||^2`` over each role's routed LoRAs, via r x r products."""
    total = lora_A.new_zeros((), dtype=torch.float32)
    for rho in range(spec.num_roles):
        routed = spec.routed_loras(rho)
        if len(routed) < 2:
            continue
        a = lora_A[routed.start : routed.stop].float()  # [E, r, d_in]
        b = lora_B[routed.start : routed.stop].float()  # [E, d_out, r]
        pair = torch.triu(torch.ones(len(routed), len(routed), dtype=torch.bool, device=a.device), diagonal=1)
        cross = torch.einsum("ird,jsd->ijrs", a, a)  # [E, E, r, r]: A_i A_j^T
        gram = torch.einsum("idr,ids->irs", b, b)  # [E, r, r]: B_i^T B_i
        # ||B_i B_j^T||_F^2 = <B_i^T B_i, B_j^T B_j>_F: no d_out x d_out matrix is ever formed.
        gram_dots = torch.einsum("irs,jrs->ij", gram, gram)  # [E, E]
        total = total + (cross.square().sum((2, 3)) * pair).sum() + (gram_dots * pair).sum()
    return total
