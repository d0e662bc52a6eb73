"""FSDP2 and DDP over 2 gloo processes on CPU equal data parallelism done by hand in one process.

One ``torch.multiprocessing.spawn`` of 2 processes runs every scenario of ``distributed_steps.py``
(two SGD steps each); the tests compare its losses and updated adapter weights with the same steps
in this process, within fp32 tolerance. The batch has context tokens and two of the three roles, so
the summarizer's LoRAs and its routed experts see no tokens. Marked ``distributed`` (deselect with
``-m "not distributed"``).
"""

from __future__ import annotations

import pytest
import torch

import mor_ext

import distributed_steps as steps

pytestmark = pytest.mark.distributed

SCENARIOS = ["fsdp", "fsdp_checkpointed", "fsdp_bf16", "ddp", "save_load"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("distributed")
    mp.spawn(steps.worker, args=(str(out / "rendezvous"), str(out), SCENARIOS), nprocs=steps.WORLD, join=True)
    return {name: torch.load(out / f"{name}.pt", weights_only=False) for name in SCENARIOS} | {"dir": out}


@pytest.fixture(scope="module")
def reference():
    model = steps.build_model()
    initial = {k: v.clone() for k, v in mor_ext.adapters.adapter_state_dict(model).items()}  # not views
    losses = steps.reference_steps(model)
    return {"losses": losses, "adapter": mor_ext.adapters.adapter_state_dict(model), "initial": initial}


def _assert_adapters_close(got: dict, want: dict, initial: dict, **tol) -> None:
    assert got.keys() == want.keys()
    moved = max(float((want[k] - initial[k]).abs().max()) for k in want)
    assert moved > 1e-3, "the steps did not change the adapter"
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key, **tol)


@pytest.mark.parametrize("name", ["fsdp", "fsdp_checkpointed", "ddp"])
def test_two_processes_equal_one(results, reference, name):
    got = results[name]
    # [step][process] -> [loss, ce, aux, orth]: each process's losses are its shard's losses
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(reference["losses"]), rtol=1e-5, atol=1e-6)
    _assert_adapters_close(got["adapter"], reference["adapter"], reference["initial"], rtol=1e-4, atol=1e-6)


def test_fsdp_shards_the_adapter(results):
    assert results["fsdp"]["sharded"]


def test_unused_experts_get_only_their_orthogonal_gradient(reference):
    """The check above would pass trivially if the absent role's LoRAs never moved: they must, through the
    orthogonal loss alone (its routed LoRAs), and its shared LoRA must not."""
    spec = mor_ext.MoRSpec.moragent(rank=4)
    summarizer = spec.role_index("summarizer")
    key = "model.layers.0.self_attn.q_proj.lora_A"
    delta = (reference["adapter"][key] - reference["initial"][key]).flatten(1).abs().amax(1)
    routed, shared = spec.routed_loras(summarizer), spec.shared_lora(summarizer)
    assert all(float(delta[i]) > 0 for i in routed)
    assert float(delta[shared]) == 0.0


def test_bf16_parameters_with_fp32_reduction_stay_close(results, reference):
    got = results["fsdp_bf16"]
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(reference["losses"]), rtol=3e-2, atol=3e-2)
    for key, value in got["adapter"].items():
        assert value.dtype == torch.float32  # the sharded master weights stay fp32
        torch.testing.assert_close(value, reference["adapter"][key], rtol=5e-2, atol=5e-3, msg=key)


def test_adapter_saved_whole_from_a_sharded_model_loads_unsharded(results, reference):
    assert results["save_load"]["loaded_shards_equal"] == [True] * steps.WORLD
    model = mor_ext.load_adapter(steps.build_model(seed=1), results["dir"] / "adapter")
    loaded = mor_ext.adapters.adapter_state_dict(model)
    _assert_adapters_close(loaded, reference["adapter"], reference["initial"], rtol=1e-4, atol=1e-6)
