"""Degenerate sizes: empty batches, roles without an active LoRA, specs without any slot.
"""

from __future__ import annotations

import pytest
import torch

from mor_ext import functional as F, MoRSpec, RoleSpec

from op_utils import (
    NEEDS_COMPILED,
    BACKENDS,
    D_IN,
    D_OUT,
    MOR_NAMES,
    SPECS,
    backend,
    compare_backends,
    lead_id,
    make_params,
    mor_inputs,
    mor_linear_fn,
)

pytestmark = NEEDS_COMPILED


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("lead", [(0,), (2, 0)], ids=lead_id)
def test_empty_batch(lead, backend_name):
    spec = SPECS["moragent"]
    p = make_params(spec, lead, D_IN, D_OUT, seed=100)
    roles = torch.zeros(lead, dtype=torch.long)
    with backend(backend_name):
        y, r = F.mor_linear(p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles,
                            spec, return_routing=True)
        assert y.shape == (*lead, D_OUT) and r.lora_index.shape == (*lead, spec.k_max)
        aux = F.load_balance_loss(r.router_probs, r.lora_index, roles, spec)
        assert aux.item() == 0.0


def test_role_without_active_lora():
    """A role with no shared LoRA and top_k=0 adds nothing; together with a normal role it is fine."""
    spec = MoRSpec(roles=(RoleSpec("probe", 3, 0, False), RoleSpec("normal", 2, 1, True)), rank=2)
    inputs, diff = mor_inputs(spec, (20,), "random", torch.float32, seed=101)
    comp, _, _ = compare_backends(mor_linear_fn(spec), inputs, diff, torch.float32, MOR_NAMES)
    probe = inputs["role_ids"] == 0
    assert comp.outputs[1][probe].eq(-1).all()


NO_SLOT_SPEC = MoRSpec(roles=(RoleSpec("probe", 3, 0, False),), rank=2)  # valid, but K_max = 0


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_spec_with_no_active_slot_at_all(backend_name):
    spec = NO_SLOT_SPEC
    p = make_params(spec, (5,), 8, 6, seed=102)
    roles = torch.tensor([0, -1, 0, 0, -1])
    with backend(backend_name):
        y, r = F.mor_linear(p.x, p.weight, p.bias, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles,
                            spec, return_routing=True)
        aux = F.load_balance_loss(r.router_probs, r.lora_index, roles, spec)
    assert r.lora_index.shape == (5, 0) and r.lora_weight.shape == (5, 0) and r.router_probs.shape == (5, 3)
    torch.testing.assert_close(y, torch.nn.functional.linear(p.x, p.weight, p.bias))
    assert aux.item() == 0.0


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_grouped_lora_with_zero_slots(backend_name):
    p = make_params(NO_SLOT_SPEC, (5,), 8, 6, seed=103)
    with backend(backend_name):
        delta = F.grouped_lora(p.x, p.lora_A, p.lora_B, torch.zeros(5, 0, dtype=torch.int32), torch.zeros(5, 0))
    assert delta.shape == (5, 6) and delta.eq(0).all()
