"""Autograd of the loss ops, registered from Python; each backward is itself an op.

mor_linear, route and grouped_lora have theirs in C++ (``csrc/autograd.cpp``): they run on every
adapted projection, and a Python wrapper there cost more host time than the op itself. The losses,
once per step, stay here. Registered by :func:`register` once the library is loaded.
"""

from __future__ import annotations

import torch


def register() -> None:
    lib = torch.ops.mor_ext

    def balance_layers_setup(ctx, inputs, output):
        router_probs, lora_index, role_ids, *spec_args = inputs
        ctx.spec_args = spec_args
        ctx.layers = len(router_probs)
        ctx.save_for_backward(*router_probs, *lora_index, role_ids)

    def balance_layers_backward(ctx, grad):
        saved = ctx.saved_tensors
        probs, index, role_ids = list(saved[: ctx.layers]), list(saved[ctx.layers : 2 * ctx.layers]), saved[-1]
        grads = lib.load_balance_loss_layers_backward(grad, probs, index, role_ids, *ctx.spec_args)
        return grads, [None] * ctx.layers, None, None, None, None

    torch.library.register_autograd(
        "mor_ext::load_balance_loss_layers", balance_layers_backward, setup_context=balance_layers_setup
    )

    def orth_layers_setup(ctx, inputs, output):
        lora_A, lora_B, *spec_args = inputs
        _loss, products = output
        ctx.mark_non_differentiable(products)
        ctx.spec_args = spec_args
        ctx.layers = len(lora_A)
        # The forward's r x r products: the backward builds every gradient from them.
        ctx.save_for_backward(products, *lora_A, *lora_B)

    def orth_layers_backward(ctx, grad, _grad_products):
        products, *saved = ctx.saved_tensors
        lora_A, lora_B = saved[: ctx.layers], saved[ctx.layers :]
        ga, gb = lib.orthogonal_loss_layers_backward(grad, products, lora_A, lora_B, *ctx.spec_args)
        return ga, gb, None, None, None

    torch.library.register_autograd(
        "mor_ext::orthogonal_loss_layers", orth_layers_backward, setup_context=orth_layers_setup
    )
