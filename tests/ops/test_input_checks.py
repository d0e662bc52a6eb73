"""Bad input: the functional API's errors and the ops' own argument checks (names, values,
shapes, dtypes and devices in the messages).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import torch

from mor_ext import functional as F, MoRSpec, RoleSpec
from mor_ext.ops import _flags

from op_utils import (
    NEEDS_COMPILED,
    BACKENDS,
    D_IN,
    D_OUT,
    SPECS,
    backend,
    make_params,
    make_role_ids,
)

pytestmark = NEEDS_COMPILED

ops = torch.ops.mor_ext


def bad_setup():
    spec = SPECS["moragent"]
    p = make_params(spec, (2, 4), D_IN, D_OUT, seed=80)
    roles = make_role_ids("random", (2, 4), spec.num_roles, seed=80)
    with backend("compiled"):
        r = F.route(p.x, p.router_weight, p.shared_gate_weight, roles, spec)
    return spec, p, roles, r


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("value", [5, -2, 3])
def test_route_role_id_out_of_range_names_value_and_position(value, backend_name):
    spec, p, roles, _ = bad_setup()
    roles = roles.clone()
    roles[1, 3] = value
    with backend(backend_name), pytest.raises(ValueError, match=re.escape(f"role_ids[1, 3] = {value}")):
        F.route(p.x, p.router_weight, p.shared_gate_weight, roles, spec)
    with backend(backend_name), pytest.raises(ValueError, match=re.escape(f"role_ids[1, 3] = {value}")):
        F.load_balance_loss(torch.zeros(2, 4, spec.num_experts_total), torch.zeros(2, 4, 4, dtype=torch.int32),
                            roles, spec)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_functional_bad_shapes_raise_value_error(backend_name):
    spec, p, roles, r = bad_setup()
    cases = {
        "role_ids must have shape": lambda: F.route(p.x, p.router_weight, p.shared_gate_weight, roles[:, :3], spec),
        "router_weight must have shape": lambda: F.route(p.x, p.router_weight[:-1], p.shared_gate_weight, roles, spec),
        "shared_gate_weight must have shape": lambda: F.route(p.x, p.router_weight, p.shared_gate_weight[:, :5],
                                                              roles, spec),
        "lora_B must have shape": lambda: F.grouped_lora(p.x, p.lora_A, p.lora_B[:, :, :3], r.lora_index,
                                                         r.lora_weight),
        "lora_A must have shape": lambda: F.grouped_lora(p.x, p.lora_A[:, :, :5], p.lora_B, r.lora_index,
                                                         r.lora_weight),
        "lora_index must have shape": lambda: F.grouped_lora(p.x, p.lora_A, p.lora_B, r.lora_index[0],
                                                             r.lora_weight[0]),
        "must match lora_index": lambda: F.grouped_lora(p.x, p.lora_A, p.lora_B, r.lora_index,
                                                        r.lora_weight[..., :2]),
        "weight must have shape": lambda: F.mor_linear(p.x, p.weight[:, :5], None, p.lora_A, p.lora_B,
                                                       p.router_weight, p.shared_gate_weight, roles, spec),
        "bias must have shape": lambda: F.mor_linear(p.x, p.weight, p.bias[:3], p.lora_A, p.lora_B, p.router_weight,
                                                     p.shared_gate_weight, roles, spec),
        r"lora_A must have shape \[L=14": lambda: F.mor_linear(p.x, p.weight, None, p.lora_A[:13], p.lora_B[:13],
                                                               p.router_weight, p.shared_gate_weight, roles, spec),
        "router_probs must have shape": lambda: F.load_balance_loss(r.router_probs[..., :5], r.lora_index, roles, spec),
        r"lora_A must have shape \[L=14, r=4": lambda: F.orthogonal_loss(p.lora_A[:, :2], p.lora_B[:, :, :2], spec),
    }
    with backend(backend_name):
        for message, call in cases.items():
            with pytest.raises(ValueError, match=message):
                call()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_functional_bad_types_raise_type_error(backend_name):
    spec, p, roles, r = bad_setup()
    bf = p.lora_A.to(torch.bfloat16)
    cases = {
        "lora_A has dtype torch.bfloat16 but x has dtype torch.float32": lambda: F.grouped_lora(
            p.x, bf, p.lora_B, r.lora_index, r.lora_weight),
        "router_weight has dtype": lambda: F.route(p.x, p.router_weight.double(), p.shared_gate_weight, roles, spec),
        "weight has dtype": lambda: F.mor_linear(p.x, p.weight.half(), None, p.lora_A, p.lora_B, p.router_weight,
                                                 p.shared_gate_weight, roles, spec),
        "lora_B has dtype": lambda: F.orthogonal_loss(p.lora_A, p.lora_B.double(), spec),
        "role_ids must be an integer tensor": lambda: F.route(p.x, p.router_weight, p.shared_gate_weight,
                                                              roles.float(), spec),
        "lora_index must be int32 or int64": lambda: F.grouped_lora(p.x, p.lora_A, p.lora_B, r.lora_index.float(),
                                                                    r.lora_weight),
        "x must be a torch.Tensor": lambda: F.route(p.x.tolist(), p.router_weight, p.shared_gate_weight, roles, spec),
        "role_ids must be a torch.Tensor": lambda: F.route(p.x, p.router_weight, p.shared_gate_weight,
                                                           roles.tolist(), spec),
        "lora_index must be a torch.Tensor": lambda: F.grouped_lora(p.x, p.lora_A, p.lora_B, [[0]], r.lora_weight),
        "spec must be a mor_ext.MoRSpec": lambda: F.route(p.x, p.router_weight, p.shared_gate_weight, roles,
                                                          spec.to_dict()),
        "x must be a floating-point tensor": lambda: F.route(roles, p.router_weight, p.shared_gate_weight, roles,
                                                             spec),
        "router_probs must be a floating-point": lambda: F.load_balance_loss(r.lora_index, r.lora_index, roles, spec),
    }
    with backend(backend_name):
        for message, call in cases.items():
            with pytest.raises(TypeError, match=message):
                call()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_functional_device_mismatch(backend_name):
    spec, p, roles, r = bad_setup()
    meta = p.router_weight.to("meta")
    with backend(backend_name):
        with pytest.raises(ValueError, match="router_weight is on meta but x is on cpu"):
            F.route(p.x, meta, p.shared_gate_weight, roles, spec)
        with pytest.raises(ValueError, match="role_ids is on meta but x is on cpu"):
            F.route(p.x, p.router_weight, p.shared_gate_weight, roles.to("meta"), spec)
        with pytest.raises(ValueError, match="lora_index is on meta"):
            F.grouped_lora(p.x, p.lora_A, p.lora_B, r.lora_index.to("meta"), r.lora_weight)
        with pytest.raises(ValueError, match="lora_B is on meta"):
            F.grouped_lora(p.x, p.lora_A, p.lora_B.to("meta"), r.lora_index, r.lora_weight)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("value", [14, -2])
def test_grouped_lora_index_out_of_range(value, backend_name):
    spec, p, roles, r = bad_setup()
    index = r.lora_index.clone()
    index[1, 2, 3] = value
    with backend(backend_name), pytest.raises(ValueError, match=re.escape(f"lora_index[1, 2, 3] = {value}")):
        F.grouped_lora(p.x, p.lora_A, p.lora_B, index, r.lora_weight)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_load_balance_loss_validates_lora_index(backend_name):
    spec, p, roles, r = bad_setup()
    index = r.lora_index.clone()
    index[1, 2, 3] = 99
    with backend(backend_name):
        with pytest.raises(ValueError, match=re.escape("lora_index[1, 2, 3] = 99")):
            F.load_balance_loss(r.router_probs, index, roles, spec)
        with pytest.raises(TypeError, match="lora_index must be int32 or int64"):
            F.load_balance_loss(r.router_probs, r.lora_index.float(), roles, spec)


def direct_setup(spec_name="moragent", n=6):
    spec = SPECS[spec_name]
    p = make_params(spec, (n,), D_IN, D_OUT, seed=90)
    roles = make_role_ids("random", (n,), spec.num_roles, seed=90)
    flags = _flags(spec)
    index, weight, probs = ops.route(p.x, p.router_weight, p.shared_gate_weight, roles, *flags, True)
    return spec, p, roles, flags, index, weight, probs


def test_ops_validate_route_inputs():
    spec, p, roles, flags, *_ = direct_setup()
    x, rw, sg = p.x, p.router_weight, p.shared_gate_weight
    bad = roles.clone()
    bad[3] = 5
    with pytest.raises(ValueError, match=re.escape("role_ids[3] = 5")):
        ops.route(x, rw, sg, bad, *flags, True)
    bad[3] = -2
    with pytest.raises(ValueError, match=re.escape("role_ids[3] = -2")):
        ops.route(x, rw, sg, bad, *flags, True)
    with pytest.raises(ValueError, match="role_ids must have shape"):
        ops.route(x, rw, sg, roles[:4], *flags, True)
    with pytest.raises(TypeError, match="role_ids must be int64"):
        ops.route(x, rw, sg, roles.int(), *flags, True)
    with pytest.raises(ValueError, match="router_weight must have shape"):
        ops.route(x, rw[:, :7], sg, roles, *flags, True)
    with pytest.raises(ValueError, match="shared_gate_weight must have shape"):
        ops.route(x, rw, sg[:2], roles, *flags, True)
    with pytest.raises(TypeError, match="router_weight has dtype"):
        ops.route(x, rw.to(torch.bfloat16), sg, roles, *flags, True)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        ops.route(roles.view(-1, 1), rw[:, :1], sg[:, :1], roles, *flags, True)
    with pytest.raises(ValueError, match="x must be 2-D"):
        ops.route(x[None], rw, sg, roles, *flags, True)


def test_ops_validate_spec_lists():
    _, p, roles, _, *_ = direct_setup()
    x, rw, sg = p.x, p.router_weight, p.shared_gate_weight
    with pytest.raises(ValueError, match="top_k=5 > num_experts=4"):
        ops.route(x, rw, sg, roles, [4, 4, 3], [5, 3, 2], [1, 1, 1], True)
    with pytest.raises(ValueError, match="one entry per role"):
        ops.route(x, rw, sg, roles, [4, 4, 3], [3, 3], [1, 1, 1], True)
    with pytest.raises(ValueError, match="has_shared"):
        ops.route(x, rw, sg, roles, [4, 4, 3], [3, 3, 2], [1, 2, 1], True)
    with pytest.raises(ValueError, match="has no LoRA"):
        ops.orthogonal_loss_layers([torch.zeros(1, 2, 3)], [torch.zeros(1, 3, 2)], [0], [0], [0])
    with pytest.raises(ValueError, match="at least one role"):
        ops.orthogonal_loss_layers([torch.zeros(1, 2, 3)], [torch.zeros(1, 3, 2)], [], [], [])


def test_ops_validate_grouped_lora_inputs():
    spec, p, roles, flags, index, weight, _ = direct_setup()
    x, a, b = p.x, p.lora_A, p.lora_B
    with pytest.raises(ValueError, match="lora_B must be"):
        ops.grouped_lora(x, a, b[:, :, :3], index, weight, 1.0, None, None)
    with pytest.raises(ValueError, match="lora_B must be"):
        ops.grouped_lora(x, a, b[:13], index, weight, 1.0, None, None)
    with pytest.raises(ValueError, match="lora_A must be"):
        ops.grouped_lora(x, a[:, :, :4], b, index, weight, 1.0, None, None)
    with pytest.raises(TypeError, match="lora_A has dtype"):
        ops.grouped_lora(x, a.to(torch.bfloat16), b, index, weight, 1.0, None, None)
    with pytest.raises(TypeError, match="lora_index must be int32 or int64"):
        ops.grouped_lora(x, a, b, index.float(), weight, 1.0, None, None)
    bad = index.clone()
    bad[1, 2] = 14
    with pytest.raises(ValueError, match=re.escape("lora_index[1, 2] = 14")):
        ops.grouped_lora(x, a, b, bad, weight, 1.0, None, None)
    with pytest.raises(ValueError, match=re.escape("lora_index[1, 2] = 14")):
        ops.grouped_lora_backward(torch.zeros(6, D_OUT), x, a, b, bad, weight, torch.zeros(6, 4, 4), 1.0, None)
    with pytest.raises(ValueError, match="must match lora_index"):
        ops.grouped_lora(x, a, b, index, weight[:, :2], 1.0, None, None)
    with pytest.raises(ValueError, match="weight must be"):
        ops.grouped_lora(x, a, b, index, weight, 1.0, p.weight[:, :4], None)
    with pytest.raises(ValueError, match="bias must be"):
        ops.grouped_lora(x, a, b, index, weight, 1.0, p.weight, p.bias[:4])
    with pytest.raises(TypeError, match="weight has dtype"):
        ops.grouped_lora(x, a, b, index, weight, 1.0, p.weight.double(), None)
    with pytest.raises(ValueError, match="grad_out must be"):
        ops.grouped_lora_backward(torch.zeros(6, 3), x, a, b, index, weight, torch.zeros(6, 4, 4), 1.0, None)
    with pytest.raises(ValueError, match="shrink must be"):
        ops.grouped_lora_backward(torch.zeros(6, D_OUT), x, a, b, index, weight, torch.zeros(6, 4, 2), 1.0, None)


def test_ops_reject_rank_zero():
    """A rank-0 adapter is an error with a message, not a kernel launch with an empty grid."""
    spec, p, roles, flags, index, weight, _ = direct_setup()
    a0, b0 = p.lora_A[:, :0], p.lora_B[:, :, :0]
    with pytest.raises(ValueError, match="rank r >= 1"):
        ops.grouped_lora(p.x, a0, b0, index, weight, 1.0, None, None)
    with pytest.raises(ValueError, match="rank r >= 1"):
        torch.ops.mor_ext.mor_linear(p.x, p.weight, None, a0, b0, p.router_weight, p.shared_gate_weight, roles,
                                     *flags, True, 1.0)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        torch.ops.mor_ext.testing_orthogonal_products([a0.contiguous()], [b0.contiguous()], *flags[:3])


@pytest.mark.parametrize("n", [6, 200])  # 200: the fp32 by-role GEMM path of the CPU backward
def test_backward_ops_refuse_slots_outside_the_tokens_role(n):
    """mor_linear_backward and route_backward index each token's role block by the forward's slots:
    a slot that names no LoRA of the token's role (-1, another role's, the wrong shared one) is a
    ValueError, not a write outside the block (it corrupted the heap before the check)."""
    spec, p, roles, flags, *_ = direct_setup(n=n)
    args = (p.x, p.weight, None, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles, *flags, True, 1.0)
    y, index, weight, probs, shrink, logit = ops.mor_linear(*args)
    t = int(torch.nonzero(roles == 0)[0])  # a reasoner token: shared LoRA 0, routed LoRAs 1..4
    for slot, value in [(1, -1), (1, 7), (0, 2)]:
        bad = index.clone()
        bad[t, slot] = value
        with pytest.raises(ValueError, match=re.escape(f"lora_index[{t}, {slot}] = {value} is not")):
            ops.mor_linear_backward(torch.randn_like(y), torch.zeros_like(weight), torch.zeros_like(probs), p.x,
                                    p.weight, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, roles, bad,
                                    weight, probs, shrink, logit, *flags, True, 1.0)
        with pytest.raises(ValueError, match=re.escape(f"lora_index[{t}, {slot}] = {value} is not")):
            ops.route_backward(torch.zeros_like(weight), torch.zeros_like(probs), p.x, p.router_weight,
                               p.shared_gate_weight, roles, bad, probs, *flags, True)
    other_roles = torch.where(roles == 0, torch.ones_like(roles), roles)  # ids that differ from the forward's
    with pytest.raises(ValueError, match="needs the lora_index that its forward returned"):
        ops.mor_linear_backward(torch.randn_like(y), torch.zeros_like(weight), torch.zeros_like(probs), p.x,
                                p.weight, p.lora_A, p.lora_B, p.router_weight, p.shared_gate_weight, other_roles,
                                index, weight, probs, shrink, logit, *flags, True, 1.0)


def test_specs_beyond_the_kernels_tables_are_refused():
    """At most 16 roles and 64 routed LoRAs per role, everywhere: MoRSpec says so, and the ops refuse
    such flags before sizing anything by them (a huge count overflowed a table size and crashed)."""
    from mor_ext.spec import MAX_EXPERTS_PER_ROLE, MAX_ROLES
    with pytest.raises(ValueError, match="at most 16 roles"):
        MoRSpec(roles=tuple(RoleSpec(f"r{i}", 2, 1, True) for i in range(MAX_ROLES + 1)))
    with pytest.raises(ValueError, match="at most 64 per role"):
        MoRSpec(roles=(RoleSpec("a", MAX_EXPERTS_PER_ROLE + 1, 2, True),))
    MoRSpec(roles=tuple(RoleSpec(f"r{i}", MAX_EXPERTS_PER_ROLE, 2, True) for i in range(MAX_ROLES)))
    probs, index, roles = torch.rand(5, 2), torch.zeros(5, 1, dtype=torch.int32), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="the kernels support at most 64"):
        ops.load_balance_loss_layers([probs], [index], roles, [2**63 - 1, 2**63 - 1, 4], [0, 0, 1], [0, 0, 0])
    with pytest.raises(ValueError, match="at most 16 roles"):
        ops.load_balance_loss_layers([probs], [index], roles, [1] * 17, [1] * 17, [0] * 17)


def test_loss_ops_name_bad_index_and_dtypes():
    spec, p, roles, flags, index, weight, probs = direct_setup()
    bad = index.clone()
    bad[2, 1] = spec.num_loras
    with pytest.raises(ValueError, match=re.escape(f"lora_index[2, 1] = {spec.num_loras}")):
        ops.load_balance_loss_layers([probs], [bad], roles, *flags)
    with pytest.raises(ValueError, match=re.escape(f"lora_index[2, 1] = {spec.num_loras}")):
        ops.load_balance_loss_layers_backward(torch.tensor(1.0), [probs], [bad], roles, *flags)
    with pytest.raises(ValueError, match=re.escape(f"lora_index[2, 1] = {spec.num_loras}")):
        ops.load_balance_loss_layers([probs, probs], [index, bad], roles, *flags)
    with pytest.raises(TypeError, match="lora_index must be an integer tensor"):
        ops.load_balance_loss_layers([probs], [index.float()], roles, *flags)
    with pytest.raises(TypeError, match="every tensor needs one dtype, got Float and Double"):
        ops.orthogonal_loss_layers([p.lora_A], [p.lora_B.double()], *flags)
    with pytest.raises(TypeError, match="must be floating-point"):
        ops.testing_orthogonal_products([p.lora_A.long()], [p.lora_B.long()], *flags)
    a, b = p.lora_A, p.lora_B
    shrink = torch.randn(p.x.shape[0], index.shape[1], spec.rank)
    with pytest.raises(ValueError, match="weight must be"):
        ops.grouped_lora_backward(torch.randn(p.x.shape[0], D_OUT), p.x, a, b, index, weight, shrink, 1.0,
                                  p.weight[:, :3])


def test_ops_validate_loss_inputs():
    spec, p, roles, flags, index, weight, probs = direct_setup()
    with pytest.raises(ValueError, match="router_probs must be"):
        ops.load_balance_loss_layers([probs[:, :5]], [index], roles, *flags)
    with pytest.raises(ValueError, match=re.escape("role_ids[0] = 9")):
        ops.load_balance_loss_layers([probs], [index], torch.full_like(roles, 9), *flags)
    with pytest.raises(ValueError, match="lora_index must be"):
        ops.load_balance_loss_layers([probs], [index[:3]], roles, *flags)
    with pytest.raises(ValueError, match=re.escape("must be [L=14, ...]")):
        ops.orthogonal_loss_layers([p.lora_A[:13]], [p.lora_B[:13]], *flags)
    with pytest.raises(ValueError, match="rank"):
        ops.orthogonal_loss_layers([p.lora_A], [p.lora_B[:, :, :2].contiguous()], *flags)
    with pytest.raises(TypeError, match="needs one dtype"):
        ops.orthogonal_loss_layers([p.lora_A], [p.lora_B.double()], *flags)
    products = ops.orthogonal_loss_layers([p.lora_A], [p.lora_B], *flags)[1]
    with pytest.raises(ValueError, match=re.escape("must be [L=14, ...]")):
        ops.orthogonal_loss_layers_backward(torch.tensor(1.0), products, [p.lora_A[:13]], [p.lora_B[:13]], *flags)


def test_ops_grouped_lora_rejects_int64_index_beyond_int32():
    spec, p, roles, flags, index, weight, _ = direct_setup()
    bad = index.long()
    bad[0, 1] = 2**32 + 1
    with pytest.raises(ValueError, match=re.escape(f"lora_index[0, 1] = {2**32 + 1}")):
        ops.grouped_lora(p.x, p.lora_A, p.lora_B, bad, weight, 1.0, None, None)


# route_backward trusts the shapes and values of lora_index / router_probs: bad ones read out of
# bounds (garbage, or a segmentation fault), so each case runs in a child interpreter.
ROUTE_BACKWARD_CASE = textwrap.dedent("""
    import torch, mor_ext
    from mor_ext import MoRSpec
    from mor_ext.ops import _flags
    ops = torch.ops.mor_ext
    flags = _flags(MoRSpec.moragent(rank=4))
    gen = torch.Generator().manual_seed(0)
    x, rw, sg = (torch.randn(4, 8, generator=gen), torch.randn(11, 8, generator=gen), torch.randn(3, 8, generator=gen))
    roles = torch.tensor([0, 1, 2, 0])
    index, weight, probs = ops.route(x, rw, sg, roles, *flags, True)
    case = {case!r}
    if case == "router_probs [4, 1]": probs = probs[:, :1].contiguous()
    if case == "lora_index [4, 1]": index = index[:, :1].contiguous()
    if case == "lora_index values 10**6": index = torch.full_like(index, 10**6)
    try:
        ops.route_backward(torch.ones(4, 4), torch.ones(4, 11), x, rw, sg, roles, index, probs, *flags, True)
    except ValueError as e:
        print("ValueError:", e)
    else:
        print("no error")
""")


@pytest.mark.parametrize("case", ["router_probs [4, 1]", "lora_index [4, 1]", "lora_index values 10**6"])
def test_ops_route_backward_validates_saved_tensors(case):
    result = subprocess.run([sys.executable, "-c", ROUTE_BACKWARD_CASE.format(case=case)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"crashed with return code {result.returncode}: {result.stderr[-500:]}"
    assert result.stdout.startswith("ValueError:"), result.stdout
