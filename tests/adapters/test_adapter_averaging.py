"""Weight averaging of adapters (mor_ext and PEFT formats): the values, the checks, the written files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import mor_ext
from mor_ext import AdapterError, MoRConfig, MoRSpec, load_adapter, save_adapter
from mor_ext.adapters.averaging import average_adapters

from adapter_helpers import adapter_tensors, logits_of, randomize_adapter, random_role_ids


@pytest.fixture
def two_saved(tmp_path, tiny_model_factory, small_spec):
    """Two adapters of one config with different random values, and their tensors."""
    dirs, tensors = [], []
    for seed in (0, 1):
        model = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=small_spec))
        randomize_adapter(model, seed=seed)
        dirs.append(save_adapter(model, tmp_path / f"a{seed}"))
        tensors.append(adapter_tensors(model))
    return dirs, tensors


@pytest.mark.parametrize("weights", [None, [0.25, 0.75], [1.0, 0.0]])
def test_mor_average_is_the_weighted_mean_of_every_tensor(two_saved, tiny_model_factory, tmp_path, weights):
    dirs, tensors = two_saved
    out = average_adapters(dirs, tmp_path / "avg", weights=weights)
    w = weights or [0.5, 0.5]
    model = load_adapter(tiny_model_factory("llama"), out)
    got = adapter_tensors(model)
    assert set(got) == set(tensors[0])
    for name in got:
        torch.testing.assert_close(got[name], w[0] * tensors[0][name] + w[1] * tensors[1][name])
    document = json.loads((out / "mor_config.json").read_text())
    assert document["metadata"] == {"averaged_from": [str(d) for d in dirs], "weights": w}


def test_mor_average_with_weight_one_reproduces_the_adapter(two_saved, tiny_model_factory, tmp_path, input_ids):
    dirs, _ = two_saved
    out = average_adapters(dirs, tmp_path / "avg", weights=[0.0, 1.0])
    roles = random_role_ids(input_ids)
    expected = logits_of(load_adapter(tiny_model_factory("llama"), dirs[1]), input_ids, roles)
    torch.testing.assert_close(logits_of(load_adapter(tiny_model_factory("llama"), out), input_ids, roles), expected)


def test_mor_configs_that_differ_are_refused(two_saved, tiny_model_factory, tmp_path):
    dirs, _ = two_saved
    other = MoRConfig(spec=MoRSpec.moragent(rank=8))
    model = mor_ext.patch(tiny_model_factory("llama"), other)
    randomize_adapter(model, seed=3)
    third = save_adapter(model, tmp_path / "other")
    with pytest.raises(AdapterError, match="cannot average adapters that differ") as info:
        average_adapters([dirs[0], third], tmp_path / "avg")
    assert "config spec" in str(info.value) and "lora_A" in str(info.value)
    assert not (tmp_path / "avg").exists()


@pytest.mark.parametrize("weights, message", [
    ([0.5], "2 weights|1 weights"), ([0.7, 0.7], "sum to 1"), ([1.5, -0.5], "non-negative"),
    ([float("nan"), 1.0], "finite"),
])
def test_bad_weights(two_saved, tmp_path, weights, message):
    dirs, _ = two_saved
    with pytest.raises(ValueError, match=message):
        average_adapters(dirs, tmp_path / "avg", weights=weights)


def test_bad_sources(two_saved, tmp_path):
    dirs, _ = two_saved
    with pytest.raises(ValueError, match="at least two"):
        average_adapters(dirs[:1], tmp_path / "avg")
    with pytest.raises(ValueError, match="one of the sources"):
        average_adapters(dirs, dirs[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="not an adapter directory"):
        average_adapters([dirs[0], tmp_path / "empty"], tmp_path / "avg")


def _peft_adapter(tiny_model_factory, directory, seed, target_modules):
    peft = pytest.importorskip("peft")
    torch.manual_seed(seed)
    model = peft.get_peft_model(tiny_model_factory("llama"),
                                peft.LoraConfig(r=2, lora_alpha=4, target_modules=target_modules))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_()
    model.save_pretrained(directory)
    return load_file(str(directory / "adapter_model.safetensors"))


def test_peft_average(tiny_model_factory, tmp_path):
    # The second save lists its target modules in another order, as PEFT's sets do between saves.
    first = _peft_adapter(tiny_model_factory, tmp_path / "p0", 0, ["q_proj", "v_proj"])
    second = _peft_adapter(tiny_model_factory, tmp_path / "p1", 1, ["v_proj", "q_proj"])
    out = average_adapters([tmp_path / "p0", tmp_path / "p1"], tmp_path / "avg", weights=[0.25, 0.75])
    got = load_file(str(out / "adapter_model.safetensors"))
    assert set(got) == set(first) and len(got) > 0
    for name in got:
        torch.testing.assert_close(got[name], 0.25 * first[name] + 0.75 * second[name])
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 2 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert json.loads((out / "averaged_from.json").read_text())["weights"] == [0.25, 0.75]


def test_peft_rank_difference_and_mixed_formats_are_refused(two_saved, tiny_model_factory, tmp_path):
    peft = pytest.importorskip("peft")
    _peft_adapter(tiny_model_factory, tmp_path / "p0", 0, ["q_proj"])
    model = peft.get_peft_model(tiny_model_factory("llama"), peft.LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "r4")
    with pytest.raises(AdapterError, match="config r is 4"):
        average_adapters([tmp_path / "p0", tmp_path / "r4"], tmp_path / "avg")
    with pytest.raises(AdapterError, match="a peft adapter"):
        average_adapters([two_saved[0][0], tmp_path / "p0"], tmp_path / "avg")


def test_command_line(two_saved, tmp_path, capsys):
    from mor_ext.cli import main

    dirs, tensors = two_saved
    out = tmp_path / "avg"
    assert main(["adapter", "average", str(dirs[0]), str(dirs[1]), "--out", str(out), "--weights", "0.5", "0.5"]) == 0
    assert "the weighted mean of 2 adapters" in capsys.readouterr().out
    got = load_file(str(out / "adapter_model.safetensors"))
    name = next(iter(tensors[0]))
    torch.testing.assert_close(got[name], 0.5 * tensors[0][name] + 0.5 * tensors[1][name])
    assert main(["adapter", "average", str(dirs[0]), str(dirs[1]), "--out", str(tmp_path / "x"),
                 "--weights", "0.9", "0.9"]) == 2
    assert "sum to 1" in capsys.readouterr().err and not (tmp_path / "x").exists()
