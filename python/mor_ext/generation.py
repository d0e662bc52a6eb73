"""Generating one role's turn on a patched model, with the prompt's tokens under their own roles.

``model.generate`` runs every token of a call under one role (:func:`mor_ext.active_role`), but in
training the context tokens (system, tools, user, observations) carried ``config.context_role`` and
each earlier role turn its own role. :func:`generate_role_turn` first runs the prompt but its last
token through the model with the prompt's per-token role ids, keeping the KV cache, then generates
from there under the speaking role: the same computation as training, token for token.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
import torch.nn as nn

from .patching import active_role

__all__ = ["cache_argument", "generate_role_turn"]


def cache_argument(model: nn.Module) -> str:
    """Name of the KV-cache argument of ``model.forward``: ``cache`` (transformers >= 5.2x) or
    ``past_key_values`` (earlier)."""
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _token_list(values: Sequence[int] | torch.Tensor, name: str) -> list[int]:
    """One sequence of integer ids as a list: a 1-D tensor or a sequence of ints (one prompt, no batch)."""
    if isinstance(values, torch.Tensor):
        if values.dim() != 1 or values.is_floating_point() or values.is_complex():
            raise ValueError(f"{name} must be one sequence of integer ids (a 1-D integer tensor or a list of ints), "
                             f"got a {values.dim()}-D {values.dtype} tensor")
        return values.tolist()
    values = list(values)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be one sequence of integer ids (a list of ints or a 1-D tensor)")
    return values


@torch.no_grad()  # the prefill too, not only generate(): no autograd graph through every LoRA
def generate_role_turn(
    model: nn.Module,
    input_ids: Sequence[int],
    role_ids: Sequence[int],
    role: str | int,
    **generate_kwargs: Any,
) -> torch.Tensor:
    """Generate the next turn of ``role`` after a prompt (one sequence, no padding).

    ``input_ids`` / ``role_ids`` are the prompt and its per-token roles, e.g. from
    ``RoleTokenizer.prompt``; the last token (the end of the role's header) runs under ``role``.
    Returns the generated token ids only, ``[new_tokens]``.
    """
    from transformers import DynamicCache

    input_ids, role_ids = _token_list(input_ids, "input_ids"), _token_list(role_ids, "role_ids")
    if len(input_ids) != len(role_ids) or not input_ids:
        raise ValueError(f"need one role id per prompt token, got {len(input_ids)} tokens and {len(role_ids)} roles")
    vocab = model.get_input_embeddings().num_embeddings
    bad = next((i for i, t in enumerate(input_ids) if not 0 <= t < vocab), None)
    if bad is not None:
        raise ValueError(f"input_ids[{bad}] = {input_ids[bad]} is not a token id of this model (0 .. {vocab - 1})")
    device = next(model.parameters()).device
    ids = torch.tensor([input_ids], device=device)
    roles = torch.tensor([role_ids], device=device)
    cache_kw = cache_argument(model)
    cache = DynamicCache(config=model.config)
    if ids.shape[1] > 1:  # prefill: every prompt token but the last, each under its own role
        model(input_ids=ids[:, :-1], role_ids=roles[:, :-1], use_cache=True, **{cache_kw: cache})
    with active_role(model, role):
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), **{cache_kw: cache}, **generate_kwargs
        )
    return out[0, ids.shape[1]:]
