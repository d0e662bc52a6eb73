"""mor_ext's own adapter files: save/load round trips, atomic writes, corruption and mismatch errors."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mor_ext
from mor_ext import AdapterError, MoRConfig, MoRSpec, load_adapter, save_adapter
from mor_ext.adapters import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, PENDING_SUFFIX

from adapter_helpers import PARAMS, adapter_parameters, adapter_tensors, logits_of, randomize_adapter, random_role_ids



@pytest.fixture
def saved(tmp_path, tiny_model_factory, small_spec):
    """A patched, randomised llama and the directory of its saved adapter."""
    model = mor_ext.patch(tiny_model_factory("llama"), MoRConfig(spec=small_spec))
    randomize_adapter(model)
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
    randomize_adapter(model)
    directory = save_adapter(model, tmp_path / "a", metadata={"note": "hi"})

    fresh = tiny_model_factory(family)  # same base weights, unpatched
    assert load_adapter(fresh, directory) is fresh
    assert mor_ext.is_patched(fresh)
    assert fresh.mor_config.to_dict() == model.mor_config.to_dict()
    want, got = adapter_tensors(model), adapter_tensors(fresh)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    role_ids = random_role_ids(input_ids)
    assert torch.equal(logits_of(fresh, input_ids, role_ids), logits_of(model, input_ids, role_ids))


def test_file_format(saved):
    model, directory = saved
    assert sorted(p.name for p in directory.iterdir()) == [ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME]
    tensors = load_file(str(directory / ADAPTER_WEIGHTS_NAME))
    assert set(tensors) == set(adapter_tensors(model))  # only MoR parameters, no base weights
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
    before = adapter_parameters(other)
    optimizer = torch.optim.SGD([p for p in other.parameters() if p.requires_grad], lr=0.1)
    load_adapter(other, directory)
    after = adapter_parameters(other)
    assert all(before[k] is after[k] for k in before)
    assert all(p.requires_grad for p in after.values())
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in after.values()}
    role_ids = random_role_ids(input_ids)
    assert torch.equal(logits_of(other, input_ids, role_ids), logits_of(model, input_ids, role_ids))


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
    old = adapter_tensors(model)
    with torch.no_grad():
        for _, layer in mor_ext.mor_layers(model):
            layer.lora_B.add_(1.0)  # a second version of the adapter
    new = adapter_tensors(model)

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
        got = adapter_tensors(load_adapter(tiny_model_factory("llama"), directory))
    assert all(torch.equal(expect[k], got[k]) for k in expect)
    assert any("save was interrupted" in str(w.message) for w in caught) == (crash_at == 4)

    save_adapter(model, directory)  # a complete save commits everything
    assert sorted(p.name for p in directory.iterdir()) == [ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME]
    got = adapter_tensors(load_adapter(tiny_model_factory("llama"), directory))
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
    old = adapter_tensors(model)
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
    got = adapter_tensors(fresh)
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
    want, got = adapter_tensors(model), adapter_tensors(loaded)
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


def test_loading_non_finite_values_warns(saved, tiny_model_factory):
    model, directory = saved
    with torch.no_grad():
        next(iter(mor_ext.mor_layers(model)))[1].lora_B[0, 0, 0] = float("nan")
    save_adapter(model, directory)
    with pytest.warns(UserWarning, match="1 tensor\\(s\\) hold NaN or inf"):
        load_adapter(tiny_model_factory("llama"), directory)
