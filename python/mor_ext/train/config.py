"""What a training run is asked to do: :class:`TrainConfig` (checked as it is built, before any
work) and the :class:`~mor_ext.MoRConfig` each method and ablation turns it into."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from ..config import MoRConfig
from ..schemes import RoleScheme
from ..spec import MoRSpec, RoleSpec

__all__ = ["TrainConfig", "Method", "SCHEMES", "one_role_spec", "mor_config_for", "scheme_for", "expand_roles", "tool_groups_for"]

SCHEMES = ("moragent", "agentflux", "combined")

Method = Literal["mor", "lora"]


@dataclasses.dataclass
class TrainConfig:
    """Everything :func:`train` needs; the CLI's ``mor-ext train`` flags map one to one onto these fields.

    Exactly one of ``data`` (a JSONL file of trajectories) and ``generate`` (that many synthetic
    trajectories) must be set. ``max_steps > 0`` overrides ``epochs``. ``save_steps=None`` saves only at
    the end. ``resume`` is a checkpoint directory, or True for the latest one in ``out_dir``.
    """

    out_dir: str
    model: str | None = None  # models.load_model: None/'smollm2' or a local directory / .gguf file
    data: str | None = None
    generate: int | None = None
    method: Method = "mor"
    rank: int = 16
    lora_alpha: float | None = None  # None: alpha = rank (scaling 1)
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None  # None: the model family's default
    context_role: str | None = "reasoner"
    no_aux: bool = False
    no_orth: bool = False
    one_role: bool = False
    max_length: int = 1024
    packing: bool = False
    eval_fraction: float = 0.0
    max_steps: int = -1
    max_minutes: float | None = None  # stop after this much training wall time (after the step in progress)
    epochs: float = 1.0
    lr: float = 2e-4
    batch_size: int = 1  # per device
    grad_accum: int = 1
    seed: int = 0
    # The fused AdamW kernel (CPU and CUDA): over a MoR adapter's 70M parameters (SmolLM2) it took 29-35
    # ms a step on the 2-core dev CPU against 120-126 ms for the default multi-tensor one.
    optim: str = "adamw_torch_fused"
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    bf16: bool = False
    logging_steps: int = 10
    save_steps: int | None = None
    save_total_limit: int | None = None
    resume: str | bool | None = None
    shuffle: bool = True
    ddp_find_unused_parameters: bool = False
    fsdp: bool = False  # FSDP2 under torchrun (train.distributed): adapter, gradients and optimiser state sharded
    activation_checkpointing: bool = False  # recompute each decoder layer in the backward (non-reentrant)
    progress_bar: bool = True
    # Role schemes and decoupled training (docs/spec.md §7)
    scheme: str = "moragent"  # moragent | agentflux | combined
    tool_groups: str | None = None  # per-group argument roles: "families", or a JSON file {tool: group}
    loss_roles: list[str] | None = None  # per-role loss mask: only labels these roles predict (None: joint)
    train_roles: list[str] | None = None  # the roles trained; the others are frozen (None: all)
    role_lr: dict[str, float] | None = None  # learning-rate multiplier per role
    # start from this trained adapter (mor: the scheme's missing roles are added; lora: a peft LoRA of this rank)
    init_adapter: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.generate is None):
            raise ValueError("TrainConfig needs exactly one of data (a JSONL file) and generate (a count); "
                             f"got data={self.data!r}, generate={self.generate!r}")
        if self.generate is not None and (not isinstance(self.generate, int) or self.generate < 1):
            raise ValueError(f"generate must be a positive number of trajectories, got {self.generate!r}")
        if self.fsdp and self.method != "mor":
            raise ValueError("fsdp trains MoR adapters (method='mor'); the lora baseline runs with DDP")
        if self.method not in ("mor", "lora"):
            raise ValueError(f"method must be 'mor' or 'lora', got {self.method!r}")
        if self.method == "lora" and (self.no_aux or self.no_orth or self.one_role):
            raise ValueError("no_aux, no_orth and one_role are MoR ablations; they do not apply to method='lora'")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        for name in ("rank", "max_length", "batch_size", "grad_accum", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.save_steps is not None and self.save_steps < 1:
            raise ValueError(f"save_steps must be >= 1 (or None to save only at the end), got {self.save_steps}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("set max_steps > 0 or epochs > 0")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0 (or None for no time limit), got {self.max_minutes}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "warmup_steps", "lora_dropout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        decoupled = (self.scheme != "moragent" or self.tool_groups or self.loss_roles or self.train_roles
                     or self.role_lr)
        if decoupled and self.method != "mor":
            raise ValueError("role schemes, per-role losses and learning rates apply to method='mor'")
        if (decoupled or self.init_adapter) and self.one_role:
            raise ValueError("one_role has a single role: it takes no role scheme or per-role training options")
        if (self.train_roles or self.role_lr) and self.fsdp:
            raise ValueError("per-role learning rates and frozen roles are not supported with fsdp (sharded slices)")
        if self.tool_groups and self.scheme == "moragent":
            raise ValueError("tool_groups give argument roles, which the agentflux and combined schemes have")
        for name in ("loss_roles", "train_roles"):
            value = getattr(self, name)
            if value is not None and not value:
                raise ValueError(f"{name} is empty; leave it None for all roles")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1 (or None to keep every checkpoint), "
                             f"got {self.save_total_limit}")


def one_role_spec(rank: int, like: MoRSpec | None = None) -> MoRSpec:
    """The ``one_role`` ablation: one role ``agent`` with a shared LoRA and as many routed LoRAs as
    ``like`` (default ``MoRSpec.moragent(rank)``) has LoRAs in all minus one, top-k 3, so the LoRA
    budget is the same and only the role split is removed."""
    like = MoRSpec.moragent(rank) if like is None else like
    experts = like.num_loras - 1
    return MoRSpec(roles=(RoleSpec("agent", num_experts=experts, top_k=min(3, experts), shared=True),),
                   rank=rank, shared_gate=like.shared_gate)


# Tool groups of ``tool_groups="families"``: one per kind of family (the kernels allow 16 roles in
# all, so one role per family, 78 of them, is not possible); catalogue domains join the nearest kind.
_FAMILY_KINDS = {"conversions": "conversions", "formulas": "formulas", "textdates": "text", "entities": "lookups",
                 "records": "services", "stdlib": "stdlib"}
_CATALOGUE_KINDS = {"currency": "conversions", "units": "conversions", "dates": "text", "text": "text",
                    "geometry": "formulas", "finance": "formulas", "math": "formulas", "lookup": "lookups"}


def tool_groups_for(source: str | None) -> dict[str, str] | None:
    """``{tool name: group}``: ``families`` groups the built-in tools by kind of family (unit
    conversions, formulas, text and dates, lookups, booking services, stdlib; the catalogue's by
    domain, ``everyday`` apart): 7 groups; any other value is a JSON file holding the mapping."""
    if source is None:
        return None
    if source == "families":
        import importlib

        from ..tools.catalogue import CATALOGUE

        groups = {t.name: _CATALOGUE_KINDS.get(t.domain or "", "everyday") for t in CATALOGUE.values()}
        for module, kind in _FAMILY_KINDS.items():
            specs = importlib.import_module(f"mor_ext.tools.families.{module}").SPECS
            groups.update({s.name: kind for s in specs})
        return groups
    data = json.loads(Path(source).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()):
        raise ValueError(f"{source}: tool groups must be a JSON object {{tool name: group name}}")
    return data


def expand_roles(patterns: list[str], role_names: tuple[str, ...]) -> list[str]:
    """Role names matching ``patterns`` (shell-style: ``arguments*`` is every arguments role)."""
    import fnmatch

    out = []
    for pattern in patterns:
        hits = [r for r in role_names if fnmatch.fnmatchcase(r, pattern)]
        if not hits:
            raise ValueError(f"no role matches {pattern!r}; the roles are {list(role_names)}")
        out += [r for r in hits if r not in out]
    return out


def scheme_for(config: TrainConfig) -> RoleScheme | None:
    """The role scheme a run trains under (None: MoRAgent's turn roles, as before schemes)."""
    if config.scheme == "moragent":
        return None
    return RoleScheme.preset(config.scheme, tool_groups_for(config.tool_groups))


def _scheme_spec(scheme: RoleScheme, rank: int) -> MoRSpec:
    """AgentFlux: one plain LoRA per role, as its adapters are; combined: MoRAgent-style groups."""
    if scheme.name == "agentflux":
        return MoRSpec.decoupled(scheme.roles, rank=rank)
    routed = tuple(RoleSpec(r, 3, 2, True) if r == "summarizer" else RoleSpec(r, 4, 3, True) for r in scheme.roles)
    return MoRSpec(roles=routed, rank=rank)


def mor_config_for(config: TrainConfig) -> MoRConfig:
    """The MoRConfig that ``patch`` gets for ``config``: the spec (MoRAgent, the scheme's roles, or
    :func:`one_role_spec` for ``one_role``), LoRA scaling and dropout, targets, context role (under a
    scheme, ``reasoner`` means the role that writes reasoner turns), the role scheme and the loss
    coefficients (0 for the ``no_aux`` / ``no_orth`` ablations). With ``init_adapter``, the adapter's
    own config, plus the scheme's roles it lacks (fresh, see :func:`mor_ext.adapters.add_roles`)."""
    scheme = scheme_for(config)
    context_role = config.context_role
    if config.one_role and context_role is not None:
        context_role = "agent"
    if scheme is not None and context_role in ("reasoner", "executor", "summarizer"):
        context_role = scheme.turn_role(context_role)
    if config.init_adapter and config.method == "mor":
        from ..adapters.io import ADAPTER_CONFIG_NAME

        saved = MoRConfig.from_dict(json.loads((Path(config.init_adapter) / ADAPTER_CONFIG_NAME).read_text())["config"])
        missing = [] if scheme is None else [r for r in scheme.roles if r not in saved.spec.role_names]
        like = saved.spec.roles[0]
        spec = MoRSpec(roles=saved.spec.roles + tuple(dataclasses.replace(like, name=r) for r in missing),
                       rank=saved.spec.rank, shared_gate=saved.spec.shared_gate)
        return dataclasses.replace(saved, spec=spec, scheme=scheme if scheme is not None else saved.scheme)
    spec = (one_role_spec(config.rank) if config.one_role else
            MoRSpec.moragent(config.rank) if scheme is None else _scheme_spec(scheme, config.rank))
    defaults = MoRConfig()
    return MoRConfig(
        spec=spec, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.target_modules, context_role=context_role,
        aux_loss_coef=0.0 if config.no_aux else defaults.aux_loss_coef,
        orth_loss_coef=0.0 if config.no_orth else defaults.orth_loss_coef, scheme=scheme,
    )
