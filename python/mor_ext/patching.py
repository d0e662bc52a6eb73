"""Turn a Hugging Face model into a Mixture-of-Roles model in place, and back.

:func:`patch` swaps the target ``nn.Linear`` modules for :class:`~mor_ext.layers.MoRLinear`, freezes
everything else and wraps ``model.forward`` so that ``model(input_ids=..., role_ids=..., labels=...)``
routes each token by its role and adds the load-balance and orthogonality losses to the loss.
:func:`active_role` / :func:`set_active_role` choose the role of calls without ``role_ids`` (e.g.
between ``generate`` calls that share a KV cache); :func:`unpatch` restores the original model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import types
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from . import ops, sharding
from .checks import check_role_ids, check_role_ids_tensor
from .config import MoRConfig, default_target_modules
from .layers import MoRLinear, RoleContext
from .spec import MoRSpec

__all__ = [
    "patch",
    "unpatch",
    "is_patched",
    "active_role",
    "set_active_role",
    "clear_active_role",
    "mor_layers",
    "trainable_parameters",
    "print_trainable_parameters",
]

_STATE_ATTR = "_mor_state"
_NOT_SET = object()


@dataclasses.dataclass
class _PatchState:
    """What :func:`unpatch` needs to undo :func:`patch`, and the context the layers share."""

    config: MoRConfig
    context: RoleContext
    original_forward: Callable[..., Any]  # bound method of the model, as found before patching
    previous_forward: Any  # the instance attribute `forward` before patching, or _NOT_SET
    requires_grad: dict[str, bool]  # every parameter's flag before patching
    # The MoRLinear modules patch created, in module order: the orthogonal loss runs over all of them
    # every training step, and walking named_modules() for them cost more than the loss's own
    # arithmetic on small models.
    layers: list[MoRLinear] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------------------------- patch
def patch(model: nn.Module, config: MoRConfig | None = None) -> nn.Module:
    """Adapt ``model`` in place with Mixture-of-Roles LoRA and return it.

    Replaces every ``nn.Linear`` whose name ends with one of ``config.target_modules`` (family default
    when None) by a :class:`MoRLinear`, freezes all other parameters, and wraps ``model.forward`` to
    accept ``role_ids`` (``[batch, seq]`` ints, -1 = base model) and to add the auxiliary losses.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"patch expects a torch.nn.Module, got {type(model).__name__}")
    if is_patched(model) or any(isinstance(m, MoRLinear) for m in model.modules()):
        raise RuntimeError(
            f"this {type(model).__name__} is already patched with mor_ext; call mor_ext.unpatch(model) first"
        )
    config = MoRConfig() if config is None else config
    if not isinstance(config, MoRConfig):
        raise TypeError(f"config must be a mor_ext.MoRConfig, got {type(config).__name__}")

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = list(config.target_modules) if config.target_modules is not None else default_target_modules(model_type)
    matches = _match_targets(model, targets)
    # Checked before anything changes, so that a refused model is left as it was.
    not_float = [(name, m.weight.dtype) for name, m in matches if not m.weight.is_floating_point()]
    if not_float:
        raise TypeError(
            f"mor_ext.patch needs floating-point base weights; {len(not_float)} target modules are not, "
            f"e.g. {not_float[0][0]!r} is {not_float[0][1]} (quantised base layers are not supported)"
        )
    config = dataclasses.replace(config, target_modules=targets)

    requires_grad = {name: p.requires_grad for name, p in model.named_parameters(remove_duplicate=False)}
    for p in model.parameters():
        p.requires_grad_(False)
    context = RoleContext(config.spec, default_role=config.default_role_id)
    layers = []
    for name, linear in matches:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = MoRLinear(
            linear, config.spec, scaling=config.scaling, lora_dropout=config.lora_dropout, role_context=context
        )
        layer.train(linear.training)
        setattr(parent, child, layer)
        layers.append(layer)

    state = _PatchState(
        config=config,
        context=context,
        original_forward=model.forward,
        previous_forward=model.__dict__.get("forward", _NOT_SET),
        requires_grad=requires_grad,
        layers=layers,
    )
    setattr(model, _STATE_ATTR, state)
    model.mor_config = config
    model.forward = types.MethodType(_make_forward(state.original_forward), model)
    return model


def _make_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    """A fresh function to bind as the model's ``forward`` (bound, not a closure over the model, so
    that copy.deepcopy rebinds it to the copy)."""

    def forward(self: nn.Module, *args: Any, role_ids: torch.Tensor | None = None, **kwargs: Any) -> Any:
        return _mor_forward(self, *args, role_ids=role_ids, **kwargs)

    functools.update_wrapper(forward, original)
    # `generate` validates its kwargs against inspect.signature(model.forward): give it the original
    # parameters plus `role_ids`, with `self` in front since the bound method drops the first one.
    sig = inspect.signature(original)
    params = list(sig.parameters.values())
    if "role_ids" not in sig.parameters:
        role_param = inspect.Parameter("role_ids", inspect.Parameter.KEYWORD_ONLY, default=None)
        cut = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
        params.insert(cut, role_param)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    del forward.__wrapped__  # or inspect would follow it and ignore __signature__
    forward.__signature__ = sig.replace(parameters=[self_param, *params])  # type: ignore[attr-defined]
    return forward


def _match_targets(model: nn.Module, targets: list[str]) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules whose dotted name ends with one of ``targets`` (as PEFT matches)."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]

    def hit(name: str, target: str) -> bool:
        return name == target or name.endswith("." + target)

    matches = [(name, m) for name, m in linears if any(hit(name, t) for t in targets)]
    if not matches:
        suffixes = sorted({name.rpartition(".")[2] for name, _ in linears})
        example = f" (e.g. {linears[0][0]!r})" if linears else ""
        raise ValueError(
            f"target_modules {targets} match no nn.Linear of {type(model).__name__}; its nn.Linear modules "
            f"are named {suffixes}{example}. Pass MoRConfig(target_modules=[...]) with some of these names."
        )
    unmatched = [t for t in targets if not any(hit(name, t) for name, _ in linears)]
    if unmatched:
        warnings.warn(
            f"mor_ext.patch: target_modules {unmatched} match no nn.Linear of {type(model).__name__}; "
            f"adapting the {len(matches)} modules matched by the others",
            stacklevel=3,
        )
    return matches


def _mor_forward(self: nn.Module, *args: Any, role_ids: torch.Tensor | None = None, **kwargs: Any) -> Any:
    """The patched model's forward: the original one, with ``role_ids`` visible to every MoRLinear
    and, when a loss is computed, the load-balance and orthogonality losses added to it."""
    state: _PatchState = getattr(self, _STATE_ATTR)
    config, ctx = state.config, state.context
    if role_ids is not None:
        # The one check of the call's ids (the range costs a device-to-host sync on GPU): layers trust it.
        role_ids = _call_role_ids(role_ids, config.spec, args, kwargs)
    labels = kwargs.get("labels")
    collect = labels is not None or (self.training and torch.is_grad_enabled())

    # FSDP2 holds the layers' parameters sharded outside their own forward: each layer then computes
    # its orthogonal term there (layers.MoRLinear._orthogonal_term_in_forward).
    orth_in_layers = collect and adapter_is_sharded(self)
    saved = ctx.begin_call(role_ids, collect, orth_in_layers)
    try:
        out = state.original_forward(*args, **kwargs)
        routings, orth_terms = ctx.routings, ctx.orth_terms
    finally:
        ctx.end_call(saved)
    if not collect:
        return out
    return _add_losses(self, out, config, routings, labels is not None, orth_terms)


def adapter_is_sharded(model: nn.Module) -> bool:
    """Whether some MoR parameters of ``model`` are DTensors now (FSDP2 shards them outside their
    layer's forward); a layer's parameters are sharded together, so its ``lora_A`` tells."""
    return sharding.distributed_active() and any(sharding.is_sharded(layer.lora_A) for _, layer in mor_layers(model))


def _call_role_ids(role_ids: Any, spec: MoRSpec, args: tuple, kwargs: dict) -> torch.Tensor:
    """The call's ``role_ids`` as int64, after checking their type, that they match the tokens, and
    their range."""
    check_role_ids_tensor(role_ids)
    first = kwargs.get("input_ids", args[0] if args else None)
    inputs_embeds = kwargs.get("inputs_embeds")
    if isinstance(first, torch.Tensor) and not first.is_floating_point():
        expected, what = tuple(first.shape), "input_ids"
    elif isinstance(inputs_embeds, torch.Tensor) or isinstance(first, torch.Tensor):
        # Embeddings (or, for a plain nn.Module, hidden states) carry one role per row of features.
        embeds = inputs_embeds if isinstance(inputs_embeds, torch.Tensor) else first
        expected, what = tuple(embeds.shape[:-1]), "inputs_embeds.shape[:-1]"
    else:
        raise ValueError("role_ids were given without input_ids or inputs_embeds to match them against")
    if tuple(role_ids.shape) != expected:
        raise ValueError(
            f"role_ids must have the shape of {what} {list(expected)} (one role per token), got "
            f"{list(role_ids.shape)}. For generation, where each step sees only new tokens, choose the role "
            "with mor_ext.active_role(model, role) instead of passing role_ids."
        )
    check_role_ids(role_ids, spec)
    return role_ids.long()


def _add_losses(
    model: nn.Module,
    out: Any,
    config: MoRConfig,
    routings: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    has_labels: bool,
    orth_terms: dict | None = None,
) -> Any:
    """``loss = ce + aux_loss_coef * aux + orth_loss_coef * orth``; each term reported on ``out``.
    ``orth_terms``: the layers' orthogonal terms computed in their forward (sharded adapters)."""
    is_tuple = isinstance(out, tuple)
    if is_tuple:
        ce = out[0] if has_labels else None
    else:
        ce = out.get("loss") if isinstance(out, dict) else None
    add = config.add_aux_losses and ce is not None
    device = ce.device if ce is not None else next(iter(model.parameters())).device

    # Model values are means over adapted layers (docs/spec.md §4), so the coefficients do not scale with depth.
    groups = _routing_groups(routings)
    with torch.enable_grad() if add else torch.no_grad():
        aux = _load_balance_loss(config, groups, len(routings), device)
        orth = _orthogonal_loss(model, device) if orth_terms is None else \
            _orthogonal_loss_from_layers(model, config, device, orth_terms)
    if orth_terms is not None and not add:
        orth = orth.detach()  # the layers' terms were computed with the forward's grad mode

    loss = ce + config.aux_loss_coef * aux + config.orth_loss_coef * orth if add else ce
    if is_tuple:
        # A tuple output (return_dict=False) has no room for the extra terms; only the loss changes.
        return (loss, *out[1:]) if has_labels else out
    if not isinstance(out, dict):
        return out
    if ce is not None:
        out["loss"] = loss
        out["ce_loss"] = ce
    out["aux_loss"] = aux
    out["orth_loss"] = orth
    out["router_load"] = _router_load(config, groups, device)
    return out


def _orthogonal_loss(model: nn.Module, device: torch.device) -> torch.Tensor:
    """Mean over adapted layers, computed per (device, dtype) group in one call each (one launch on CUDA)."""
    state: _PatchState = getattr(model, _STATE_ATTR)
    return _orthogonal_loss_sum(state.layers, state.config, device) / len(state.layers)


def _orthogonal_loss_sum(layers: list[MoRLinear], config: MoRConfig, device: torch.device) -> torch.Tensor | int:
    """Sum of the layers' orthogonal terms, one op per (device, dtype) group (0 for no layers).

    The op itself, not :func:`functional.orthogonal_loss_layers`: every layer's adapter shapes were
    checked against the spec when it was built (and the compiled ops check them again), so the
    functional API's per-tensor Python checks would only repeat them every step."""
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for layer in layers:
        a, b = layer.lora_A, layer.lora_B
        group = groups.setdefault((a.device, a.dtype), ([], []))
        group[0].append(a.contiguous())
        group[1].append(b.contiguous())
    return sum(ops.orthogonal_loss_layers(a, b, config.spec).to(device) for a, b in groups.values())


def _orthogonal_loss_from_layers(
    model: nn.Module, config: MoRConfig, device: torch.device, terms: dict[MoRLinear, torch.Tensor]
) -> torch.Tensor:
    """The mean over adapted layers from the terms each layer computed in its forward (sharded
    adapters); layers that did not run in this call are added here if their parameters are whole."""
    layers = [layer for _, layer in mor_layers(model)]
    missing = [layer for layer in layers if layer not in terms]
    missing_set = set(missing)
    sharded = [name for name, layer in mor_layers(model) if layer in missing_set and sharding.is_sharded(layer.lora_A)]
    if sharded:
        raise RuntimeError(
            f"{len(sharded)} MoR layers (e.g. {sharded[0]!r}) did not run in this forward and their parameters "
            "are sharded (FSDP2), so their orthogonal loss cannot be computed; run every adapted layer in each "
            "forward"
        )
    total = sum(term.to(device) for term in terms.values()) + _orthogonal_loss_sum(missing, config, device)
    return total / len(layers)


RoutingGroup = tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]  # role ids, probs, indices


def _routing_groups(routings: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[RoutingGroup]:
    """The layers' routings grouped by the role-id tensor they saw (all layers of a call on one device
    share one), so that each group's loss and counts take one op."""
    # By identity, not data_ptr(): torch.compile traces this (data_ptr would break the graph), and the
    # layers of one call on one device all hold the call's own tensor (RoleContext.role_ids_on).
    sources: list[torch.Tensor] = []
    groups: list[RoutingGroup] = []
    for probs, index, roles in routings:
        at = next((i for i, source in enumerate(sources) if source is roles), None)
        if at is None:
            at = len(groups)
            sources.append(roles)
            groups.append((roles.reshape(-1).long(), [], []))
        groups[at][1].append(probs)
        groups[at][2].append(index)
    return groups


def _load_balance_loss(config: MoRConfig, groups: list[RoutingGroup], layers: int, device: torch.device) -> torch.Tensor:
    """Mean over adapted layers of the load-balance loss: one op per group of layers."""
    if not layers:
        return torch.zeros((), dtype=torch.float32, device=device)
    # The ids were checked once for the call, the indices come from the kernels: no per-group checks.
    total = sum(ops.load_balance_loss_layers(probs, index, roles, config.spec).to(device)
                for roles, probs, index in groups)
    return total / layers


class RouterLoad(Mapping):
    """``{role name: [fraction of the role's tokens dispatched to each routed LoRA]}``, averaged over
    layers (each role's fractions sum to its top_k; roles without tokens or routed LoRAs are left out).

    Lazy: the counts stay on the device as one tensor until the mapping is first read, so that a
    forward that nobody asks the load of never waits for the device (one copy to the host then)."""

    def __init__(self, spec: MoRSpec | Mapping, counts: torch.Tensor | None = None) -> None:
        # From a plain mapping too: libraries that rebuild outputs (accelerate's mixed precision)
        # call type(load)({role: fractions, ...}).
        self._spec = spec
        self._counts = counts  # [E_total + R]: dispatches per routed LoRA, then tokens per role (x layers)
        self._load: dict[str, list[float]] | None = dict(spec) if isinstance(spec, Mapping) else None

    def _table(self) -> dict[str, list[float]]:
        if self._load is None:
            spec, load = self._spec, {}
            values = [] if self._counts is None else self._counts.tolist()
            counts, tokens = values[: spec.num_experts_total], values[spec.num_experts_total :]
            for rho, role in enumerate(spec.roles):
                if role.num_experts == 0 or not tokens or tokens[rho] == 0:
                    continue
                lo, hi = spec.router_offsets[rho], spec.router_offsets[rho + 1]
                load[role.name] = [c / tokens[rho] for c in counts[lo:hi]]
            self._load = load
        return self._load

    def __getitem__(self, role: str) -> list[float]:
        return self._table()[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return repr(self._table())


def _router_load(config: MoRConfig, groups: list[RoutingGroup], device: torch.device) -> RouterLoad:
    """The call's :class:`RouterLoad`: counts summed on the device with scatter-adds of static size
    (bincount would sync on a GPU to size its output), read by the host only when looked at."""
    if not groups:
        return RouterLoad(config.spec, None)
    spec = config.spec
    routed = [i for rho in range(spec.num_roles) for i in spec.routed_loras(rho)]  # LoRA of each router column
    per_lora = torch.zeros(spec.num_loras + 1, device=device)  # entry 0: empty slots
    tokens = torch.zeros(spec.num_roles + 1, device=device)  # entry 0: role -1
    with torch.no_grad():
        for roles, _, index in groups:
            lora = torch.cat([i.reshape(-1) for i in index]).to(device).long() + 1
            per_lora.index_add_(0, lora, per_lora.new_ones(()).expand(lora.numel()))
            role = roles.reshape(-1).to(device) + 1
            tokens.index_add_(0, role, tokens.new_full((), float(len(index))).expand(role.numel()))
    routed_index = torch.tensor(routed, dtype=torch.long).to(device, non_blocking=True) + 1
    return RouterLoad(spec, torch.cat([per_lora[routed_index], tokens[1:]]))


# --------------------------------------------------------------------------------------------- unpatch
def unpatch(model: nn.Module) -> nn.Module:
    """Undo :func:`patch`: put back the original ``nn.Linear`` modules (dropping the adapter), the
    original forward and every parameter's ``requires_grad``. Returns ``model``."""
    state = _state(model)
    for name, layer in list(mor_layers(model)):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.base_layer)
    if state.previous_forward is _NOT_SET:
        del model.forward
    else:
        model.forward = state.previous_forward
    for name, p in model.named_parameters(remove_duplicate=False):
        if name in state.requires_grad:
            p.requires_grad_(state.requires_grad[name])
    delattr(model, _STATE_ATTR)
    if "mor_config" in model.__dict__:
        del model.mor_config
    return model


def is_patched(model: nn.Module) -> bool:
    """Whether :func:`patch` has been applied to ``model`` (and not undone)."""
    return isinstance(getattr(model, _STATE_ATTR, None), _PatchState)


def _state(model: nn.Module) -> _PatchState:
    state = getattr(model, _STATE_ATTR, None)
    if not isinstance(state, _PatchState):
        raise ValueError(f"this {type(model).__name__} is not patched with mor_ext; call mor_ext.patch(model) first")
    return state


def _context(model: nn.Module) -> RoleContext:
    if isinstance(model, MoRLinear):
        return model.role_context
    return _state(model).context


# --------------------------------------------------------------------------------------------- roles
def set_active_role(model: nn.Module, role: str | int | None) -> None:
    """Make every token of later calls without ``role_ids`` use ``role`` (a name or id; None or -1 =
    base model), e.g. to switch roles between ``generate`` calls that share a KV cache."""
    ctx = _context(model)
    ctx.active_role = -1 if role is None else ctx.spec.role_index(role)


def clear_active_role(model: nn.Module) -> None:
    """Forget the active role: calls without ``role_ids`` use ``config.default_role`` again."""
    _context(model).active_role = None


@contextlib.contextmanager
def active_role(model: nn.Module, role: str | int | None) -> Iterator[None]:
    """Context manager form of :func:`set_active_role`; restores the previous active role on exit."""
    ctx = _context(model)
    previous = ctx.active_role
    set_active_role(model, role)
    try:
        yield
    finally:
        ctx.active_role = previous


# --------------------------------------------------------------------------------------------- inspection
def mor_layers(model: nn.Module) -> Iterator[tuple[str, MoRLinear]]:
    """``(name, layer)`` for every :class:`MoRLinear` of ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, MoRLinear):
            yield name, module




def trainable_parameters(model: nn.Module) -> dict[str, Any]:
    """Parameter counts: ``trainable``, ``total``, ``percentage`` (trainable / total * 100) and
    ``per_kind`` (trainable elements per MoR parameter name, plus ``other`` for anything else)."""
    trainable = total = 0
    per_kind = {kind: 0 for kind in MoRLinear.PARAMETER_NAMES}
    per_kind["other"] = 0
    for name, p in model.named_parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
            kind = name.rpartition(".")[2]
            per_kind[kind if kind in per_kind else "other"] += n
    return {
        "trainable": trainable,
        "total": total,
        "percentage": 100.0 * trainable / total if total else 0.0,
        "per_kind": per_kind,
    }


def print_trainable_parameters(model: nn.Module) -> None:
    """Print the counts of :func:`trainable_parameters`, PEFT-style."""
    stats = trainable_parameters(model)
    kinds = ", ".join(f"{k}: {v:,}" for k, v in stats["per_kind"].items() if v)
    print(
        f"trainable params: {stats['trainable']:,} || all params: {stats['total']:,} || "
        f"trainable%: {stats['percentage']:.4f}" + (f" ({kinds})" if kinds else "")
    )
