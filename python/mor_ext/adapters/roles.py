"""Adding roles to a patched (e.g. trained and loaded) model: the old roles' LoRAs are kept, the new
ones start fresh with ``B = 0``, so every output of the model is unchanged (``docs/spec.md`` §7)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ..patching import patch, unpatch
from ..schemes import RoleScheme
from ..spec import MoRSpec, RoleSpec
from .io import adapter_params

__all__ = ["add_roles"]


def add_roles(model: torch.nn.Module, roles: Sequence[RoleSpec], scheme: RoleScheme | None = None) -> torch.nn.Module:
    """Append ``roles`` to the spec of a patched ``model`` (re-patched in place) and return it.

    The existing roles keep their ids and weights (they come first in the canonical layout); the new
    roles' LoRAs are initialised as :func:`mor_ext.patch` does, ``B = 0``, so until they are trained a
    token of a new role runs as the base model and no other token changes. ``scheme`` replaces the
    config's role scheme (it may use the new roles)."""
    config = getattr(model, "mor_config", None)
    if config is None:
        raise ValueError("add_roles needs a MoR-patched model (mor_ext.patch or mor_ext.load_adapter)")
    roles = tuple(roles)
    if not roles:
        return model
    old = config.spec
    spec = MoRSpec(roles=old.roles + roles, rank=old.rank, shared_gate=old.shared_gate)  # checks unique names
    saved = {name: p.detach().clone() for name, p in adapter_params(model).items()}
    new_config = dataclasses.replace(config, spec=spec, scheme=scheme if scheme is not None else config.scheme)
    unpatch(model)
    patch(model, new_config)
    rows = {"lora_A": old.num_loras, "lora_B": old.num_loras, "router_weight": old.num_experts_total,
            "shared_gate_weight": old.num_roles}
    with torch.no_grad():
        for name, param in adapter_params(model).items():
            kept = rows[name.rsplit(".", 1)[1]]
            param[:kept].copy_(saved[name])
    return model
