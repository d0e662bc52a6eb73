"""Decoupled training (docs/spec.md §7): per-role learning rates applied exactly on the stacked
adapter, frozen roles, a role added to a trained adapter without changing its output, and
``train`` under the AgentFlux scheme with per-role loss masks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import mor_ext
from conftest import make_tiny_model
from mor_ext.adapters import add_roles
from mor_ext.schemes import RoleScheme
from mor_ext.train.roles import RoleStepScaler, role_slices

SPEC = mor_ext.MoRSpec(roles=(mor_ext.RoleSpec("selector", 2, 1), mor_ext.RoleSpec("arguments", 2, 1),
                              mor_ext.RoleSpec("summarizer", 0, 0)), rank=2)


def _model():
    model = mor_ext.patch(make_tiny_model("llama"), mor_ext.MoRConfig(spec=SPEC, context_role="selector"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(3, 128, (2, 12))
    return dict(input_ids=ids, role_ids=torch.tensor([[0] * 4 + [1] * 4 + [2] * 4] * 2), labels=ids)


def _step(model, lr, scales=None, steps=1):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.1)
    scaler = RoleStepScaler(model, scales).attach(optimizer) if scales else None
    for _ in range(steps):
        optimizer.zero_grad()
        model(**_batch()).loss.backward()
        optimizer.step()
    if scaler is not None:
        scaler.remove()
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _rows(params, role):
    out = []
    for name, value in params.items():
        rows = role_slices(SPEC, role)[name.rsplit(".", 1)[1]]
        out.append(value[rows].flatten())
    return torch.cat(out)


def test_per_role_learning_rates_are_exact_and_frozen_roles_do_not_move():
    base = _model()
    start = {n: p.detach().clone() for n, p in base.named_parameters() if p.requires_grad}
    scaled = _step(copy.deepcopy(base), 1e-2, {"selector": 0.5, "arguments": 0.0})
    half = _step(copy.deepcopy(base), 0.5e-2)
    full = _step(copy.deepcopy(base), 1e-2)
    torch.testing.assert_close(_rows(scaled, 0), _rows(half, 0), rtol=0, atol=1e-7)  # selector at half the rate
    assert torch.equal(_rows(scaled, 1), _rows(start, 1))  # frozen, weight decay included
    torch.testing.assert_close(_rows(scaled, 2), _rows(full, 2), rtol=0, atol=1e-7)  # summarizer at the full rate
    assert not torch.equal(_rows(scaled, 0), _rows(start, 0))
    several = _step(copy.deepcopy(base), 1e-2, {"selector": 0.0, "summarizer": 0.0}, steps=3)
    assert torch.equal(_rows(several, 0), _rows(start, 0)) and torch.equal(_rows(several, 2), _rows(start, 2))
    assert not torch.equal(_rows(several, 1), _rows(start, 1))
    with pytest.raises(ValueError, match="unknown role"):
        RoleStepScaler(base, {"reasoner": 0.0})


def test_a_role_added_to_a_trained_adapter_changes_no_output():
    model = _model()
    batch = _batch()
    with torch.no_grad():
        before = model(input_ids=batch["input_ids"], role_ids=batch["role_ids"]).logits
        base = model(input_ids=batch["input_ids"], role_ids=torch.full_like(batch["role_ids"], -1)).logits
    scheme = RoleScheme.agentflux({"f": "g"})
    add_roles(model, [mor_ext.RoleSpec("arguments:g", 0, 0)], scheme)
    assert model.mor_config.spec.role_names[-1] == "arguments:g" and model.mor_config.scheme == scheme
    with torch.no_grad():
        after = model(input_ids=batch["input_ids"], role_ids=batch["role_ids"]).logits
        new = model(input_ids=batch["input_ids"], role_ids=torch.full_like(batch["role_ids"], 3)).logits
    assert torch.equal(before, after)
    torch.testing.assert_close(new, base, rtol=0, atol=1e-6)  # the new role's B is zero: the base model


# ------------------------------------------------------------------------------------------- train()
@pytest.mark.bfcl  # training data goes through the BFCL decontamination check
def test_agentflux_training_selector_then_arguments(tmp_path: Path):
    from mor_ext.data.jsonl import write_trajectories
    from mor_ext.data.synthetic import generate
    from mor_ext.train import TrainConfig, train
    from tiny_model_dir import build_tiny_model_dir

    trajectories = generate(8, seed=0)
    write_trajectories(tmp_path / "data.jsonl", trajectories[:6])
    build_tiny_model_dir(tmp_path / "model", trajectories)
    common = dict(model=str(tmp_path / "model"), data=str(tmp_path / "data.jsonl"), rank=2, max_steps=3, lr=1e-2,
                  logging_steps=1, progress_bar=False)
    first = train(TrainConfig(out_dir=str(tmp_path / "selector"), scheme="agentflux", loss_roles=["selector"],
                              train_roles=["selector"], **common))
    saved = json.loads((first.adapter_dir / "mor_config.json").read_text())["config"]
    assert saved["scheme"]["name"] == "agentflux" and saved["context_role"] == "selector"
    from safetensors.torch import load_file

    weights = load_file(first.adapter_dir / "adapter_model.safetensors")
    spec = mor_ext.MoRSpec.from_dict(saved["spec"])
    for name, value in weights.items():
        if name.endswith("lora_B"):  # only the selector's B left zero
            assert value[spec.role_index("selector")].abs().sum() > 0
            assert value[spec.role_index("arguments")].abs().sum() == 0
    # then the arguments, one role per tool family added to the trained adapter
    second = train(TrainConfig(out_dir=str(tmp_path / "arguments"), scheme="agentflux", tool_groups="families",
                               init_adapter=str(first.adapter_dir), loss_roles=["arguments*"],
                               train_roles=["arguments*"], **common))
    saved2 = json.loads((second.adapter_dir / "mor_config.json").read_text())["config"]
    names = [r["name"] for r in saved2["spec"]["roles"]]
    assert names[:3] == ["selector", "arguments", "summarizer"] and any(n.startswith("arguments:") for n in names)
    weights2 = load_file(second.adapter_dir / "adapter_model.safetensors")
    for name, value in weights.items():
        if name.endswith("lora_B"):  # the frozen selector kept its trained weights exactly
            assert torch.equal(weights2[name][0], value[0])
