"""mor_ext: Mixture-of-Roles LoRA for agent tuning, with fused PyTorch custom ops."""

from . import functional
from .ops import backend_info, describe_backend, set_backend
from .spec import MoRSpec, RoleSpec

__version__ = "0.1.0"

__all__ = ["MoRSpec", "RoleSpec", "functional", "backend_info", "describe_backend", "set_backend"]
