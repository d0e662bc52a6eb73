"""The Python side of the custom ops: backend choice, fake kernels and autograd, in one table.

Schemas live in ``csrc/ops.cpp``; device kernels in ``csrc/cpu`` (and ``csrc/cuda`` where built).
Every function here takes flattened, validated inputs (see :mod:`mor_ext.functional`) and runs the
compiled op when the extension is loaded and has a kernel for the tensor's device, else the
pure-PyTorch reference in :mod:`mor_ext.reference`.

The backend can be forced with ``MOR_EXT_BACKEND=reference|compiled|auto`` or
:func:`set_backend`; :func:`backend_info` says what is in use.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.nn.functional as F

from . import reference
from .spec import MoRSpec

logger = logging.getLogger("mor_ext")

try:  # Loading the library registers torch.ops.mor_ext.* with the dispatcher.
    from . import _C  # noqa: F401

    _COMPILED_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised where the extension is not built
    _COMPILED_ERROR = str(exc)

_BACKENDS = ("auto", "compiled", "reference")
_backend = os.environ.get("MOR_EXT_BACKEND", "auto").strip().lower() or "auto"
if _backend not in _BACKENDS:
    raise ValueError(f"MOR_EXT_BACKEND={_backend!r}; expected one of {_BACKENDS}")


def compiled_available() -> bool:
    return _COMPILED_ERROR is None


# The forward ops the dispatch below chooses between; each backward op lives beside its forward.
OP_NAMES = ("route", "grouped_lora", "mor_linear", "load_balance_loss", "load_balance_loss_layers", "orthogonal_loss",
            "orthogonal_loss_layers")
_kernel_cache: dict[str, tuple[str, ...]] | None = None


def compiled_kernels() -> dict[str, tuple[str, ...]]:
    """``{device type: ops with a compiled kernel}``, e.g. ``{"cpu": (all), "cuda": ("route", ...)}``."""
    # Kernels register when the library loads, so the answer never changes: ask the dispatcher once.
    global _kernel_cache
    if _kernel_cache is None:
        _kernel_cache = {}
        if compiled_available():
            for key in ("CPU", "CUDA"):
                names = tuple(
                    op for op in OP_NAMES if torch._C._dispatch_has_kernel_for_dispatch_key(f"mor_ext::{op}", key)
                )
                if names:
                    _kernel_cache[key.lower()] = names
    return _kernel_cache


def set_backend(name: str) -> None:
    """Choose ``"auto"`` (compiled where available), ``"compiled"`` (error if missing) or ``"reference"``."""
    global _backend
    name = name.strip().lower()
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {_BACKENDS}")
    if name == "compiled" and not compiled_available():
        raise RuntimeError(f"the compiled mor_ext extension is not available: {_COMPILED_ERROR}")
    _backend = name


def get_backend() -> str:
    return _backend


def backend_info() -> dict[str, Any]:
    """Which backend runs the ops, per device, and why."""
    return {
        "backend": _backend,
        "compiled": compiled_available(),
        "compiled_kernels": {device: list(names) for device, names in compiled_kernels().items()},
        "compiled_error": _COMPILED_ERROR,
        # mor_linear's CPU kernel runs fp32 calls through AVX-512 code where the CPU has it and
        # ATEN_CPU_CAPABILITY does not rule it out: a few tokens (generation) through the decode
        # path, >= 128 tokens through one GEMM per role and kind in its own kernels.
        "cpu_avx512": compiled_available() and bool(torch.ops.mor_ext.cpu_avx512()),
        "torch": torch.__version__,
    }


# The names of the counts that the test-only op testing_cpu_path_counts returns, in its order
# (csrc/cpu/path_counts.h): which of mor_linear's CPU paths ran, forward and backward calls.
CPU_PATHS = ("avx512_decode", "avx512_role_gemms", "generic")


def cpu_path_counts() -> dict[str, int]:
    """For tests: how often each of mor_linear's CPU paths ran in this process."""
    return dict(zip(CPU_PATHS, torch.ops.mor_ext.testing_cpu_path_counts()))


def describe_backend() -> str:
    info = backend_info()
    if info["backend"] == "reference":
        return "mor_ext: using the pure-PyTorch reference ops (forced)"
    if not info["compiled"]:
        return f"mor_ext: compiled extension not available ({info['compiled_error']}); using the pure-PyTorch reference ops"
    parts = [
        f"{device} ({'all ops' if len(names) == len(OP_NAMES) else ', '.join(names)}"
        f"{'; AVX-512 decode and layer GEMMs' if device == 'cpu' and info['cpu_avx512'] else ''})"
        for device, names in info["compiled_kernels"].items()
    ]
    return f"mor_ext: compiled ops for {'; '.join(parts) or 'no device'}; pure-PyTorch reference elsewhere"


def uses_compiled(t: torch.Tensor, op: str = "mor_linear") -> bool:
    """True when ``op`` on tensors like ``t`` runs through torch.ops.mor_ext (else the reference)."""
    if _backend == "reference" or not compiled_available():
        return False
    ok = op in compiled_kernels().get(t.device.type, ())
    if not ok and _backend == "compiled":
        raise RuntimeError(f"MOR_EXT_BACKEND=compiled but mor_ext has no compiled {op} kernel for {t.device.type}")
    return ok


def _flags(spec: MoRSpec) -> tuple[list[int], list[int], list[int]]:
    num_experts, top_k, shared, _ = spec.op_args()
    return num_experts, top_k, [int(s) for s in shared]


# --------------------------------------------------------------------------------------------- dispatch
def route(x, router_weight, shared_gate_weight, role_ids, spec: MoRSpec):
    if uses_compiled(x, "route"):
        return tuple(
            torch.ops.mor_ext.route(
                x, router_weight, shared_gate_weight, role_ids, *_flags(spec), spec.shared_gate == "sigmoid"
            )
        )
    return reference.route(x, router_weight, shared_gate_weight, role_ids, spec)


def lora_linear(x, lora_A, lora_B, lora_index, lora_weight, scaling: float, weight=None, bias=None):
    """``(F.linear(x, weight, bias) if weight is given) + grouped LoRA delta``, fused where compiled."""
    if uses_compiled(x, "grouped_lora"):
        return torch.ops.mor_ext.grouped_lora(x, lora_A, lora_B, lora_index, lora_weight, float(scaling), weight, bias)[0]
    delta = reference.grouped_lora(x, lora_A, lora_B, lora_index, lora_weight, scaling)
    return delta if weight is None else F.linear(x, weight, bias) + delta


def mor_linear(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec: MoRSpec,
               scaling: float):
    """The whole adapted layer; returns ``(y, lora_index, lora_weight, router_probs)``."""
    if uses_compiled(x, "mor_linear"):
        y, index, gate, probs, _, _ = torch.ops.mor_ext.mor_linear(
            x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, *_flags(spec),
            spec.shared_gate == "sigmoid", float(scaling),
        )
        return y, index, gate, probs
    y, (index, gate, probs) = reference.mor_linear(
        x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec, scaling
    )
    return y, index, gate, probs


def kernel_args(spec: MoRSpec, scaling: float) -> tuple:
    """The trailing arguments of the compiled ``mor_linear`` op for a spec and scaling (cache them)."""
    return (*_flags(spec), spec.shared_gate == "sigmoid", float(scaling))


def mor_linear_kernel(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, args: tuple):
    """The compiled op alone, for callers that checked ``uses_compiled`` and hold ``kernel_args``
    (MoRLinear: it runs on every projection, so each skipped Python step counts)."""
    y, index, gate, probs, _, _ = torch.ops.mor_ext.mor_linear(
        x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, *args
    )
    return y, index, gate, probs


def load_balance_loss(router_probs, lora_index, role_ids, spec: MoRSpec):
    if uses_compiled(router_probs, "load_balance_loss"):
        return torch.ops.mor_ext.load_balance_loss(router_probs, lora_index, role_ids, *_flags(spec))
    return reference.load_balance_loss(router_probs, lora_index, role_ids, spec)


def load_balance_loss_layers(router_probs: list, lora_index: list, role_ids, spec: MoRSpec):
    """Sum over layers that share one call's tokens (``role_ids [N]``): one op for all of them."""
    if uses_compiled(router_probs[0], "load_balance_loss_layers"):
        return torch.ops.mor_ext.load_balance_loss_layers(list(router_probs), list(lora_index), role_ids,
                                                          *_flags(spec))
    return torch.stack([reference.load_balance_loss(p, i, role_ids, spec) for p, i in zip(router_probs, lora_index)]).sum()


# The largest rank of the CUDA orthogonal-loss kernels (kMaxRank in csrc/kernels/products.h: their
# register tiles and per-thread accumulators are sized by it). Larger ranks take the reference path
# on CUDA; the CPU ops (ATen GEMMs) take any rank.
ORTHOGONAL_CUDA_MAX_RANK = 32


def _orthogonal_compiled(lora_A: torch.Tensor, op: str) -> bool:
    if lora_A.device.type == "cuda" and lora_A.dim() == 3 and lora_A.shape[1] > ORTHOGONAL_CUDA_MAX_RANK:
        return False
    return uses_compiled(lora_A, op)


def orthogonal_loss(lora_A, lora_B, spec: MoRSpec):
    if _orthogonal_compiled(lora_A, "orthogonal_loss"):
        return torch.ops.mor_ext.orthogonal_loss(lora_A, lora_B, *_flags(spec))
    return reference.orthogonal_loss(lora_A, lora_B, spec)


def orthogonal_loss_layers(lora_As: list, lora_Bs: list, spec: MoRSpec):
    """Sum over layers of the orthogonal loss; one call (on CUDA, one launch for all products)."""
    if _orthogonal_compiled(lora_As[0], "orthogonal_loss_layers"):
        loss, _products = torch.ops.mor_ext.orthogonal_loss_layers(list(lora_As), list(lora_Bs), *_flags(spec))
        return loss
    return torch.stack([reference.orthogonal_loss(a, b, spec) for a, b in zip(lora_As, lora_Bs)]).sum()


# --------------------------------------------------------------------------------------------- registrations
def _register() -> None:
    lib = torch.ops.mor_ext

    # ---- fake (meta) kernels: shapes and dtypes only, for torch.compile and opcheck
    @torch.library.register_fake("mor_ext::route")
    def _(x, router_weight, shared_gate_weight, role_ids, num_experts, top_k, has_shared, sigmoid_gate):
        k_max = max(k + s for k, s in zip(top_k, has_shared))
        n = x.shape[0]
        return (
            x.new_empty(n, k_max, dtype=torch.int32),
            x.new_empty(n, k_max),
            x.new_empty(n, sum(num_experts), dtype=torch.float32),
        )

    @torch.library.register_fake("mor_ext::route_backward")
    def _(gw, gp, x, router_weight, shared_gate_weight, role_ids, lora_index, router_probs, *spec_args):
        return torch.empty_like(x), torch.empty_like(router_weight), torch.empty_like(shared_gate_weight)

    @torch.library.register_fake("mor_ext::grouped_lora")
    def _(x, lora_A, lora_B, lora_index, lora_weight, scaling, weight, bias):
        n = x.shape[0]
        return x.new_empty(n, lora_B.shape[1]), x.new_empty(n, lora_index.shape[1], lora_A.shape[1])

    @torch.library.register_fake("mor_ext::grouped_lora_backward")
    def _(grad_out, x, lora_A, lora_B, lora_index, lora_weight, shrink, scaling, weight):
        return torch.empty_like(x), torch.empty_like(lora_A), torch.empty_like(lora_B), torch.empty_like(lora_weight)

    @torch.library.register_fake("mor_ext::mor_linear")
    @torch.library.register_fake("mor_ext::mor_linear_decode")
    def _(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, num_experts, top_k,
          has_shared, sigmoid_gate, scaling):
        n, k_max = x.shape[0], max(k + s for k, s in zip(top_k, has_shared))
        return (
            x.new_empty(n, weight.shape[0]),
            x.new_empty(n, k_max, dtype=torch.int32),
            x.new_empty(n, k_max),
            x.new_empty(n, sum(num_experts), dtype=torch.float32),
            x.new_empty(n, k_max, lora_A.shape[1]),
            x.new_empty(n, dtype=torch.float32),
        )

    @torch.library.register_fake("mor_ext::mor_linear_backward")
    def _(grad_y, grad_lora_weight, grad_router_probs, x, weight, lora_A, lora_B, router_weight,
          shared_gate_weight, *rest):
        return (torch.empty_like(x), torch.empty_like(lora_A), torch.empty_like(lora_B),
                torch.empty_like(router_weight), torch.empty_like(shared_gate_weight))

    @torch.library.register_fake("mor_ext::load_balance_loss")
    def _(router_probs, lora_index, role_ids, num_experts, top_k, has_shared):
        return router_probs.new_empty((), dtype=torch.float32)

    @torch.library.register_fake("mor_ext::load_balance_loss_backward")
    def _(grad, router_probs, lora_index, role_ids, num_experts, top_k, has_shared):
        return torch.empty_like(router_probs, dtype=torch.float32)

    @torch.library.register_fake("mor_ext::load_balance_loss_layers")
    def _(router_probs, lora_index, role_ids, num_experts, top_k, has_shared):
        return router_probs[0].new_empty((), dtype=torch.float32)

    @torch.library.register_fake("mor_ext::load_balance_loss_layers_backward")
    def _(grad, router_probs, lora_index, role_ids, num_experts, top_k, has_shared):
        return [torch.empty_like(p, dtype=torch.float32) for p in router_probs]

    @torch.library.register_fake("mor_ext::orthogonal_loss")
    def _(lora_A, lora_B, num_experts, top_k, has_shared):
        return lora_A.new_empty((), dtype=torch.float32)

    def products_like(lora_A, num_experts):
        """The r x r products of every layer: per role with >= 2 routed LoRAs, E(E-1)/2 + E of them."""
        per_layer = sum(e * (e - 1) // 2 + e for e in num_experts if e >= 2)
        r = lora_A[0].shape[1]
        return lora_A[0].new_empty(per_layer * len(lora_A), r, r, dtype=torch.float32)

    @torch.library.register_fake("mor_ext::orthogonal_loss_layers")
    def _(lora_A, lora_B, num_experts, top_k, has_shared):
        return lora_A[0].new_empty((), dtype=torch.float32), products_like(lora_A, num_experts)

    @torch.library.register_fake("mor_ext::orthogonal_loss_layers_backward")
    def _(grad, products, lora_A, lora_B, num_experts, top_k, has_shared):
        return [torch.empty_like(a) for a in lora_A], [torch.empty_like(b) for b in lora_B]

    @torch.library.register_fake("mor_ext::orthogonal_grads")
    def _(grad, products, lora_A, lora_B, num_experts, top_k, has_shared):
        return [torch.empty_like(a) for a in lora_A], [torch.empty_like(b) for b in lora_B]

    @torch.library.register_fake("mor_ext::orthogonal_products")
    def _(lora_A, lora_B, num_experts, top_k, has_shared):
        return products_like(lora_A, num_experts)

    @torch.library.register_fake("mor_ext::orthogonal_loss_backward")
    def _(grad, lora_A, lora_B, num_experts, top_k, has_shared):
        return torch.empty_like(lora_A), torch.empty_like(lora_B)

    # ---- autograd: each backward is itself a custom op. mor_linear, route and grouped_lora have
    # theirs in C++ (csrc/autograd.cpp): they run on every adapted projection, and a Python wrapper
    # there cost more host time than the op itself. The losses, once per step, stay here.
    def balance_setup(ctx, inputs, output):
        router_probs, lora_index, role_ids, *spec_args = inputs
        ctx.spec_args = spec_args
        ctx.save_for_backward(router_probs, lora_index, role_ids)

    def balance_backward(ctx, grad):
        router_probs, lora_index, role_ids = ctx.saved_tensors
        g = lib.load_balance_loss_backward(grad, router_probs, lora_index, role_ids, *ctx.spec_args)
        return g, None, None, None, None, None

    torch.library.register_autograd("mor_ext::load_balance_loss", balance_backward, setup_context=balance_setup)

    def balance_layers_setup(ctx, inputs, output):
        router_probs, lora_index, role_ids, *spec_args = inputs
        ctx.spec_args = spec_args
        ctx.layers = len(router_probs)
        ctx.save_for_backward(*router_probs, *lora_index, role_ids)

    def balance_layers_backward(ctx, grad):
        saved = ctx.saved_tensors
        probs, index, role_ids = list(saved[: ctx.layers]), list(saved[ctx.layers : 2 * ctx.layers]), saved[-1]
        grads = lib.load_balance_loss_layers_backward(grad, probs, index, role_ids, *ctx.spec_args)
        return grads, [None] * ctx.layers, None, None, None, None

    torch.library.register_autograd(
        "mor_ext::load_balance_loss_layers", balance_layers_backward, setup_context=balance_layers_setup
    )

    def orth_setup(ctx, inputs, output):
        lora_A, lora_B, *spec_args = inputs
        ctx.spec_args = spec_args
        ctx.save_for_backward(lora_A, lora_B)

    def orth_backward(ctx, grad):
        lora_A, lora_B = ctx.saved_tensors
        ga, gb = lib.orthogonal_loss_backward(grad, lora_A, lora_B, *ctx.spec_args)
        return ga, gb, None, None, None

    torch.library.register_autograd("mor_ext::orthogonal_loss", orth_backward, setup_context=orth_setup)

    def orth_layers_setup(ctx, inputs, output):
        lora_A, lora_B, *spec_args = inputs
        _loss, products = output
        ctx.mark_non_differentiable(products)
        ctx.spec_args = spec_args
        ctx.layers = len(lora_A)
        # The forward's r x r products: the backward builds every gradient from them.
        ctx.save_for_backward(products, *lora_A, *lora_B)

    def orth_layers_backward(ctx, grad, _grad_products):
        products, *saved = ctx.saved_tensors
        lora_A, lora_B = saved[: ctx.layers], saved[ctx.layers :]
        ga, gb = lib.orthogonal_loss_layers_backward(grad, products, lora_A, lora_B, *ctx.spec_args)
        return ga, gb, None, None, None

    torch.library.register_autograd(
        "mor_ext::orthogonal_loss_layers", orth_layers_backward, setup_context=orth_layers_setup
    )


if compiled_available():
    _register()
