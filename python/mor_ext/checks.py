"""One check per input rule on role ids and LoRA indices, called where input enters the package.

The entries are a patched model's call (:mod:`mor_ext.patching`, once per forward), a
:class:`~mor_ext.layers.MoRLinear` called with its own ``role_ids``, and the functional API
(:mod:`mor_ext.functional`). Layers trust what the model call checked; the C++ ops keep their own
last-line checks. Layering: imports torch and :mod:`mor_ext.spec` only.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch

from .spec import MoRSpec

__all__ = ["check_role_ids_tensor", "check_role_ids", "check_lora_index_dtype", "check_lora_index", "ids_checked"]

_IDS_CHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar("mor_ext_ids_checked", default=False)


@contextlib.contextmanager
def ids_checked() -> Iterator[None]:
    """Within this block :func:`check_role_ids` and :func:`check_lora_index` trust that the ids hold
    valid values and skip the range check, which on a GPU costs a device-to-host sync per call.

    For callers that checked the ids once themselves: a patched model checks a call's ``role_ids``
    once per forward, not once per layer. Shapes, dtypes and devices are still checked; out-of-range
    ids then count as "no adapter" in the compiled kernels (the reference may raise an index error).
    """
    token = _IDS_CHECKED.set(True)
    try:
        yield
    finally:
        _IDS_CHECKED.reset(token)


def _check_range(ids: torch.Tensor, name: str, upper: int, why: str) -> None:
    """Every entry of ``ids`` in ``-1 .. upper-1``, else a ValueError naming the first bad position.

    One reduction on the happy path (a sync on GPU). Skipped inside :func:`ids_checked` and while
    torch.compile traces (a data-dependent branch would break the graph); the CPU kernels check
    the values again and raise ValueError.
    """
    if ids.numel() == 0 or torch.compiler.is_compiling() or _IDS_CHECKED.get():
        return
    low, high = torch.aminmax(ids)
    if int(low) >= -1 and int(high) < upper:
        return
    where = tuple(int(i) for i in ((ids < -1) | (ids >= upper)).nonzero()[0].tolist())
    raise ValueError(f"{name}[{', '.join(map(str, where))}] = {int(ids[where])}, {why}")


def check_role_ids_tensor(role_ids: object) -> torch.Tensor:
    """TypeError unless ``role_ids`` is a tensor of integers (floats would be truncated to a role
    silently, bools read as roles 0 and 1); returns it."""
    if not isinstance(role_ids, torch.Tensor):
        raise TypeError(f"role_ids must be a torch.Tensor of integers, got {type(role_ids).__name__}")
    if role_ids.is_floating_point() or role_ids.is_complex() or role_ids.dtype == torch.bool:
        raise TypeError(f"role_ids must be an integer tensor, got {role_ids.dtype}")
    return role_ids


def check_role_ids(role_ids: torch.Tensor, spec: MoRSpec) -> None:
    """ValueError naming the first entry of ``role_ids`` outside ``-1 .. R-1`` (one reduction)."""
    _check_range(
        role_ids, "role_ids", spec.num_roles,
        f"but the spec has {spec.num_roles} roles {list(spec.role_names)} "
        f"(valid ids: -1 .. {spec.num_roles - 1}; -1 = no adapter)",
    )


def check_lora_index_dtype(lora_index: object, name: str = "lora_index") -> torch.Tensor:
    """TypeError unless ``lora_index`` is an int32 or int64 tensor (what the kernels index with); returns it."""
    if not isinstance(lora_index, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(lora_index).__name__}")
    if lora_index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must be int32 or int64, got {lora_index.dtype}")
    return lora_index


def check_lora_index(lora_index: torch.Tensor, name: str, num_loras: int, whose: str = "there are") -> None:
    """ValueError naming the first entry of ``lora_index`` outside ``-1 .. num_loras-1`` (-1 = an empty
    slot). ``whose`` fits the message to the caller: "there are" / "the spec has" N LoRAs."""
    _check_range(lora_index, name, num_loras, f"but {whose} {num_loras} LoRAs (valid: -1 .. {num_loras - 1})")
