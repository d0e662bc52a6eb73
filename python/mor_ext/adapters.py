"""Saving and loading Mixture-of-Roles adapters, and importing checkpoints of the official MoRAgent code.

An adapter directory holds two files:

* ``adapter_model.safetensors``: only the MoR parameters of every patched layer, keyed
  ``<module path>.lora_A`` / ``.lora_B`` / ``.router_weight`` / ``.shared_gate_weight`` in the
  canonical layout (``lora_A [L, r, d_in]``, ``lora_B [L, d_out, r]``, ``router_weight [E_total, d_in]``,
  ``shared_gate_weight [R, d_in]``).
* ``mor_config.json``: the format name and version, the :class:`MoRConfig`, the versions of mor_ext and
  torch that wrote it, a shape/dtype table of every tensor, and the sha256 of the weights file.

A save stages the new pair first (``*.pending``, each written to a temporary file, fsynced and
renamed), then renames the weights and the config over the old ones (``os.replace`` is atomic on
POSIX and Windows). The checksum in the config ties the pair together: a save interrupted before the
renames leaves the old adapter; one interrupted between them leaves new weights beside the old
config and the staged new config, which :func:`load_adapter` recognises by the checksum and loads.
Either way the directory holds a whole adapter, never half-old, half-new values.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .config import MoRConfig
from .files import atomic_write, fsync_dir
from .layers import MoRLinear
from .patching import is_patched, mor_layers, patch, unpatch
from .spec import MoRSpec

__all__ = [
    "AdapterError",
    "ADAPTER_WEIGHTS_NAME",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_FORMAT",
    "ADAPTER_FORMAT_VERSION",
    "save_adapter",
    "load_adapter",
    "adapter_state_dict",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "official_mask_to_role_ids",
]

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "mor_config.json"
PENDING_SUFFIX = ".pending"  # save_adapter stages the new pair under these names before committing it
ADAPTER_FORMAT = "mor_ext.adapter"
ADAPTER_FORMAT_VERSION = 1


class AdapterError(ValueError):
    """An adapter (or official checkpoint) that cannot be loaded: corrupt, inconsistent or mismatched."""


# =========================================================================================== helpers
def _mor_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return list(mor_layers(model))


def _model_config(model: torch.nn.Module):
    """The MoRConfig a patched model was patched with (None if the model is not patched)."""
    return getattr(model, "mor_config", None)


def _adapter_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """``{"<module path>.lora_A": parameter, ...}`` for every MoRLinear of ``model``."""
    params: dict[str, torch.nn.Parameter] = {}
    for module_name, layer in _mor_layers(model):
        for pname in MoRLinear.PARAMETER_NAMES:
            params[f"{module_name}.{pname}"] = getattr(layer, pname)
    return params


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _format_mismatch_table(rows: list[tuple[str, Any, Any]]) -> str:
    return "\n".join(f"  {name}: expected {want}, got {got}" for name, want, got in rows)


# =========================================================================================== save
def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The MoR parameters of a patched model as contiguous CPU tensors, keyed ``<module path>.<param>``."""
    params = _adapter_params(model)
    if not params:
        raise AdapterError("the model has no MoR layers: patch it with mor_ext.patch(model, config) first")
    return {name: p.detach().to("cpu").contiguous() for name, p in params.items()}


def save_adapter(
    model: torch.nn.Module, directory: str | os.PathLike, *, metadata: dict | None = None
) -> Path:
    """Write the MoR adapter of ``model`` to ``directory`` (created if needed) and return the directory.

    Writes ``adapter_model.safetensors`` (MoR parameters only) then ``mor_config.json`` (config, versions,
    tensor table, sha256 of the weights), each atomically. ``metadata`` (JSON-serialisable) is stored
    under ``"metadata"`` in the config.
    """
    from safetensors.torch import save_file

    from . import __version__

    config = _model_config(model)
    if config is None:
        raise AdapterError("the model has no mor_config: patch it with mor_ext.patch(model, config) first")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"save_adapter: metadata must be a mapping (a dict), got {type(metadata).__name__}")
    tensors = adapter_state_dict(model)
    directory = Path(directory)
    weights_path = directory / ADAPTER_WEIGHTS_NAME
    config_path = directory / ADAPTER_CONFIG_NAME

    document: dict[str, Any] = {
        "format": ADAPTER_FORMAT,
        "format_version": ADAPTER_FORMAT_VERSION,
        "config": config.to_dict(),
        "mor_ext_version": __version__,
        "torch_version": torch.__version__,
        "weights": {"file": ADAPTER_WEIGHTS_NAME},
        "tensors": {
            name: {"shape": list(t.shape), "dtype": _dtype_name(t.dtype)} for name, t in tensors.items()
        },
        "metadata": dict(metadata) if metadata is not None else {},
    }
    # Fail on unserialisable metadata before anything touches the directory.
    try:
        json.dumps(document)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save_adapter: metadata must be JSON-serialisable ({exc})") from exc
    directory.mkdir(parents=True, exist_ok=True)

    # Two files cannot be renamed at once, so the new pair is staged first and committed in two
    # renames, weights then config. A crash before the first rename leaves the old pair; one between
    # the renames leaves new weights beside the old config and the staged new config, which
    # load_adapter recognises by the checksum and loads (_committed_config): nothing is lost.
    staged_weights = directory / (ADAPTER_WEIGHTS_NAME + PENDING_SUFFIX)
    staged_config = directory / (ADAPTER_CONFIG_NAME + PENDING_SUFFIX)
    atomic_write(staged_weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    document["weights"]["sha256"] = _sha256(staged_weights)
    document["weights"]["size_bytes"] = staged_weights.stat().st_size
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    atomic_write(staged_config, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    fsync_dir(directory)
    os.replace(staged_weights, weights_path)
    os.replace(staged_config, config_path)
    fsync_dir(directory)
    return directory


# =========================================================================================== load
def _read_config(config_path: Path) -> dict[str, Any]:
    if not config_path.is_file():
        raise AdapterError(f"{config_path} not found: not a mor_ext adapter directory (save one with save_adapter)")
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{config_path} is not valid JSON ({exc}); the file is corrupt") from exc
    if not isinstance(document, dict) or document.get("format") != ADAPTER_FORMAT:
        got = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise AdapterError(f"{config_path} is not a mor_ext adapter config: format is {got!r}, expected {ADAPTER_FORMAT!r}")
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise AdapterError(f"{config_path} has no valid format_version (got {version!r})")
    if version < 1:
        raise AdapterError(f"{config_path} has format_version {version}; versions start at 1")
    if version > ADAPTER_FORMAT_VERSION:
        raise AdapterError(
            f"{config_path} has format_version {version}, but this mor_ext reads versions up to "
            f"{ADAPTER_FORMAT_VERSION}; upgrade mor_ext (it was written by mor_ext {document.get('mor_ext_version')})"
        )
    for key in ("config", "weights", "tensors"):
        if not isinstance(document.get(key), dict):
            raise AdapterError(f"{config_path} is missing its {key!r} section; the file is corrupt or incomplete")
    if not isinstance(document["weights"].get("sha256"), str):
        raise AdapterError(f"{config_path} has no sha256 of the weights file; the file is corrupt or incomplete")
    return document


def _committed_config(directory: Path) -> tuple[dict[str, Any], Path]:
    """The config that describes the directory's weights, and its path: ``mor_config.json``, unless a
    save was interrupted between its two renames (see save_adapter), when the staged config does."""
    config_path = directory / ADAPTER_CONFIG_NAME
    staged_path = directory / (ADAPTER_CONFIG_NAME + PENDING_SUFFIX)
    weights_path = directory / ADAPTER_WEIGHTS_NAME
    if staged_path.is_file() and weights_path.is_file():
        try:
            staged = _read_config(staged_path)
        except AdapterError:
            staged = None  # a save that stopped while writing it: the committed pair is intact
        if staged is not None and staged["weights"]["sha256"] == _sha256(weights_path):
            try:
                committed = _read_config(config_path)
            except AdapterError:
                committed = None
            if committed is not None and committed["weights"]["sha256"] == staged["weights"]["sha256"]:
                return committed, config_path
            warnings.warn(f"{directory}: a save was interrupted after replacing the weights; loading them "
                          f"with the config it staged ({staged_path.name})", stacklevel=3)
            return staged, staged_path
    return _read_config(config_path), config_path


def _read_weights(weights_path: Path, document: dict[str, Any], config_path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights_path.is_file():
        raise AdapterError(f"{weights_path} not found, but {config_path.name} describes it")
    expected = document["weights"]["sha256"]
    actual = _sha256(weights_path)
    if actual != expected:
        raise AdapterError(
            f"{weights_path} does not match {config_path.name}: its sha256 is {actual}, the config expects "
            f"{expected}. The file is corrupt, or the two files come from different saves (an interrupted "
            "save_adapter?); save the adapter again"
        )
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    # The table in the config must describe the file: a disagreement means a hand-edited pair.
    table = document["tensors"]
    problems = []
    for name in sorted(set(table) | set(tensors)):
        if name not in tensors:
            problems.append(f"  {name}: in {config_path.name} but not in the weights file")
        elif name not in table:
            problems.append(f"  {name}: in the weights file but not in {config_path.name}")
        elif not isinstance(table[name], dict):
            problems.append(f"  {name}: the config's entry is {table[name]!r}, not {{'shape': .., 'dtype': ..}}")
        else:
            entry, t = table[name], tensors[name]
            if list(entry.get("shape", [])) != list(t.shape) or entry.get("dtype") != _dtype_name(t.dtype):
                problems.append(
                    f"  {name}: config says {entry.get('shape')} {entry.get('dtype')}, "
                    f"file holds {list(t.shape)} {_dtype_name(t.dtype)}"
                )
    if problems:
        raise AdapterError(f"{weights_path} disagrees with the tensor table of {config_path.name}:\n" + "\n".join(problems))
    return tensors


def _config_differences(have, want) -> list[str]:
    """Human-readable differences between two MoRConfigs in what changes the meaning of the weights:
    the spec, the scaling, and the target modules (when both name them; ``None`` is the family default,
    and the per-key check catches any layer that differs)."""
    out = []
    a, b = have.spec.to_dict(), want.spec.to_dict()
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(f"  spec.{key}: model has {a.get(key)!r}, adapter has {b.get(key)!r}")
    if have.scaling != want.scaling:
        out.append(
            f"  scaling (lora_alpha / rank): model has {have.scaling} (lora_alpha={have.lora_alpha}), "
            f"adapter has {want.scaling} (lora_alpha={want.lora_alpha})"
        )
    if have.target_modules is not None and want.target_modules is not None:
        if sorted(have.target_modules) != sorted(want.target_modules):
            out.append(f"  target_modules: model has {have.target_modules}, adapter has {want.target_modules}")
    return out


def _copy_into(
    params: Mapping[str, torch.nn.Parameter],
    tensors: Mapping[str, torch.Tensor],
    *,
    strict: bool,
    cast_dtype: bool,
    source: str,
    warn: bool = True,
) -> None:
    """Check names, shapes and dtypes of ``tensors`` against ``params`` (every problem listed), then copy.

    Values are copied in place (``param.copy_`` under no_grad) so parameter identity, device, and any
    optimizer or hook that holds the parameters, are kept.
    """
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    problems = []
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}, in the model but not in {source}):\n" + "\n".join(f"  {k}" for k in missing))
    if strict and unexpected:
        problems.append(
            f"unexpected keys ({len(unexpected)}, in {source} but not in the model):\n" + "\n".join(f"  {k}" for k in unexpected)
        )
    shape_rows, dtype_rows = [], []
    for name in sorted(set(params) & set(tensors)):
        p, t = params[name], tensors[name]
        if tuple(p.shape) != tuple(t.shape):
            shape_rows.append((name, list(p.shape), list(t.shape)))
        if p.dtype != t.dtype:
            dtype_rows.append((name, _dtype_name(p.dtype), _dtype_name(t.dtype)))
    if shape_rows:
        problems.append(f"shape mismatches ({len(shape_rows)}):\n" + _format_mismatch_table(shape_rows))
    if dtype_rows and not cast_dtype:
        problems.append(
            f"dtype mismatches ({len(dtype_rows)}; pass cast_dtype=True to cast to the model's dtypes):\n"
            + _format_mismatch_table(dtype_rows)
        )
    if problems:
        raise AdapterError(f"cannot load {source} into the model:\n" + "\n".join(problems))
    if (missing or unexpected) and warn:
        warnings.warn(
            f"loading {source} with strict=False: {len(missing)} missing key(s) {missing[:4]}"
            f"{'...' if len(missing) > 4 else ''}, {len(unexpected)} unexpected key(s) {unexpected[:4]}"
            f"{'...' if len(unexpected) > 4 else ''}",
            stacklevel=3,
        )
    with torch.no_grad():
        for name in sorted(set(params) & set(tensors)):
            params[name].copy_(tensors[name])


def load_adapter(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    *,
    strict: bool = True,
    cast_dtype: bool = False,
) -> torch.nn.Module:
    """Load an adapter written by :func:`save_adapter` into ``model`` and return the model.

    An unpatched model is first patched with the saved config; a patched one must agree with it on the
    spec, the scaling (``lora_alpha / r``) and the target modules, and the error lists each difference.
    If the load fails after patching, the model is unpatched again. The checksum, format version, tensor names, shapes and
    dtypes are all checked before any value is copied, and every problem is listed in one
    :class:`AdapterError` (a ``ValueError``). ``strict=False`` tolerates missing and unexpected keys
    (with a warning); ``cast_dtype=True`` casts saved tensors to the model's parameter dtypes.
    """
    directory = Path(directory)
    weights_path = directory / ADAPTER_WEIGHTS_NAME
    document, config_path = _committed_config(directory)
    tensors = _read_weights(weights_path, document, config_path)
    non_finite = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if non_finite:  # e.g. a checkpoint of a run that diverged: loads, but every output will be NaN
        warnings.warn(f"{weights_path}: {len(non_finite)} tensor(s) hold NaN or inf values, e.g. "
                      f"{non_finite[:3]}; the adapted model's outputs will not be finite", stacklevel=2)

    try:
        saved_config = MoRConfig.from_dict(document["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise AdapterError(f"{config_path} holds an invalid MoRConfig: {exc}") from exc

    patched_here = not _mor_layers(model) and not is_patched(model)
    if patched_here:
        patch(model, saved_config)
    else:
        current = _model_config(model)
        if current is not None:
            diffs = _config_differences(current, saved_config)
            if diffs:
                raise AdapterError(
                    f"the model is patched with a different MoR config than the adapter in {directory}:\n"
                    + "\n".join(diffs)
                    + "\nunpatch the model (mor_ext.unpatch) or load into a fresh one"
                )
    try:
        _copy_into(_adapter_params(model), tensors, strict=strict, cast_dtype=cast_dtype, source=str(weights_path))
    except BaseException:
        if patched_here:  # leave the model as it was given
            unpatch(model)
        raise
    return model


# =========================================================================================== official
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
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise AdapterError(f"{path} is not a readable safetensors file: {exc}") from exc
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

    layers = _mor_layers(model)
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
    try:
        _copy_into(
            _adapter_params(model), renamed, strict=not allow_missing_gates, cast_dtype=True,
            source="the official checkpoint", warn=False,  # convert_official_state_dict already warned
        )
    except BaseException:
        if patched_here:  # leave the model as it was given
            unpatch(model)
        raise
    return model


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
