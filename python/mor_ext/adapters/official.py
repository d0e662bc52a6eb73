"""Importing checkpoints of the official MoRAgent code (``moelora.py``) into the canonical layout.

The mapping from the official tensors (``lora_moe_A/B``, ``lora_gate_r/e/s``, ``lora_gates_share.c``)
to mor_ext's parameters is ``docs/spec.md`` §6; the values are copied with the same checks as a
native load (:func:`mor_ext.adapters.io.load_into`).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ..config import MoRConfig
from ..patching import is_patched, mor_layers, patch
from ..spec import MoRSpec
from .io import AdapterError, load_into, read_safetensors

__all__ = ["convert_official_state_dict", "load_official_checkpoint", "official_mask_to_role_ids"]


# The official layer stacks, per role, its routed LoRAs first and its shared LoRA last (shared at 4, 9,
# 13); the canonical layout puts the shared one first. lora_A[l] = lora_moe_A[_OFFICIAL_ORDER[l]].T.
_OFFICIAL_ORDER = (4, 0, 1, 2, 3, 9, 5, 6, 7, 8, 13, 10, 11, 12)
_OFFICIAL_ROUTERS = ("lora_gate_r", "lora_gate_e", "lora_gate_s")
_OFFICIAL_ROLES = 3

# `<module>.lora_moe_A[.<adapter>]`; routers and shared gates are plain nn.Linear children, but an
# adapter-name segment is tolerated there too.
_RE_MOE = re.compile(r"^(?P<module>.+)\.lora_moe_(?P<side>[AB])(?:\.(?P<adapter>[^.]+))?$")
_RE_ROUTER = re.compile(r"^(?P<module>.+)\.(?P<router>lora_gate_[res])(?:\.(?P<adapter>[^.]+))?\.weight$")
_RE_SHARE = re.compile(r"^(?P<module>.+)\.lora_gates_share\.(?P<role>\d+)(?:\.(?P<adapter>[^.]+))?\.weight$")

# Wrappers that PEFT-style code puts in front of the base model's module names.
_OFFICIAL_PREFIXES = ("base_model.model.",)


def _official_spec(rank: int) -> MoRSpec:
    return MoRSpec.moragent(rank)


def _strip_prefix(name: str) -> str:
    for prefix in _OFFICIAL_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _group_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{module path: {"A": .., "B": .., "lora_gate_r": .., "share.0": .., ...}}``; other keys are ignored."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if (m := _RE_MOE.match(key)) is not None:
            slot = m["side"]
        elif (m := _RE_ROUTER.match(key)) is not None:
            slot = m["router"]
        elif (m := _RE_SHARE.match(key)) is not None:
            slot = f"share.{int(m['role'])}"
        else:
            continue  # base weights, embeddings, ...
        if not isinstance(value, torch.Tensor):
            raise AdapterError(f"official checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        module = m["module"]
        group = groups.setdefault(module, {})
        if slot in group:
            raise AdapterError(
                f"official checkpoint has two tensors for {module}.{slot} (one is {key!r}): it holds several "
                "adapters; keep one adapter's keys"
            )
        group[slot] = value
    return groups


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    num_roles: int = 3,
    allow_missing_gates: bool = False,
) -> dict[str, torch.Tensor]:
    """Convert an official MoRAgent (``moelora.py``) state dict to the canonical mor_ext layout.

    Returns ``{"<module path>.lora_A": [14, r, d_in], ".lora_B": [14, d_out, r], ".router_weight":
    [11, d_in], ".shared_gate_weight": [3, d_in]}`` per adapted module, with a leading
    ``base_model.model.`` stripped from the module path; keys that are not MoR tensors (the base
    weights) are ignored. Both ``lora_moe_A.default`` and ``lora_moe_A`` key forms are accepted.
    With ``allow_missing_gates=True``, a module whose routers or shared gates are absent gets no
    ``router_weight`` / ``shared_gate_weight`` entry instead of an error.
    """
    if num_roles != _OFFICIAL_ROLES:
        raise ValueError(f"the official MoRAgent layer has exactly {_OFFICIAL_ROLES} roles, got num_roles={num_roles}")
    groups = _group_official(state_dict)
    if not groups:
        raise AdapterError(
            "no official MoRAgent tensors found: expected keys like '<module>.lora_moe_A.default' or "
            f"'<module>.lora_moe_A' (first keys given: {list(state_dict)[:5]})"
        )
    num_loras = len(_OFFICIAL_ORDER)
    order = torch.tensor(_OFFICIAL_ORDER)
    out: dict[str, torch.Tensor] = {}
    missing_gates: list[str] = []
    problems: list[str] = []
    names_seen: dict[str, str] = {}
    for module in sorted(groups):
        group = groups[module]
        name = _strip_prefix(module)
        if name in names_seen:
            raise AdapterError(f"official modules {names_seen[name]!r} and {module!r} both map to {name!r}")
        names_seen[name] = module
        if "A" not in group or "B" not in group:
            side = "lora_moe_A" if "A" not in group else "lora_moe_B"
            problems.append(f"  {module}: has no {side}")
            continue
        moe_a, moe_b = group["A"], group["B"]  # [14, d_in, r], [14, r, d_out]
        if moe_a.dim() != 3 or moe_a.shape[0] != num_loras:
            problems.append(f"  {module}.lora_moe_A: expected [{num_loras}, d_in, r], got {list(moe_a.shape)}")
            continue
        d_in, rank = moe_a.shape[1], moe_a.shape[2]
        if moe_b.dim() != 3 or moe_b.shape[0] != num_loras or moe_b.shape[1] != rank:
            problems.append(f"  {module}.lora_moe_B: expected [{num_loras}, {rank}, d_out], got {list(moe_b.shape)}")
            continue
        out[f"{name}.lora_A"] = moe_a[order].transpose(1, 2).contiguous()  # [14, r, d_in]
        out[f"{name}.lora_B"] = moe_b[order].transpose(1, 2).contiguous()  # [14, d_out, r]

        absent = [r for r in _OFFICIAL_ROUTERS if r not in group]
        absent += [f"lora_gates_share.{c}" for c in range(num_roles) if f"share.{c}" not in group]
        extra = sorted(k for k in group if k.startswith("share.") and int(k.split(".")[1]) >= num_roles)
        if extra:
            problems.append(f"  {module}: unexpected shared gates {extra} (the official layer has {num_roles})")
        if absent:
            missing_gates.append(f"  {module}: {', '.join(absent)}")
            continue
        spec = _official_spec(rank)
        expected_rows = [r.num_experts for r in spec.roles]
        routers = []
        for router, rows in zip(_OFFICIAL_ROUTERS, expected_rows):
            w = group[router]
            if tuple(w.shape) != (rows, d_in):
                problems.append(f"  {module}.{router}.weight: expected [{rows}, {d_in}], got {list(w.shape)}")
            routers.append(w)
        shares = []
        for c in range(num_roles):
            w = group[f"share.{c}"]
            if tuple(w.shape) != (1, d_in):
                problems.append(f"  {module}.lora_gates_share.{c}.weight: expected [1, {d_in}], got {list(w.shape)}")
            shares.append(w)
        if not problems:
            out[f"{name}.router_weight"] = torch.cat(routers, dim=0).contiguous()  # [11, d_in]
            out[f"{name}.shared_gate_weight"] = torch.cat(shares, dim=0).contiguous()  # [3, d_in]
    if problems:
        raise AdapterError("official checkpoint has malformed MoR tensors:\n" + "\n".join(problems))
    if missing_gates and not allow_missing_gates:
        raise AdapterError(
            f"official checkpoint lacks routers or shared gates for {len(missing_gates)} module(s) (PEFT-style "
            "savers keep only lora_moe_A/B); without them the routing cannot be reproduced:\n"
            + "\n".join(missing_gates)
            + "\nsave the full state dict of the official model, or pass allow_missing_gates=True to keep "
            "freshly initialised gates"
        )
    if missing_gates:
        warnings.warn(
            f"official checkpoint lacks routers or shared gates for {len(missing_gates)} module(s); they keep "
            "their fresh initialisation, so outputs differ from the official model",
            stacklevel=2,
        )
    return out


def _load_official_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise AdapterError(f"official checkpoint {path} not found")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or non-pickle files
        raise AdapterError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise AdapterError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    return dict(loaded)


def _match_modules(official: Iterable[str], model_names: Iterable[str], *, what: str, cover_all: bool) -> dict[str, str]:
    """Map each official module path to the model module name it ends with (or that ends with it).

    The longest model name that is a dotted suffix of the official path wins (so wrapper prefixes such
    as ``base_model.model.`` drop out); failing that, the one model name that ends with the official
    path (a checkpoint saved from an inner module). With ``cover_all``, every model name must be hit.
    """
    model_set = set(model_names)
    mapping: dict[str, str] = {}
    unmatched: list[str] = []
    for name in official:
        parts = name.split(".")
        hit = next((".".join(parts[i:]) for i in range(len(parts)) if ".".join(parts[i:]) in model_set), None)
        if hit is None:
            longer = [m for m in model_set if m.endswith("." + name)]
            hit = longer[0] if len(longer) == 1 else None
        if hit is None:
            unmatched.append(name)
        else:
            mapping[name] = hit
    used: dict[str, list[str]] = {}
    for o, m in mapping.items():
        used.setdefault(m, []).append(o)
    clashes = {m: os_ for m, os_ in used.items() if len(os_) > 1}
    unmatched_model = sorted(model_set - set(mapping.values())) if cover_all else []
    if unmatched or unmatched_model or clashes:
        lines = []
        if unmatched:
            lines.append(f"official modules with no matching {what} in the model ({len(unmatched)}):")
            lines += [f"  {n}" for n in sorted(unmatched)]
        if unmatched_model:
            lines.append(f"{what}s of the model with no official weights ({len(unmatched_model)}):")
            lines += [f"  {n}" for n in unmatched_model]
        for m, os_ in sorted(clashes.items()):
            lines.append(f"several official modules map to {m}: {sorted(os_)}")
        raise AdapterError("cannot match the official checkpoint's modules to the model:\n" + "\n".join(lines))
    return mapping


def load_official_checkpoint(
    model: torch.nn.Module,
    state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike,
    *,
    allow_missing_gates: bool = False,
) -> torch.nn.Module:
    """Import a checkpoint of the official MoRAgent code into ``model`` and return the model.

    ``state_dict_or_path`` is a state dict or a path to a ``.bin``/``.pt`` (loaded with
    ``weights_only=True``) or ``.safetensors`` file. Official modules are matched to the model's
    modules by dotted name suffix (``base_model.model.`` and similar prefixes drop out). An unpatched
    model is patched, on exactly the matched linears, with ``MoRSpec.moragent(r)`` and
    ``lora_alpha = r``: scaling 1, since the official forward never scales, whatever its config's
    ``lora_alpha``. A patched model must already have that spec and scaling 1, and every one of its MoR
    layers must be in the checkpoint. Tensors are cast to the model's dtypes.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        state_dict = _load_official_file(Path(state_dict_or_path))
    elif isinstance(state_dict_or_path, Mapping):
        state_dict = state_dict_or_path
    else:
        raise TypeError(f"state_dict_or_path must be a mapping or a path, got {type(state_dict_or_path).__name__}")
    canonical = convert_official_state_dict(state_dict, allow_missing_gates=allow_missing_gates)
    modules = sorted({k.rsplit(".", 1)[0] for k in canonical})
    rank = int(canonical[f"{modules[0]}.lora_A"].shape[1])
    spec = _official_spec(rank)

    layers = list(mor_layers(model))
    patched_here = not layers and not is_patched(model)
    if patched_here:
        linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        mapping = _match_modules(modules, linears, what="nn.Linear", cover_all=False)
        matched = set(mapping.values())
        # Name the targets by their last component when that selects exactly the matched linears (the
        # usual case, and the readable one in a saved config); else by full name.
        short = sorted({n.rsplit(".", 1)[-1] for n in matched})
        by_short = {n for n in linears if n.rsplit(".", 1)[-1] in short}
        targets = short if by_short == matched else sorted(matched)
        patch(model, MoRConfig(spec=spec, lora_alpha=float(rank), target_modules=targets))
    else:
        wrong = [(n, layer) for n, layer in layers if layer.spec != spec or layer.scaling != 1.0]
        if wrong:
            n, layer = wrong[0]
            raise AdapterError(
                f"the model is already patched, but {len(wrong)} MoR layer(s) differ from the official layout "
                f"(MoRSpec.moragent({rank}), scaling 1); e.g. {n}: spec {layer.spec}, scaling {layer.scaling}. "
                f"Unpatch it, or patch with MoRConfig(spec=MoRSpec.moragent({rank}), lora_alpha={rank})"
            )
        mapping = _match_modules(modules, [n for n, _ in layers], what="MoR layer", cover_all=True)
    renamed = {}
    for key, value in canonical.items():
        module, pname = key.rsplit(".", 1)
        renamed[f"{mapping[module]}.{pname}"] = value
    return load_into(
        model, renamed, patched_here=patched_here, strict=not allow_missing_gates, cast_dtype=True,
        source="the official checkpoint", warn=False,  # convert_official_state_dict already warned
    )


def official_mask_to_role_ids(mask_moe: torch.Tensor) -> torch.Tensor:
    """Official role mask ``mask_moe [..., 3]`` (one-hot per token, or all zero) -> ``role_ids [...]`` int64.

    Column ``c`` set means role ``c``; an all-zero row means -1 (no adapter). A row with several
    roles set, or a value other than 0 and 1, has no equivalent and raises a ``ValueError`` naming the
    position.
    """
    if not isinstance(mask_moe, torch.Tensor):
        raise TypeError(f"mask_moe must be a torch.Tensor, got {type(mask_moe).__name__}")
    if mask_moe.dim() < 1 or mask_moe.shape[-1] != _OFFICIAL_ROLES:
        raise ValueError(f"mask_moe must have shape [..., {_OFFICIAL_ROLES}] (one column per role), got {list(mask_moe.shape)}")
    mask = mask_moe.detach()
    set_ = mask != 0
    not_binary = set_ & (mask != 1)
    if bool(not_binary.any()):
        where = [int(i) for i in not_binary.nonzero()[0].tolist()]
        raise ValueError(
            f"mask_moe[{', '.join(map(str, where))}] = {mask[tuple(where)].item()}: the role mask must hold "
            "only 0 and 1 (a fractional mask has no role-id equivalent)"
        )
    count = set_.sum(dim=-1)  # [...]
    several = count > 1
    if bool(several.any()):
        where = [int(i) for i in several.nonzero()[0].tolist()]
        roles = [int(c) for c in set_[tuple(where)].nonzero().flatten().tolist()]
        raise ValueError(
            f"mask_moe[{', '.join(map(str, where))}] sets roles {roles}: a token can have one role at most "
            "(several roles at once have no role-id equivalent)"
        )
    role_ids = set_.to(torch.long).argmax(dim=-1)
    return torch.where(count == 0, torch.full_like(role_ids, -1), role_ids)
