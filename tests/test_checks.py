"""mor_ext.checks: one function per input rule, and each entry point calling it (a patched model once
per call, not once per layer)."""

from __future__ import annotations

import pytest
import torch

import mor_ext
from mor_ext import MoRConfig, checks
from mor_ext import functional as MF


def test_role_ids_must_be_an_integer_tensor():
    for good in (torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.int32), torch.zeros(3, dtype=torch.uint8)):
        assert checks.check_role_ids_tensor(good) is good
    with pytest.raises(TypeError, match="role_ids must be a torch.Tensor of integers, got list"):
        checks.check_role_ids_tensor([0, 1])
    for bad in (torch.zeros(3), torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.complex64)):
        with pytest.raises(TypeError, match=f"role_ids must be an integer tensor, got {bad.dtype}"):
            checks.check_role_ids_tensor(bad)


def test_role_ids_range_names_the_first_bad_entry(small_spec):
    checks.check_role_ids(torch.tensor([[-1, 0, 1, 2]]), small_spec)
    checks.check_role_ids(torch.zeros(0, dtype=torch.long), small_spec)
    with pytest.raises(ValueError, match=r"role_ids\[0, 2\] = 3, but the spec has 3 roles .*valid ids: -1 \.\. 2"):
        checks.check_role_ids(torch.tensor([[0, 1, 3, -2]]), small_spec)
    with checks.ids_checked():  # the caller vouches for the values: no reduction, no error
        checks.check_role_ids(torch.tensor([7]), small_spec)
    assert MF.ids_checked is checks.ids_checked  # the functional API's name for it


def test_lora_index_dtype_and_range():
    index = torch.tensor([[0, -1], [3, 2]], dtype=torch.int32)
    assert checks.check_lora_index_dtype(index) is index
    with pytest.raises(TypeError, match=r"lora_index\[1\] must be int32 or int64, got torch.int16"):
        checks.check_lora_index_dtype(index.short(), "lora_index[1]")
    with pytest.raises(TypeError, match="lora_index must be a torch.Tensor, got list"):
        checks.check_lora_index_dtype([[0]])
    checks.check_lora_index(index, "lora_index", 4)
    with pytest.raises(ValueError, match=r"lora_index\[1, 0\] = 3, but there are 3 LoRAs \(valid: -1 \.\. 2\)"):
        checks.check_lora_index(index, "lora_index", 3)
    with pytest.raises(ValueError, match="but the spec has 3 LoRAs"):
        checks.check_lora_index(index, "lora_index", 3, "the spec has")


def test_a_model_call_checks_its_role_ids_once(tiny_model, small_spec, input_ids, monkeypatch):
    """The range check (a device-to-host sync on GPU) runs once per model call, whatever the number of
    layers and whichever backend runs them; the layers run inside ids_checked."""
    model = mor_ext.patch(tiny_model, MoRConfig(spec=small_spec))
    real, calls = checks._check_range, []

    def spy(ids, name, upper, why):
        calls.append((name, checks._IDS_CHECKED.get()))
        return real(ids, name, upper, why)

    monkeypatch.setattr(checks, "_check_range", spy)
    role_ids = torch.randint(-1, 3, input_ids.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=input_ids, role_ids=role_ids)
    assert [c for c in calls if not c[1]] == [("role_ids", False)], calls
    bad = role_ids.clone()
    bad[0, 1] = 3
    with pytest.raises(ValueError, match=r"role_ids\[0, 1\] = 3"):
        model(input_ids=input_ids, role_ids=bad)
