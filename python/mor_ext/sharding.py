"""Parameters that FSDP2 (``torch.distributed.fsdp.fully_shard``) holds sharded, as ``DTensor``\\ s.

FSDP2 keeps each wrapped module's parameters sharded across the processes except inside that
module's own forward and backward. The helpers here let the layers, the model-level losses and the
adapter files tell a sharded parameter from a whole one, gather one whole, or write a whole value
into a shard:

* :func:`distributed_active`, :func:`is_sharded`: whether sharding can be in play, and whether a
  tensor is a ``DTensor``.
* :func:`full_tensor`: a sharded parameter's whole value (a collective: every process calls it).
* :func:`copy_full_into`: copy a whole value into a parameter, sharded or not (no communication:
  every process holds the whole value and keeps its own part).
* :func:`tie_to_output`: tie a per-layer loss term to the layer's output in autograd, so that its
  backward runs while FSDP2 holds the layer's parameters whole (see :class:`mor_ext.layers.MoRLinear`).

Layering: torch only; below ``ops`` (rank 1), so that every module of mor_ext may use it.
"""

from __future__ import annotations

import torch

__all__ = ["distributed_active", "is_sharded", "full_tensor", "copy_full_into", "tie_to_output"]


def distributed_active() -> bool:
    """Whether a default process group exists (DTensors, hence sharded parameters, need one)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _dtensor_type():
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (a parameter that FSDP2 holds sharded right now)."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of ``tensor``, detached: gathered from every process for a DTensor (a collective
    that every process of its mesh must call, in the same order), else ``tensor`` itself."""
    if is_sharded(tensor):
        with torch.no_grad():
            return tensor.full_tensor()
    return tensor.detach()


def copy_full_into(param: torch.Tensor, value: torch.Tensor) -> None:
    """``param.copy_(value)`` for a whole ``value``, also when ``param`` is a DTensor: each process then
    keeps the part of ``value`` its shard holds (every process must hold the whole ``value``)."""
    with torch.no_grad():
        if not is_sharded(param):
            param.copy_(value)
            return
        from torch.distributed.tensor import distribute_tensor

        # src_data_rank=None: every process has the value, so each slices its own part, no communication.
        part = distribute_tensor(value.to(device=param.device, dtype=param.dtype), param.device_mesh,
                                 param.placements, src_data_rank=None)
        param.to_local().copy_(part.to_local())


class _Tie(torch.autograd.Function):
    """Identity on ``(output, term)`` whose backward needs both gradients: the term's backward then runs
    after the output's gradient has arrived, never before."""

    @staticmethod
    def forward(ctx, output: torch.Tensor, term: torch.Tensor):
        ctx.set_materialize_grads(False)
        return output.view_as(output), term.view_as(term)

    @staticmethod
    def backward(ctx, grad_output, grad_term):
        return grad_output, grad_term


def tie_to_output(output: torch.Tensor, term: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output, term)`` unchanged in value, tied in autograd so that ``term``'s backward waits for
    ``output``'s gradient.

    A loss term computed from a layer's parameters inside its forward (where FSDP2 holds them whole)
    must also run its backward where FSDP2 holds them whole: FSDP2 gathers a module's parameters
    again when the gradient reaches that module's outputs, and frees them after its backward. A term
    that went straight into the model's loss would be differentiated first, against freed storage.
    Tied, its backward follows the output's, inside the module's backward.
    """
    if not (term.requires_grad and torch.is_grad_enabled()):
        return output, term
    return _Tie.apply(output, term)
