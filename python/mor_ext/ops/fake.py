"""Fake (meta) kernels of every op with tensor outputs: shapes and dtypes only, for torch.compile
and ``torch.library.opcheck``. Registered by :func:`register` once the library is loaded."""

from __future__ import annotations

import torch


def _k_max(top_k, has_shared) -> int:
    return max(k + s for k, s in zip(top_k, has_shared))


def _products_like(lora_A, num_experts):
    """The r x r products of every layer: per role with >= 2 routed LoRAs, E(E-1)/2 + E of them."""
    per_layer = sum(e * (e - 1) // 2 + e for e in num_experts if e >= 2)
    r = lora_A[0].shape[1]
    return lora_A[0].new_empty(per_layer * len(lora_A), r, r, dtype=torch.float32)


def _orthogonal_grads_like(lora_A, lora_B):
    return [torch.empty_like(a) for a in lora_A], [torch.empty_like(b) for b in lora_B]


def register() -> None:
    @torch.library.register_fake("mor_ext::route")
    def _(x, router_weight, shared_gate_weight, role_ids, num_experts, top_k, has_shared, sigmoid_gate):
        n, k_max = x.shape[0], _k_max(top_k, has_shared)
        return (
            x.new_empty(n, k_max, dtype=torch.int32),
            x.new_empty(n, k_max),
            x.new_empty(n, sum(num_experts), dtype=torch.float32),
        )

    @torch.library.register_fake("mor_ext::route_backward")
    def _(gw, gp, x, router_weight, shared_gate_weight, role_ids, lora_index, router_probs, *spec_args):
        return torch.empty_like(x), torch.empty_like(router_weight), torch.empty_like(shared_gate_weight)

    @torch.library.register_fake("mor_ext::grouped_lora")
    def _(x, lora_A, lora_B, lora_index, lora_weight, scaling, weight, bias):
        n = x.shape[0]
        return x.new_empty(n, lora_B.shape[1]), x.new_empty(n, lora_index.shape[1], lora_A.shape[1])

    @torch.library.register_fake("mor_ext::grouped_lora_backward")
    def _(grad_out, x, lora_A, lora_B, lora_index, lora_weight, shrink, scaling, weight):
        return torch.empty_like(x), torch.empty_like(lora_A), torch.empty_like(lora_B), torch.empty_like(lora_weight)

    @torch.library.register_fake("mor_ext::mor_linear")
    @torch.library.register_fake("mor_ext::testing_mor_linear_decode")
    def _(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, num_experts, top_k,
          has_shared, sigmoid_gate, scaling):
        n, k_max = x.shape[0], _k_max(top_k, has_shared)
        return (
            x.new_empty(n, weight.shape[0]),
            x.new_empty(n, k_max, dtype=torch.int32),
            x.new_empty(n, k_max),
            x.new_empty(n, sum(num_experts), dtype=torch.float32),
            x.new_empty(n, k_max, lora_A.shape[1]),
            x.new_empty(n, dtype=torch.float32),
        )

    @torch.library.register_fake("mor_ext::mor_linear_backward")
    def _(grad_y, grad_lora_weight, grad_router_probs, x, weight, lora_A, lora_B, router_weight,
          shared_gate_weight, *rest):
        return (torch.empty_like(x), torch.empty_like(lora_A), torch.empty_like(lora_B),
                torch.empty_like(router_weight), torch.empty_like(shared_gate_weight))

    @torch.library.register_fake("mor_ext::load_balance_loss_layers")
    def _(router_probs, lora_index, role_ids, num_experts, top_k, has_shared):
        return router_probs[0].new_empty((), dtype=torch.float32)

    @torch.library.register_fake("mor_ext::load_balance_loss_layers_backward")
    def _(grad, router_probs, lora_index, role_ids, num_experts, top_k, has_shared):
        return [torch.empty_like(p, dtype=torch.float32) for p in router_probs]

    @torch.library.register_fake("mor_ext::orthogonal_loss_layers")
    def _(lora_A, lora_B, num_experts, top_k, has_shared):
        return lora_A[0].new_empty((), dtype=torch.float32), _products_like(lora_A, num_experts)

    @torch.library.register_fake("mor_ext::orthogonal_loss_layers_backward")
    @torch.library.register_fake("mor_ext::testing_orthogonal_grads")
    def _(grad, products, lora_A, lora_B, num_experts, top_k, has_shared):
        return _orthogonal_grads_like(lora_A, lora_B)

    @torch.library.register_fake("mor_ext::testing_orthogonal_products")
    def _(lora_A, lora_B, num_experts, top_k, has_shared):
        return _products_like(lora_A, num_experts)
