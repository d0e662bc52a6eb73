"""Fine-tuning with the Hugging Face ``Trainer``: Mixture-of-Roles LoRA, plain-LoRA baseline, ablations.

:func:`train` takes a :class:`TrainConfig` and does the whole job::

    trajectories (JSONL, bad records reported and skipped; or data.synthetic.generate)
      -> RoleTokenizer (max_length, optional packing) -> train / eval split
      -> base model (models.load_model) -> mor_ext.patch(model, MoRConfig)  |  peft LoRA (baseline)
      -> MoRTrainer: loss = CE + aux + orth, each logged, plus the router load per role
      -> checkpoints (Trainer's, each with a MoR adapter under ``adapter/``), resumable
      -> out_dir: save_adapter(...) (or PEFT's save_pretrained for --method lora) + training_log.json

Methods (``TrainConfig.method``):

* ``mor`` (default): :func:`mor_ext.patch` with ``MoRSpec.moragent(rank)``. Ablations: ``no_aux`` /
  ``no_orth`` set the load-balance / orthogonality coefficients to 0; ``one_role`` swaps the spec for
  :func:`one_role_spec` (one role, a shared LoRA and ``E_total + R - 1`` routed ones, i.e. as many
  LoRAs as MoRAgent's three roles together, top-k 3) and gives every role token, of whichever role,
  role 0 (context tokens keep the context role: role 0 too, or -1 when ``context_role`` is None).
* ``lora``: plain LoRA from ``peft`` on the same target modules, rank chosen so that its trainable
  parameter count is as close as possible to MoR's (both counts go into the log); ``role_ids`` are
  dropped from the batch.

Losses and distributed training. The Trainer counts the supervised tokens of the whole optimizer step
(all accumulation micro-batches, all processes) and the model's cross-entropy is a sum divided by that
count, so CE is the same under DDP and in one process on the same global batch. The aux and
orthogonality terms are means per micro-batch, averaged over accumulation steps; under DDP the
gradient averages the per-process values. The orthogonality loss depends only on the weights, so it
matches exactly; the load-balance loss of a shard is not the load-balance loss of the global batch
(it is nonlinear in the token counts), so with ``aux_loss_coef > 0`` DDP and one process differ
slightly, as in every data-parallel MoE. Logged ce/aux/orth are averaged over processes;
the router load is rank 0's.

Sharded training: ``TrainConfig(fsdp=True)`` (``mor-ext train --fsdp`` under torchrun) trains with FSDP2
through the Trainer's own FSDP configuration (:mod:`.distributed`): adapter, gradients and optimiser
state sharded, checkpoints holding them whole, so a run resumes on another number of processes.

Modules: :mod:`.config` (TrainConfig, and the MoRConfig of each method / ablation), :mod:`.data`
(trajectories -> datasets -> batches), :mod:`.trainer` (the Trainer subclass, :func:`train`),
:mod:`.distributed` (FSDP2: :func:`~.distributed.shard_model`, the Trainer's FSDP set-up).
Layering: the top of the package; it may import everything below it (``spec``, ``config``,
``patching``, ``adapters``, ``models``, ``files``, ``data``); only ``cli`` imports it.
"""

from . import config, data, trainer
from .config import Method, TrainConfig, mor_config_for, one_role_spec
from .data import ExampleDataset, RoleDataCollator, build_datasets, load_trajectories
from .trainer import (
    CHECKPOINT_ADAPTER_DIR,
    TRAINING_LOG_NAME,
    MoRTrainer,
    TrainResult,
    lora_rank_for_budget,
    train,
)

__all__ = [*config.__all__, *data.__all__, *trainer.__all__]
