"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for patched models: sharding a model by hand, and
the Trainer's FSDP2 configuration that ``mor-ext train --fsdp`` uses.

:func:`shard_model` applies activation checkpointing (optional) and ``fully_shard`` to each decoder
layer, then to the model, with a :class:`~torch.distributed.fsdp.MixedPrecisionPolicy` (parameters
in ``param_dtype`` for compute, gradients reduced in ``reduce_dtype``). A patched model needs
nothing else: its layers compute the orthogonal-loss terms in their own forward when their
parameters are sharded (``docs/spec.md`` §4), and :func:`mor_ext.save_adapter` /
:func:`mor_ext.load_adapter` gather and scatter sharded parameters (call them on every process).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

__all__ = ["decoder_layers", "shard_model", "fsdp_training_arguments", "configure_fsdp"]


def decoder_layers(model: nn.Module, layer_classes: Iterable[str] | None = None) -> list[nn.Module]:
    """The repeated blocks to shard one by one: modules whose class name is in ``layer_classes``
    (default: the model's ``_no_split_modules``, which Hugging Face models set to their decoder
    layer). ValueError if there are none."""
    names = set(layer_classes if layer_classes is not None else getattr(model, "_no_split_modules", None) or ())
    if not names:
        raise ValueError(f"{type(model).__name__} names no decoder-layer class (_no_split_modules); "
                         "pass layer_classes=['MyDecoderLayer']")
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"no module of {type(model).__name__} is of a class in {sorted(names)}")
    return layers


def shard_model(
    model: nn.Module,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = torch.float32,
    reshard_after_forward: bool = True,
    activation_checkpointing: bool = False,
    layer_classes: Iterable[str] | None = None,
    mesh: Any = None,
) -> nn.Module:
    """Shard ``model`` (patched or not) with FSDP2 in place and return it.

    Needs an initialised process group (``torchrun``; gloo on CPU, NCCL on GPU). Each decoder layer
    (:func:`decoder_layers`) becomes one FSDP2 unit, the rest of the model the root unit.
    ``param_dtype`` (e.g. ``torch.bfloat16``) is the dtype the gathered parameters compute in, the
    sharded ones stay as they are (fp32 master weights); ``reduce_dtype`` the dtype gradients are
    averaged in. ``activation_checkpointing`` recomputes each decoder layer, MoR layers included, in
    the backward (non-reentrant ``torch.distributed._composable.checkpoint``, which keeps parameter
    names, hence adapter keys, unchanged).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from ..sharding import distributed_active

    if not distributed_active():
        raise RuntimeError("shard_model needs a process group: run under torchrun and call "
                           "torch.distributed.init_process_group() first")
    layers = decoder_layers(model, layer_classes)
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    if activation_checkpointing:
        from torch.distributed._composable import checkpoint

        for layer in layers:
            checkpoint(layer)  # before fully_shard, as FSDP2 expects
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


def fsdp_training_arguments(activation_checkpointing: bool = False) -> dict[str, Any]:
    """``TrainingArguments`` keywords for FSDP2 through accelerate: each decoder layer its own unit
    (the model's ``_no_split_modules``), resharded after forward, and checkpoints whose optimiser
    state is gathered whole on rank 0 (``FULL_STATE_DICT``), so a run can resume on another number of
    processes."""
    return {
        "fsdp": "full_shard",
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,
            "state_dict_type": "FULL_STATE_DICT",
            "activation_checkpointing": activation_checkpointing,
        },
    }


def configure_fsdp(trainer: Any) -> None:
    """Finish the FSDP2 set-up of a ``Trainer`` whose arguments ask for FSDP (called once its
    accelerator exists, before training prepares the model).

    * Mixed precision: parameters gathered in bf16/fp16 but gradients reduced in fp32 (accelerate's
      default reduces in the low dtype).
    * On CPU: accelerate enables FSDP only on accelerators and would wrap the model in DDP; FSDP2
      itself runs on CPU with gloo, so the accelerator is switched to its FSDP path.
    """
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from ..sharding import distributed_active

    state = trainer.accelerator.state
    if getattr(state, "fsdp_plugin", None) is None:
        if not distributed_active() or torch.distributed.get_world_size() < 2 or \
                state.distributed_type != DistributedType.MULTI_CPU:
            raise RuntimeError("--fsdp shards over processes: run it under torchrun with at least 2 processes, e.g. "
                               "torchrun --nproc_per_node 2 -m mor_ext.cli train --fsdp ...")
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
        state.distributed_type = DistributedType.FSDP
        trainer.is_fsdp_enabled = True
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(trainer.accelerator.mixed_precision))
    state.fsdp_plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
