"""MoRLinear: its initialisation, a layer called on its own, and the check of role ids it is given.

Run with the compiled backend (default) and with ``MOR_EXT_BACKEND=reference``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import mor_ext
from mor_ext import MoRConfig, MoRLinear, MoRSpec, RoleSpec, functional


def patched(model: nn.Module, spec: MoRSpec) -> nn.Module:
    return mor_ext.patch(model, MoRConfig(spec=spec))


def test_init_follows_the_spec(tiny_model, small_spec):
    model = patched(tiny_model, small_spec)
    for _, layer in mor_ext.mor_layers(model):
        bound = 1 / math.sqrt(layer.in_features)
        assert torch.count_nonzero(layer.lora_B) == 0
        for t in (layer.lora_A, layer.router_weight, layer.shared_gate_weight):
            assert t.abs().max() <= bound
            assert t.abs().max() > 0.5 * bound  # per-LoRA bound, not the 4x smaller stacked one
        assert not layer.base_layer.weight.requires_grad


def test_mor_linear_matches_the_functional_api():
    torch.manual_seed(0)
    spec = MoRSpec(roles=(RoleSpec("a", 3, 2, True), RoleSpec("b", 0, 0, True)), rank=2)
    layer = MoRLinear(nn.Linear(8, 6), spec, scaling=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 5, 8)
    roles = torch.tensor([[0, 1, -1, 0, 1], [-1, -1, 1, 0, 0]])
    expected = functional.mor_linear(
        x, layer.weight, layer.bias, layer.lora_A, layer.lora_B, layer.router_weight, layer.shared_gate_weight,
        roles, spec, 0.5,
    )
    torch.testing.assert_close(layer(x, roles), expected)
    assert torch.equal(layer(x), layer.base_layer(x))  # no roles: base only
    mor_ext.set_active_role(layer, "b")
    torch.testing.assert_close(layer(x), layer(x, torch.ones(2, 5, dtype=torch.long)))
    assert layer.in_features == 8 and layer.out_features == 6 and layer.weight is layer.base_layer.weight
    assert "rank=2" in repr(layer) and "a(1+3, top-2)" in repr(layer)
    with pytest.raises(TypeError, match="nn.Linear"):
        MoRLinear(nn.Conv1d(2, 2, 1), spec)


def test_layer_called_with_non_integer_role_ids(tiny_model, small_spec):
    """A MoRLinear called directly refuses float or bool role ids (the compiled path would truncate
    0.7 to role 0 without a word)."""
    model = patched(tiny_model, small_spec)
    _, layer = next(iter(mor_ext.mor_layers(model)))
    x = torch.randn(3, layer.in_features)
    for bad in (torch.tensor([0.7, 1.5, 2.9]), torch.tensor([True, False, True])):
        with pytest.raises(TypeError, match="role_ids must be an integer tensor"):
            layer(x, role_ids=bad)
    layer(x, role_ids=torch.tensor([0, 1, 2], dtype=torch.int32))


def test_layer_called_with_out_of_range_role_ids(tiny_model, small_spec, monkeypatch):
    """Ids handed to a layer directly are range-checked by the layer itself, once, on every path
    (the compiled CUDA op would read them as "no adapter"), with the message that names the entry."""
    from mor_ext import checks

    model = patched(tiny_model, small_spec)
    _, layer = next(iter(mor_ext.mor_layers(model)))
    x = torch.randn(3, layer.in_features)
    for bad, where in ((torch.tensor([0, 7, 1]), r"role_ids\[1\] = 7"), (torch.tensor([-3, 0, 1]), r"role_ids\[0\] = -3")):
        with pytest.raises(ValueError, match=where + ", but the spec has"):
            layer(x, role_ids=bad)
    real, calls = checks._check_range, []

    def spy(ids, name, upper, why):
        if not checks._IDS_CHECKED.get():  # inside ids_checked the check returns at once
            calls.append(name)
        return real(ids, name, upper, why)

    monkeypatch.setattr(checks, "_check_range", spy)
    layer(x, role_ids=torch.tensor([0, 1, -1]))
    assert calls == ["role_ids"]  # checked once, whichever backend computed the layer
