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


@torch.no_grad()
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

    if len(input_ids) != len(role_ids) or not input_ids:
        raise ValueError(f"need one role id per prompt token, got {len(input_ids)} tokens and {len(role_ids)} roles")
    device = next(model.parameters()).device
    ids = torch.tensor([list(input_ids)], device=device)
    roles = torch.tensor([list(role_ids)], device=device)
    cache_kw = cache_argument(model)
    cache = DynamicCache(config=model.config)
    if ids.shape[1] > 1:  # prefill: every prompt token but the last, each under its own role
        model(input_ids=ids[:, :-1], role_ids=roles[:, :-1], use_cache=True, **{cache_kw: cache})
    with active_role(model, role):
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), **{cache_kw: cache}, **generate_kwargs
        )
    return out[0, ids.shape[1]:]
