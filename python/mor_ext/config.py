"""`MoRConfig`: everything :func:`mor_ext.patch` needs to turn a model into a Mixture-of-Roles model.

The adapter's shape lives in :class:`~mor_ext.spec.MoRSpec`; this config adds what PEFT's
``LoraConfig`` holds (scaling, dropout, target modules) and the training losses' weights. It is
serialised as JSON beside the adapter weights (:meth:`MoRConfig.to_dict` / :meth:`MoRConfig.from_dict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from .schemes import RoleScheme
from .spec import MoRSpec

__all__ = ["MoRConfig", "DEFAULT_TARGET_MODULES", "default_target_modules"]

_LLAMA_STYLE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Phi-3 fuses q/k/v and gate/up into single projections.
_PHI3_STYLE = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")

#: Default ``target_modules`` per ``model.config.model_type``; unknown types fall back to Llama's names.
DEFAULT_TARGET_MODULES: dict[str, tuple[str, ...]] = {
    "llama": _LLAMA_STYLE,
    "mistral": _LLAMA_STYLE,
    "qwen2": _LLAMA_STYLE,
    "qwen3": _LLAMA_STYLE,
    "phi3": _PHI3_STYLE,
}


def default_target_modules(model_type: str | None) -> list[str]:
    """The module-name suffixes adapted by default for a model family (Llama-style when unknown)."""
    return list(DEFAULT_TARGET_MODULES.get(model_type or "", _LLAMA_STYLE))


@dataclass
class MoRConfig:
    """How to adapt a model with Mixture-of-Roles LoRA.

    ``lora_alpha=None`` means ``lora_alpha = rank`` (scaling 1). ``target_modules=None`` picks the
    family default at patch time (Llama/Mistral/Qwen: every attention and MLP projection; Phi-3 its
    fused ones); names match module-name suffixes, as in PEFT. ``context_role`` is the role the data
    pipeline gives context tokens (system, tools, user, observations); ``default_role`` is used by a
    forward that gets no ``role_ids`` while no role is active. ``None`` means role -1 (base model).
    ``scheme`` says which role each token of a trajectory runs under (``docs/spec.md`` §7); None, what
    adapters saved before schemes existed hold, means each turn under the role that writes it (MoRAgent).
    """

    spec: MoRSpec = field(default_factory=lambda: MoRSpec.moragent(16))
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None
    aux_loss_coef: float = 1e-3
    orth_loss_coef: float = 1e-4
    add_aux_losses: bool = True
    context_role: str | None = "reasoner"
    default_role: str | None = None
    scheme: RoleScheme | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.spec, MoRSpec):
            raise TypeError(f"MoRConfig.spec must be a mor_ext.MoRSpec, got {type(self.spec).__name__}")
        if self.lora_alpha is not None:
            self.lora_alpha = _finite_float(self.lora_alpha, "lora_alpha")
            if self.lora_alpha <= 0:
                raise ValueError(f"MoRConfig.lora_alpha must be > 0 (or None for alpha = rank), got {self.lora_alpha}")
        self.lora_dropout = _finite_float(self.lora_dropout, "lora_dropout")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"MoRConfig.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.target_modules is not None:
            # A bare string is a regex in PEFT; we only match suffixes, so refuse it rather than guess.
            if isinstance(self.target_modules, str) or not all(
                isinstance(t, str) and t for t in self.target_modules
            ):
                raise TypeError(
                    "MoRConfig.target_modules must be a list of non-empty module names (suffixes such as "
                    f"'q_proj'), or None for the model family's default; got {self.target_modules!r}"
                )
            self.target_modules = list(self.target_modules)
            if not self.target_modules:
                raise ValueError("MoRConfig.target_modules is empty; pass None for the model family's default")
        for name in ("aux_loss_coef", "orth_loss_coef"):
            value = _finite_float(getattr(self, name), name)
            if value < 0:
                raise ValueError(f"MoRConfig.{name} must be >= 0, got {value}")
            setattr(self, name, value)
        if not isinstance(self.add_aux_losses, bool):
            raise TypeError(f"MoRConfig.add_aux_losses must be a bool, got {self.add_aux_losses!r}")
        for name in ("context_role", "default_role"):
            role = getattr(self, name)
            if role is None:
                continue
            if not isinstance(role, str):
                raise TypeError(f"MoRConfig.{name} must be a role name or None, got {role!r}")
            if role not in self.spec.role_names:
                raise ValueError(
                    f"MoRConfig.{name}={role!r} is not a role of the spec; roles are {list(self.spec.role_names)} "
                    "(or None for the base model)"
                )

        if self.scheme is not None:
            if not isinstance(self.scheme, RoleScheme):
                raise TypeError(f"MoRConfig.scheme must be a mor_ext.RoleScheme or None, got {type(self.scheme).__name__}")
            self.scheme.check_spec(self.spec)

    @property
    def scaling(self) -> float:
        """``lora_alpha / rank`` (1.0 when ``lora_alpha`` is None)."""
        alpha = self.spec.rank if self.lora_alpha is None else self.lora_alpha
        return float(alpha) / self.spec.rank

    def role_id(self, role: str | None) -> int:
        """Id of a role name from this config (``None`` -> -1, the base model)."""
        return -1 if role is None else self.spec.role_index(role)

    @property
    def context_role_id(self) -> int:
        return self.role_id(self.context_role)

    @property
    def default_role_id(self) -> int:
        return self.role_id(self.default_role)

    # ------------------------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` inverts it."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["spec"] = self.spec.to_dict()
        data["scheme"] = None if self.scheme is None else self.scheme.to_dict()
        if data["target_modules"] is not None:
            data["target_modules"] = list(data["target_modules"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MoRConfig":
        """Build a config from :meth:`to_dict`'s output; unknown keys are an error (they are usually typos)."""
        if not isinstance(data, dict):
            raise TypeError(f"MoRConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MoRConfig keys {unknown}; expected some of {sorted(known)}")
        kwargs = dict(data)
        if "spec" in kwargs:
            spec = kwargs["spec"]
            kwargs["spec"] = spec if isinstance(spec, MoRSpec) else MoRSpec.from_dict(spec)
        scheme = kwargs.get("scheme")
        if scheme is not None and not isinstance(scheme, RoleScheme):
            kwargs["scheme"] = RoleScheme.from_dict(scheme)
        return cls(**kwargs)


def _finite_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"MoRConfig.{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"MoRConfig.{name} must be finite, got {value}")
    return value
