"""Adapter files (save/load, atomic writes, corruption and mismatch errors) and official-checkpoint import."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import mor_ext
from mor_ext import (
    AdapterError,
    MoRConfig,
    MoRSpec,
    convert_official_state_dict,
    load_adapter,
    load_official_checkpoint,
    official_mask_to_role_ids,
    save_adapter,
)
from mor_ext.adapters import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, PENDING_SUFFIX

PARAMS = ("lora_A", "lora_B", "router_weight", "shared_gate_weight")


# ============================================================================================ helpers
def _randomize(model: nn.Module, seed: int = 0) -> None:
    """Give every MoR parameter random values (B starts at zero, which would hide a lost load)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in mor_ext.mor_layers(model):
            for name in PARAMS:
                p = getattr(layer, name)
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def _adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {f"{n}.{p}": getattr(layer, p) for n, layer in mor_ext.mor_layers(model) for p in PARAMS}


def _adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in _adapter_parameters(model).items()}


def _role_ids(input_ids: torch.Tensor, num_roles: int = 3, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-1, num_roles, input_ids.shape, generator=gen)


def _logits(model: nn.Module, input_ids: torch.Tensor, role_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, role_ids=role_ids).logits


@pytest.fixture
def saved(tmp_path, tiny_model_factory, small_spec):
    """A patched, randomised llama and the directory of its saved adapter."""
    model = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=small_spec))
    _randomize(model)
    directory = save_adapter(model, tmp_path / "adapter", metadata={"step": 7})
    return model, directory


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_config(directory: Path, mutate) -> None:
    """Edit ``mor_config.json`` by hand: ``mutate(document)`` in place."""
    config = directory / ADAPTER_CONFIG_NAME
    doc = json.loads(config.read_text())
    mutate(doc)
    config.write_text(json.dumps(doc))


def _reseal(doc: dict, weights: Path, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Make a config document describe ``weights`` again (checksum and, given tensors, the table)."""
    doc["weights"]["sha256"] = _sha256(weights)
    if tensors is not None:
        doc["tensors"] = {k: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for k, t in tensors.items()}


def _rewrite(directory: Path, mutate) -> None:
    """Edit the weights of a saved adapter by hand and re-seal the pair (table and checksum), so that
    only the edit (a missing, extra, reshaped or recast tensor) is wrong."""
    weights = directory / ADAPTER_WEIGHTS_NAME
    tensors = dict(load_file(str(weights)))
    mutate(tensors)
    save_file(tensors, str(weights))
    _edit_config(directory, lambda doc: _reseal(doc, weights, tensors))


FIRST_KEY = "model.layers.0.self_attn.q_proj.lora_A"


# ============================================================================================ round trip
def test_round_trip_into_fresh_model(family, tiny_model_factory, small_spec, input_ids, tmp_path):
    model = mor_ext.patch(tiny_model_factory(family), MoRConfig(spec=small_spec, lora_alpha=8))
    _randomize(model)
    directory = save_adapter(model, tmp_path / "a", metadata={"note": "hi"})

    fresh = tiny_model_factory(family)  # same base weights, unpatched
    assert load_adapter(fresh, directory) is fresh
    assert mor_ext.is_patched(fresh)
    assert fresh.mor_config.to_dict() == model.mor_config.to_dict()
    want, got = _adapter_tensors(model), _adapter_tensors(fresh)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    role_ids = _role_ids(input_ids)
    assert torch.equal(_logits(fresh, input_ids, role_ids), _logits(model, input_ids, role_ids))


def test_file_format(saved):
    model, directory = saved
    assert sorted(p.name for p in directory.iterdir()) == [ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME]
    tensors = load_file(str(directory / ADAPTER_WEIGHTS_NAME))
    assert set(tensors) == set(_adapter_tensors(model))  # only MoR parameters, no base weights
    assert all(k.rsplit(".", 1)[1] in PARAMS for k in tensors)
    doc = json.loads((directory / ADAPTER_CONFIG_NAME).read_text())
    assert doc["format"] == "mor_ext.adapter" and doc["format_version"] == 1
    assert doc["mor_ext_version"] == mor_ext.__version__ and doc["torch_version"] == torch.__version__
    assert doc["config"] == model.mor_config.to_dict()
    assert doc["metadata"] == {"step": 7}
    assert doc["tensors"][FIRST_KEY] == {"shape": [14, 4, 64], "dtype": "float32"}
    assert doc["weights"]["sha256"] == _sha256(directory / ADAPTER_WEIGHTS_NAME)


def test_metadata_must_be_json(tiny_model_factory, small_spec, tmp_path):
    model = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=small_spec))
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        save_adapter(model, tmp_path / "m", metadata={"t": torch.zeros(1)})
    assert not (tmp_path / "m").exists()  # nothing written, not even the directory


def test_round_trip_into_patched_model_keeps_parameter_identity(saved, tiny_model_factory, small_spec, input_ids):
    model, directory = saved
    other = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=small_spec))
    before = _adapter_parameters(other)
    optimizer = torch.optim.SGD([p for p in other.parameters() if p.requires_grad], lr=0.1)
    load_adapter(other, directory)
    after = _adapter_parameters(other)
    assert all(before[k] is after[k] for k in before)
    assert all(p.requires_grad for p in after.values())
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in after.values()}
    role_ids = _role_ids(input_ids)
    assert torch.equal(_logits(other, input_ids, role_ids), _logits(model, input_ids, role_ids))


def test_save_requires_patched_model(tiny_model_factory, tmp_path):
    with pytest.raises(AdapterError, match="patch"):
        save_adapter(tiny_model_factory("llama"), tmp_path / "x")
    assert not (tmp_path / "x" / ADAPTER_CONFIG_NAME).exists()


# ============================================================================================ atomic save
# save_adapter's renames, in order: staged weights, staged config (temporary file -> *.pending), then
# the commit: weights, config (*.pending -> final name).
SAVE_RENAMES = [ADAPTER_WEIGHTS_NAME + PENDING_SUFFIX, ADAPTER_CONFIG_NAME + PENDING_SUFFIX,
                ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME]


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
def test_a_crash_at_any_rename_leaves_a_whole_adapter(saved, tiny_model_factory, monkeypatch, crash_at):
    """Whichever rename a save dies at, the directory loads as the old adapter or the new one, never
    a mix and never an error; the next save leaves only the two files."""
    model, directory = saved
    old = _adapter_tensors(model)
    with torch.no_grad():
        for _, layer in mor_ext.mor_layers(model):
            layer.lora_B.add_(1.0)  # a second version of the adapter
    new = _adapter_tensors(model)

    real_replace, calls = os.replace, []

    def crash_at_nth(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == crash_at:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_at_nth)
    with pytest.raises(OSError, match="simulated crash"):
        save_adapter(model, directory)
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls == SAVE_RENAMES[:crash_at]
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]  # no temporary files

    # Up to the weights' commit the old pair is intact; after it, the staged config describes the
    # new weights and the load takes it (with a warning saying so).
    expect = new if crash_at == 4 else old
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _adapter_tensors(load_adapter(tiny_model_factory("llama"), directory))
    assert all(torch.equal(expect[k], got[k]) for k in expect)
    assert any("save was interrupted" in str(w.message) for w in caught) == (crash_at == 4)

    save_adapter(model, directory)  # a complete save commits everything
    assert sorted(p.name for p in directory.iterdir()) == [ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME]
    got = _adapter_tensors(load_adapter(tiny_model_factory("llama"), directory))
    assert all(torch.equal(new[k], got[k]) for k in new)


def test_weights_from_another_save_are_refused(saved, tiny_model_factory):
    """Weights that no config describes (e.g. copied over by hand): the checksum refuses them."""
    model, directory = saved
    other = save_adapter(model, directory.parent / "other")
    with torch.no_grad():
        for _, layer in mor_ext.mor_layers(model):
            layer.lora_B.add_(1.0)
    save_adapter(model, other)
    (directory / ADAPTER_WEIGHTS_NAME).write_bytes((other / ADAPTER_WEIGHTS_NAME).read_bytes())
    with pytest.raises(AdapterError, match="different saves") as err:
        load_adapter(tiny_model_factory("llama"), directory)
    assert ADAPTER_WEIGHTS_NAME in str(err.value) and "sha256" in str(err.value)


def test_crash_before_first_rename_keeps_previous_adapter(saved, tiny_model_factory, monkeypatch):
    model, directory = saved
    old = _adapter_tensors(model)
    with torch.no_grad():
        for _, layer in mor_ext.mor_layers(model):
            layer.lora_A.mul_(2.0)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(model, directory)
    monkeypatch.undo()
    assert sorted(p.name for p in directory.iterdir()) == [ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME]
    fresh = load_adapter(tiny_model_factory("llama"), directory)  # the previous adapter, intact
    got = _adapter_tensors(fresh)
    assert all(torch.equal(old[k], got[k]) for k in old)


# ============================================================================================ corrupt files
def test_truncated_weights(saved, tiny_model_factory):
    _, directory = saved
    weights = directory / ADAPTER_WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(AdapterError, match="sha256") as err:
        load_adapter(tiny_model_factory("llama"), directory)
    assert str(weights) in str(err.value)


def test_truncated_weights_with_matching_checksum(saved, tiny_model_factory):
    _, directory = saved
    weights = directory / ADAPTER_WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])
    _edit_config(directory, lambda doc: _reseal(doc, weights))
    with pytest.raises(AdapterError, match="not a readable safetensors file") as err:
        load_adapter(tiny_model_factory("llama"), directory)
    assert str(weights) in str(err.value)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda doc: doc["weights"].update(sha256="0" * 64), "does not match mor_config.json"),
        (lambda doc: doc["weights"].pop("sha256"), "no sha256 of the weights file"),
        (lambda doc: doc.update(format_version=99), "format_version 99, but this mor_ext reads versions up to 1"),
        (lambda doc: doc.pop("tensors"), "missing its 'tensors' section"),
        (lambda doc: doc["tensors"][FIRST_KEY].update(shape=[1, 2, 3]), f"(?s)disagrees with the tensor table.*{FIRST_KEY}: config says \\[1, 2, 3\\]"),
        (lambda doc: doc["config"].update(lora_alfa=3), "invalid MoRConfig.*lora_alfa"),
    ],
    ids=["checksum", "no-checksum", "version", "no-table", "table", "config-typo"],
)
def test_inconsistent_config(saved, tiny_model_factory, mutate, message):
    _, directory = saved
    _edit_config(directory, mutate)
    model = tiny_model_factory("llama")
    with pytest.raises(AdapterError, match=message) as err:
        load_adapter(model, directory)
    assert ADAPTER_CONFIG_NAME in str(err.value) or ADAPTER_WEIGHTS_NAME in str(err.value)
    assert not mor_ext.is_patched(model)  # refused before touching the model


@pytest.mark.parametrize("garbage", ["{not json", "", "[1, 2]", '{"format": "peft"}'])
def test_garbage_config(saved, tiny_model_factory, garbage):
    _, directory = saved
    config = directory / ADAPTER_CONFIG_NAME
    config.write_text(garbage)
    model = tiny_model_factory("llama")
    with pytest.raises(AdapterError) as err:
        load_adapter(model, directory)
    assert str(config) in str(err.value)
    assert not mor_ext.is_patched(model)  # nothing happened to the model


def test_missing_files(saved, tiny_model_factory, tmp_path):
    _, directory = saved
    with pytest.raises(AdapterError, match="not a mor_ext adapter directory"):
        load_adapter(tiny_model_factory("llama"), tmp_path / "nowhere")
    (directory / ADAPTER_WEIGHTS_NAME).unlink()
    with pytest.raises(AdapterError, match="adapter_model.safetensors not found"):
        load_adapter(tiny_model_factory("llama"), directory)


# ============================================================================================ mismatches
def test_missing_key(saved, tiny_model_factory):
    _, directory = saved
    _rewrite(directory, lambda t: t.pop(FIRST_KEY))
    with pytest.raises(AdapterError, match="missing keys \\(1") as err:
        load_adapter(tiny_model_factory("llama"), directory)
    assert FIRST_KEY in str(err.value)
    with pytest.warns(UserWarning, match="1 missing key"):
        load_adapter(tiny_model_factory("llama"), directory, strict=False)


def test_unexpected_key(saved, tiny_model_factory, small_spec):
    model, directory = saved
    extra = "model.layers.9.self_attn.q_proj.lora_A"
    _rewrite(directory, lambda t: t.__setitem__(extra, torch.zeros(14, 4, 64)))
    with pytest.raises(AdapterError, match="unexpected keys \\(1") as err:
        load_adapter(tiny_model_factory("llama"), directory)
    assert extra in str(err.value)
    with pytest.warns(UserWarning, match="1 unexpected key"):
        loaded = load_adapter(tiny_model_factory("llama"), directory, strict=False)
    want, got = _adapter_tensors(model), _adapter_tensors(loaded)
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_wrong_shapes_all_listed(saved, tiny_model_factory):
    _, directory = saved
    second = "model.layers.1.mlp.down_proj.router_weight"

    def mutate(t):
        t[FIRST_KEY] = torch.zeros(14, 4, 32)
        t[second] = torch.zeros(10, 96)

    _rewrite(directory, mutate)
    fresh = tiny_model_factory("llama")
    with pytest.raises(AdapterError, match="shape mismatches \\(2\\)") as err:
        load_adapter(fresh, directory)
    assert not mor_ext.is_patched(fresh)  # patched for the load, unpatched when it failed
    assert not any(isinstance(m, mor_ext.MoRLinear) for m in fresh.modules())
    msg = str(err.value)
    assert f"{FIRST_KEY}: expected [14, 4, 64], got [14, 4, 32]" in msg
    assert f"{second}: expected [11, 96], got [10, 96]" in msg


def test_wrong_dtype(saved, tiny_model_factory, input_ids):
    model, directory = saved
    _rewrite(directory, lambda t: t.__setitem__(FIRST_KEY, t[FIRST_KEY].to(torch.bfloat16)))
    with pytest.raises(AdapterError, match="dtype mismatches \\(1; pass cast_dtype=True") as err:
        load_adapter(tiny_model_factory("llama"), directory)
    assert f"{FIRST_KEY}: expected float32, got bfloat16" in str(err.value)
    loaded = load_adapter(tiny_model_factory("llama"), directory, cast_dtype=True)
    got = dict(mor_ext.mor_layers(loaded))["model.layers.0.self_attn.q_proj"].lora_A
    want = dict(mor_ext.mor_layers(model))["model.layers.0.self_attn.q_proj"].lora_A
    assert got.dtype == torch.float32 and torch.equal(got, want.to(torch.bfloat16).float())


def test_different_spec(saved, tiny_model_factory):
    _, directory = saved
    other = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=MoRSpec.moragent(rank=8)))
    with pytest.raises(AdapterError, match="different MoR config") as err:
        load_adapter(other, directory)
    assert "spec.rank: model has 8, adapter has 4" in str(err.value)

    other = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=MoRSpec.moragent(rank=4), lora_alpha=8))
    with pytest.raises(AdapterError, match="scaling \\(lora_alpha / rank\\): model has 2.0"):
        load_adapter(other, directory)

    other = mor_ext.patch(
        tiny_model_factory("llama"), MoRConfig(spec=MoRSpec.moragent(rank=4), target_modules=["q_proj", "v_proj"])
    )
    with pytest.raises(AdapterError, match="target_modules: model has \\['q_proj', 'v_proj'\\]"):
        load_adapter(other, directory)


# ============================================================================================ official
OFFICIAL_ORDER = [4, 0, 1, 2, 3, 9, 5, 6, 7, 8, 13, 10, 11, 12]
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _official_module_tensors(d_in: int, d_out: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random official parameters of one LinearMoELora (rank 16, 14 LoRAs)."""
    def rnd(*shape, scale):
        return torch.randn(*shape, generator=gen) * scale

    t = {
        "lora_moe_A": rnd(14, d_in, 16, scale=0.2),
        "lora_moe_B": rnd(14, 16, d_out, scale=0.2),
        "lora_gate_r.weight": rnd(4, d_in, scale=0.5),
        "lora_gate_e.weight": rnd(4, d_in, scale=0.5),
        "lora_gate_s.weight": rnd(3, d_in, scale=0.5),
    }
    for c in range(3):
        t[f"lora_gates_share.{c}.weight"] = rnd(1, d_in, scale=0.5)
    return t


def _official_state_dict(base: nn.Module, seed: int = 0, prefix: str = "base_model.model.") -> dict[str, torch.Tensor]:
    """An official-format state dict for every target linear of ``base``, built by hand: half the
    modules in the ``lora_moe_A.default`` form, half without the adapter suffix; base weights included."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    linears = [(n, m) for n, m in base.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in TARGETS]
    for i, (name, linear) in enumerate(linears):
        suffix = ".default" if i % 2 == 0 else ""
        sd[f"{prefix}{name}.weight"] = linear.weight.detach().clone()
        if linear.bias is not None:
            sd[f"{prefix}{name}.bias"] = linear.bias.detach().clone()
        for key, value in _official_module_tensors(linear.in_features, linear.out_features, gen).items():
            if key.startswith("lora_moe_"):
                key = key + suffix
            sd[f"{prefix}{name}.{key}"] = value
    return sd


def _official_params(sd: dict[str, torch.Tensor], name: str, prefix: str = "base_model.model.") -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if key.startswith(f"{prefix}{name}."):
            rest = key[len(prefix) + len(name) + 1 :].removesuffix(".default")
            out[rest] = value
    return out


def _topk_renorm(logits: torch.Tensor, k: int) -> torch.Tensor:
    probs = F.softmax(logits, dim=2, dtype=torch.float)
    values, index = torch.topk(probs, k=k, dim=-1)
    probs = torch.zeros_like(probs).scatter(dim=-1, index=index, src=values)
    return probs / probs.sum(dim=-1, keepdim=True)


def official_forward(x: torch.Tensor, linear: nn.Linear, p: dict[str, torch.Tensor], mask_moe: torch.Tensor) -> torch.Tensor:
    """The official LinearMoELora.forward (moelora.py), rewritten: x [b, n, d_in], mask_moe [b, n, 3]."""
    out = torch.einsum("bnd,edh->bneh", x, p["lora_moe_A"])
    out = torch.einsum("bneh,ehd->bned", out, p["lora_moe_B"])
    rw_r = _topk_renorm(x @ p["lora_gate_r.weight"].T, 3).to(x.dtype)
    rw_e = _topk_renorm(x @ p["lora_gate_e.weight"].T, 3).to(x.dtype)
    rw_s = _topk_renorm(x @ p["lora_gate_s.weight"].T, 2).to(x.dtype)
    shares = [torch.sigmoid(x @ p[f"lora_gates_share.{c}.weight"].T) for c in range(3)]
    routing = torch.cat((rw_r, shares[0], rw_e, shares[1], rw_s, shares[2]), dim=2)  # [b, n, 14]
    mask = torch.cat(
        (
            mask_moe[:, :, 0:1].repeat(1, 1, 5),
            mask_moe[:, :, 1:2].repeat(1, 1, 5),
            mask_moe[:, :, 2:3].repeat(1, 1, 4),
        ),
        dim=2,
    ) * routing
    return F.linear(x, linear.weight, linear.bias) + torch.einsum("bned,bne->bned", out, mask).sum(2)


def _random_mask(b: int, n: int, seed: int) -> torch.Tensor:
    """One-hot rows over 3 roles, plus all-zero rows (role -1)."""
    gen = torch.Generator().manual_seed(seed)
    roles = torch.randint(-1, 3, (b, n), generator=gen)
    mask = torch.zeros(b, n, 3)
    mask[roles >= 0] = F.one_hot(roles[roles >= 0], 3).float()
    return mask


def test_convert_official_state_dict_layout(tiny_model_factory):
    base = tiny_model_factory("llama")
    sd = _official_state_dict(base)
    canonical = convert_official_state_dict(sd)
    name = "model.layers.0.self_attn.q_proj"  # base_model.model. stripped
    p = _official_params(sd, name)
    assert set(canonical) == {f"{n}.{k}" for n, _ in base.named_modules() if n.rsplit(".", 1)[-1] in TARGETS for k in PARAMS}
    for l, o in enumerate(OFFICIAL_ORDER):
        assert torch.equal(canonical[f"{name}.lora_A"][l], p["lora_moe_A"][o].T)
        assert torch.equal(canonical[f"{name}.lora_B"][l], p["lora_moe_B"][o].T)
    assert torch.equal(
        canonical[f"{name}.router_weight"],
        torch.cat([p["lora_gate_r.weight"], p["lora_gate_e.weight"], p["lora_gate_s.weight"]]),
    )
    assert torch.equal(
        canonical[f"{name}.shared_gate_weight"], torch.cat([p[f"lora_gates_share.{c}.weight"] for c in range(3)])
    )
    assert canonical[f"{name}.lora_A"].shape == (14, 16, 64) and canonical[f"{name}.lora_A"].is_contiguous()


@pytest.mark.parametrize("family_name", ["llama", "qwen2"])
def test_official_layers_match_official_formula(tiny_model_factory, family_name):
    base = tiny_model_factory(family_name)
    sd = _official_state_dict(base)
    originals = {n: m for n, m in base.named_modules() if isinstance(m, nn.Linear)}
    model = load_official_checkpoint(base, sd)
    layers = dict(mor_ext.mor_layers(model))
    assert sorted(n.rsplit(".", 1)[-1] for n in layers) == sorted(TARGETS * 2)
    assert model.mor_config.scaling == 1.0 and model.mor_config.spec == MoRSpec.moragent(16)
    mask = _random_mask(2, 6, seed=3)
    role_ids = official_mask_to_role_ids(mask)
    assert (role_ids == -1).any() and (role_ids >= 0).any()
    gen = torch.Generator().manual_seed(4)
    for i, (name, layer) in enumerate(sorted(layers.items())):
        assert layer.base_layer is originals[name]
        x = torch.randn(2, 6, layer.in_features, generator=gen)
        with torch.no_grad():
            got = layer(x, role_ids=role_ids)
            want = official_forward(x, originals[name], _official_params(sd, name), mask)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"layer {name}")


class _OfficialLinear(nn.Module):
    """Stand-in for LinearMoELora inside a base model: reads the role mask from a shared dict."""

    def __init__(self, linear: nn.Linear, params: dict[str, torch.Tensor], mask_box: dict):
        super().__init__()
        self.linear, self.params, self.mask_box = linear, params, mask_box

    def forward(self, x):
        return official_forward(x, self.linear, self.params, self.mask_box["mask"])


def test_official_model_logits(tiny_model_factory, input_ids, tmp_path):
    sd = _official_state_dict(tiny_model_factory("qwen2"), prefix="base_model.model.")
    official, mask_box = tiny_model_factory("qwen2"), {}
    for name, m in list(official.named_modules()):
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS:
            parent, _, child = name.rpartition(".")
            setattr(official.get_submodule(parent), child, _OfficialLinear(m, _official_params(sd, name), mask_box))
    mask_box["mask"] = _random_mask(*input_ids.shape, seed=5)
    with torch.no_grad():
        want = official(input_ids=input_ids).logits

    # From a .bin file (torch.save, loaded with weights_only=True) and a .safetensors file.
    torch.save(sd, tmp_path / "official.bin")
    save_file(sd, str(tmp_path / "official.safetensors"))
    role_ids = official_mask_to_role_ids(mask_box["mask"])
    for path in (tmp_path / "official.bin", tmp_path / "official.safetensors"):
        model = load_official_checkpoint(tiny_model_factory("qwen2"), path)
        # fp32 rounding only: the two formulations sum the LoRAs in different orders (the official
        # one over a [T, 14, d_out] tensor, mor_ext's decode-sized path one LoRA GEMM at a time), and a
        # layout error would be off by the size of the logits, not 1e-4.
        torch.testing.assert_close(_logits(model, input_ids, role_ids), want, atol=1e-4, rtol=1e-4)


def test_official_into_patched_model(tiny_model_factory, input_ids):
    sd = _official_state_dict(tiny_model_factory("llama"), prefix="")
    reference = load_official_checkpoint(tiny_model_factory("llama"), sd)
    patched = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=MoRSpec.moragent(16), lora_alpha=16))
    load_official_checkpoint(patched, sd)
    role_ids = _role_ids(input_ids)
    assert torch.equal(_logits(patched, input_ids, role_ids), _logits(reference, input_ids, role_ids))

    wrong = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=MoRSpec.moragent(16), lora_alpha=8))
    with pytest.raises(AdapterError, match="differ from the official layout"):
        load_official_checkpoint(wrong, sd)


def test_official_unmatched_modules(tiny_model_factory):
    sd = _official_state_dict(tiny_model_factory("llama"))
    gen = torch.Generator().manual_seed(0)
    for key, value in _official_module_tensors(64, 64, gen).items():
        sd[f"base_model.model.vision.proj.{key}"] = value
    with pytest.raises(AdapterError, match="no matching nn.Linear") as err:
        load_official_checkpoint(tiny_model_factory("llama"), sd)
    assert "vision.proj" in str(err.value)

    # A patched model whose layers are not all in the checkpoint.
    sd = {k: v for k, v in _official_state_dict(tiny_model_factory("llama")).items() if ".q_proj." in k}
    patched = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=MoRSpec.moragent(16)))
    with pytest.raises(AdapterError, match="MoR layers of the model with no official weights \\(12\\)") as err:
        load_official_checkpoint(patched, sd)
    assert "model.layers.0.self_attn.k_proj" in str(err.value)
    # An unpatched model is patched on exactly the checkpoint's modules.
    model = load_official_checkpoint(tiny_model_factory("llama"), sd)
    assert model.mor_config.target_modules == ["q_proj"]


def test_official_missing_gates(tiny_model_factory):
    sd = _official_state_dict(tiny_model_factory("llama"))
    peft_style = {k: v for k, v in sd.items() if "lora_gate" not in k}
    with pytest.raises(AdapterError, match="lacks routers or shared gates for 14 module") as err:
        load_official_checkpoint(tiny_model_factory("llama"), peft_style)
    assert "lora_gate_r, lora_gate_e, lora_gate_s, lora_gates_share.0" in str(err.value)
    one_missing = {k: v for k, v in sd.items() if k != "base_model.model.model.layers.1.mlp.up_proj.lora_gates_share.2.weight"}
    with pytest.raises(AdapterError, match="for 1 module") as err:
        convert_official_state_dict(one_missing)
    assert "model.layers.1.mlp.up_proj: lora_gates_share.2" in str(err.value)
    with pytest.warns(UserWarning, match="fresh initialisation") as record:
        model = load_official_checkpoint(tiny_model_factory("llama"), peft_style, allow_missing_gates=True)
    assert len(record) == 1
    layer = dict(mor_ext.mor_layers(model))["model.layers.0.self_attn.q_proj"]
    p = _official_params(sd, "model.layers.0.self_attn.q_proj")
    assert torch.equal(layer.lora_A[1], p["lora_moe_A"][0].T)  # the LoRAs themselves are loaded


def test_official_malformed(tiny_model_factory, tmp_path):
    sd = _official_state_dict(tiny_model_factory("llama"))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_gate_s.weight"
    sd[key] = torch.zeros(4, 64)
    with pytest.raises(AdapterError, match="lora_gate_s.weight: expected \\[3, 64\\], got \\[4, 64\\]"):
        convert_official_state_dict(sd)
    with pytest.raises(AdapterError, match="no official MoRAgent tensors"):
        convert_official_state_dict({"model.embed_tokens.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="exactly 3 roles"):
        convert_official_state_dict(sd, num_roles=2)
    bad = tmp_path / "broken.bin"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(AdapterError, match="broken.bin is not a readable torch checkpoint"):
        load_official_checkpoint(tiny_model_factory("llama"), bad)


def test_official_mask_to_role_ids():
    mask = torch.tensor([[[1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0]]])
    assert official_mask_to_role_ids(mask).tolist() == [[0, -1, 2, 1]]
    assert official_mask_to_role_ids(mask.float()).dtype == torch.long
    two = mask.clone()
    two[0, 3] = torch.tensor([1, 1, 0])
    with pytest.raises(ValueError, match=r"mask_moe\[0, 3\] sets roles \[0, 1\]"):
        official_mask_to_role_ids(two)
    half = mask.float()
    half[0, 2, 2] = 0.5
    with pytest.raises(ValueError, match=r"mask_moe\[0, 2, 2\] = 0.5"):
        official_mask_to_role_ids(half)
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        official_mask_to_role_ids(torch.zeros(2, 4))


def test_loading_non_finite_values_warns(saved, tiny_model_factory):
    model, directory = saved
    with torch.no_grad():
        next(iter(mor_ext.mor_layers(model)))[1].lora_B[0, 0, 0] = float("nan")
    save_adapter(model, directory)
    with pytest.warns(UserWarning, match="1 tensor\\(s\\) hold NaN or inf"):
        load_adapter(tiny_model_factory("llama"), directory)
