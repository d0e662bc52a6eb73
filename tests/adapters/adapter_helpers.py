"""Helpers shared by the adapter tests: random adapter values, role ids and logits of a tiny model."""

from __future__ import annotations

import torch
import torch.nn as nn

import mor_ext

PARAMS = ("lora_A", "lora_B", "router_weight", "shared_gate_weight")


def randomize_adapter(model: nn.Module, seed: int = 0) -> None:
    """Give every MoR parameter random values (B starts at zero, which would hide a lost load)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in mor_ext.mor_layers(model):
            for name in PARAMS:
                p = getattr(layer, name)
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {f"{n}.{p}": getattr(layer, p) for n, layer in mor_ext.mor_layers(model) for p in PARAMS}


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in adapter_parameters(model).items()}


def random_role_ids(input_ids: torch.Tensor, num_roles: int = 3, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-1, num_roles, input_ids.shape, generator=gen)


def logits_of(model: nn.Module, input_ids: torch.Tensor, role_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, role_ids=role_ids).logits
