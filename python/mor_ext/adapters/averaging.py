"""Weight averaging of adapters: one adapter whose every tensor is a weighted mean of the same tensor in
several adapters of one configuration (WiSE-FT / "model soup" interpolation, e.g. between a checkpoint
and the run that continued from it).

Both formats the package trains are handled, so that two methods are averaged by the same rule:
mor_ext's own (``mor_config.json``, :func:`~mor_ext.adapters.io.save_adapter`) and a PEFT LoRA directory
(``adapter_config.json``, what ``mor-ext train --method lora`` writes). Every tensor (LoRA A and B, router
and shared-gate weights) is averaged element by element in float32 and stored in its own dtype. This is
not the mean of the adapters' weight updates (``B @ A`` is bilinear); it is the interpolation of their
parameters, which is what weight averaging means for adapters that share a starting point.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import MoRConfig
from ..files import atomic_write, fsync_dir
from .io import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    AdapterError,
    _committed_config,
    _read_weights,
    read_safetensors,
    write_adapter,
)

__all__ = ["average_adapters", "PEFT_CONFIG_NAME"]

PEFT_CONFIG_NAME = "adapter_config.json"
# PEFT fields that say where or when an adapter was made, not what its weights mean
_PEFT_INCIDENTAL = ("base_model_name_or_path", "revision", "inference_mode", "peft_version")


def _check_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"average_adapters: {len(weights)} weights for {count} adapters; give one weight per adapter")
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(f"average_adapters: weights must be finite and non-negative, got {weights}")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"average_adapters: weights must sum to 1 (a weighted mean), got {weights} "
                         f"(sum {sum(weights):g})")
    return weights


def _read_source(directory: Path) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """``(format, config, tensors)`` of one adapter directory; format is ``"mor_ext"`` or ``"peft"``."""
    if (directory / ADAPTER_CONFIG_NAME).is_file():
        document, config_path = _committed_config(directory)
        return "mor_ext", document["config"], _read_weights(directory / ADAPTER_WEIGHTS_NAME, document, config_path)
    peft_config = directory / PEFT_CONFIG_NAME
    if peft_config.is_file():
        try:
            config = json.loads(peft_config.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AdapterError(f"{peft_config} is not valid JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise AdapterError(f"{peft_config} is not a PEFT adapter config (a JSON object)")
        weights = directory / ADAPTER_WEIGHTS_NAME
        if not weights.is_file():
            raise AdapterError(f"{weights} not found, but {peft_config.name} describes a PEFT adapter there")
        return "peft", config, read_safetensors(weights)
    raise AdapterError(f"{directory} holds neither {ADAPTER_CONFIG_NAME} (mor_ext) nor {PEFT_CONFIG_NAME} (PEFT): "
                       "not an adapter directory")


def _meaning(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    if kind == "peft":
        # PEFT stores target_modules from a set, so its order differs between saves of one adapter
        return {k: sorted(v) if k == "target_modules" and isinstance(v, list) else v
                for k, v in config.items() if k not in _PEFT_INCIDENTAL}
    return config


def average_adapters(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    weights: Sequence[float] | None = None,
) -> Path:
    """Write to ``out`` the adapter whose every tensor is ``sum_i weights[i] * tensor_i`` over ``sources``.

    The sources must be of one format (all mor_ext or all PEFT), one configuration (a PEFT config may
    differ only in where and when it was written) and one table of tensor names, shapes and dtypes;
    every difference is listed in one :class:`AdapterError`. ``weights`` default to equal ones and
    must be non-negative and sum to 1. The output is written atomically; its metadata (mor_ext) or
    ``averaged_from.json`` (PEFT) records the sources and weights.
    """
    if len(sources) < 2:
        raise ValueError(f"average_adapters: give at least two adapters, got {len(sources)}")
    weights = _check_weights(weights, len(sources))
    paths = [Path(s) for s in sources]
    out = Path(out)
    if any(out.resolve() == p.resolve() for p in paths):
        raise ValueError(f"average_adapters: the output {out} is one of the sources; write it elsewhere")
    read = [_read_source(p) for p in paths]

    kind, config, first = read[0]
    problems = []
    for path, (other_kind, other_config, tensors) in zip(paths[1:], read[1:]):
        if other_kind != kind:
            problems.append(f"  {path}: a {other_kind} adapter, {paths[0]} is a {kind} one")
            continue
        a, b = _meaning(kind, config), _meaning(kind, other_config)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                problems.append(f"  {path}: config {key} is {b.get(key)!r}, {paths[0]} has {a.get(key)!r}")
        for name in sorted(set(first) | set(tensors)):
            if name not in tensors or name not in first:
                problems.append(f"  {path}: tensor {name} is in only one of it and {paths[0]}")
            elif (first[name].shape, first[name].dtype) != (tensors[name].shape, tensors[name].dtype):
                problems.append(f"  {path}: tensor {name} is {list(tensors[name].shape)} {tensors[name].dtype}, "
                                f"{paths[0]} has {list(first[name].shape)} {first[name].dtype}")
    if problems:
        raise AdapterError("cannot average adapters that differ:\n" + "\n".join(problems))

    averaged = {}
    for name, tensor in first.items():
        total = torch.zeros(tensor.shape, dtype=torch.float32)
        for weight, (_, _, tensors) in zip(weights, read):
            total.add_(tensors[name].to(torch.float32), alpha=weight)
        averaged[name] = total.to(tensor.dtype).contiguous()

    provenance = {"averaged_from": [str(p) for p in paths], "weights": weights}
    if kind == "mor_ext":
        return write_adapter(MoRConfig.from_dict(config), averaged, out, metadata=provenance)

    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    # The weights go first: a crash before the config is written leaves no loadable PEFT directory.
    atomic_write(out / ADAPTER_WEIGHTS_NAME, lambda tmp: save_file(averaged, str(tmp), metadata={"format": "pt"}))
    atomic_write(out / "averaged_from.json", lambda tmp: tmp.write_text(json.dumps(provenance, indent=2) + "\n"))
    atomic_write(out / PEFT_CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    fsync_dir(out)
    return out
