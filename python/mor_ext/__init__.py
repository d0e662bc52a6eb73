"""mor_ext: Mixture-of-Roles LoRA for agent tuning, with fused PyTorch custom ops.

Layering (a module imports only from the layers before it): ``spec`` / ``config`` / ``checks``
-> ``ops`` -> ``functional`` -> ``layers`` -> ``patching`` -> ``adapters``, ``generation`` ->
``train``, ``cli``. ``tools`` imports nothing of mor_ext; ``data`` may import ``tools`` and ``spec``.
The contract (math, layout, losses, API, official checkpoints) is ``docs/spec.md``.
"""

from . import functional
from .config import MoRConfig
from .layers import MoRLinear
from .ops import backend_info, describe_backend, set_backend
from .patching import (
    active_role,
    clear_active_role,
    is_patched,
    mor_layers,
    patch,
    print_trainable_parameters,
    set_active_role,
    trainable_parameters,
    unpatch,
)
from .schemes import RoleScheme
from .spec import MoRSpec, RoleSpec

__version__ = "0.1.0"

__all__ = [
    "MoRSpec",
    "RoleSpec",
    "RoleScheme",
    "MoRConfig",
    "MoRLinear",
    "patch",
    "unpatch",
    "is_patched",
    "active_role",
    "set_active_role",
    "clear_active_role",
    "mor_layers",
    "trainable_parameters",
    "print_trainable_parameters",
    "functional",
    "backend_info",
    "describe_backend",
    "set_backend",
]

from .adapters import (  # noqa: E402
    AdapterError,
    convert_official_state_dict,
    load_adapter,
    load_official_checkpoint,
    official_mask_to_role_ids,
    save_adapter,
)

__all__ += [
    "AdapterError",
    "save_adapter",
    "load_adapter",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "official_mask_to_role_ids",
]
