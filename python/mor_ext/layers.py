"""`MoRLinear`: a frozen ``nn.Linear`` plus a Mixture-of-Roles LoRA adapter, and the per-model
:class:`RoleContext` through which :func:`mor_ext.patch` hands every layer the tokens' roles.

Transformer blocks call their projections as ``proj(hidden_states)``, with no way to pass role ids
down, so a patched model's forward puts them in a context object that all its ``MoRLinear`` layers
share; a layer called directly can also take ``role_ids`` as an argument.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checks, functional, ops, sharding
from .spec import MoRSpec

__all__ = ["MoRLinear", "RoleContext"]

_MOR_LINEAR = ops.mor_linear_op() if ops.compiled_available() else None

# What a layer sees for one call: per-token role ids, or one role id for every token.
Roles = Union[torch.Tensor, int]

# One C call for "is autocast on for any device" (torch >= 2.4); else the devices a layer can run on.
_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", None) or (
    lambda: any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda")))


class CallRoles(NamedTuple):
    roles: Roles
    any_active: bool  # whether any role id is not -1
    collect_stats: bool
    # True when a layer re-runs inside backward (gradient checkpointing): it must save the same
    # tensors as the first run, so it computes the statistics again, but must not record them.
    replay: bool
    # When the model's adapter is sharded (FSDP2): layer -> its orthogonal-loss term, computed in its
    # own forward, where its parameters are whole (docs/spec.md §4); None otherwise.
    orth_terms: dict | None = None


class InferencePlan:
    """What every layer of one inference model call would work out for itself, worked out once.

    Generation runs ~210 adapted projections a token (SmolLM2-135M), so per-layer Python counts: a
    call with grad off, no statistics to collect, no autocast and a role to apply hands its layers
    the flat int64 role ids of ``lead``-shaped inputs on ``device``, known to take the compiled op.
    A layer whose input does not match (another shape or device) takes the general path.
    """

    __slots__ = ("role", "roles", "lead", "device")

    def __init__(self, role: int | None, roles: torch.Tensor | None) -> None:
        self.role = role  # the one role of every token (an active or default role), or None
        self.roles = None if roles is None else roles.reshape(-1)  # [N] int64
        self.lead = None if roles is None else roles.shape
        self.device = None if roles is None else roles.device

    def fill(self, x: torch.Tensor) -> bool:
        """For a plan of one role: ids for ``x``'s tokens, kept for the layers after; whether the
        fast path applies to ``x`` (a compiled op for its device)."""
        if self.role is None or not ops.uses_compiled(x, "mor_linear"):
            return False
        self.lead, self.device = x.shape[:-1], x.device
        self.roles = torch.full((math.prod(self.lead),), self.role, dtype=torch.long, device=x.device)
        return True


class RoleContext:
    """State shared by all :class:`MoRLinear` layers of one patched model.

    Precedence for a layer call without ``role_ids``: the ids of the running model call, else the
    active role (:func:`mor_ext.set_active_role`), else ``default_role`` (-1 = base model).
    During a model call it also collects, when asked, each layer's load-balance loss and router load.
    """

    def __init__(self, spec: MoRSpec, default_role: int = -1) -> None:
        self.spec = spec
        self.default_role = spec.role_index(default_role)
        self.active_role: int | None = None
        # Set by the patched model's forward for the duration of one call.
        self.role_ids: torch.Tensor | None = None  # [batch, seq] int64
        self.role_ids_any: bool = False  # whether any id != -1 (computed once per call, not per layer)
        self.collect_stats: bool = False
        self.orth_terms: dict | None = None  # see CallRoles.orth_terms
        # Per adapted layer run in the call, when stats are collected: (router_probs [N, E_total] fp32,
        # lora_index [N, K], the layer's role ids (N of them, any shape; layers that share the call's
        # tensor share one loss op)); the model's loss turns them into the load-balance loss
        # and the router load with one op for all layers (patching._add_losses).
        self.routings: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        # Gradient checkpointing re-runs layers inside backward, after the model call has returned and
        # cleared `role_ids`; the roles of the last call made with grad enabled are kept for that replay.
        self._replay: CallRoles | None = None
        self._by_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # device -> (source, copy)
        self.inference: InferencePlan | None = None  # the running call's, when it qualifies (begin_call)

    def current(self) -> CallRoles:
        """The roles a layer should use now, and whether to collect loss statistics."""
        # Under torch.compile a checkpointed block replays inside the compiled graph, never here.
        if (not torch.compiler.is_compiling() and self._replay is not None
                and torch._C._current_graph_task_id() != -1):
            return self._replay
        if self.role_ids is not None:
            return CallRoles(self.role_ids, self.role_ids_any, self.collect_stats, False, self.orth_terms)
        role = self.default_role if self.active_role is None else self.active_role
        return CallRoles(role, role != -1, self.collect_stats, False, self.orth_terms)

    def role_ids_on(self, role_ids: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``role_ids`` on ``device``, copied once per call per device (models split over GPUs)."""
        if role_ids.device == device:
            return role_ids
        cached = self._by_device.get(device)
        if cached is None or cached[0] is not role_ids:
            cached = (role_ids, role_ids.to(device, non_blocking=True))
            self._by_device[device] = cached
        return cached[1]

    def begin_call(self, role_ids: torch.Tensor | None, collect_stats: bool, orth_in_layers: bool = False) -> tuple:
        """Install one model call's roles, already checked by the caller; returns what :meth:`end_call`
        restores (calls may nest). ``orth_in_layers``: each layer computes its orthogonal-loss term in
        its forward, into :attr:`orth_terms` (for sharded adapters)."""
        saved = (self.role_ids, self.role_ids_any, self.collect_stats, self.routings, self._by_device,
                 self.orth_terms, self.inference)
        # The model call checked the ids (patching, once per forward), so no layer checks them again.
        self.role_ids = role_ids
        # A compiled call assumes some id is active rather than read the ids back (a host sync);
        # the kernels give tokens of role -1 the base layer either way.
        self.role_ids_any = role_ids is not None and role_ids.numel() > 0 and (
            torch.compiler.is_compiling() or bool((role_ids != -1).any()))
        self.collect_stats = collect_stats
        self.routings, self._by_device = [], {}
        self.orth_terms = {} if orth_in_layers else None
        if torch.is_grad_enabled():
            self._replay = self.current()._replace(replay=True)
        self.inference = self._inference_plan()
        return saved

    def _inference_plan(self) -> InferencePlan | None:
        """The plan of a call whose layers may all take the compiled op directly (MoRLinear._forward_planned),
        or None: training (grad on: dropout, statistics, checkpoint replays, FSDP's terms live on the
        general path), autocast (the general path casts), compiling (one graph for every call), no role."""
        if (torch.is_grad_enabled() or self.collect_stats or self.orth_terms is not None
                or torch.compiler.is_compiling() or _any_autocast()):
            return None
        if self.role_ids is not None:
            if not self.role_ids_any or not ops.uses_compiled(self.role_ids, "mor_linear"):
                return None
            return InferencePlan(None, self.role_ids.long())
        role = self.default_role if self.active_role is None else self.active_role
        return None if role == -1 else InferencePlan(role, None)

    def end_call(self, saved: tuple) -> None:
        (self.role_ids, self.role_ids_any, self.collect_stats, self.routings, self._by_device,
         self.orth_terms, self.inference) = saved


class MoRLinear(nn.Module):
    """A frozen ``nn.Linear`` (``self.base_layer``) plus a Mixture-of-Roles LoRA adapter.

    Trainable parameters, in the canonical layout (``docs/spec.md`` §2): ``lora_A [L, r, d_in]``,
    ``lora_B [L, d_out, r]``, ``router_weight [E_total, d_in]``, ``shared_gate_weight [R, d_in]``,
    in the base weight's dtype and device. ``B`` starts at zero, so a new layer computes exactly the
    base layer.
    """

    # The adapter's parameters, in the order adapters and summaries list them.
    PARAMETER_NAMES = ("lora_A", "lora_B", "router_weight", "shared_gate_weight")

    def __init__(
        self,
        base_layer: nn.Linear,
        spec: MoRSpec,
        *,
        scaling: float = 1.0,
        lora_dropout: float = 0.0,
        role_context: RoleContext | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"MoRLinear wraps an nn.Linear, got {type(base_layer).__name__}")
        if not isinstance(spec, MoRSpec):
            raise TypeError(f"spec must be a mor_ext.MoRSpec, got {type(spec).__name__}")
        weight = base_layer.weight
        if not weight.is_floating_point():
            raise TypeError(
                f"MoRLinear needs a floating-point base weight, got {weight.dtype} "
                "(quantised base layers are not supported)"
            )
        if not 0.0 <= lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {lora_dropout}")
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
        self.spec = spec
        self.scaling = float(scaling)
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        # A plain attribute, not a submodule: one context is shared by every layer of a model.
        self.role_context = role_context if role_context is not None else RoleContext(spec)
        self._kernel_args_cache: tuple | None = None  # (spec, scaling, ops.kernel_args(spec, scaling))

        d_in, d_out = base_layer.in_features, base_layer.out_features
        factory = {"dtype": weight.dtype, "device": weight.device}
        self.lora_A = nn.Parameter(torch.empty(spec.num_loras, spec.rank, d_in, **factory))  # [L, r, d_in]
        self.lora_B = nn.Parameter(torch.empty(spec.num_loras, d_out, spec.rank, **factory))  # [L, d_out, r]
        self.router_weight = nn.Parameter(torch.empty(spec.num_experts_total, d_in, **factory))  # [E_total, d_in]
        self.shared_gate_weight = nn.Parameter(torch.empty(spec.num_roles, d_in, **factory))  # [R, d_in]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PEFT-style init: each ``A_l`` Kaiming-uniform (a=sqrt 5) on its own ``[r, d_in]``, ``B = 0``,
        router and shared-gate rows as ``nn.Linear`` initialises its weight."""
        with torch.no_grad():
            # Per LoRA, so the bound is 1/sqrt(d_in) rather than that of the stacked tensor's fan-in.
            for a in self.lora_A:
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)
            for w in (self.router_weight, self.shared_gate_weight):
                if w.numel():
                    nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    # ---------------------------------------------------------------------------- nn.Linear look-alike
    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    # ---------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, role_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``x [..., d_in] -> [..., d_out]``. ``role_ids`` (shape ``x.shape[:-1]``, -1 = base only)
        defaults to the model call's ids, else the active role, else the default role."""
        plan = self.role_context.inference
        if plan is not None and role_ids is None:
            y = self._forward_planned(x, plan)
            if y is not None:
                return y
        call = self.role_context.current()
        roles = self._roles_for(x, role_ids, call)
        y = self.base_layer(x) if roles is None else self._forward_autocast(x, roles, call)
        if call.orth_terms is not None:
            y = self._orthogonal_term_in_forward(y, call)
        return y

    def _forward_planned(self, x: torch.Tensor, plan: InferencePlan) -> torch.Tensor | None:
        """The inference fast path: the compiled op on the plan's role ids, parameters read straight
        from the parameter dicts, one op call; None where it does not apply (the general path then
        decides, with its checks and messages). Gives what the general path's compiled branch gives."""
        if (self.training and isinstance(self._modules["lora_dropout"], nn.Dropout)) or torch.compiler.is_compiling() \
                or _any_autocast():
            return None
        lead = x.shape[:-1]
        if (lead != plan.lead or x.device != plan.device) and not plan.fill(x):
            return None
        base, p = self._modules["base_layer"]._parameters, self._parameters
        weight = base["weight"]
        if x.dtype != weight.dtype:
            return None
        cached = self._kernel_args_cache
        args = cached[2] if cached is not None and cached[0] is self.spec and cached[1] == self.scaling \
            else self._kernel_args()
        y = _MOR_LINEAR(x.reshape(-1, x.shape[-1]), weight, base["bias"], p["lora_A"], p["lora_B"],
                        p["router_weight"], p["shared_gate_weight"], plan.roles, *args)[0]
        return y.view(*lead, weight.shape[0])  # (a torch.Size argument costs twice as much as ints)

    def _orthogonal_term_in_forward(self, y: torch.Tensor, call: CallRoles) -> torch.Tensor:
        """Under FSDP2 the parameters are whole only inside this forward (and backward), so the model's
        orthogonal loss takes this layer's term from here, tied to ``y`` so that its backward runs inside
        the layer's backward (:func:`mor_ext.sharding.tie_to_output`). A replay (activation
        checkpointing) computes it again, to save the same tensors, but does not record it."""
        term = functional.orthogonal_loss(self.lora_A, self.lora_B, self.spec)
        y, term = sharding.tie_to_output(y, term)
        if not call.replay:
            call.orth_terms.setdefault(self, term)
        return y

    @staticmethod
    def _functional_checks():
        """Context for the functional.* ops: every id a layer sees was checked already (a model call's
        once per call, ids handed to the layer in :meth:`_roles_for`, an active role is valid by
        construction), so the layers skip the per-layer range check."""
        if not torch.compiler.is_compiling():
            return checks.ids_checked()
        return contextlib.nullcontext()

    def _kernel_args(self) -> tuple:
        if torch.compiler.is_compiling():  # constants of the graph; a cache write would be a guarded side effect
            return ops.kernel_args(self.spec, self.scaling)
        cached = self._kernel_args_cache
        if cached is None or cached[0] is not self.spec or cached[1] != self.scaling:
            cached = (self.spec, self.scaling, ops.kernel_args(self.spec, self.scaling))
            self._kernel_args_cache = cached
        return cached[2]

    def _forward_autocast(
        self, x: torch.Tensor, roles: torch.Tensor, call: CallRoles
    ) -> torch.Tensor:
        params = (self.weight, self.bias, self.lora_A, self.lora_B, self.router_weight, self.shared_gate_weight)
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            # The custom ops have no autocast rule and need one dtype throughout, so cast here, as
            # autocast would for F.linear; gradients flow back to the full-precision parameters.
            dtype = torch.get_autocast_dtype(device_type)
            x = x.to(dtype)
            params = tuple(None if p is None else p.to(dtype) for p in params)
            with torch.autocast(device_type, enabled=False):
                return self._forward(x, roles, call, *params)
        return self._forward(x, roles, call, *params)

    def _forward(
        self, x, roles, call, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight
    ) -> torch.Tensor:
        if self.training and isinstance(self.lora_dropout, nn.Dropout):
            # The router sees the undropped input (docs/spec.md §3); only the LoRA input is dropped.
            with self._functional_checks():
                routing = functional.route(x, router_weight, shared_gate_weight, roles, self.spec)
                y = F.linear(x, weight, bias) + functional.grouped_lora(
                    self.lora_dropout(x), lora_A, lora_B, routing.lora_index, routing.lora_weight, self.scaling
                )
        elif x.dtype == weight.dtype and ops.uses_compiled(x, "mor_linear"):
            # The layer's own parameters need no Python-side validation (the compiled op checks shapes,
            # dtypes and devices again, and the call's role ids were checked once per call): skipping
            # functional.* saves its checks on every layer of every step.
            lead, d_in = x.shape[:-1], x.shape[-1]
            flat_roles = roles.reshape(-1)
            if flat_roles.dtype != torch.long:
                flat_roles = flat_roles.long()
            y, index, gate, probs = ops.mor_linear_kernel(
                x.reshape(-1, d_in), weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, flat_roles,
                self._kernel_args(),
            )
            if call.collect_stats and not call.replay:
                self.role_context.routings.append((probs, index, roles))
            return y.view(*lead, y.shape[-1])
        else:
            with self._functional_checks():
                y, routing = functional.mor_linear(
                    x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, roles, self.spec,
                    self.scaling, return_routing=True,
                )
        if call.collect_stats and not call.replay:
            spec, n = self.spec, roles.numel()  # explicit sizes: a spec without routers has E_total = 0
            self.role_context.routings.append((routing.router_probs.reshape(n, spec.num_experts_total),
                                               routing.lora_index.reshape(n, spec.k_max), roles))
        return y

    def _roles_for(self, x: torch.Tensor, role_ids: torch.Tensor | None, call: CallRoles) -> torch.Tensor | None:
        """Per-token role ids of shape ``x.shape[:-1]``, or None when every token is -1 (base only)."""
        lead = x.shape[:-1]
        if role_ids is not None:
            # A layer called with its own ids is an entry point, so they are checked here, once, for
            # every path below: the compiled path's .long() would truncate float ids, and the CUDA
            # kernels read an out-of-range id as "no adapter" instead of refusing it.
            checks.check_role_ids_tensor(role_ids)
            checks.check_role_ids(role_ids, self.spec)
            return role_ids if bool((role_ids != -1).any()) else None
        roles = call.roles
        if not call.any_active:
            return None
        if isinstance(roles, int):
            return torch.full(lead, roles, dtype=torch.long, device=x.device)
        roles = self.role_context.role_ids_on(roles, x.device)
        if roles.shape != lead:
            if roles.numel() != math.prod(lead):
                raise ValueError(
                    f"this layer got x of shape {list(x.shape)}, but the model call's role_ids have shape "
                    f"{list(roles.shape)}; role_ids must have one entry per token (the shape of input_ids)"
                )
            # Some models flatten [batch, seq] before a projection; the token order is unchanged.
            roles = roles.reshape(lead)
        return roles

    def extra_repr(self) -> str:
        roles = ", ".join(
            f"{r.name}({int(r.shared)}+{r.num_experts}, top-{r.top_k})" for r in self.spec.roles
        )
        dropout = self.lora_dropout.p if isinstance(self.lora_dropout, nn.Dropout) else 0.0
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"roles=[{roles}], rank={self.spec.rank}, shared_gate={self.spec.shared_gate}, "
            f"scaling={self.scaling:g}, dropout={dropout:g}"
        )
