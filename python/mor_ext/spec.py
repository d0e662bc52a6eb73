"""`MoRSpec` / `RoleSpec`: the shape of a Mixture-of-Roles adapter, validated in one place.

The canonical parameter layout (``docs/spec.md`` §2) follows directly from the spec:

* ``lora_A [L, r, d_in]`` / ``lora_B [L, d_out, r]`` with ``L = sum(shared + num_experts)``; for each
  role in order, its shared LoRA first (if any), then its routed LoRAs.
* ``router_weight [E_total, d_in]``: the router rows of each role, contiguous, in role order.
* ``shared_gate_weight [R, d_in]``: row ``rho`` gates role ``rho``'s shared LoRA.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

__all__ = ["RoleSpec", "MoRSpec"]

_SHARED_GATES = ("sigmoid", "none")


@dataclass(frozen=True)
class RoleSpec:
    """One role: a shared LoRA (optional) plus ``num_experts`` routed LoRAs, ``top_k`` active per token."""

    name: str
    num_experts: int = 0
    top_k: int = 0
    shared: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"RoleSpec.name must be a non-empty string, got {self.name!r}")
        for attr in ("num_experts", "top_k"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"RoleSpec({self.name!r}).{attr} must be an int >= 0, got {value!r}")
        if self.top_k > self.num_experts:
            raise ValueError(
                f"RoleSpec({self.name!r}): top_k={self.top_k} > num_experts={self.num_experts}; "
                "a role cannot activate more routed LoRAs than it has"
            )
        if not isinstance(self.shared, bool):
            raise ValueError(f"RoleSpec({self.name!r}).shared must be a bool, got {self.shared!r}")
        if not self.shared and self.num_experts == 0:
            raise ValueError(f"RoleSpec({self.name!r}) has no LoRA at all (shared=False, num_experts=0)")

    @property
    def num_loras(self) -> int:
        return int(self.shared) + self.num_experts

    @property
    def num_slots(self) -> int:
        """LoRAs active per token of this role: the shared one plus ``top_k`` routed ones."""
        return int(self.shared) + self.top_k


# The kernels' per-token tables have room for this many roles and routed LoRAs per role
# (kMaxRoles, kMaxExperts in csrc/kernels/routing.h); every backend keeps to them, so a spec that
# trains on one device trains on any.
MAX_ROLES = 16
MAX_EXPERTS_PER_ROLE = 64


@dataclass(frozen=True)
class MoRSpec:
    """The roles of a Mixture-of-Roles adapter, their rank and how shared LoRAs are gated."""

    roles: tuple[RoleSpec, ...]
    rank: int = 16
    shared_gate: str = "sigmoid"
    # Derived tables, computed once in __post_init__ (not part of equality or the constructor).
    lora_offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)
    router_offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        roles = tuple(self.roles)
        if not roles:
            raise ValueError("MoRSpec needs at least one role")
        for role in roles:
            if not isinstance(role, RoleSpec):
                raise TypeError(f"MoRSpec.roles must hold RoleSpec objects, got {type(role).__name__}")
        if len(roles) > MAX_ROLES:
            raise ValueError(f"MoRSpec: at most {MAX_ROLES} roles are supported, got {len(roles)}")
        for role in roles:
            if role.num_experts > MAX_EXPERTS_PER_ROLE:
                raise ValueError(
                    f"MoRSpec: role {role.name!r} has {role.num_experts} routed LoRAs; at most "
                    f"{MAX_EXPERTS_PER_ROLE} per role are supported"
                )
        names = [r.name for r in roles]
        if len(set(names)) != len(names):
            raise ValueError(f"MoRSpec role names must be unique, got {names}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"MoRSpec.rank must be an int >= 1, got {self.rank!r}")
        if self.shared_gate not in _SHARED_GATES:
            raise ValueError(f"MoRSpec.shared_gate must be one of {_SHARED_GATES}, got {self.shared_gate!r}")
        lora_offsets, router_offsets = [0], [0]
        for role in roles:
            lora_offsets.append(lora_offsets[-1] + role.num_loras)
            router_offsets.append(router_offsets[-1] + role.num_experts)
        object.__setattr__(self, "roles", roles)
        object.__setattr__(self, "lora_offsets", tuple(lora_offsets))
        object.__setattr__(self, "router_offsets", tuple(router_offsets))

    # ----------------------------------------------------------------------------------- presets
    @classmethod
    def moragent(cls, rank: int = 16, shared_gate: str = "sigmoid") -> "MoRSpec":
        """MoRAgent's default: reasoner/executor 1 shared + 4 routed (top-3), summarizer 1 + 3 (top-2)."""
        return cls(
            roles=(
                RoleSpec("reasoner", num_experts=4, top_k=3, shared=True),
                RoleSpec("executor", num_experts=4, top_k=3, shared=True),
                RoleSpec("summarizer", num_experts=3, top_k=2, shared=True),
            ),
            rank=rank,
            shared_gate=shared_gate,
        )

    @classmethod
    def decoupled(
        cls, role_names: Sequence[str] = ("tool_selector", "argument_generator"), rank: int = 16
    ) -> "MoRSpec":
        """AgentFlux-style decoupled adapters: one plain LoRA per role, no routing, no gate."""
        return cls(roles=tuple(RoleSpec(n, 0, 0, True) for n in role_names), rank=rank, shared_gate="none")

    # ----------------------------------------------------------------------------------- sizes
    @property
    def num_roles(self) -> int:
        return len(self.roles)

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles)

    @property
    def num_loras(self) -> int:
        """``L``: LoRAs stacked in ``lora_A`` / ``lora_B``."""
        return self.lora_offsets[-1]

    @property
    def num_experts_total(self) -> int:
        """``E_total``: rows of ``router_weight``."""
        return self.router_offsets[-1]

    @property
    def k_max(self) -> int:
        """Slots per token in ``lora_index`` / ``lora_weight``."""
        return max(r.num_slots for r in self.roles)

    def role_index(self, role: int | str) -> int:
        """Map a role name or id to its id, with an error that lists the valid names."""
        if isinstance(role, str):
            try:
                return self.role_names.index(role)
            except ValueError:
                raise ValueError(f"unknown role {role!r}; this spec has roles {list(self.role_names)}") from None
        if isinstance(role, bool) or not hasattr(role, "__index__"):
            raise TypeError(f"a role is a name (str) or an id (int), got {type(role).__name__} {role!r}")
        role = operator.index(role)  # numpy and 0-d tensor ints too
        if not -1 <= role < self.num_roles:
            raise ValueError(f"role id {role!r} is out of range: expected -1 .. {self.num_roles - 1}")
        return role

    def shared_lora(self, role: int) -> int | None:
        """Index in ``lora_A`` of role ``role``'s shared LoRA, or None."""
        return self.lora_offsets[role] if self.roles[role].shared else None

    def routed_loras(self, role: int) -> range:
        """Indices in ``lora_A`` of role ``role``'s routed LoRAs."""
        start = self.lora_offsets[role] + int(self.roles[role].shared)
        return range(start, start + self.roles[role].num_experts)

    # ----------------------------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "roles": [
                {"name": r.name, "num_experts": r.num_experts, "top_k": r.top_k, "shared": r.shared}
                for r in self.roles
            ],
            "rank": self.rank,
            "shared_gate": self.shared_gate,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MoRSpec":
        try:
            roles: Iterable[dict[str, Any]] = data["roles"]
            return cls(
                roles=tuple(RoleSpec(**r) for r in roles),
                rank=data.get("rank", 16),
                shared_gate=data.get("shared_gate", "sigmoid"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a valid MoRSpec dict ({exc}): {data!r}") from exc

    # Flat tuples, the form the compiled ops take (schemas have no dataclasses).
    def op_args(self) -> tuple[list[int], list[int], list[bool], bool]:
        return (
            [r.num_experts for r in self.roles],
            [r.top_k for r in self.roles],
            [r.shared for r in self.roles],
            self.shared_gate == "sigmoid",
        )
