"""MoRLinear's inference plan: a no_grad model call decides once which fast path its layers take
(``RoleContext._inference_plan``, ``MoRLinear._forward_planned``), and must give exactly what the
general path gives; everything training needs (dropout, router statistics, autocast, gradients)
keeps the general path.

Run with the compiled backend (the plan needs the compiled op; under ``MOR_EXT_BACKEND=reference``
no plan is made and the tests that need one are skipped).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import mor_ext
from mor_ext import MoRConfig, MoRLinear, MoRSpec, RoleSpec, functional, layers
from mor_ext.layers import RoleContext

needs_compiled = pytest.mark.skipif(not mor_ext.ops.uses_compiled(torch.zeros(1), "mor_linear"),
                                    reason="the inference plan runs the compiled op")

# Several roles, -1 tokens among them, in two rows.
MIXED = torch.tensor([[0, 1, -1, 2, 2, 0, -1, 1], [2, -1, -1, 0, 1, 1, 2, 0]])


def perturb(model_or_layer: nn.Module, seed: int = 3) -> None:
    """Random B (a new layer's is zero, so its adapter would add nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model_or_layer.modules():
            if isinstance(m, MoRLinear):
                m.lora_B.copy_(0.3 * torch.randn(m.lora_B.shape, generator=gen))


@pytest.fixture
def op_calls(monkeypatch):
    """How often the fast path called the op (it calls layers._MOR_LINEAR; the general path does not)."""
    calls = []
    real = layers._MOR_LINEAR

    def counting(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(layers, "_MOR_LINEAR", counting)
    return calls


def no_plan(monkeypatch, context: RoleContext) -> None:
    monkeypatch.setattr(context, "_inference_plan", lambda: None)


def make_layer(spec: MoRSpec, bias: bool = True) -> tuple[MoRLinear, RoleContext]:
    torch.manual_seed(0)
    context = RoleContext(spec)
    layer = MoRLinear(nn.Linear(16, 12, bias=bias), spec, scaling=0.75, role_context=context).eval()
    perturb(layer)
    return layer, context


@needs_compiled
@pytest.mark.parametrize("bias", [True, False])
def test_planned_layer_gives_the_general_path_bits(bias, op_calls):
    spec = MoRSpec.moragent(rank=4)
    layer, context = make_layer(spec, bias)
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        saved = context.begin_call(MIXED, collect_stats=False)
        plan = context.inference
        assert plan is not None and plan.lead == MIXED.shape
        fast = layer(x)
        assert len(op_calls) == 1 and op_calls[0] == (16, 16)
        context.inference = None
        general = layer(x)
        context.end_call(saved)
    assert len(op_calls) == 1  # the general path did not come through the fast one
    assert torch.equal(fast, general)
    expected = functional.mor_linear(x, layer.weight, layer.bias, layer.lora_A, layer.lora_B, layer.router_weight,
                                     layer.shared_gate_weight, MIXED, spec, 0.75)
    torch.testing.assert_close(fast, expected)
    assert not torch.allclose(fast, layer.base_layer(x))  # the adapter did something
    minus_one = MIXED == -1
    assert torch.equal(fast[minus_one], layer.base_layer(x)[minus_one])  # -1 tokens: the base layer exactly


@needs_compiled
def test_plan_falls_back_where_it_does_not_fit(op_calls):
    spec = MoRSpec(roles=(RoleSpec("a", 3, 2, True), RoleSpec("b", 2, 1, False)), rank=2)
    layer, context = make_layer(spec)
    roles = torch.tensor([[0, 1, -1], [1, 1, 0]])
    x = torch.randn(2, 3, 16)
    with torch.no_grad():
        saved = context.begin_call(roles, collect_stats=False)
        reference = layer(x)
        # Flattened tokens (some models flatten before a projection): the general path reshapes the ids.
        torch.testing.assert_close(layer(x.reshape(6, 16)), reference.reshape(6, 12), rtol=0, atol=0)
        # Ids handed to the layer win over the call's.
        other = torch.tensor([[1, 1, 1], [0, 0, -1]])
        context.inference = None
        expected = layer(x, other)
        context.inference = context._inference_plan()
        assert torch.equal(layer(x, other), expected)
        context.end_call(saved)
    assert len(op_calls) == 1  # only the first call took the fast path
    assert context.inference is None  # the call's plan ends with it


@needs_compiled
def test_patched_model_logits_equal_with_and_without_the_plan(tiny_model, small_spec, input_ids, op_calls,
                                                              monkeypatch):
    model = mor_ext.patch(tiny_model, MoRConfig(spec=small_spec))
    perturb(model)
    layer_count = sum(1 for _ in mor_ext.mor_layers(model))
    with torch.no_grad():
        fast = model(input_ids=input_ids, role_ids=MIXED).logits
        assert len(op_calls) == layer_count
        with mor_ext.active_role(model, "executor"):  # one role for every token: ids made once a call
            fast_active = model(input_ids=input_ids).logits
        assert len(op_calls) == 2 * layer_count
    no_plan(monkeypatch, mor_ext.patching._context(model))
    with torch.no_grad():
        general = model(input_ids=input_ids, role_ids=MIXED).logits
        with mor_ext.active_role(model, "executor"):
            general_active = model(input_ids=input_ids).logits
    assert len(op_calls) == 2 * layer_count
    assert torch.equal(fast, general) and torch.equal(fast_active, general_active)
    assert not torch.equal(fast, fast_active)


@needs_compiled
def test_decoding_on_a_cache_matches_the_general_path(tiny_model, small_spec, monkeypatch):
    """The agent's decoder (one KV cache, one token a step, rows under their own roles) gives the same
    logits with the plan as without it."""
    from mor_ext.agent import CacheDecoder

    model = mor_ext.patch(tiny_model, MoRConfig(spec=small_spec))
    perturb(model)

    def run() -> list[torch.Tensor]:
        decoder = CacheDecoder(model, 2)
        out = decoder.step([([5, 6, 7], [0, 0, -1]), ([8, 9], [2, 1])])
        for step in range(4):
            out = decoder.step([([int(out[0].argmax())], [step % 3]), ([int(out[1].argmax())], [-1 if step else 1])])
        return out

    fast = run()
    no_plan(monkeypatch, mor_ext.patching._context(model))
    general = run()
    for a, b in zip(fast, general):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------- training keeps its path
@needs_compiled
def test_no_plan_when_training_needs_the_general_path(tiny_model, small_spec, input_ids, op_calls):
    model = mor_ext.patch(tiny_model, MoRConfig(spec=small_spec))
    context = mor_ext.patching._context(model)
    seen = []
    real = context._inference_plan

    def spy():
        seen.append(real())
        return seen[-1]

    context._inference_plan = spy
    model(input_ids=input_ids, role_ids=MIXED)  # grad on
    with torch.no_grad():
        out = model(input_ids=input_ids, role_ids=MIXED, labels=input_ids)  # statistics collected
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=input_ids, role_ids=MIXED)
        model(input_ids=input_ids, role_ids=torch.full_like(input_ids, -1))  # no role: the base model
        model(input_ids=input_ids)  # nor by default
    assert seen == [None] * 5 and not op_calls
    assert out.router_load is not None and out.aux_loss > 0  # the statistics were collected


@needs_compiled
def test_dropout_still_applies_in_training_mode_under_no_grad(tiny_model, small_spec, input_ids, op_calls):
    model = mor_ext.patch(tiny_model, MoRConfig(spec=small_spec, lora_dropout=0.5))
    perturb(model)
    with torch.no_grad():
        eval_logits = model(input_ids=input_ids, role_ids=MIXED).logits
        calls = len(op_calls)
        assert calls > 0
        model.train()  # no labels, no grad: a plan is made, but a dropping layer must not use it
        torch.manual_seed(0)
        first = model(input_ids=input_ids, role_ids=MIXED).logits
        torch.manual_seed(1)
        second = model(input_ids=input_ids, role_ids=MIXED).logits
    assert len(op_calls) == calls
    assert not torch.allclose(first, eval_logits, atol=1e-4) and not torch.allclose(first, second, atol=1e-4)


@needs_compiled
def test_autocast_entered_inside_a_call_still_casts(op_calls):
    layer, context = make_layer(MoRSpec.moragent(rank=4))
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        saved = context.begin_call(MIXED, collect_stats=False)
        assert context.inference is not None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        context.end_call(saved)
    assert y.dtype == torch.bfloat16 and not op_calls


@needs_compiled
def test_training_step_after_planned_calls(tiny_model, small_spec, input_ids):
    """Inference calls leave nothing behind that a training step would pick up: gradients and the
    auxiliary losses are those of a model that never ran a planned call."""
    fresh = mor_ext.patch(tiny_model, MoRConfig(spec=small_spec))
    perturb(fresh)
    import copy

    used = copy.deepcopy(fresh)
    with torch.no_grad():
        used(input_ids=input_ids, role_ids=MIXED)
    grads = []
    for model in (fresh, used):
        model.train()
        out = model(input_ids=input_ids, role_ids=MIXED, labels=input_ids)
        out.loss.backward()
        grads.append((out.aux_loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    assert torch.equal(grads[0][0], grads[1][0])
    for name, g in grads[0][1].items():
        assert torch.equal(g, grads[1][1][name]), name
