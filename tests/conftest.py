"""Shared fixtures: tiny randomly initialised Hugging Face models (no downloads) and a small spec."""

from __future__ import annotations

import importlib.util
from typing import Callable

import pytest
import torch

import mor_ext

FAMILIES = ("llama", "qwen2")
VOCAB = 128


def make_tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A 2-layer causal LM with hidden size 64, in eval mode, with weights from ``seed``."""
    import transformers

    sizes = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        # Token ids inside the tiny vocabulary (the defaults point past it and make transformers warn).
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    config_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM),
    }[family]
    torch.manual_seed(seed)
    return model_cls(config_cls(**sizes)).eval()


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tiny_model(family: str) -> torch.nn.Module:
    """A fresh tiny model of each family (the test runs once per family)."""
    return make_tiny_model(family)


@pytest.fixture
def tiny_model_factory() -> Callable[..., torch.nn.Module]:
    return make_tiny_model


@pytest.fixture
def small_spec() -> mor_ext.MoRSpec:
    """MoRAgent's role layout (4/4/3 routed + shared, top 3/3/2) at rank 4."""
    return mor_ext.MoRSpec.moragent(rank=4)


@pytest.fixture
def input_ids() -> torch.Tensor:
    """``[2, 8]`` token ids from a fixed generator."""
    return torch.randint(3, VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``bfcl`` where the BFCL data is not installed (the decontamination check
    of every training data set needs it; CI and setup_env.sh install it, a bare GPU machine may not)."""
    if importlib.util.find_spec("bfcl_eval") is not None:
        return
    skip = pytest.mark.skip(reason="bfcl-eval is not installed; install it with: pip install --no-deps bfcl-eval")
    for item in items:
        if item.get_closest_marker("bfcl") is not None:
            item.add_marker(skip)
