"""MoRSpec (docs/spec.md §1 and §2): sizes, the MoRAgent and decoupled specs, role lookup, dict round
trips and validation.
"""

from __future__ import annotations

import json
import re

import pytest

from mor_ext import MoRSpec, RoleSpec
from mor_ext.ops import _flags

from ops.op_utils import SPECS  # the op tests' spec catalogue (tests/ops/op_utils.py)


def test_moragent_sizes():
    spec = MoRSpec.moragent()
    assert spec.rank == 16 and spec.shared_gate == "sigmoid"
    assert spec.role_names == ("reasoner", "executor", "summarizer")
    assert (spec.num_roles, spec.num_loras, spec.num_experts_total, spec.k_max) == (3, 14, 11, 4)
    assert spec.lora_offsets == (0, 5, 10, 14) and spec.router_offsets == (0, 4, 8, 11)
    assert [spec.shared_lora(r) for r in range(3)] == [0, 5, 10]
    assert [list(spec.routed_loras(r)) for r in range(3)] == [[1, 2, 3, 4], [6, 7, 8, 9], [11, 12, 13]]
    assert [r.num_slots for r in spec.roles] == [4, 4, 3]
    assert spec.op_args() == ([4, 4, 3], [3, 3, 2], [True, True, True], True)
    assert _flags(spec) == ([4, 4, 3], [3, 3, 2], [1, 1, 1])


@pytest.mark.parametrize("spec_name", SPECS)
def test_spec_dict_round_trip(spec_name):
    spec = SPECS[spec_name]
    data = json.loads(json.dumps(spec.to_dict()))
    again = MoRSpec.from_dict(data)
    assert again == spec and again.lora_offsets == spec.lora_offsets and again.router_offsets == spec.router_offsets


def test_decoupled_spec():
    spec = MoRSpec.decoupled()
    assert spec.role_names == ("tool_selector", "argument_generator") and spec.shared_gate == "none"
    assert (spec.num_loras, spec.num_experts_total, spec.k_max) == (2, 0, 1)
    assert [spec.shared_lora(r) for r in range(2)] == [0, 1] and not spec.routed_loras(1)


def test_role_index():
    spec = MoRSpec.moragent()
    assert spec.role_index("executor") == 1 and spec.role_index(2) == 2 and spec.role_index(-1) == -1
    with pytest.raises(ValueError, match="unknown role 'critic'"):
        spec.role_index("critic")
    for bad in (3, -2):
        with pytest.raises(ValueError, match="out of range"):
            spec.role_index(bad)
    for bad in (True, 1.0, None):
        with pytest.raises(TypeError, match="a role is a name"):
            spec.role_index(bad)


@pytest.mark.parametrize(
    "make,error,message",
    [
        (lambda: RoleSpec("r", num_experts=2, top_k=3), ValueError, "top_k=3 > num_experts=2"),
        (lambda: RoleSpec("r", num_experts=-1), ValueError, "num_experts must be an int >= 0"),
        (lambda: RoleSpec("r", num_experts=2, top_k=True), ValueError, "top_k must be an int"),
        (lambda: RoleSpec("r", num_experts=2.0), ValueError, "num_experts must be an int"),
        (lambda: RoleSpec("", num_experts=1), ValueError, "name must be a non-empty string"),
        (lambda: RoleSpec("r", shared=False), ValueError, "has no LoRA at all"),
        (lambda: RoleSpec("r", shared=1), ValueError, "shared must be a bool"),
        (lambda: MoRSpec(roles=()), ValueError, "at least one role"),
        (lambda: MoRSpec(roles=(RoleSpec("a"), RoleSpec("a"))), ValueError, "names must be unique"),
        (lambda: MoRSpec(roles=(RoleSpec("a"),), rank=0), ValueError, "rank must be an int >= 1"),
        (lambda: MoRSpec(roles=(RoleSpec("a"),), shared_gate="softmax"), ValueError, "shared_gate must be one of"),
        (lambda: MoRSpec(roles=({"name": "a"},)), TypeError, "must hold RoleSpec objects"),
        (lambda: MoRSpec.from_dict({"rank": 4}), ValueError, "not a valid MoRSpec dict"),
        (lambda: MoRSpec.from_dict({"roles": [{"name": "a", "experts": 2}]}), ValueError, "not a valid MoRSpec dict"),
        (lambda: MoRSpec.from_dict({"roles": [{"name": "a", "num_experts": 1, "top_k": 2}]}), ValueError, "top_k=2"),
    ],
)
def test_spec_validation(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()
