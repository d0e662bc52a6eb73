"""Importing checkpoints of the official MoRAgent code (docs/spec.md §6): layout, numerics, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import mor_ext
from mor_ext import (
    AdapterError,
    MoRConfig,
    MoRSpec,
    convert_official_state_dict,
    load_official_checkpoint,
    official_mask_to_role_ids,
)

from adapter_helpers import PARAMS, logits_of, random_role_ids

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
        torch.testing.assert_close(logits_of(model, input_ids, role_ids), want, atol=1e-4, rtol=1e-4)


def test_official_into_patched_model(tiny_model_factory, input_ids):
    sd = _official_state_dict(tiny_model_factory("llama"), prefix="")
    reference = load_official_checkpoint(tiny_model_factory("llama"), sd)
    patched = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=MoRSpec.moragent(16), lora_alpha=16))
    load_official_checkpoint(patched, sd)
    role_ids = random_role_ids(input_ids)
    assert torch.equal(logits_of(patched, input_ids, role_ids), logits_of(reference, input_ids, role_ids))

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
