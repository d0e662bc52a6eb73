"""The custom ops: backend choice, dispatch to the compiled ops or the pure-PyTorch reference, and
the ops' fake kernels.

What lives here:

- :mod:`.backend` loads the compiled library (``mor_ext._C``), reads its op names and chooses the
  backend (``MOR_EXT_BACKEND=auto|compiled|reference`` or :func:`set_backend`; :func:`backend_info`);
- :mod:`.dispatch` has one function per op, the compiled op where it has a kernel for the tensors'
  device, else the reference;
- :mod:`.reference` is the pure-PyTorch truth of every op (``docs/spec.md`` §3 and §4);
- :mod:`.fake` registers the ops' fake kernels (their autograd is C++: ``csrc/autograd.cpp``).

Schemas live in ``csrc/op_table.h``, kernels in ``csrc/`` (see ``csrc/README.md``).

Layering: this package may import :mod:`mor_ext.spec`, :mod:`mor_ext.config` and torch; never
``functional``, ``layers``, ``patching`` or anything above them.
"""

from __future__ import annotations

from . import reference
from .backend import (
    CPU_PATHS,
    OP_NAMES,
    TESTING_PREFIX,
    backend_info,
    compiled_available,
    compiled_kernels,
    cpu_path_counts,
    describe_backend,
    get_backend,
    library_ops,
    set_backend,
    uses_compiled,
)
from .dispatch import (
    ORTHOGONAL_CUDA_MAX_RANK,
    _flags,
    kernel_args,
    load_balance_loss,
    load_balance_loss_layers,
    lora_linear,
    mor_linear,
    mor_linear_kernel,
    mor_linear_op,
    orthogonal_loss,
    orthogonal_loss_layers,
    route,
)

__all__ = [
    "CPU_PATHS",
    "OP_NAMES",
    "ORTHOGONAL_CUDA_MAX_RANK",
    "TESTING_PREFIX",
    "backend_info",
    "compiled_available",
    "compiled_kernels",
    "cpu_path_counts",
    "describe_backend",
    "get_backend",
    "kernel_args",
    "library_ops",
    "load_balance_loss",
    "load_balance_loss_layers",
    "lora_linear",
    "mor_linear",
    "mor_linear_kernel",
    "mor_linear_op",
    "orthogonal_loss",
    "orthogonal_loss_layers",
    "reference",
    "route",
    "set_backend",
    "uses_compiled",
]

if compiled_available():
    from . import fake

    fake.register()
    compiled_kernels()  # asked once now, so that torch.compile never traces the dispatcher query
