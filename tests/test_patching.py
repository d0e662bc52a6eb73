"""patch / unpatch / active_role on tiny Llama and Qwen2 models (MoRConfig: test_config.py,
MoRLinear: test_layers.py).

Run with the compiled backend (default) and with ``MOR_EXT_BACKEND=reference``.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mor_ext
from mor_ext import MoRConfig, MoRSpec, functional

from conftest import VOCAB, make_tiny_model

# Roles of the default spec: 0 reasoner, 1 executor, 2 summarizer.
MIXED_ROLES = torch.tensor(
    [
        [-1, -1, -1, 0, 0, 1, 2, -1],  # a role -1 prefix, then role tokens, then -1 again
        [0, 1, 2, -1, 2, 1, 0, 0],
    ]
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # Tiny models give threads nothing to share but synchronisation; on a busy 2-core machine that made
    # this file 15x slower (104 s against 7 s). Restored afterwards, so other files keep their threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def patched(model: nn.Module, spec: MoRSpec, **kwargs) -> nn.Module:
    return mor_ext.patch(model, MoRConfig(spec=spec, **kwargs))


def perturb_lora_B(model: nn.Module, std: float = 0.3, seed: int = 0) -> None:
    """Give every LoRA a non-zero output side, so that adapters change the model."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in mor_ext.mor_layers(model):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * std)


@torch.no_grad()
def logits_of(model: nn.Module, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    return model(input_ids=input_ids, **kwargs).logits


# --------------------------------------------------------------------------------------------- 1. exactness
def test_fresh_patch_is_exactly_the_base_model(tiny_model, small_spec, input_ids):
    base = logits_of(tiny_model, input_ids)
    model = patched(tiny_model, small_spec)
    for role_ids in (MIXED_ROLES, torch.full_like(input_ids, -1), *(torch.full_like(input_ids, r) for r in range(3))):
        assert torch.equal(logits_of(model, input_ids, role_ids=role_ids), base)
    assert torch.equal(logits_of(model, input_ids), base)  # no role_ids, no active role: role -1


# --------------------------------------------------------------------------------------------- 2. causality
def test_roles_change_only_role_tokens_and_later_positions(tiny_model, small_spec, input_ids):
    base = logits_of(tiny_model, input_ids)
    model = patched(tiny_model, small_spec)
    perturb_lora_B(model)
    out = logits_of(model, input_ids, role_ids=MIXED_ROLES)
    # Row 0: positions 0-2 are role -1 and come before any role token; causal attention keeps them exact.
    assert torch.equal(out[0, :3], base[0, :3])
    for t in range(3, 8):  # role tokens, and the trailing -1 token that attends to them
        assert not torch.allclose(out[0, t], base[0, t], atol=1e-4), t
    assert not torch.allclose(out[1], base[1], atol=1e-4)
    # Each role gives different outputs for the same tokens.
    per_role = [logits_of(model, input_ids, role_ids=torch.full_like(input_ids, r)) for r in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not torch.allclose(per_role[a], per_role[b], atol=1e-4)


def test_all_minus_one_role_ids_give_base_after_training(tiny_model, small_spec, input_ids):
    base = logits_of(tiny_model, input_ids)
    model = patched(tiny_model, small_spec)
    perturb_lora_B(model)
    assert torch.equal(logits_of(model, input_ids, role_ids=torch.full_like(input_ids, -1)), base)


# --------------------------------------------------------------------------------------------- 3. gradient isolation
def test_loras_of_other_roles_get_no_gradient(tiny_model, small_spec, input_ids):
    # The orthogonality loss couples a role's routed LoRAs whatever the tokens; leave it out here.
    model = patched(tiny_model, small_spec, orth_loss_coef=0.0)
    perturb_lora_B(model)  # so that lora_A gets gradient too
    out = model(input_ids=input_ids, role_ids=torch.zeros_like(input_ids), labels=input_ids)
    out.loss.backward()
    spec = small_spec
    own = slice(spec.lora_offsets[0], spec.lora_offsets[1])
    others = slice(spec.lora_offsets[1], spec.lora_offsets[-1])
    own_rows = slice(spec.router_offsets[0], spec.router_offsets[1])
    other_rows = slice(spec.router_offsets[1], spec.router_offsets[-1])
    layers = list(mor_ext.mor_layers(model))
    assert len(layers) == 14
    for name, layer in layers:
        assert torch.count_nonzero(layer.lora_A.grad[others]) == 0, name
        assert torch.count_nonzero(layer.lora_B.grad[others]) == 0, name
        assert torch.count_nonzero(layer.router_weight.grad[other_rows]) == 0, name
        assert torch.count_nonzero(layer.shared_gate_weight.grad[1:]) == 0, name
        # Role 0's shared LoRA is always on; every routed LoRA is picked by some of the 16 tokens (top-3 of 4).
        for lora in range(own.start, own.stop):
            assert torch.count_nonzero(layer.lora_A.grad[lora]) > 0, (name, lora)
            assert torch.count_nonzero(layer.lora_B.grad[lora]) > 0, (name, lora)
        assert torch.count_nonzero(layer.router_weight.grad[own_rows]) > 0, name
        assert torch.count_nonzero(layer.shared_gate_weight.grad[0]) > 0, name


# --------------------------------------------------------------------------------------------- 4. trainable params
def test_only_mor_parameters_are_trainable_and_counted(tiny_model, small_spec):
    base_total = sum(p.numel() for p in tiny_model.parameters())
    model = patched(tiny_model, small_spec)
    layers = list(mor_ext.mor_layers(model))
    suffixes = {name.rpartition(".")[2] for name, _ in layers}
    assert suffixes == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(layers) == 2 * 7
    spec = small_spec
    expected = {"lora_A": 0, "lora_B": 0, "router_weight": 0, "shared_gate_weight": 0}
    for _, layer in layers:
        d_in, d_out = layer.in_features, layer.out_features
        assert layer.lora_A.shape == (spec.num_loras, spec.rank, d_in)
        assert layer.lora_B.shape == (spec.num_loras, d_out, spec.rank)
        assert layer.router_weight.shape == (spec.num_experts_total, d_in)
        assert layer.shared_gate_weight.shape == (spec.num_roles, d_in)
        assert layer.lora_A.dtype == layer.weight.dtype and layer.lora_A.device == layer.weight.device
        expected["lora_A"] += spec.num_loras * spec.rank * d_in
        expected["lora_B"] += spec.num_loras * d_out * spec.rank
        expected["router_weight"] += spec.num_experts_total * d_in
        expected["shared_gate_weight"] += spec.num_roles * d_in
    for name, p in model.named_parameters():
        assert p.requires_grad == (name.rpartition(".")[2] in expected), name
    stats = mor_ext.trainable_parameters(model)
    trainable = sum(expected.values())
    assert stats["trainable"] == trainable
    assert stats["total"] == base_total + trainable
    assert stats["percentage"] == pytest.approx(100 * trainable / (base_total + trainable))
    assert stats["per_kind"] == {**expected, "other": 0}


def test_print_trainable_parameters(tiny_model, small_spec, capsys):
    mor_ext.print_trainable_parameters(patched(tiny_model, small_spec))
    out = capsys.readouterr().out
    assert "trainable params:" in out and "all params:" in out and "lora_A" in out


# --------------------------------------------------------------------------------------------- 5. losses
def test_loss_adds_weighted_aux_and_orth(tiny_model, small_spec, input_ids):
    cfg = dict(aux_loss_coef=0.1, orth_loss_coef=0.05)
    model = patched(tiny_model, small_spec, **cfg)
    perturb_lora_B(model)
    out = model(input_ids=input_ids, role_ids=MIXED_ROLES, labels=input_ids)
    for key in ("loss", "ce_loss", "aux_loss", "orth_loss", "router_load"):
        assert key in out.keys(), key
    assert out.loss.requires_grad and out.aux_loss.requires_grad and out.orth_loss.requires_grad
    torch.testing.assert_close(out.loss, out.ce_loss + 0.1 * out.aux_loss + 0.05 * out.orth_loss)
    # The reported terms are what docs/spec.md §4 defines: CE of the logits; means over layers of the functional losses.
    ce = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), input_ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.ce_loss, ce)
    layers = [layer for _, layer in mor_ext.mor_layers(model)]
    orth = torch.stack([functional.orthogonal_loss(l.lora_A, l.lora_B, l.spec) for l in layers]).mean()
    torch.testing.assert_close(out.orth_loss, orth)
    # Every token routes to top_k LoRAs of its role, so each role's dispatch fractions sum to its top_k.
    assert set(out.router_load) == {"reasoner", "executor", "summarizer"}
    for role in small_spec.roles:
        fractions = out.router_load[role.name]
        assert len(fractions) == role.num_experts and all(0 <= f <= 1 for f in fractions)
        assert sum(fractions) == pytest.approx(role.top_k)
    # aux of one role: E * sum f_i P_i with sum f = K and sum P = 1, so at least K (uniform) per role here.
    assert out.aux_loss.item() >= sum(r.top_k for r in small_spec.roles) - 1e-4
    out.loss.backward()


def test_aux_loss_is_mean_of_layer_losses(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec)
    records = []

    def hook(module, args, output):
        x = args[0]
        routing = functional.route(x, module.router_weight, module.shared_gate_weight, roles, module.spec)
        records.append(functional.load_balance_loss(routing.router_probs, routing.lora_index, roles, module.spec))

    roles = MIXED_ROLES
    handles = [layer.register_forward_hook(hook) for _, layer in mor_ext.mor_layers(model)]
    out = model(input_ids=input_ids, role_ids=roles, labels=input_ids)
    for h in handles:
        h.remove()
    torch.testing.assert_close(out.aux_loss, torch.stack(records).mean())


def test_add_aux_losses_false_gives_plain_ce(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec, add_aux_losses=False)
    perturb_lora_B(model)
    out = model(input_ids=input_ids, role_ids=MIXED_ROLES, labels=input_ids)
    ce = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), input_ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, ce)
    assert torch.equal(out.loss, out.ce_loss)
    assert not out.aux_loss.requires_grad and not out.orth_loss.requires_grad  # reported, not trained on
    assert out.aux_loss > 0 and out.orth_loss > 0


def test_aux_loss_is_one_op_for_all_layers_and_equals_the_per_layer_mean(tiny_model, small_spec, input_ids,
                                                                         monkeypatch):
    """The load-balance loss of a model call: one batched op per forward (not one per layer), equal to
    the mean of each layer's own loss."""
    model = patched(tiny_model, small_spec)
    perturb_lora_B(model)
    calls, per_layer = [], []
    batched = mor_ext.ops.load_balance_loss_layers

    def counting(router_probs, lora_index, role_ids, spec):
        calls.append(len(router_probs))
        per_layer.extend(mor_ext.functional.load_balance_loss(p, i, role_ids, spec)
                         for p, i in zip(router_probs, lora_index))
        return batched(router_probs, lora_index, role_ids, spec)

    monkeypatch.setattr(mor_ext.ops, "load_balance_loss_layers", counting)
    out = model(input_ids=input_ids, role_ids=MIXED_ROLES, labels=input_ids)
    layers = len(list(mor_ext.mor_layers(model)))
    assert calls == [layers]
    torch.testing.assert_close(out.aux_loss, torch.stack(per_layer).mean())


def test_no_labels_in_eval_adds_nothing(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec)
    out = model(input_ids=input_ids, role_ids=MIXED_ROLES)
    assert out.loss is None and "aux_loss" not in out.keys()


def test_tuple_output_gets_the_total_loss(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec)
    perturb_lora_B(model)
    as_dict = model(input_ids=input_ids, role_ids=MIXED_ROLES, labels=input_ids)
    as_tuple = model(input_ids=input_ids, role_ids=MIXED_ROLES, labels=input_ids, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.loss)


# --------------------------------------------------------------------------------------------- 6. roles, generate, unpatch
def test_active_role_switches_outputs(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec)
    perturb_lora_B(model)
    base = logits_of(model, input_ids)
    for r, name in enumerate(small_spec.role_names):
        explicit = logits_of(model, input_ids, role_ids=torch.full_like(input_ids, r))
        with mor_ext.active_role(model, name):
            by_name = logits_of(model, input_ids)
            # Explicit role_ids win over the active role.
            assert torch.equal(logits_of(model, input_ids, role_ids=torch.full_like(input_ids, -1)), base)
        with mor_ext.active_role(model, r):
            by_id = logits_of(model, input_ids)
        assert torch.equal(by_name, explicit) and torch.equal(by_id, explicit)
        assert not torch.allclose(by_name, base, atol=1e-4)
    assert torch.equal(logits_of(model, input_ids), base)  # restored on exit
    mor_ext.set_active_role(model, "executor")
    assert torch.equal(logits_of(model, input_ids), logits_of(model, input_ids, role_ids=torch.ones_like(input_ids)))
    for off in (None, -1):
        mor_ext.set_active_role(model, off)
        assert torch.equal(logits_of(model, input_ids), base)
    mor_ext.clear_active_role(model)
    assert torch.equal(logits_of(model, input_ids), base)


def test_default_role_applies_without_role_ids(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec, default_role="summarizer")
    perturb_lora_B(model)
    assert torch.equal(logits_of(model, input_ids), logits_of(model, input_ids, role_ids=torch.full_like(input_ids, 2)))
    with mor_ext.active_role(model, None):  # None = the base model, whatever the default
        assert torch.equal(logits_of(model, input_ids), logits_of(model, input_ids, role_ids=torch.full_like(input_ids, -1)))


def _cache_kwarg(model) -> str:
    # transformers 5.2x names the KV-cache argument `cache`; earlier 5.x (5.17 on the GPU machines)
    # `past_key_values`.
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def _cache_of(output):
    return output.get("cache") if output.get("cache") is not None else output.get("past_key_values")


def test_generate_switches_role_between_calls_sharing_the_kv_cache(tiny_model, small_spec):
    model = patched(tiny_model, small_spec)
    perturb_lora_B(model, std=0.5)
    prompt = torch.tensor([[5, 17, 33, 9, 60]])
    greedy = dict(max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_logits=True)
    with mor_ext.active_role(model, "reasoner"):
        first = model.generate(prompt, **greedy)
    n1 = first.sequences.shape[1]
    # The last generated token is not fed back yet: the cache holds every other position.
    assert _cache_of(first).get_seq_length() == n1 - 1
    with mor_ext.active_role(model, "executor"):
        second = model.generate(first.sequences, **{_cache_kwarg(model): _cache_of(first)}, **greedy)
    seq = second.sequences
    assert seq.shape[1] == n1 + 3 and torch.equal(seq[:, :n1], first.sequences)

    # The same computation without a cache: positions that were cached ran as reasoner; the rest as executor.
    roles = torch.full_like(seq, 1)
    roles[:, : n1 - 1] = 0
    full = logits_of(model, seq, role_ids=roles)
    for i, step in enumerate(first.logits):
        torch.testing.assert_close(step[0], full[0, prompt.shape[1] - 1 + i], rtol=1e-4, atol=1e-4)
    for i, step in enumerate(second.logits):
        torch.testing.assert_close(step[0], full[0, n1 - 1 + i], rtol=1e-4, atol=1e-4)
    # And the role mattered: as reasoner throughout, the second segment's logits differ.
    reasoner_only = logits_of(model, seq, role_ids=torch.zeros_like(seq))
    assert not torch.allclose(reasoner_only[0, n1 - 1], full[0, n1 - 1], atol=1e-4)


def test_plain_generate_on_a_patched_model_matches_the_base_model(tiny_model, small_spec):
    prompt = torch.tensor([[5, 17, 33, 9, 60]])
    kwargs = dict(max_new_tokens=4, do_sample=False)
    base = tiny_model.generate(prompt, **kwargs)
    model = patched(tiny_model, small_spec)
    perturb_lora_B(model)
    assert torch.equal(model.generate(prompt, **kwargs), base)  # no role: -1 everywhere


def test_unpatch_restores_the_model(tiny_model, small_spec, input_ids):
    base = logits_of(tiny_model, input_ids)
    flags = {n: p.requires_grad for n, p in tiny_model.named_parameters()}
    types_before = {n: type(m) for n, m in tiny_model.named_modules()}
    tiny_model.lm_head.weight.requires_grad_(False)  # a flag that differs from the default
    flags["lm_head.weight"] = False
    model = patched(tiny_model, small_spec)
    perturb_lora_B(model)
    assert mor_ext.is_patched(model)
    out = mor_ext.unpatch(model)
    assert out is model and not mor_ext.is_patched(model)
    assert {n: type(m) for n, m in model.named_modules()} == types_before
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert "forward" not in model.__dict__ and not hasattr(model, "mor_config")
    assert torch.equal(logits_of(model, input_ids), base)
    mor_ext.patch(model, MoRConfig(spec=small_spec))  # can be patched again


def test_model_config_is_stored_with_resolved_targets(tiny_model, small_spec):
    model = patched(tiny_model, small_spec, lora_alpha=8.0)
    assert isinstance(model.mor_config, MoRConfig)
    assert model.mor_config.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert all(layer.scaling == 2.0 for _, layer in mor_ext.mor_layers(model))


def test_phi3_default_targets_the_fused_projections():
    model = mor_ext.patch(make_tiny_model("phi3"), MoRConfig(spec=MoRSpec.moragent(rank=2)))
    names = {name.rpartition(".")[2] for name, _ in mor_ext.mor_layers(model)}
    assert names == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}


def test_deepcopy_of_a_patched_model_is_independent(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec)
    clone = copy.deepcopy(model)
    perturb_lora_B(clone)
    roles = torch.zeros_like(input_ids)
    assert not torch.allclose(logits_of(clone, input_ids, role_ids=roles), logits_of(model, input_ids, role_ids=roles))
    with mor_ext.active_role(clone, "reasoner"):  # the clone has its own role context
        assert torch.equal(logits_of(model, input_ids), logits_of(model, input_ids, role_ids=roles * 0 - 1))


# --------------------------------------------------------------------------------------------- training paths
def test_dropout_in_training_drops_only_the_lora_input(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec, lora_dropout=0.5)
    perturb_lora_B(model)
    roles = torch.zeros_like(input_ids)
    eval_logits = logits_of(model, input_ids, role_ids=roles)
    model.train()
    torch.manual_seed(0)
    train_out = model(input_ids=input_ids, role_ids=roles, labels=input_ids)
    assert not torch.allclose(train_out.logits, eval_logits, atol=1e-4)
    train_out.loss.backward()
    layer = model.model.layers[0].self_attn.q_proj
    assert layer.lora_A.grad is not None and layer.router_weight.grad.abs().sum() > 0
    # Role -1 tokens stay exact in training too.
    with torch.no_grad():
        minus_one = model(input_ids=input_ids, role_ids=torch.full_like(input_ids, -1)).logits
    model.eval()
    assert torch.equal(minus_one, logits_of(model, input_ids))


def test_gradient_checkpointing_replays_the_roles(tiny_model_factory, small_spec, input_ids):
    grads = []
    for checkpointing in (False, True):
        model = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=small_spec))
        perturb_lora_B(model)
        if checkpointing:
            # transformers 5 renamed gradient_checkpointing_enable (deprecated) to activation_checkpointing_enable.
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        model.train()
        out = model(input_ids=input_ids, role_ids=MIXED_ROLES, labels=input_ids)
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)


def test_autocast_runs_the_adapter_in_the_autocast_dtype(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec)
    perturb_lora_B(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=input_ids, role_ids=MIXED_ROLES, labels=input_ids)
    out.loss.backward()
    layer = model.model.layers[0].mlp.down_proj
    assert layer.lora_A.grad.dtype == torch.float32 and layer.lora_A.grad.abs().sum() > 0
    full = logits_of(model, input_ids, role_ids=MIXED_ROLES)
    torch.testing.assert_close(out.logits.float(), full, rtol=0.1, atol=0.1)


# --------------------------------------------------------------------------------------------- 7. bad input
def test_role_id_out_of_range_names_the_value(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec)
    role_ids = torch.full_like(input_ids, -1)
    role_ids[1, 4] = 5
    with pytest.raises(ValueError, match=r"role_ids\[1, 4\] = 5"):
        model(input_ids=input_ids, role_ids=role_ids)
    role_ids[1, 4] = -3  # every other id is -1: must not take the base-only shortcut
    with pytest.raises(ValueError, match="-3"):
        model(input_ids=input_ids, role_ids=role_ids)


def test_role_ids_of_the_wrong_shape_or_type(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec)
    with pytest.raises(ValueError, match=r"shape of input_ids \[2, 8\].*got \[2, 7\]"):
        model(input_ids=input_ids, role_ids=torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model(input_ids=input_ids, role_ids=torch.zeros(16, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        model(input_ids=input_ids, role_ids=torch.zeros(2, 8))
    with pytest.raises(TypeError, match="Tensor"):
        model(input_ids=input_ids, role_ids=[[0] * 8] * 2)
    # A failed call leaves no role ids behind.
    assert mor_ext.patching._state(model).context.role_ids is None


def test_active_role_of_the_wrong_type(tiny_model, small_spec):
    import numpy as np

    model = patched(tiny_model, small_spec)
    with pytest.raises(TypeError, match="a role is a name .* or an id .*float"):
        mor_ext.set_active_role(model, 1.0)
    mor_ext.set_active_role(model, np.int64(1))  # integer-like ids are ids
    mor_ext.set_active_role(model, None)


def test_exception_inside_forward_leaves_no_stale_roles(tiny_model, small_spec, input_ids):
    model = patched(tiny_model, small_spec)
    perturb_lora_B(model)
    base = logits_of(model, input_ids)
    with pytest.raises(Exception):
        model(input_ids=input_ids, role_ids=torch.zeros_like(input_ids), attention_mask=torch.ones(3, 3, 3))
    assert torch.equal(logits_of(model, input_ids), base)


def test_unknown_role_name_in_active_role(tiny_model, small_spec):
    model = patched(tiny_model, small_spec)
    with pytest.raises(ValueError, match="planner.*reasoner"):
        with mor_ext.active_role(model, "planner"):
            pass
    with pytest.raises(ValueError, match="out of range"):
        mor_ext.set_active_role(model, 3)


def test_patching_twice_is_an_error(tiny_model, small_spec):
    model = patched(tiny_model, small_spec)
    with pytest.raises(RuntimeError, match="already patched"):
        mor_ext.patch(model, MoRConfig(spec=small_spec))
    with pytest.raises(ValueError, match="not patched"):
        mor_ext.unpatch(mor_ext.unpatch(model))


def test_target_modules_matching_nothing_lists_the_linear_names(tiny_model, small_spec):
    with pytest.raises(ValueError, match=r"match no nn.Linear.*'down_proj'.*'q_proj'"):
        patched(tiny_model, small_spec, target_modules=["qkv"])
    assert not mor_ext.is_patched(tiny_model)
    assert all(p.requires_grad for p in tiny_model.parameters())  # nothing was frozen
    with pytest.warns(UserWarning, match="typo_proj"):
        model = patched(tiny_model, small_spec, target_modules=["q_proj", "typo_proj"])
    assert {n.rpartition(".")[2] for n, _ in mor_ext.mor_layers(model)} == {"q_proj"}


def test_api_on_an_unpatched_model(tiny_model):
    with pytest.raises(ValueError, match="not patched"):
        mor_ext.set_active_role(tiny_model, "reasoner")


class _Block(nn.Module):
    """A plain (non-Hugging Face) model: two projections around a nonlinearity."""

    def __init__(self) -> None:
        super().__init__()
        self.up_proj = nn.Linear(8, 12)
        self.down_proj = nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.relu(self.up_proj(x)))


def test_patch_a_plain_module():
    torch.manual_seed(0)
    spec = MoRSpec.decoupled(("a", "b"), rank=2)
    block = _Block()
    x = torch.randn(3, 4, 8)
    base = block(x)
    model = mor_ext.patch(block, MoRConfig(spec=spec, context_role=None, target_modules=["up_proj", "down_proj"]))
    perturb_lora_B(model)
    roles = torch.tensor([[0, 1, -1, 0]] * 3)
    out = model(x, role_ids=roles)
    assert torch.equal(out[:, 2], base[:, 2]) and not torch.allclose(out[:, 0], base[:, 0])
    with pytest.raises(ValueError, match=r"inputs_embeds.shape\[:-1\] \[3, 4\]"):
        model(x, role_ids=roles[:, :3])


def test_patch_refuses_non_float_base_weights_and_changes_nothing():
    block = _Block()
    block.up_proj.weight = nn.Parameter(torch.zeros(12, 8, dtype=torch.int8), requires_grad=False)
    with pytest.raises(TypeError, match="up_proj.*int8"):
        mor_ext.patch(block, MoRConfig(spec=MoRSpec.decoupled(("a",), rank=2), context_role=None,
                                       target_modules=["up_proj", "down_proj"]))
    assert not mor_ext.is_patched(block) and block.down_proj.weight.requires_grad
