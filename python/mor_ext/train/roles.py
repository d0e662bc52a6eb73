"""Per-role learning rates and frozen roles on the stacked adapter (``docs/spec.md`` §7).

Every role's LoRAs live in slices of the same parameters (``lora_A [L, r, d_in]``, ``lora_B``,
router and shared-gate rows), so an optimiser sees one tensor per layer. Adam's and AdamW's update is
linear in the learning rate (the decoupled weight decay too: ``lr * wd * p``), so the step a slice
would take at ``scale * lr`` is exactly ``scale`` times the step it took at ``lr``: after each
``optimizer.step()`` every scaled slice is put back to ``before + scale * (after - before)``. A scale
of 0 freezes the role exactly (weight decay included); its gradients are also zeroed, so that
gradient clipping measures only the roles being trained.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..patching import mor_layers

__all__ = ["RoleStepScaler", "role_slices"]


def role_slices(spec, role: int) -> dict[str, slice]:
    """The rows of each adapter parameter that belong to role ``role``."""
    return {"lora_A": slice(spec.lora_offsets[role], spec.lora_offsets[role + 1]),
            "lora_B": slice(spec.lora_offsets[role], spec.lora_offsets[role + 1]),
            "router_weight": slice(spec.router_offsets[role], spec.router_offsets[role + 1]),
            "shared_gate_weight": slice(role, role + 1)}


class RoleStepScaler:
    """Scales each role's optimiser step by ``scales[role name]`` (missing roles: 1.0; 0.0: frozen).

    ``attach(optimizer)`` installs the step hooks; ``remove()`` takes them and the gradient hooks off.
    """

    def __init__(self, model: torch.nn.Module, scales: Mapping[str, float]) -> None:
        config = getattr(model, "mor_config", None)
        if config is None:
            raise ValueError("per-role learning rates need a MoR-patched model")
        spec = config.spec
        for name, scale in scales.items():
            spec.role_index(name)  # an unknown role is an error that lists the roles
            if not (isinstance(scale, (int, float)) and scale >= 0):
                raise ValueError(f"the learning-rate scale of role {name!r} must be a number >= 0, got {scale!r}")
        self.scales = {spec.role_index(n): float(s) for n, s in scales.items() if float(s) != 1.0}
        # (parameter, [(rows, scale)]) for every adapter parameter with a scaled slice
        self.targets: list[tuple[torch.nn.Parameter, list[tuple[slice, float]]]] = []
        for _, layer in mor_layers(model):
            for pname in ("lora_A", "lora_B", "router_weight", "shared_gate_weight"):
                param = getattr(layer, pname)
                parts = [(role_slices(spec, r)[pname], s) for r, s in self.scales.items()]
                parts = [(rows, s) for rows, s in parts if rows.stop > rows.start]
                if parts:
                    self.targets.append((param, parts))
        self._before: list[list[torch.Tensor]] = []
        self._handles = [param.register_hook(self._grad_hook(parts)) for param, parts in self.targets
                         if any(s == 0.0 for _, s in parts)]

    @staticmethod
    def _grad_hook(parts):
        frozen = [rows for rows, s in parts if s == 0.0]

        def hook(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()
            for rows in frozen:
                grad[rows] = 0
            return grad

        return hook

    def attach(self, optimizer: torch.optim.Optimizer) -> "RoleStepScaler":
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch one
        self._handles.append(optimizer.register_step_pre_hook(lambda *_: self._snapshot()))
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self._rescale()))
        return self

    @torch.no_grad()
    def _snapshot(self) -> None:
        self._before = [[param[rows].detach().clone() for rows, _ in parts] for param, parts in self.targets]

    @torch.no_grad()
    def _rescale(self) -> None:
        for (param, parts), before in zip(self.targets, self._before):
            for (rows, scale), old in zip(parts, before):
                param[rows] = old + scale * (param[rows] - old)
        self._before = []

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
