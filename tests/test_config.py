"""MoRConfig: defaults, JSON round trip, and the validation of every field."""

from __future__ import annotations

import json

import pytest

from mor_ext import MoRConfig, MoRSpec


def test_config_defaults_and_json_round_trip():
    cfg = MoRConfig()
    assert cfg.spec == MoRSpec.moragent(16) and cfg.scaling == 1.0 and cfg.lora_alpha is None
    assert cfg.context_role_id == 0 and cfg.default_role_id == -1
    custom = MoRConfig(
        spec=MoRSpec.decoupled(("tool_selector", "argument_generator"), rank=8),
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules=["q_proj", "v_proj"],
        aux_loss_coef=0.0,
        context_role=None,
        default_role="tool_selector",
    )
    assert custom.scaling == 2.0
    for c in (cfg, custom):
        data = json.loads(json.dumps(c.to_dict()))
        assert MoRConfig.from_dict(data) == c


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(lora_dropout=-0.1), ValueError, "lora_dropout"),
        (dict(lora_dropout=1.0), ValueError, "lora_dropout"),
        (dict(lora_alpha=0), ValueError, "lora_alpha"),
        (dict(lora_alpha=float("nan")), ValueError, "lora_alpha"),
        (dict(aux_loss_coef=-1), ValueError, "aux_loss_coef"),
        (dict(orth_loss_coef="x"), TypeError, "orth_loss_coef"),
        (dict(context_role="planner"), ValueError, "planner.*reasoner"),
        (dict(default_role="planner"), ValueError, "default_role"),
        (dict(default_role=0), TypeError, "default_role"),
        (dict(target_modules="q_proj"), TypeError, "list"),
        (dict(target_modules=[]), ValueError, "empty"),
        (dict(add_aux_losses=1), TypeError, "add_aux_losses"),
        (dict(spec={"roles": []}), TypeError, "MoRSpec"),
    ],
)
def test_config_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        MoRConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys():
    data = MoRConfig().to_dict()
    data["lora_alpah"] = 8
    with pytest.raises(ValueError, match="lora_alpah"):
        MoRConfig.from_dict(data)
