"""Loading the compiled library, its op names, and the choice of backend.

Importing :mod:`mor_ext._C` registers ``torch.ops.mor_ext.*`` with the dispatcher; the op names
come from the loaded library (their one table is ``csrc/op_table.h``). The backend can be forced with
``MOR_EXT_BACKEND=reference|compiled|auto`` or :func:`set_backend`; :func:`backend_info` says what
is in use.
"""

from __future__ import annotations

import os
from typing import Any

import torch

try:  # Loading the library registers torch.ops.mor_ext.* with the dispatcher.
    from .. import _C  # noqa: F401

    _COMPILED_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised where the extension is not built
    _COMPILED_ERROR = str(exc)

_BACKENDS = ("auto", "compiled", "reference")
_backend = os.environ.get("MOR_EXT_BACKEND", "auto").strip().lower() or "auto"
if _backend not in _BACKENDS:
    raise ValueError(f"MOR_EXT_BACKEND={_backend!r}; expected one of {_BACKENDS}")

# Ops that exist only for the tests carry this prefix (their section of csrc/op_table.h).
TESTING_PREFIX = "testing_"


def compiled_available() -> bool:
    """Whether the compiled extension loaded."""
    return _COMPILED_ERROR is None


def library_ops() -> tuple[str, ...]:
    """Every op the loaded library defines (``csrc/op_table.h``), sorted; empty without the library."""
    if not compiled_available():
        return ()
    prefix = "mor_ext::"
    return tuple(sorted(name[len(prefix):] for name in torch._C._dispatch_get_all_op_names()
                        if name.startswith(prefix)))


def _takes_tensors(name: str) -> bool:
    schema = getattr(torch.ops.mor_ext, name).default._schema
    return any("Tensor" in str(arg.type) for arg in schema.arguments)


def _dispatched_ops() -> tuple[str, ...]:
    # The forward ops with device kernels; each backward op lives beside its forward.
    return tuple(name for name in library_ops() if not name.startswith(TESTING_PREFIX)
                 and not name.endswith("_backward") and _takes_tensors(name))


# The forward ops the dispatch (mor_ext.ops.dispatch) chooses between, read from the library.
OP_NAMES: tuple[str, ...] = _dispatched_ops()
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
    """The backend in use: ``"auto"``, ``"compiled"`` or ``"reference"``."""
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
        # path (<= 8 tokens), >= 64 tokens through one GEMM per role and kind in its own kernels.
        "cpu_avx512": compiled_available() and bool(torch.ops.mor_ext.cpu_avx512()),
        "torch": torch.__version__,
    }


def describe_backend() -> str:
    """One line saying which ops run compiled, on which devices."""
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


# The names of the counts that the test-only op testing_cpu_path_counts returns, in its order
# (csrc/cpu/path_counts.h): which of mor_linear's CPU paths ran, forward and backward calls, and
# which path the orthogonal loss's CPU op calls (forward and backward) took.
CPU_PATHS = ("avx512_decode", "avx512_role_gemms", "generic", "avx512_losses", "generic_losses")


def cpu_path_counts() -> dict[str, int]:
    """For tests: how often each of mor_linear's and the orthogonal loss's CPU paths ran in this process."""
    return dict(zip(CPU_PATHS, torch.ops.mor_ext.testing_cpu_path_counts()))
