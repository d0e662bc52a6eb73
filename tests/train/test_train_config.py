"""TrainConfig: its checks (before any work) and the MoRConfig each method and ablation gives."""

from __future__ import annotations

from pathlib import Path

import pytest

import mor_ext
from mor_ext.train import TrainConfig, lora_rank_for_budget, mor_config_for, one_role_spec

RANK = 2


def _config(root: Path, out: str, **overrides) -> TrainConfig:
    """A config like the trainer tests' (nothing is read: TrainConfig checks values, not files)."""
    values = dict(out_dir=str(root / out), model=str(root / "model"), data=str(root / "data.jsonl"),
                  rank=RANK, max_length=1024, max_steps=6, lr=1e-2, batch_size=1, logging_steps=1,
                  progress_bar=False, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def test_ablation_flags_change_the_config(tmp_path):
    base = mor_config_for(_config(tmp_path, "x"))
    assert base.aux_loss_coef > 0 and base.orth_loss_coef > 0
    assert mor_config_for(_config(tmp_path, "x", no_aux=True)).aux_loss_coef == 0
    assert mor_config_for(_config(tmp_path, "x", no_orth=True)).orth_loss_coef == 0
    one = mor_config_for(_config(tmp_path, "x", one_role=True))
    assert one.spec.role_names == ("agent",) and one.context_role == "agent"
    assert one.spec.num_loras == mor_ext.MoRSpec.moragent(RANK).num_loras == one_role_spec(RANK).num_loras
    with pytest.raises(ValueError, match="MoR ablations"):
        _config(tmp_path, "x", method="lora", no_aux=True)
    assert lora_rank_for_budget(1000, [(10, 10)]) == 50


def test_time_budget_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_minutes"):
        _config(tmp_path, "bad", max_minutes=0)


@pytest.mark.parametrize("field, value, message", [
    ("lr", -1.0, "lr must be > 0"),
    ("weight_decay", -0.1, "weight_decay must be >= 0"),
    ("warmup_steps", -1, "warmup_steps must be >= 0"),
    ("save_total_limit", 0, "save_total_limit must be >= 1"),
    ("rank", 0, "rank must be >= 1"),
    ("eval_fraction", 1.0, "eval_fraction must be in"),
])
def test_train_config_refuses_bad_values_before_any_work(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(out_dir=str(tmp_path / "o"), generate=2, **{field: value})
