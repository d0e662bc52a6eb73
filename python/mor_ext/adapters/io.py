"""Saving and loading mor_ext's own adapter format: atomic writes, and every check a load makes.

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
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import sharding
from ..config import MoRConfig
from ..files import atomic_write, fsync_dir
from ..layers import MoRLinear
from ..patching import adapter_is_sharded, is_patched, mor_layers, patch, unpatch

__all__ = [
    "AdapterError",
    "ADAPTER_WEIGHTS_NAME",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_FORMAT",
    "ADAPTER_FORMAT_VERSION",
    "save_adapter",
    "load_adapter",
    "adapter_state_dict",
]

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "mor_config.json"
PENDING_SUFFIX = ".pending"  # save_adapter stages the new pair under these names before committing it
ADAPTER_FORMAT = "mor_ext.adapter"
ADAPTER_FORMAT_VERSION = 1
# torch.distributed.algorithms checkpoint_wrapper's submodule name (accelerate's FSDP activation checkpointing)
_CHECKPOINT_WRAPPED = "_checkpoint_wrapped_module"


class AdapterError(ValueError):
    """An adapter (or official checkpoint) that cannot be loaded: corrupt, inconsistent or mismatched."""


# =========================================================================================== helpers
def _model_config(model: torch.nn.Module):
    """The MoRConfig a patched model was patched with (None if the model is not patched)."""
    return getattr(model, "mor_config", None)


def adapter_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """``{"<module path>.lora_A": parameter, ...}`` for every MoRLinear of ``model``. Module paths are
    those of the unwrapped model: an activation-checkpoint wrapper's path element is left out."""
    params: dict[str, torch.nn.Parameter] = {}
    for module_name, layer in mor_layers(model):
        module_name = module_name.replace(_CHECKPOINT_WRAPPED + ".", "")
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
    """The MoR parameters of a patched model as contiguous CPU tensors, keyed ``<module path>.<param>``.
    Sharded parameters (FSDP2) are gathered whole, one at a time: then every process must call it."""
    params = adapter_params(model)
    if not params:
        raise AdapterError("the model has no MoR layers: patch it with mor_ext.patch(model, config) first")
    return {name: sharding.full_tensor(p).to("cpu").contiguous() for name, p in params.items()}


def save_adapter(
    model: torch.nn.Module, directory: str | os.PathLike, *, metadata: dict | None = None
) -> Path:
    """Write the MoR adapter of ``model`` to ``directory`` (created if needed) and return the directory.

    Writes ``adapter_model.safetensors`` (MoR parameters only) then ``mor_config.json`` (config, versions,
    tensor table, sha256 of the weights), each atomically. ``metadata`` (JSON-serialisable) is stored
    under ``"metadata"`` in the config.

    A model sharded with FSDP2 is saved whole: every process must call this (the parameters are gathered),
    process 0 writes, and all return once the files are in place.
    """
    config = _model_config(model)
    if config is None:
        raise AdapterError("the model has no mor_config: patch it with mor_ext.patch(model, config) first")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"save_adapter: metadata must be a mapping (a dict), got {type(metadata).__name__}")
    if adapter_is_sharded(model):
        import torch.distributed as dist

        _check_metadata(metadata)  # here, not on process 0 alone: the others would wait at the barrier
        tensors = adapter_state_dict(model)
        if dist.get_rank() == 0:
            write_adapter(config, tensors, directory, metadata)
        dist.barrier()  # no process reads the directory before it is whole
        return Path(directory)
    return write_adapter(config, adapter_state_dict(model), directory, metadata)


def _check_metadata(metadata: Mapping | None) -> None:
    try:
        json.dumps(dict(metadata) if metadata is not None else {})
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save_adapter: metadata must be JSON-serialisable ({exc})") from exc


def write_adapter(config: MoRConfig, tensors: dict[str, torch.Tensor], directory: str | os.PathLike,
                  metadata: Mapping | None = None) -> Path:
    """Write ``tensors`` (whole CPU tensors, keyed as :func:`adapter_state_dict`) as an adapter of
    ``config`` to ``directory``, atomically (see :func:`save_adapter`)."""
    from safetensors.torch import save_file

    from .. import __version__

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
    _check_metadata(metadata)  # before anything touches the directory
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


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; AdapterError if it cannot be read (truncated, not safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterError(f"{path} is not a readable safetensors file: {exc}") from exc


def _read_weights(weights_path: Path, document: dict[str, Any], config_path: Path) -> dict[str, torch.Tensor]:
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
    tensors = read_safetensors(weights_path)
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


def copy_into(
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
    for name in sorted(set(params) & set(tensors)):
        sharding.copy_full_into(params[name], tensors[name])  # a sharded parameter keeps its own part


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

    patched_here = not list(mor_layers(model)) and not is_patched(model)
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
    return load_into(model, tensors, patched_here=patched_here, strict=strict, cast_dtype=cast_dtype,
                     source=str(weights_path))


def load_into(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], *, patched_here: bool,
              **copy_kwargs: Any) -> torch.nn.Module:
    """:func:`copy_into` the MoR parameters of ``model`` and return it. A model that the load itself
    patched (``patched_here``) is unpatched again when the copy fails, so it is left as it was given."""
    try:
        copy_into(adapter_params(model), tensors, **copy_kwargs)
    except BaseException:
        if patched_here:
            unpatch(model)
        raise
    return model
